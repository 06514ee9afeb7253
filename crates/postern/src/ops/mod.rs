//! The administrator's commands behind `relay queue`, `relay doctor`, `relay login` and
//! `relay send`, as library functions that write their report to any [`std::io::Write`]
//! (the binary passes stdout; tests pass a `Vec<u8>`).
//!
//! - [`queue`]: list, show, retry, delete and bounce spooled messages, through the running
//!   relay's admin API or, when no relay runs, on the spool directly under its lock.
//! - [`doctor`]: one line per check (pass / warn / fail, with a remedy).
//! - [`login`]: sign a mailbox in (device code, or browser with PKCE) and store its refresh
//!   token.
//! - [`send`]: a test message through a configured route, with a redacted transcript.

pub mod client;
pub mod doctor;
pub mod login;
pub mod queue;
pub mod send;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::config::ConfigError;
use crate::spool::SpoolError;

/// What can go wrong in an administrator command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The spool could not be read or changed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The relay's admin API failed or refused the request.
    #[error("admin API at {addr}: {message}")]
    Admin {
        /// Where it was asked.
        addr: SocketAddr,
        /// What it said.
        message: String,
    },
    /// No message with that id is queued.
    #[error("no message {0} in the queue")]
    NotFound(String),
    /// The command cannot run as asked; the message says what to do instead.
    #[error("{0}")]
    Refused(String),
    /// A token could not be obtained.
    #[error("{0}")]
    Token(String),
    /// The report could not be written.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// A point in time for an operator: `2026-11-22 18:42:00 UTC`.
pub(crate) fn format_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| format!("{secs} (Unix time)"))
}
