//! The Postern engine: a store-and-forward SMTP relay for devices that cannot speak to
//! Microsoft 365 themselves.
//!
//! ```text
//!  device ──SMTP──▶ inbound ──▶ spool (fsync before 250) ──▶ queue ──▶ router ──▶ delivery
//! ```
//!
//! - [`spool`]: the durable spool; a message is acknowledged only once it is on disk.
//! - [`queue`]: the retry scheduler and its bounded pool of delivery workers.
//! - [`router`]: rules that choose a route list per recipient.
//! - [`delivery`]: the [`delivery::Transport`] seam and the local sink.
//! - [`config`]: the TOML configuration.
//! - [`identity`]: OAuth sending identities (XOAUTH2 tokens) on one shared token cache.
//! - [`ratelimit`]: per-identity message and recipient limits, and pauses after throttling.
//! - [`relay`]: everything started and stopped as one ([`Relay::start`]).
//!
//! # Cargo features
//!
//! - `legacy-tls` (off by default): listeners with `tls_min_version = "1.0"` or `"1.1"` for
//!   old printers and scanners, through the system OpenSSL since rustls has no TLS below 1.2
//!   (see [`inbound::TlsVersion`] and `docs/legacy-devices.md`).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
pub mod config;
pub mod delivery;
pub mod identity;
pub mod inbound;
pub mod metrics;
pub mod ops;
pub mod queue;
pub mod ratelimit;
pub mod relay;
pub mod router;
pub mod spool;

pub use relay::{Error, Relay, RelayHandle};
