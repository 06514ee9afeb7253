//! `xoauth2`: build or read the XOAUTH2 line that SMTP clients send to Exchange Online.
//!
//! ```text
//! cargo run -p postern-examples --example xoauth2 -- encode --user scanner@contoso.com --token "$TOKEN"
//! printf '%s\n' "$TOKEN" | cargo run -p postern-examples --example xoauth2 -- encode --user scanner@contoso.com --token -
//! cargo run -p postern-examples --example xoauth2 -- decode dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9...
//! ```
//!
//! `encode` prints `{"mechanism": "XOAUTH2", "user": ..., "line": <base64>}`: the line goes after
//! `AUTH XOAUTH2 ` (it carries the token, so treat it as the token). `decode` prints the user and
//! the token's length, never the token itself; it also reads OAUTHBEARER lines. Both exit 1 with
//! `{"error": ...}` when the input is unusable. Everything is done by `postern-sasl`; nothing is
//! sent anywhere.
#![forbid(unsafe_code)]

use std::io::BufRead as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postern_sasl::{Client, Credentials, Mechanism, REDACTED, ServerExchange, ServerStep};
use serde_json::json;

/// Build or read XOAUTH2 SASL lines (Exchange Online, Gmail).
#[derive(Parser)]
#[command(name = "xoauth2", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the base64 line for `AUTH XOAUTH2 <line>`.
    Encode {
        /// The mailbox to send as (`user=`).
        #[arg(long)]
        user: String,
        /// The OAuth access token, or `-` to read it from the first line of standard input
        /// (keeps it out of the process list and shell history).
        #[arg(long)]
        token: String,
    },
    /// Decode a base64 XOAUTH2 (or OAUTHBEARER) line: prints the user and a redacted token.
    Decode {
        /// The base64 text (what follows `AUTH XOAUTH2 `).
        line: String,
    },
}

fn main() -> ExitCode {
    let (value, ok) = match Cli::parse().command {
        Command::Encode { user, token } => encode(user, &token),
        Command::Decode { line } => decode(&line),
    };
    postern_examples::emit(&value, ok)
}

fn encode(user: String, token: &str) -> (serde_json::Value, bool) {
    let token = if token == "-" {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            return (
                json!({ "error": format!("cannot read the token from stdin: {e}") }),
                false,
            );
        }
        line.trim().to_owned()
    } else {
        token.to_owned()
    };
    let creds = Credentials::bearer(user.clone(), token);
    match Client::new(Mechanism::Xoauth2, &creds) {
        Ok(mut client) => {
            let line = client
                .initial_response()
                .expect("XOAUTH2 has an initial response");
            (
                json!({ "mechanism": "XOAUTH2", "user": user, "line": line.expose_secret() }),
                true,
            )
        }
        Err(e) => (json!({ "error": e.to_string() }), false),
    }
}

fn decode(line: &str) -> (serde_json::Value, bool) {
    let mut first_error = None;
    for mechanism in [Mechanism::Xoauth2, Mechanism::OAuthBearer] {
        match ServerExchange::new(mechanism).start(Some(line.as_bytes())) {
            Ok(ServerStep::Done(Credentials::Bearer {
                user,
                token,
                host,
                port,
                ..
            })) => {
                let mut out = json!({
                    "mechanism": mechanism.name(),
                    "user": user,
                    "token": REDACTED,
                    "token_bytes": token.len(),
                });
                if mechanism == Mechanism::OAuthBearer {
                    out["host"] = json!(host);
                    out["port"] = json!(port);
                }
                return (out, true);
            }
            Ok(_) => {}
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let error = first_error.unwrap_or_else(|| "not an XOAUTH2 line".to_owned());
    (json!({ "error": error }), false)
}
