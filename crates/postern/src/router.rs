//! The router: which routes a recipient of a message goes through.
//!
//! Rules are tried in order; the first whose every given criterion matches decides the route
//! list (empty criteria match anything). A recipient no rule matches takes the default route
//! list, in failover order: the queue starts each recipient on the first route and moves it
//! to the next after a transient failure (see [`crate::queue`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;

use crate::delivery::LocalFormat;
use crate::delivery::graph::GraphRouteConfig;
use crate::delivery::smtp::{SmtpKind, SmtpRouteConfig};
use crate::spool::Envelope;

/// One named route (a `[routes.<name>]` table). `type` selects the variant.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum RouteConfig {
    /// `type = "local"`: write messages to a directory (`.eml` + `.json`, or a Maildir).
    Local {
        /// The output directory.
        dir: PathBuf,
        /// `"eml"` (default) or `"maildir"`.
        #[serde(default)]
        format: LocalFormat,
    },
    /// `type = "smtp"`: any SMTP smart host.
    Smtp(SmtpRouteConfig),
    /// `type = "client_submission"`: Exchange Online SMTP AUTH (`smtp.office365.com:587`).
    ClientSubmission(SmtpRouteConfig),
    /// `type = "hve"`: High Volume Email (`smtp.hve.mx.microsoft:587`).
    Hve(SmtpRouteConfig),
    /// `type = "acs"`: Azure Communication Services (`smtp.azurecomm.net:587`).
    Acs(SmtpRouteConfig),
    /// `type = "connector"`: the tenant MX through an inbound connector.
    Connector(SmtpRouteConfig),
    /// `type = "direct_send"`: the tenant MX, the tenant's accepted domains only.
    DirectSend(SmtpRouteConfig),
    /// `type = "graph"`: Microsoft Graph `sendMail` with the MIME body.
    Graph(GraphRouteConfig),
}

impl RouteConfig {
    /// The SMTP route kind and table, for the SMTP-based types.
    pub fn smtp(&self) -> Option<(SmtpKind, &SmtpRouteConfig)> {
        match self {
            Self::Local { .. } | Self::Graph(_) => None,
            Self::Smtp(c) => Some((SmtpKind::Smtp, c)),
            Self::ClientSubmission(c) => Some((SmtpKind::ClientSubmission, c)),
            Self::Hve(c) => Some((SmtpKind::Hve, c)),
            Self::Acs(c) => Some((SmtpKind::Acs, c)),
            Self::Connector(c) => Some((SmtpKind::Connector, c)),
            Self::DirectSend(c) => Some((SmtpKind::DirectSend, c)),
        }
    }
}

/// One rule (a `[[rules]]` entry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RuleConfig {
    /// A name for logs.
    #[serde(default)]
    pub name: Option<String>,
    /// Envelope sender patterns: an address (`scanner@contoso.com`), a domain
    /// (`contoso.com`), or a glob with `*` and `?` over either (`*@*.contoso.com`); `<>` is the
    /// null sender. Case-insensitive.
    #[serde(default)]
    pub sender: Vec<String>,
    /// Recipient domain patterns (glob, case-insensitive).
    #[serde(default)]
    pub recipient_domain: Vec<String>,
    /// Listener names.
    #[serde(default)]
    pub listener: Vec<String>,
    /// Client networks in CIDR notation (`192.0.2.0/24`, `2001:db8::/32`).
    #[serde(default)]
    pub client_network: Vec<String>,
    /// Device account names (authenticated sessions).
    #[serde(default)]
    pub account: Vec<String>,
    /// The route list, by name, in failover order.
    pub routes: Vec<String>,
}

#[derive(Debug)]
struct Rule {
    name: Option<String>,
    sender: Vec<String>,
    recipient_domain: Vec<String>,
    listener: Vec<String>,
    client_network: Vec<IpNet>,
    account: Vec<String>,
    routes: Vec<Arc<str>>,
}

/// Chooses route lists for recipients.
#[derive(Debug)]
pub struct Router {
    rules: Vec<Rule>,
    default: Vec<Arc<str>>,
    /// Routes that take only some recipient domains (Direct Send), by route name.
    restricted: BTreeMap<Arc<str>, Vec<String>>,
}

impl Router {
    /// Builds a router. Fails with `(index of the rule, message)` on a bad network.
    pub fn new(rules: &[RuleConfig], default: &[String]) -> Result<Self, (usize, String)> {
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let mut nets = Vec::new();
            for n in &r.client_network {
                nets.push(parse_net(n).map_err(|e| (i, e))?);
            }
            out.push(Rule {
                name: r.name.clone(),
                sender: r.sender.iter().map(|s| s.to_ascii_lowercase()).collect(),
                recipient_domain: r
                    .recipient_domain
                    .iter()
                    .map(|s| s.to_ascii_lowercase())
                    .collect(),
                listener: r.listener.clone(),
                client_network: nets,
                account: r.account.clone(),
                routes: r.routes.iter().map(|s| Arc::from(s.as_str())).collect(),
            });
        }
        Ok(Self {
            rules: out,
            default: default.iter().map(|s| Arc::from(s.as_str())).collect(),
            restricted: BTreeMap::new(),
        })
    }

    /// Restricts route `route` to recipients in `domains` (Direct Send: the tenant's
    /// accepted domains); see [`Router::check_recipient`].
    pub fn restrict_route(&mut self, route: &str, domains: Vec<String>) {
        let domains = domains
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        self.restricted.insert(Arc::from(route), domains);
    }

    /// Whether recipient `rcpt` of `env` (the envelope so far, this recipient included)
    /// can be routed at all; the inbound session calls it at `RCPT` time and refuses with
    /// `550 5.7.1` and the sentence returned.
    pub fn check_recipient(&self, env: &Envelope, rcpt: usize) -> Result<(), String> {
        let Some(route) = self.routes_for(env, rcpt).first() else {
            return Ok(());
        };
        let Some(domains) = self.restricted.get(route) else {
            return Ok(());
        };
        let addr = env.recipients[rcpt].address.to_ascii_lowercase();
        let domain = addr.rsplit_once('@').map_or("", |(_, d)| d);
        if domains.iter().any(|d| d == domain) {
            Ok(())
        } else {
            Err(format!(
                "Direct Send only reaches the tenant's own domains ({}); <{}> is outside them, \
                 so this relay cannot deliver it",
                domains.join(", "),
                env.recipients[rcpt].address
            ))
        }
    }

    /// The route list for recipient `rcpt` of `env` (empty: no route).
    pub fn routes_for(&self, env: &Envelope, rcpt: usize) -> &[Arc<str>] {
        let addr = env.recipients[rcpt].address.to_ascii_lowercase();
        let domain = addr.rsplit_once('@').map_or("", |(_, d)| d);
        let sender = env
            .mail_from
            .as_deref()
            .map_or_else(|| "<>".to_owned(), str::to_ascii_lowercase);
        let sender_domain = sender.rsplit_once('@').map_or("", |(_, d)| d);
        let ip: IpAddr = env.client.addr.ip();
        for rule in &self.rules {
            let sender_ok = rule.sender.is_empty()
                || rule.sender.iter().any(|p| {
                    if p.contains('@') || p == "<>" {
                        glob(p, &sender)
                    } else {
                        glob(p, sender_domain)
                    }
                });
            let domain_ok = rule.recipient_domain.is_empty()
                || rule.recipient_domain.iter().any(|p| glob(p, domain));
            let listener_ok =
                rule.listener.is_empty() || rule.listener.contains(&env.client.listener);
            let net_ok = rule.client_network.is_empty()
                || rule.client_network.iter().any(|n| n.contains(&ip));
            let account_ok = rule.account.is_empty()
                || env
                    .client
                    .auth_user
                    .as_ref()
                    .is_some_and(|u| rule.account.contains(u));
            if sender_ok && domain_ok && listener_ok && net_ok && account_ok {
                tracing::trace!(rule = rule.name.as_deref().unwrap_or("-"), rcpt = %addr, "rule matched");
                return &rule.routes;
            }
        }
        &self.default
    }
}

/// Parses a CIDR network, or a bare address as a host network.
pub(crate) fn parse_net(s: &str) -> Result<IpNet, String> {
    crate::inbound::parse_network(s)
        .ok_or_else(|| format!("invalid network {s:?} (expected CIDR like \"192.0.2.0/24\")"))
}

/// Glob match with `*` (any run) and `?` (one character); both inputs already lower-case.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The routes by name, as configured.
pub type Routes = BTreeMap<String, RouteConfig>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{ClientInfo, Recipient};

    fn env(from: Option<&str>, to: &str, ip: &str) -> Envelope {
        let mut client = ClientInfo::new(format!("{ip}:1000").parse().unwrap(), "h", "lan");
        client.auth_user = Some("printer1".into());
        Envelope::new(from.map(Into::into), vec![Recipient::new(to)], client)
    }

    fn rule(f: impl FnOnce(&mut RuleConfig), route: &str) -> RuleConfig {
        let mut r = RuleConfig {
            routes: vec![route.into()],
            ..RuleConfig::default()
        };
        f(&mut r);
        r
    }

    #[test]
    fn glob_matches() {
        assert!(glob("*.contoso.com", "mail.contoso.com"));
        assert!(!glob("*.contoso.com", "contoso.com"));
        assert!(glob("scan?@*", "scan1@x"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "acd"));
    }

    #[test]
    fn first_matching_rule_wins_else_default() {
        let rules = vec![
            rule(|r| r.sender = vec!["<>".into()], "bounces"),
            rule(|r| r.sender = vec!["Contoso.com".into()], "by-domain"),
            rule(|r| r.sender = vec!["*@*.fabrikam.com".into()], "by-glob"),
            rule(
                |r| r.recipient_domain = vec!["partner.example".into()],
                "partner",
            ),
            rule(|r| r.client_network = vec!["10.0.0.0/8".into()], "tenlan"),
            rule(|r| r.account = vec!["printer1".into()], "account"),
        ];
        let router = Router::new(&rules, &["default".into()]).unwrap();
        let pick = |e: &Envelope| router.routes_for(e, 0)[0].to_string();
        assert_eq!(pick(&env(None, "a@b.c", "192.0.2.1")), "bounces");
        assert_eq!(
            pick(&env(Some("X@CONTOSO.COM"), "a@b.c", "192.0.2.1")),
            "by-domain"
        );
        assert_eq!(
            pick(&env(Some("x@eu.fabrikam.com"), "a@b.c", "192.0.2.1")),
            "by-glob"
        );
        assert_eq!(
            pick(&env(Some("x@y.z"), "a@Partner.Example", "192.0.2.1")),
            "partner"
        );
        assert_eq!(pick(&env(Some("x@y.z"), "a@b.c", "10.1.2.3")), "tenlan");
        assert_eq!(pick(&env(Some("x@y.z"), "a@b.c", "192.0.2.1")), "account");
        let router = Router::new(&rules[..5], &["default".into()]).unwrap();
        assert_eq!(
            router.routes_for(&env(Some("x@y.z"), "a@b.c", "192.0.2.1"), 0)[0].as_ref(),
            "default"
        );
        assert!(
            Router::new(
                &[rule(|r| r.client_network = vec!["nope".into()], "x")],
                &[]
            )
            .is_err()
        );
    }
}
