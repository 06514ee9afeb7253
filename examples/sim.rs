//! Runs the Microsoft 365 simulators standalone, so the relay can be tried end to end on one
//! machine: Entra ID (token endpoint), Exchange Online client submission, the tenant MX,
//! Graph sendMail and a DNS server, all sharing one generated CA and one demo tenant.
//!
//! ```text
//! cargo run -p postern-examples --example sim -- [--submission-port 5870] [--mx-port 2525] \
//!     [--graph-port 8443] [--ca-out /tmp/postern-sim-ca.pem]
//! ```
//!
//! It prints the CA file to trust, a relay configuration snippet and curl/swaks lines, then
//! logs every accepted message until Ctrl-C. Ports default to 0 (ephemeral); Entra ID and DNS
//! always take ephemeral ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use postern_testkit::dns::DnsServer;
use postern_testkit::entra::{App, EntraSim, Tenant, User};
use postern_testkit::exo::{Profile, SubmissionServer};
use postern_testkit::graph::GraphServer;
use postern_testkit::org::{InboundConnector, Mailbox, Organization, ServicePrincipal};
use postern_testkit::record::Recorder;
use postern_testkit::tenant_mx::TenantMx;
use postern_testkit::tls::TestCa;

const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const APP: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
const SECRET: &str = "demo-client-secret";

/// Start the Entra ID, Exchange Online, tenant MX, Graph and DNS simulators on loopback.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Port of the client-submission endpoint (smtp.office365.com shape); 0 = ephemeral.
    #[arg(long, default_value_t = 0)]
    submission_port: u16,
    /// Port of the tenant MX (contoso-com.mail.protection.outlook.com shape).
    #[arg(long, default_value_t = 0)]
    mx_port: u16,
    /// Port of the Graph sendMail endpoint (HTTPS).
    #[arg(long, default_value_t = 0)]
    graph_port: u16,
    /// Where to write the CA certificate clients must trust.
    #[arg(long, default_value = "/tmp/postern-sim-ca.pem")]
    ca_out: PathBuf,
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let ca = TestCa::new();
    ca.write_cert_pem(&args.ca_out)?;
    let recorder = Recorder::new();

    let entra = EntraSim::builder()
        .ca(ca.clone())
        .tenant(Tenant::new(TENANT).domain("contoso.com"))
        .app(
            App::new(APP, TENANT)
                .secret(SECRET)
                .app_role("https://outlook.office365.com", "SMTP.SendAsApp")
                .app_role("https://graph.microsoft.com", "Mail.Send")
                .delegated("https://outlook.office.com", "SMTP.Send"),
        )
        .user(User::new("scanner@contoso.com", TENANT))
        .start()
        .await?;
    let org = Organization::builder(TENANT, "contoso.com")
        .mailbox(
            Mailbox::new("scanner@contoso.com")
                .password("Scan-2026!")
                .send_as("noreply@contoso.com"),
        )
        .service_principal(ServicePrincipal::new(APP).full_access("scanner@contoso.com"))
        .connector(InboundConnector::certificate("relay", "relay.contoso.com"))
        .build();
    let exo = SubmissionServer::builder(Profile::ClientSubmission)
        .organization(org.clone())
        .tokens(entra.clone())
        .recorder(recorder.clone())
        .ca(ca.clone())
        .bind(local(args.submission_port))
        .start()
        .await?;
    let mx = TenantMx::builder()
        .organization(org.clone())
        .recorder(recorder.clone())
        .ca(ca.clone())
        .bind(local(args.mx_port))
        .start()
        .await?;
    let graph = GraphServer::builder()
        .organization(org.clone())
        .tokens(entra.clone())
        .recorder(recorder.clone())
        .ca(ca.clone())
        .bind(local(args.graph_port))
        .start()
        .await?;
    let dns = DnsServer::builder()
        .mx("contoso.com", 0, mx.tls_server_name())
        .a(mx.tls_server_name(), [127, 0, 0, 1].into())
        .a("smtp.office365.com", [127, 0, 0, 1].into())
        .txt(
            "contoso.com",
            "v=spf1 include:spf.protection.outlook.com -all",
        )
        .start()
        .await?;

    let ca_path = args.ca_out.display();
    let (s, m, g) = (exo.addr().port(), mx.addr().port(), graph.addr().port());
    println!("Postern simulators are running (Ctrl-C to stop).\n");
    println!("trust this CA:        {ca_path}");
    println!(
        "Entra ID authority:   {}  tenant {TENANT}",
        entra.authority()
    );
    println!("  app {APP} secret {SECRET}");
    println!(
        "client submission:    {}  (TLS name smtp.office365.com)",
        exo.addr()
    );
    println!("  mailbox scanner@contoso.com / Scan-2026!  (Send As: noreply@contoso.com)");
    println!(
        "tenant MX:            {}  (TLS name {})",
        mx.addr(),
        mx.tls_server_name()
    );
    println!(
        "Graph sendMail:       {}  (TLS name graph.microsoft.com)",
        graph.addr()
    );
    println!("DNS (UDP+TCP):        {}", dns.addr());
    println!(
        "\n# relay configuration snippet (an upstream route; key names may differ from the engine's final schema)"
    );
    println!(
        "[routes.exo]\ntype = \"submission\"\nhost = \"smtp.office365.com\"\nconnect = \"{}\"\nca_file = \"{ca_path}\"",
        exo.addr()
    );
    println!(
        "[routes.exo.oauth]\nauthority = \"{}\"\ntenant = \"{TENANT}\"\nclient_id = \"{APP}\"\nclient_secret = \"{SECRET}\"\nscope = \"https://outlook.office365.com/.default\"\nmailbox = \"scanner@contoso.com\"",
        entra.authority()
    );
    println!("\n# try it by hand");
    println!(
        "swaks --server 127.0.0.1 --port {s} --tls --tls-verify --tls-ca-path {ca_path} --auth LOGIN --auth-user scanner@contoso.com --auth-password 'Scan-2026!' --from scanner@contoso.com --to bob@fabrikam.com"
    );
    println!(
        "TOKEN=$(curl -s --cacert {ca_path} {} -d client_id={APP} -d client_secret={SECRET} -d grant_type=client_credentials --data-urlencode scope=https://outlook.office365.com/.default | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
        entra.token_url(TENANT)
    );
    println!(
        "curl --url smtp://smtp.office365.com:{s} --connect-to smtp.office365.com:{s}:127.0.0.1:{s} --ssl-reqd --cacert {ca_path} --user scanner@contoso.com: --oauth2-bearer \"$TOKEN\" --login-options AUTH=XOAUTH2 --mail-from scanner@contoso.com --mail-rcpt bob@fabrikam.com --upload-file message.eml"
    );
    println!(
        "swaks --server 127.0.0.1 --port {m} --from printer@contoso.com --to scanner@contoso.com   # Direct Send"
    );
    println!(
        "curl --cacert {ca_path} --resolve graph.microsoft.com:{g}:127.0.0.1 -H \"Authorization: Bearer $GRAPH_TOKEN\" -H 'Content-Type: text/plain' --data-binary @message.b64 https://graph.microsoft.com:{g}/v1.0/users/scanner@contoso.com/sendMail"
    );

    let mut seen = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                for msg in recorder.messages().into_iter().skip(seen) {
                    seen += 1;
                    println!("accepted #{} via {}: {} -> {:?} ({} bytes, tls {})", msg.seq, msg.endpoint, msg.mail_from, msg.rcpt_to, msg.data.len(), msg.tls);
                }
            }
        }
    }
    exo.shutdown().await;
    mx.shutdown().await;
    graph.shutdown().await;
    Ok(())
}
