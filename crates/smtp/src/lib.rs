//! A sans-IO SMTP wire codec.
//!
//! ```text
//!   bytes from the peer ──▶ decode(&[u8]) ──▶ (value, bytes consumed)
//!   values to send      ──▶ encode(&mut Vec<u8>) / Display ──▶ bytes for the peer
//! ```
//!
//! This crate never touches sockets, files or clocks: it turns bytes into typed commands,
//! replies and events, and back. The same code serves Postern's server and client sessions,
//! the fuzzer, the property tests and the benchmarks.
#![forbid(unsafe_code)]

mod error;
mod status;

pub use error::StatusError;
pub use status::{Category, EnhancedCode, ReplyCode, Severity, StatusClass};
