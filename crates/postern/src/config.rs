//! The configuration: one TOML file, validated at start, every error naming its key and line.
//!
//! ```
//! let cfg = postern::config::Config::from_toml(
//!     "[[listeners]]\nname = \"lan\"\nbind = \"0.0.0.0:99999\"\n",
//!     "relay.toml",
//! );
//! let err = cfg.unwrap_err().to_string();
//! assert!(err.starts_with("relay.toml:3: listeners[0].bind:"), "{err}");
//! ```
//!
//! Without a file, [`Config::builtin`] is used: listen on `127.0.0.1:2525`, relay for
//! `127.0.0.1` and `::1`, spool in `./postern-data/spool`, deliver everything to the local
//! sink `./postern-data/outbox`. See `docs/configuration.md` for every key and default.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::de::{DeTable, DeValue};

use crate::inbound::{AccountConfig, LimitsConfig, ListenerConfig, PolicyConfig};
use crate::queue::QueueConfig;
use crate::router::{RouteConfig, RuleConfig};
use crate::spool::SpoolConfig;

/// The configuration used when no file is given.
pub const BUILTIN: &str = r#"# Postern built-in default: a local dry run.
default_routes = ["outbox"]

[[listeners]]
name = "local"
bind = "127.0.0.1:2525"

[policy]
allowed_networks = ["127.0.0.1/32", "::1/128"]

[spool]
path = "./postern-data/spool"

[routes.outbox]
type = "local"
dir = "./postern-data/outbox"
"#;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The relay's name (EHLO, banner, `Received`, `Reporting-MTA`). Default: the host name.
    #[serde(default = "crate::queue::default_hostname")]
    pub hostname: String,
    /// The spool.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// Queue, workers and retry.
    #[serde(default)]
    pub queue: QueueConfig,
    /// SMTP listeners (at least one).
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Who may relay.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Device accounts for AUTH PLAIN / LOGIN.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// Session limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Named routes.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    /// Routing rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The route list for recipients no rule matches.
    #[serde(default)]
    pub default_routes: Vec<String>,
    /// The admin HTTP listener (metrics, health, queue API); off when absent.
    #[serde(default)]
    pub admin: Option<crate::admin::AdminConfig>,
    /// OAuth sending identities (`[identities.<name>]`) for XOAUTH2 routes.
    #[serde(default)]
    pub identities: BTreeMap<String, crate::identity::IdentityConfig>,
}

/// A configuration error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ConfigError {
    /// The file (or `"built-in"`).
    pub origin: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The key path, e.g. `listeners[0].bind`, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Key paths with the byte range of their key and value, for error locations.
struct Spans(Vec<(String, Range<usize>)>);

impl Spans {
    fn collect(table: &DeTable<'_>, prefix: &str, out: &mut Vec<(String, Range<usize>)>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            let span = k.span().start.min(v.span().start)..k.span().end.max(v.span().end);
            out.push((path.clone(), span));
            Self::value(v.get_ref(), &path, out);
        }
    }

    fn value(v: &DeValue<'_>, path: &str, out: &mut Vec<(String, Range<usize>)>) {
        match v {
            DeValue::Table(t) => Self::collect(t, path, out),
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    out.push((p.clone(), item.span()));
                    Self::value(item.get_ref(), &p, out);
                }
            }
            _ => {}
        }
    }

    /// The innermost key whose span contains `at`.
    fn key_at(&self, at: usize) -> Option<&(String, Range<usize>)> {
        self.0
            .iter()
            .filter(|(_, r)| r.start <= at && at < r.end.max(r.start + 1))
            .min_by_key(|(_, r)| r.end - r.start)
    }

    fn span_of(&self, key: &str) -> Option<&Range<usize>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, r)| r)
    }
}

fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Config {
    /// The built-in default ([`BUILTIN`]).
    pub fn builtin() -> Self {
        match Self::from_toml(BUILTIN, "built-in") {
            Ok(c) => c,
            Err(e) => unreachable!("the built-in configuration is valid: {e}"),
        }
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::from_toml(&text, &origin)
    }

    /// Parses and validates configuration text; `origin` names it in errors. Relative paths
    /// are kept as written (relative to the working directory).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let err = |at: Option<usize>, key: Option<String>, message: String| ConfigError {
            origin: origin.to_owned(),
            line: at.map(|a| line_of(text, a)),
            key,
            message,
        };
        let table = DeTable::parse(text).map_err(|e| {
            err(
                e.span().map(|s| s.start),
                None,
                format!("syntax error: {}", e.message()),
            )
        })?;
        let mut spans = Vec::new();
        Spans::collect(table.get_ref(), "", &mut spans);
        let spans = Spans(spans);
        let cfg: Self = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| s.start);
            let key = at.and_then(|a| spans.key_at(a)).map(|(k, _)| k.clone());
            err(at, key, e.message().trim().to_owned())
        })?;
        cfg.validate().map_err(|(key, message)| {
            // The nearest key that exists in the text locates the error.
            let mut k = key.as_str();
            let at = loop {
                if let Some(r) = spans.span_of(k) {
                    break Some(r.start);
                }
                match k.rfind(['.', '[']) {
                    Some(i) => k = &k[..i],
                    None => break None,
                }
            };
            err(at, Some(key), message)
        })?;
        Ok(cfg)
    }

    /// Checks what serde cannot: references between sections, networks, uniqueness.
    fn validate(&self) -> Result<(), (String, String)> {
        if self.listeners.is_empty() {
            return Err((
                "listeners".into(),
                "at least one listener is required".into(),
            ));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if self.listeners[..i].iter().any(|o| o.name == l.name) {
                return Err((
                    format!("listeners[{i}].name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            l.check_tls_version()
                .map_err(|(key, message)| (format!("listeners[{i}].{key}"), message))?;
        }
        if self.queue.concurrency == 0 {
            return Err(("queue.concurrency".into(), "must be at least 1".into()));
        }
        if self.queue.retry_initial.is_zero() || self.queue.retry_max < self.queue.retry_initial {
            return Err((
                "queue.retry_max".into(),
                "must be at least queue.retry_initial (which must not be 0)".into(),
            ));
        }
        let check_routes = |key: String, names: &[String]| -> Result<(), (String, String)> {
            for (j, n) in names.iter().enumerate() {
                if !self.routes.contains_key(n) {
                    return Err((
                        format!("{key}[{j}]"),
                        format!("no route named {n:?} (define [routes.{n}])"),
                    ));
                }
            }
            Ok(())
        };
        if self.default_routes.is_empty() && self.rules.is_empty() {
            return Err((
                "default_routes".into(),
                "no route for any recipient: set default_routes or add [[rules]]".into(),
            ));
        }
        check_routes("default_routes".into(), &self.default_routes)?;
        for (i, r) in self.rules.iter().enumerate() {
            if r.routes.is_empty() {
                return Err((
                    format!("rules[{i}].routes"),
                    "a rule needs at least one route".into(),
                ));
            }
            check_routes(format!("rules[{i}].routes"), &r.routes)?;
            for (j, n) in r.client_network.iter().enumerate() {
                crate::router::parse_net(n)
                    .map_err(|e| (format!("rules[{i}].client_network[{j}]"), e))?;
            }
        }
        for (name, route) in &self.routes {
            match route {
                RouteConfig::Local { dir, .. } => {
                    if dir.as_os_str().is_empty() {
                        return Err((format!("routes.{name}.dir"), "must not be empty".into()));
                    }
                }
                RouteConfig::Graph(g) => g
                    .validate(&self.identities)
                    .map_err(|(k, m)| (format!("routes.{name}.{k}"), m))?,
                other => {
                    if let Some((kind, smtp)) = other.smtp() {
                        smtp.validate(kind, &self.identities)
                            .map_err(|(k, m)| (format!("routes.{name}.{k}"), m))?;
                    }
                }
            }
        }
        for (name, id) in &self.identities {
            id.validate()
                .map_err(|(k, m)| (format!("identities.{name}.{k}"), m))?;
        }
        if self.spool.path.as_os_str().is_empty() {
            return Err(("spool.path".into(), "must not be empty".into()));
        }
        self.check_open_relay()
    }

    /// Invariant 3 at start: refuses allowed networks with public addresses on a listener
    /// reachable from elsewhere (not loopback, no `require_auth`), unless
    /// `policy.i_know_this_is_an_open_relay` says so.
    fn check_open_relay(&self) -> Result<(), (String, String)> {
        if self.policy.i_know_this_is_an_open_relay {
            return Ok(());
        }
        let Some(listener) = self
            .listeners
            .iter()
            .find(|l| !l.require_auth && !l.bind.ip().is_loopback())
        else {
            return Ok(());
        };
        for (j, net) in self.policy.allowed_networks.iter().enumerate() {
            if !is_private_network(net) {
                return Err((
                    format!("policy.allowed_networks[{j}]"),
                    format!(
                        "{net} holds public addresses and listener {:?} binds {} (not \
                         loopback, no require_auth): this would be an open relay for them; \
                         list only your LAN networks, set require_auth on the listener, or \
                         set policy.i_know_this_is_an_open_relay = true",
                        listener.name, listener.bind
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Where the local-sink routes write (for the start-up message).
    pub fn local_dirs(&self) -> Vec<PathBuf> {
        self.routes
            .values()
            .filter_map(|r| match r {
                RouteConfig::Local { dir, .. } => Some(dir.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Whether every address of `net` is private, loopback, link-local or shared (CGNAT) space:
/// RFC 1918, RFC 6598, RFC 3927, RFC 4193, and the loopback ranges.
fn is_private_network(net: &ipnet::IpNet) -> bool {
    const PRIVATE: &[&str] = &[
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    ];
    PRIVATE
        .iter()
        .any(|p| p.parse::<ipnet::IpNet>().is_ok_and(|p| p.contains(net)))
}

/// Parses a duration such as `"90s"`, `"15m"`, `"4h"`, `"5d"` or `"250ms"` (a bare number is
/// seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. \"90s\", \"15m\", \"5d\")"))?;
    let secs = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m, h or d)"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// Deserialises a duration string with [`parse_duration`].
pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Deserialises an optional duration string (for `#[serde(default)]` keys) with
/// [`parse_duration`].
pub(crate) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text, "c.toml").unwrap_err().to_string()
    }

    const BASE: &str = "default_routes = [\"out\"]\n[routes.out]\ntype = \"local\"\ndir = \"/tmp/x\"\n[[listeners]]\nname = \"lan\"\nbind = \"127.0.0.1:25\"\n";

    #[test]
    fn builtin_is_valid() {
        let c = Config::builtin();
        assert_eq!(c.listeners[0].bind.to_string(), "127.0.0.1:2525");
        assert_eq!(c.spool.path, PathBuf::from("./postern-data/spool"));
        assert_eq!(c.local_dirs(), vec![PathBuf::from("./postern-data/outbox")]);
        assert_eq!(c.queue.lifetime, Duration::from_secs(5 * 86400));
    }

    #[test]
    fn errors_name_key_and_line() {
        assert!(Config::from_toml(BASE, "c.toml").is_ok());
        let e = err(&BASE.replace("127.0.0.1:25", "0.0.0.0:99999"));
        assert!(e.starts_with("c.toml:7: listeners[0].bind: "), "{e}");
        let e = err(&format!("{BASE}[queue]\nlifetime = \"5 fortnights\"\n"));
        assert!(
            e.starts_with("c.toml:9: queue.lifetime: invalid duration"),
            "{e}"
        );
        let e = err(&format!(
            "{BASE}[[rules]]\nsender = [\"contoso.com\"]\nroutes = [\"nowhere\"]\n"
        ));
        assert!(
            e.starts_with("c.toml:10: rules[0].routes[0]: no route named \"nowhere\""),
            "{e}"
        );
        let e = err(&format!("{BASE}[spool]\nbogus = 1\n"));
        assert!(e.starts_with("c.toml:9: spool.bogus: unknown field"), "{e}");
        let e = err(&BASE.replace("type = \"local\"", "type = \"carrier-pigeon\""));
        assert!(e.starts_with("c.toml:3: routes.out.type: "), "{e}");
        let e = err("[[listeners]\n");
        assert!(e.starts_with("c.toml:1: syntax error"), "{e}");
        let e = err(&BASE.replace("default_routes = [\"out\"]", "default_routes = []"));
        assert!(e.starts_with("c.toml:1: default_routes: no route"), "{e}");
    }

    #[test]
    fn open_relay_on_a_public_address_is_refused_unless_acknowledged() {
        let public = BASE.replace("127.0.0.1:25", "0.0.0.0:25");
        for net in ["0.0.0.0/0", "::/0", "203.0.113.0/24", "192.168.0.0/15"] {
            let text =
                format!("{public}[policy]\nallowed_networks = [\"10.0.0.0/8\", \"{net}\"]\n");
            let e = err(&text);
            assert!(
                e.starts_with("c.toml:9: policy.allowed_networks[1]: ") && e.contains("open relay"),
                "{net}: {e}"
            );
            let ok = format!("{text}i_know_this_is_an_open_relay = true\n");
            assert!(Config::from_toml(&ok, "c.toml").is_ok(), "{net}");
            // Loopback listeners, or AUTH required, are not open to the world.
            assert!(Config::from_toml(&text.replace("0.0.0.0:25", "127.0.0.1:25"), "c").is_ok());
            let auth = text.replace(
                "bind = \"0.0.0.0:25\"\n",
                "bind = \"0.0.0.0:25\"\nrequire_auth = true\n",
            );
            assert!(Config::from_toml(&auth, "c").is_ok(), "{net}");
        }
        let lan = format!(
            "{public}[policy]\nallowed_networks = [\"10.1.0.0/16\", \"192.168.1.7\", \"fd00::/8\"]\n"
        );
        assert!(Config::from_toml(&lan, "c.toml").is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(432_000)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
    }
}
