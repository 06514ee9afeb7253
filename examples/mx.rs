//! `mx`: where mail for a domain goes, its Exchange Online endpoint, and its SPF / DMARC / DKIM.
//!
//! ```text
//! cargo run -p postern-examples --example mx -- lookup contoso.com
//! cargo run -p postern-examples --example mx -- lookup contoso.com --nameserver 10.0.0.53:53
//! cargo run -p postern-examples --example mx -- exo contoso.com
//! cargo run -p postern-examples --example mx -- check contoso.com --ip 203.0.113.7
//! ```
//!
//! `lookup` prints `{"domain", "null_mx", "implicit", "hosts": [{"preference", "exchange",
//! "addresses"}]}` with the hosts in delivery order (RFC 5321 5.1: preference, equal
//! preferences shuffled). `exo` prints the derived Exchange Online tenant MX host (no DNS).
//! `check` prints the MX / SPF / DMARC / DKIM verdicts (pass, warn or fail, each with a remedy),
//! and SPF evaluated for `--ip` when given. Errors exit 1 with
//! `{"error", "kind", "transient": bool, "permanent": bool}`. Without `--nameserver` the system
//! resolver configuration (`/etc/resolv.conf`) is used. Everything is done by `postern-mx`.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postern_mx::{Error, MxResolver, ResolverSettings};
use serde_json::json;

/// Find where mail for a domain goes and check its DNS for Exchange Online.
#[derive(Parser)]
#[command(name = "mx", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// MX hosts in delivery order, with their addresses.
    Lookup {
        /// The mail domain.
        domain: String,
        /// Ask this name server (IP:PORT) instead of the system's; repeat for several.
        #[arg(long, value_name = "IP:PORT")]
        nameserver: Vec<SocketAddr>,
    },
    /// The Exchange Online tenant MX host derived from the domain.
    Exo {
        /// The accepted domain.
        domain: String,
    },
    /// SPF, DMARC and DKIM verdicts (and whether the MX points at Exchange Online).
    Check {
        /// The mail domain.
        domain: String,
        /// Also evaluate SPF for mail sent from this address.
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Ask this name server (IP:PORT) instead of the system's; repeat for several.
        #[arg(long, value_name = "IP:PORT")]
        nameserver: Vec<SocketAddr>,
    },
}

fn error_json(e: &Error) -> serde_json::Value {
    json!({
        "error": e.to_string(),
        "kind": e.kind(),
        "transient": e.is_transient(),
        "permanent": e.is_permanent(),
    })
}

fn resolver(nameservers: &[SocketAddr]) -> Result<MxResolver, Error> {
    if nameservers.is_empty() {
        MxResolver::system()
    } else {
        MxResolver::with_name_servers(nameservers, &ResolverSettings::default())
    }
}

async fn run(cli: Cli) -> Result<serde_json::Value, Error> {
    match cli.command {
        Command::Lookup { domain, nameserver } => {
            let route = resolver(&nameserver)?.lookup_mx(&domain).await?;
            Ok(serde_json::to_value(&route).unwrap_or_default())
        }
        Command::Exo { domain } => {
            let host = postern_mx::exo::tenant_mx_host(&domain)?;
            Ok(json!({
                "domain": postern_mx::exo::normalise_domain(&domain)?,
                "tenant_mx": host,
                "spf_include": postern_mx::exo::SPF_INCLUDE,
                "note": "derived by the classic rule; domains added since the mx.microsoft roll-out get <domain-with-dashes>.<x>-v1.mx.microsoft, read the exact value from the admin centre",
            }))
        }
        Command::Check {
            domain,
            ip,
            nameserver,
        } => {
            let report =
                postern_mx::checks::check_domain(&resolver(&nameserver)?, &domain, ip).await?;
            Ok(serde_json::to_value(&report).unwrap_or_default())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return postern_examples::emit(
                &json!({"error": e.to_string(), "transient": true, "permanent": false}),
                false,
            );
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(value) => postern_examples::emit(&value, true),
        Err(e) => postern_examples::emit(&error_json(&e), false),
    }
}
