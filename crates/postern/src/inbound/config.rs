//! Serde configuration types for listeners, relay policy, device accounts and limits.
//!
//! The top-level relay configuration embeds these: `[[listener]]` tables become
//! [`ListenerConfig`]s, `[policy]` a [`PolicyConfig`], `[[account]]` tables
//! [`AccountConfig`]s and `[limits]` a [`LimitsConfig`]. Every field documents
//! its default; unknown keys are errors.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// How a listener uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ListenerMode {
    /// Plain SMTP; STARTTLS is offered when the listener has a certificate. Default.
    #[default]
    Plain,
    /// Plain SMTP that requires STARTTLS before `MAIL` (`530 5.7.0` otherwise).
    /// Needs a certificate.
    StarttlsRequired,
    /// TLS from the first byte (port 465, RFC 8314). Needs a certificate.
    ImplicitTls,
}

/// What a listener does with a bare CR or bare LF inside message data.
///
/// Either way a bare CR or LF never ends the data: only `CRLF . CRLF` does
/// (invariant 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BareLineEndings {
    /// Refuse the message with `550 5.6.11`. Default.
    #[default]
    Reject,
    /// Turn each bare CR or LF into CRLF (for legacy devices that send them).
    Normalize,
}

/// The certificate chain and private key of a TLS listener, as PEM files.
///
/// Both are read again by [`Server::reload_tls`](super::Server::reload_tls) (SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsFiles {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Certificate chain and key file paths.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// One SMTP listener (`[[listener]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// A name for logs and the `Received:` header. Required.
    pub name: String,
    /// Address and port to bind, e.g. `"0.0.0.0:25"` or `"[::]:587"`. Required;
    /// port 0 picks a free port (see [`Server::local_addrs`](super::Server::local_addrs)).
    pub bind: SocketAddr,
    /// TLS use. Default `plain`.
    #[serde(default)]
    pub mode: ListenerMode,
    /// Certificate and key. Default none (then no STARTTLS is offered).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Expect a PROXY protocol v1 or v2 header first. Default `false`.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Load balancer addresses whose PROXY header is trusted; connections from
    /// elsewhere are closed. Required (non-empty) when `proxy_protocol` is on.
    #[serde(default, deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// Require AUTH before `MAIL` (`530 5.7.0`), even from allowed networks. Default `false`.
    #[serde(default)]
    pub require_auth: bool,
    /// Offer AUTH PLAIN/LOGIN without TLS (legacy devices on a LAN). Default `false`:
    /// AUTH before TLS gets `538 5.7.11`.
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// Bare CR / bare LF in data. Default `reject`.
    #[serde(default)]
    pub bare_line_endings: BareLineEndings,
    /// Require HELO/EHLO before `MAIL`. Default `true`.
    #[serde(default = "yes")]
    pub require_helo: bool,
    /// Host name in the banner, EHLO reply and `Received:` header. Default: the
    /// context's host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Banner text after the host name. Default `"ESMTP Postern"`.
    #[serde(default)]
    pub banner: Option<String>,
}

fn yes() -> bool {
    true
}

impl ListenerConfig {
    /// A plain listener with every other field at its default.
    pub fn new(name: impl Into<String>, bind: SocketAddr) -> Self {
        Self {
            name: name.into(),
            bind,
            mode: ListenerMode::Plain,
            tls: None,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            require_auth: false,
            allow_plaintext_auth: false,
            bare_line_endings: BareLineEndings::Reject,
            require_helo: true,
            hostname: None,
            banner: None,
        }
    }
}

/// Who may relay (`[policy]`), apart from device accounts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicyConfig {
    /// Client networks allowed to relay without AUTH, IPv4 or IPv6 CIDR
    /// (`"192.168.10.0/24"`, `"2001:db8::/32"`) or single addresses. Default none.
    #[serde(default, deserialize_with = "networks")]
    pub allowed_networks: Vec<IpNet>,
    /// A file of further device accounts, one `username:$argon2id$...` per line,
    /// optionally followed by `:sender1,@domain2` (allowed senders); `#` comments.
    /// Default none.
    #[serde(default)]
    pub accounts_file: Option<PathBuf>,
}

/// A password hash in PHC string format (`$argon2id$v=19$...`). Never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string (see [`hash_password`](super::hash_password)).
    pub fn new(phc: impl Into<String>) -> Self {
        Self(phc.into())
    }

    /// The PHC string.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// A local device account (`[[account]]`) allowed to relay after AUTH PLAIN/LOGIN.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AccountConfig {
    /// The SASL user name. Required.
    pub username: String,
    /// The Argon2 password hash in PHC format. Required; make one with
    /// `relay hash-password`.
    pub password_hash: PasswordHash,
    /// Sender addresses (`scanner@example.com`) or domains (`@example.com` or
    /// `example.com`) this account may use in `MAIL FROM`. Default: any (empty list).
    #[serde(default)]
    pub allowed_senders: Vec<String>,
}

impl AccountConfig {
    /// An account allowed to use any sender.
    pub fn new(username: impl Into<String>, password_hash: PasswordHash) -> Self {
        Self {
            username: username.into(),
            password_hash,
            allowed_senders: Vec::new(),
        }
    }
}

/// Limits and timeouts (`[limits]`), shared by all listeners.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// Largest message in bytes, advertised with SIZE. Default 36 700 160 (35 MiB,
    /// Exchange Online's ceiling).
    pub max_message_size: u64,
    /// Recipients per message. Default 100.
    pub max_recipients: usize,
    /// Concurrent connections over all listeners. Default 1000.
    pub max_connections: usize,
    /// Concurrent connections from one client address. Default 50.
    pub max_connections_per_ip: usize,
    /// Bad commands on one connection before `421 4.7.0` and close. Default 10.
    pub max_bad_commands: u32,
    /// Failed AUTH attempts on one connection before `421 4.7.0` and close. Default 3.
    pub max_auth_failures: u32,
    /// Delay before answering a failed AUTH, in milliseconds. Default 1000.
    pub auth_failure_delay_ms: u64,
    /// Longest command line in bytes including CRLF (`500 5.5.6` beyond). Default 2048
    /// (RFC 5321 asks for at least 512; parameters make lines longer).
    pub max_line_length: usize,
    /// Wait for a command, in seconds. Default 300 (RFC 5321 4.5.3.2).
    pub command_timeout_secs: u64,
    /// Wait for each block of message data, in seconds. Default 180.
    pub data_block_timeout_secs: u64,
    /// Wait for the reply to the end of data to be ready, in seconds: the spool
    /// commit must finish within it. Default 600.
    pub data_termination_timeout_secs: u64,
    /// Complete the TLS handshake (STARTTLS or implicit), in seconds. Default 60.
    pub tls_handshake_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 1000,
            max_connections_per_ip: 50,
            max_bad_commands: 10,
            max_auth_failures: 3,
            auth_failure_delay_ms: 1000,
            max_line_length: 2048,
            command_timeout_secs: 300,
            data_block_timeout_secs: 180,
            data_termination_timeout_secs: 600,
            tls_handshake_timeout_secs: 60,
        }
    }
}

impl LimitsConfig {
    pub(crate) fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs.max(1))
    }
    pub(crate) fn data_block_timeout(&self) -> Duration {
        Duration::from_secs(self.data_block_timeout_secs.max(1))
    }
    pub(crate) fn data_termination_timeout(&self) -> Duration {
        Duration::from_secs(self.data_termination_timeout_secs.max(1))
    }
    pub(crate) fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls_handshake_timeout_secs.max(1))
    }
    pub(crate) fn auth_failure_delay(&self) -> Duration {
        Duration::from_millis(self.auth_failure_delay_ms)
    }
}

/// Parses a CIDR network or a single address (as a /32 or /128).
pub fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    let raw = Vec::<String>::deserialize(deserializer)?;
    raw.iter()
        .map(|s| {
            parse_network(s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{s:?} is not an IP network (like \"192.168.1.0/24\") or address"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_accept_cidr_and_bare_addresses() {
        assert_eq!(
            parse_network("10.0.0.0/8"),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            parse_network("192.0.2.7"),
            Some("192.0.2.7/32".parse().unwrap())
        );
        assert_eq!(parse_network("::1"), Some("::1/128".parse().unwrap()));
        assert_eq!(parse_network("10.0.0.0/33"), None);
        assert_eq!(parse_network("printer"), None);
    }

    #[test]
    fn password_hash_never_prints() {
        let hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
        assert!(!format!("{hash:?}").contains("argon2"));
    }
}
