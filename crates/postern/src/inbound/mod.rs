//! The inbound side: SMTP listeners that accept mail from devices into the spool.
//!
//! ```text
//!  TCP accept ─▶ connection limits ─▶ [PROXY header] ─▶ [implicit TLS] ─▶ session
//!                                                                       │
//!   EHLO / STARTTLS / AUTH / MAIL / RCPT (relay policy) / DATA | BDAT ───┘
//!                                                                       ▼
//!                      Received: + unstuffed body ─▶ Incoming::write ─▶ commit ─▶ 250 queued as <id>
//! ```
//!
//! * [`Server::bind`] binds every [`ListenerConfig`] (so bind errors and the
//!   real ports are known), [`Server::run`] serves them until shutdown, and
//!   [`Server::reload_tls`] re-reads certificates (wire it to SIGHUP).
//! * [`RelayPolicy`] decides who may relay (invariant 3): clients in an
//!   allowed network, or device accounts after AUTH PLAIN / LOGIN (Argon2 PHC
//!   hashes, see [`hash_password`]). Everyone else gets `550 5.7.1` at RCPT.
//! * [`LimitsConfig`] bounds sizes, counts and time, each with its RFC reply.
//!
//! The session only sends `250` after the spool's `commit` returned (invariant
//! 1), and only `CRLF . CRLF` ends message data (invariant 4).
//!
//! ```no_run
//! # async fn demo(spool: std::sync::Arc<postern::spool::Spool>) -> Result<(), Box<dyn std::error::Error>> {
//! use postern::inbound::{InboundContext, ListenerConfig, RelayPolicy, Server};
//! use tokio_util::sync::CancellationToken;
//!
//! let policy = RelayPolicy::new(vec!["192.168.10.0/24".parse()?], &[])?;
//! let listeners = [ListenerConfig::new("lan", "0.0.0.0:2525".parse()?)];
//! let server = Server::bind(&listeners, InboundContext::new(spool, policy))?;
//! println!("listening on {:?}", server.local_addrs());
//! let shutdown = CancellationToken::new();
//! server.run(shutdown.clone()).await?;
//! # Ok(()) }
//! ```

mod config;
mod error;
#[cfg(feature = "legacy-tls")]
mod legacy_tls;
mod limits;
mod listener;
mod policy;
pub mod proxy;
mod session;
mod tls;

pub use config::{
    AccountConfig, BareLineEndings, LimitsConfig, ListenerConfig, ListenerMode, PasswordHash,
    PolicyConfig, TlsFiles, TlsVersion, parse_network,
};
pub use error::Error;
pub use listener::{InboundContext, Server, TlsReloader};
pub use policy::{RelayPolicy, hash_password};
