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

/// The oldest TLS version a listener accepts (`tls_min_version`).
///
/// `"1.2"` and `"1.3"` use rustls. `"1.0"` and `"1.1"` exist for old printers
/// and scanners: they need the `legacy-tls` cargo feature (OpenSSL, since
/// rustls has no TLS below 1.2), a private or loopback bind address unless
/// [`ListenerConfig::allow_legacy_tls_on_public_address`] is set, and they log
/// a warning at start. See `docs/legacy-devices.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.0 (RFC 2246, deprecated by RFC 8996): legacy, OpenSSL only.
    Tls10,
    /// TLS 1.1 (RFC 4346, deprecated by RFC 8996): legacy, OpenSSL only.
    Tls11,
    /// TLS 1.2 (RFC 5246). Default.
    #[default]
    Tls12,
    /// TLS 1.3 (RFC 8446) only.
    Tls13,
}

impl<'de> Deserialize<'de> for TlsVersion {
    /// Accepts `"1.0"`..`"1.3"`, and the same written as TOML floats (`1.0`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TlsVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TLS version: \"1.0\", \"1.1\", \"1.2\" or \"1.3\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TlsVersion, E> {
                match v {
                    "1.0" => Ok(TlsVersion::Tls10),
                    "1.1" => Ok(TlsVersion::Tls11),
                    "1.2" => Ok(TlsVersion::Tls12),
                    "1.3" => Ok(TlsVersion::Tls13),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<TlsVersion, E> {
                self.visit_str(&format!("{v:.1}"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl TlsVersion {
    /// Whether this is below TLS 1.2 (the `legacy-tls` OpenSSL path).
    pub fn is_legacy(self) -> bool {
        self < Self::Tls12
    }
}

impl fmt::Display for TlsVersion {
    /// The configuration spelling: `1.0`, `1.1`, `1.2` or `1.3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tls10 => "1.0",
            Self::Tls11 => "1.1",
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        })
    }
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
    /// Oldest TLS version accepted by STARTTLS and implicit TLS: `"1.0"`,
    /// `"1.1"`, `"1.2"` or `"1.3"`. Default `"1.2"`. Below `"1.2"` needs a build
    /// with the `legacy-tls` feature and is meant for a LAN port only.
    #[serde(default)]
    pub tls_min_version: TlsVersion,
    /// Let a legacy listener (`tls_min_version` below `"1.2"`) bind an address
    /// that is neither private (RFC 1918, unique local, link-local) nor
    /// loopback, including the wildcard `0.0.0.0` / `[::]`. Default `false`.
    #[serde(default)]
    pub allow_legacy_tls_on_public_address: bool,
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
            tls_min_version: TlsVersion::Tls12,
            allow_legacy_tls_on_public_address: false,
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

    /// Checks `tls_min_version` against this build and the bind address.
    /// The error is `(key, message)`, the key relative to the listener table.
    pub(crate) fn check_tls_version(&self) -> Result<(), (&'static str, String)> {
        let version = self.tls_min_version;
        if version != TlsVersion::default() && self.tls.is_none() {
            return Err((
                "tls_min_version",
                format!("tls_min_version = \"{version}\" needs tls.cert and tls.key"),
            ));
        }
        if !version.is_legacy() {
            return Ok(());
        }
        if !cfg!(feature = "legacy-tls") {
            return Err(("tls_min_version", legacy_tls_not_built(version)));
        }
        if !self.allow_legacy_tls_on_public_address && !is_lan_address(self.bind.ip()) {
            return Err((
                "bind",
                format!(
                    "tls_min_version = \"{version}\" (legacy TLS) is meant for a LAN port only, \
                     and {} is not a private or loopback address: bind the LAN address \
                     (like \"192.168.1.10:25\"), or set allow_legacy_tls_on_public_address = true \
                     if a firewall already limits this port to the devices that need it",
                    self.bind.ip()
                ),
            ));
        }
        Ok(())
    }
}

/// The error for a legacy `tls_min_version` in a build without `legacy-tls`.
pub(crate) fn legacy_tls_not_built(version: TlsVersion) -> String {
    format!(
        "tls_min_version = \"{version}\" needs TLS 1.0/1.1, which this build lacks \
         (rustls has no TLS below 1.2): rebuild with `--features legacy-tls` \
         (the relay: `cargo build --release -p postern-examples --example relay \
         --features postern/legacy-tls`), or use \"1.2\""
    )
}

/// Private (RFC 1918, IPv6 unique local), link-local or loopback: an address
/// only the LAN can reach. The wildcard (`0.0.0.0`, `::`) is not one.
pub(crate) fn is_lan_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_lan_address(IpAddr::V4(v4)),
            None => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
        },
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
    /// Start even though `allowed_networks` holds public addresses (or everything,
    /// `0.0.0.0/0`, `::/0`) while a listener without `require_auth` binds a non-loopback
    /// address: that makes the relay open to those addresses. Default `false`: such a
    /// configuration is refused at start (invariant 3).
    #[serde(default)]
    pub i_know_this_is_an_open_relay: bool,
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
    /// The whole content of one message (the DATA, or every BDAT chunk of it
    /// together, with the commands between them) must arrive within this many
    /// seconds plus one second per [`data_min_rate`](Self::data_min_rate)
    /// bytes received; past it the client gets `421 4.4.2` and is closed, and
    /// nothing is stored. Default 300. Unlike `data_block_timeout_secs` (per
    /// read) this bounds a client that trickles a byte at a time.
    pub data_total_timeout_secs: u64,
    /// The slowest average rate, in bytes per second, at which message data may
    /// arrive once [`data_total_timeout_secs`](Self::data_total_timeout_secs)
    /// has passed: each byte received extends the message's deadline by
    /// `1 / data_min_rate` seconds. Default 1024: a client sending 1 byte/s is
    /// closed after about 300 s, while a 35 MiB message may take up to about
    /// 10 hours. `0` turns the extension off: then `data_total_timeout_secs` is
    /// a flat cap.
    pub data_min_rate: u64,
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
            data_total_timeout_secs: 300,
            data_min_rate: 1024,
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
    pub(crate) fn data_total_timeout(&self) -> Duration {
        Duration::from_secs(self.data_total_timeout_secs.max(1))
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

    #[derive(Debug, Deserialize)]
    struct Versioned {
        v: TlsVersion,
    }

    fn version(toml_value: &str) -> Result<TlsVersion, String> {
        toml::from_str::<Versioned>(&format!("v = {toml_value}"))
            .map(|x| x.v)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tls_versions_parse_as_strings_and_floats() {
        assert_eq!(version("\"1.0\""), Ok(TlsVersion::Tls10));
        assert_eq!(version("\"1.1\""), Ok(TlsVersion::Tls11));
        assert_eq!(version("\"1.2\""), Ok(TlsVersion::Tls12));
        assert_eq!(version("\"1.3\""), Ok(TlsVersion::Tls13));
        assert_eq!(version("1.0"), Ok(TlsVersion::Tls10));
        assert_eq!(version("1.1"), Ok(TlsVersion::Tls11));
        let err = version("\"1.4\"").unwrap_err();
        assert!(
            err.contains("\"1.0\", \"1.1\", \"1.2\" or \"1.3\""),
            "{err}"
        );
        assert!(version("\"SSLv3\"").is_err());
        assert!(TlsVersion::Tls11.is_legacy() && !TlsVersion::Tls12.is_legacy());
        assert_eq!(TlsVersion::default(), TlsVersion::Tls12);
        assert_eq!(TlsVersion::Tls10.to_string(), "1.0");
    }

    #[test]
    fn lan_addresses() {
        for lan in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.10",
            "127.0.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.1.10",
        ] {
            assert!(is_lan_address(lan.parse().unwrap()), "{lan}");
        }
        for public in [
            "0.0.0.0",
            "::",
            "8.8.8.8",
            "172.32.0.1",
            "100.64.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_lan_address(public.parse().unwrap()), "{public}");
        }
    }

    fn legacy_listener(bind: &str) -> ListenerConfig {
        let mut l = ListenerConfig::new("printers", bind.parse().unwrap());
        l.tls = Some(TlsFiles::new("cert.pem", "key.pem"));
        l.tls_min_version = TlsVersion::Tls10;
        l
    }

    #[test]
    fn tls_min_version_checks() {
        let mut l = ListenerConfig::new("lan", "192.168.1.10:25".parse().unwrap());
        assert_eq!(l.check_tls_version(), Ok(()));
        l.tls_min_version = TlsVersion::Tls13;
        let (key, msg) = l.check_tls_version().unwrap_err();
        assert_eq!(key, "tls_min_version");
        assert!(msg.contains("tls.cert"), "{msg}");
        l.tls = Some(TlsFiles::new("cert.pem", "key.pem"));
        assert_eq!(l.check_tls_version(), Ok(()));

        let lan = legacy_listener("192.168.1.10:25");
        if cfg!(feature = "legacy-tls") {
            assert_eq!(lan.check_tls_version(), Ok(()));
            assert_eq!(
                legacy_listener("127.0.0.1:2525").check_tls_version(),
                Ok(())
            );
            for public in ["0.0.0.0:25", "203.0.113.5:25", "[::]:25"] {
                let (key, msg) = legacy_listener(public).check_tls_version().unwrap_err();
                assert_eq!(key, "bind", "{public}");
                assert!(
                    msg.contains("LAN port only")
                        && msg.contains("allow_legacy_tls_on_public_address"),
                    "{msg}"
                );
            }
            let mut allowed = legacy_listener("0.0.0.0:25");
            allowed.allow_legacy_tls_on_public_address = true;
            assert_eq!(allowed.check_tls_version(), Ok(()));
        } else {
            let (key, msg) = lan.check_tls_version().unwrap_err();
            assert_eq!(key, "tls_min_version");
            assert!(msg.contains("--features legacy-tls"), "{msg}");
        }
    }

    #[test]
    fn password_hash_never_prints() {
        let hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
        assert!(!format!("{hash:?}").contains("argon2"));
    }
}
