//! `demo`: the whole product in a few seconds, offline. Starts the simulated Microsoft 365
//! tenant of `postern-testkit` (Entra ID and Exchange Online client submission), a relay
//! configured against it, sends one message as a printer would (plain SMTP to the relay's
//! listener) and prints what happened at each hop: the relay's `250 ... queued as`, the token
//! from Entra ID, the relay's upstream EHLO / STARTTLS / AUTH XOAUTH2 session (redacted), the
//! `250 2.0.0 OK` from Exchange, and what the simulator recorded.
//!
//! ```text
//! cargo run -p postern-examples --example demo
//! ```
//!
//! Exit status 0 when the message arrived.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut out = std::io::stdout();
    match postern_examples::demo::run(&mut out) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
