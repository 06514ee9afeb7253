//! Errors of the inbound side.

use std::net::SocketAddr;
use std::sync::Arc;

/// What can go wrong when starting listeners or loading their policy and TLS.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener could not bind its address.
    #[error("listener {name:?}: cannot bind {addr}: {source}")]
    Bind {
        /// The listener's name.
        name: String,
        /// The address it tried.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A listener, policy or account setting is invalid.
    #[error("invalid inbound configuration: {0}")]
    Config(String),
    /// A certificate or key file could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// A password could not be hashed.
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
}
