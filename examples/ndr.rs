//! `ndr`: classify an SMTP reply or a bounce the way the relay does, with `postern-ndr`.
//!
//! ```text
//! cargo run -p postern-examples --example ndr -- classify "554 5.2.252 SendAsDenied; a@contoso.com not allowed to send as b@contoso.com"
//! cargo run -p postern-examples --example ndr -- classify $'550-5.1.1 The email account does not exist.\r\n550 5.1.1 Learn more'
//! cargo run -p postern-examples --example ndr -- dsn < bounce.eml
//! ```
//!
//! `classify` reads one reply (one or more `NNN-text` / `NNN text` lines, given as arguments
//! or on standard input) and prints one JSON object with the keys `code`, `enhanced` (string
//! or null), `class` (success / transient / permanent), `category` (a stable snake_case name),
//! `retry`, `operator_action` and `remedy`. `dsn` reads a delivery status notification
//! (RFC 3464 multipart/report) on standard input and prints a JSON array with one such object
//! per recipient, plus `recipient`. Input that cannot be parsed prints `{"error": ...}` and
//! exits with status 1. Nothing is sent anywhere.
#![forbid(unsafe_code)]

use std::io::Read as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postern_ndr::{Classification, DeliveryReport, ReplyView, classify_view};
use serde_json::{Value, json};

/// Classify SMTP replies and bounces (DSNs) as the Postern relay does.
#[derive(Parser)]
#[command(name = "ndr", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify one SMTP reply: its lines as arguments, or on standard input when none are given.
    Classify {
        /// The reply line(s), e.g. "451 4.7.500 Server busy. Please try again later".
        lines: Vec<String>,
    },
    /// Read a DSN (bounce message) on standard input and classify each recipient.
    Dsn,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(value) => postern_examples::emit(&value, true),
        Err(message) => {
            eprintln!("ndr: {message}");
            postern_examples::emit(&json!({ "error": message }), false)
        }
    }
}

fn run(command: Command) -> Result<Value, String> {
    match command {
        Command::Classify { lines } => {
            let input = if lines.is_empty() {
                read_stdin()?
            } else {
                lines.join("\n")
            };
            let reply =
                ReplyView::parse(&input).map_err(|e| format!("cannot read the reply: {e}"))?;
            let c = classify_view(&reply);
            Ok(object(
                Some(reply.code.get()),
                reply.enhanced.map(|e| e.to_string()),
                &c,
            ))
        }
        Command::Dsn => {
            let input = read_stdin_bytes()?;
            let report =
                DeliveryReport::parse(&input).map_err(|e| format!("cannot read the DSN: {e}"))?;
            let rows = report
                .recipients
                .iter()
                .map(|r| {
                    let reply = r.smtp_reply();
                    let code = reply.as_ref().map(|x| x.code.get());
                    let enhanced = reply.as_ref().and_then(|x| x.enhanced).unwrap_or(r.status);
                    let mut obj = object(code, Some(enhanced.to_string()), &r.classify());
                    obj["recipient"] = json!(r.recipient());
                    obj
                })
                .collect();
            Ok(Value::Array(rows))
        }
    }
}

fn object(code: Option<u16>, enhanced: Option<String>, c: &Classification) -> Value {
    json!({
        "code": code,
        "enhanced": enhanced,
        "class": c.class.as_str(),
        "category": c.category.as_str(),
        "retry": c.retry,
        "operator_action": c.operator_action,
        "remedy": c.remedy,
    })
}

fn read_stdin() -> Result<String, String> {
    let bytes = read_stdin_bytes()?;
    String::from_utf8(bytes).map_err(|_| "standard input is not UTF-8".to_owned())
}

fn read_stdin_bytes() -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(postern_ndr::MAX_DSN_LENGTH as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(buf)
}
