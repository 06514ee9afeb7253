//! The configuration of the SMTP-based routes (`smtp`, `client_submission`, `hve`, `acs`,
//! `connector`, `direct_send`): one table shape, with per-type defaults and checks.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::identity::IdentityConfig;

/// Client submission's endpoint (spec A.1).
pub const CLIENT_SUBMISSION_HOST: &str = "smtp.office365.com";
/// High Volume Email's endpoint (spec A.1, E.4).
pub const HVE_HOST: &str = "smtp.hve.mx.microsoft";
/// Azure Communication Services' endpoint (spec A.1, E.4).
pub const ACS_HOST: &str = "smtp.azurecomm.net";

/// Which kind of SMTP route a table describes (its `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SmtpKind {
    /// `type = "smtp"`: any smart host.
    Smtp,
    /// `type = "client_submission"`: `smtp.office365.com:587`, STARTTLS, XOAUTH2.
    ClientSubmission,
    /// `type = "hve"`: High Volume Email, `smtp.hve.mx.microsoft:587`.
    Hve,
    /// `type = "acs"`: Azure Communication Services, `smtp.azurecomm.net:587`.
    Acs,
    /// `type = "connector"`: the tenant MX on port 25 through an inbound connector.
    Connector,
    /// `type = "direct_send"`: the tenant MX on port 25, the tenant's own domains only.
    DirectSend,
}

impl SmtpKind {
    /// The `type` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Smtp => "smtp",
            Self::ClientSubmission => "client_submission",
            Self::Hve => "hve",
            Self::Acs => "acs",
            Self::Connector => "connector",
            Self::DirectSend => "direct_send",
        }
    }

    fn default_host(self) -> Option<&'static str> {
        match self {
            Self::ClientSubmission => Some(CLIENT_SUBMISSION_HOST),
            Self::Hve => Some(HVE_HOST),
            Self::Acs => Some(ACS_HOST),
            _ => None,
        }
    }

    fn default_port(self, tls: TlsMode) -> u16 {
        match (self, tls) {
            (Self::Connector | Self::DirectSend, _) => 25,
            (_, TlsMode::Implicit) => 465,
            (Self::Smtp, TlsMode::None) => 25,
            _ => 587,
        }
    }

    fn default_tls(self) -> TlsMode {
        match self {
            Self::DirectSend | Self::Smtp => TlsMode::Opportunistic,
            _ => TlsMode::Required,
        }
    }

    fn default_auth(self) -> AuthMode {
        match self {
            Self::ClientSubmission => AuthMode::Xoauth2,
            Self::Hve | Self::Acs => AuthMode::Login,
            _ => AuthMode::None,
        }
    }

    fn uses_mx(self) -> bool {
        matches!(self, Self::Connector | Self::DirectSend)
    }
}

/// How TLS is used on a route (`tls = "..."`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TlsMode {
    /// STARTTLS is mandatory; a server that does not offer it is a (transient) failure.
    Required,
    /// STARTTLS when offered (the certificate is still verified once TLS is used).
    Opportunistic,
    /// Never STARTTLS (test sinks, a smart host on the same machine).
    None,
    /// TLS from the first byte (port 465).
    Implicit,
}

/// How a route authenticates (`auth = "..."`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthMode {
    /// No AUTH.
    None,
    /// AUTH PLAIN with a password.
    Plain,
    /// AUTH LOGIN with a password.
    Login,
    /// AUTH XOAUTH2 with a token of the route's `identity`.
    Xoauth2,
}

/// One SMTP route table (every key optional; which apply depends on `type`, see
/// `docs/configuration.md`). Durations are strings such as `"30s"` or `"5m"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SmtpRouteConfig {
    /// The server's host name (or address). Default per type; for `connector` and
    /// `direct_send` it pins the host instead of resolving the tenant MX.
    #[serde(default)]
    pub host: Option<String>,
    /// The port. Default 587 (465 with implicit TLS; 25 for `connector`, `direct_send`, and
    /// `smtp` without TLS).
    #[serde(default)]
    pub port: Option<u16>,
    /// `"required"`, `"opportunistic"`, `"none"` or `"implicit"`. Default `required`
    /// (`opportunistic` for `smtp` and `direct_send`).
    #[serde(default)]
    pub tls: Option<TlsMode>,
    /// The name the server certificate must carry. Default: the host name.
    #[serde(default)]
    pub tls_name: Option<String>,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM) presented in the TLS handshake (certificate connector).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// `"none"`, `"plain"`, `"login"` or `"xoauth2"`. Default `xoauth2` for
    /// `client_submission`, `login` for `hve` and `acs`, else `none`.
    #[serde(default)]
    pub auth: Option<AuthMode>,
    /// The AUTH user name (PLAIN/LOGIN; for XOAUTH2 the `user=`). Default: `mailbox`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (PLAIN/LOGIN).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password (PLAIN/LOGIN).
    #[serde(default)]
    pub password_env: Option<String>,
    /// The `[identities.<name>]` whose tokens XOAUTH2 presents.
    #[serde(default)]
    pub identity: Option<String>,
    /// The sending mailbox: XOAUTH2's `user=`, and the address `sender_rewrite` uses.
    #[serde(default)]
    pub mailbox: Option<String>,
    /// Rewrite the envelope sender and the `From:` header to `mailbox` (the original kept in
    /// `Reply-To:` and `X-Original-From:`). Default `false` (keep; rely on Send As).
    #[serde(default)]
    pub sender_rewrite: bool,
    /// ACS: the Communication Services resource name.
    #[serde(default)]
    pub resource: Option<String>,
    /// ACS: the Entra application id (default: the identity's client id).
    #[serde(default)]
    pub app_id: Option<String>,
    /// ACS: the Entra tenant id (default: the identity's tenant).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// `connector` / `direct_send`: the tenant's domain whose MX is resolved.
    #[serde(default)]
    pub tenant_domain: Option<String>,
    /// `connector` / `direct_send`: use `<domain-with-dashes>.mail.protection.outlook.com`
    /// instead of looking the MX up. Default `false`.
    #[serde(default)]
    pub derive_mx: bool,
    /// Name servers for the MX lookup (`"10.0.0.53"` or `"10.0.0.53:5353"`). Default: the
    /// system resolver.
    #[serde(default)]
    pub name_servers: Vec<String>,
    /// `direct_send`: the tenant's accepted domains; other recipients are refused at RCPT.
    /// Default: `[tenant_domain]`.
    #[serde(default)]
    pub accepted_domains: Vec<String>,
    /// The name given in EHLO. Default: the relay's `hostname`.
    #[serde(default)]
    pub helo: Option<String>,
    /// Connections open at once on this route. Default 3 (Exchange Online's per-mailbox
    /// limit), 10 for `smtp`, `connector` and `direct_send`.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Idle connections kept for the next message (each ended its last transaction cleanly,
    /// so it is reused without `RSET`). Default 1; 0
    /// closes each connection after its message.
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// How long an idle connection is kept. Default `"30s"`.
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// TCP connect timeout, per address. Default `"30s"`.
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Greeting and TLS handshake. Default `"5m"` (RFC 5321 §4.5.3.2.1).
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub greeting_timeout: Option<Duration>,
    /// EHLO, AUTH, MAIL, RCPT, DATA, RSET replies. Default `"5m"` (§4.5.3.2.2-4).
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub command_timeout: Option<Duration>,
    /// Each write of message data. Default `"3m"` (§4.5.3.2.5).
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub data_timeout: Option<Duration>,
    /// The reply to the end of data. Default `"10m"` (§4.5.3.2.6).
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub data_end_timeout: Option<Duration>,
    /// Messages per `message_window` for this route's sending identity; more are queued.
    /// Default 30 for `client_submission` (Exchange Online's limit), else no limit; `0`: no
    /// limit.
    #[serde(default)]
    pub max_messages_per_minute: Option<u32>,
    /// Recipients per `recipient_window` (sliding) for this route's sending identity; more
    /// are queued. Default 10,000 for `client_submission`, else no limit; `0`: no limit.
    #[serde(default)]
    pub max_recipients_per_day: Option<u32>,
    /// The window of `max_messages_per_minute`. Default `"1m"`.
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub message_window: Option<Duration>,
    /// The window of `max_recipients_per_day`, and the pause after `554 5.2.0
    /// SubmissionQuotaExceededException`. Default `"24h"`.
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub recipient_window: Option<Duration>,
    /// The pause of the sending identity after a throttling reply that names no delay
    /// (`432 4.3.2`, `451 4.7.500`). Default `"1m"`.
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub throttle_pause: Option<Duration>,
}

/// Parses a name server (`ip` or `ip:port`, IPv6 as `[::1]:53`).
pub(crate) fn parse_name_server(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            format!("invalid name server {s:?} (expected \"10.0.0.53\" or \"10.0.0.53:53\")")
        })
}

/// Timeouts of one route, resolved.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) greeting: Duration,
    pub(crate) command: Duration,
    pub(crate) data: Duration,
    pub(crate) data_end: Duration,
}

impl SmtpRouteConfig {
    pub(crate) fn tls_mode(&self, kind: SmtpKind) -> TlsMode {
        self.tls.unwrap_or_else(|| kind.default_tls())
    }

    pub(crate) fn auth_mode(&self, kind: SmtpKind) -> AuthMode {
        self.auth.unwrap_or_else(|| kind.default_auth())
    }

    pub(crate) fn port(&self, kind: SmtpKind) -> u16 {
        self.port
            .unwrap_or_else(|| kind.default_port(self.tls_mode(kind)))
    }

    pub(crate) fn host(&self, kind: SmtpKind) -> Option<String> {
        self.host
            .clone()
            .or_else(|| kind.default_host().map(str::to_owned))
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.connect_timeout.unwrap_or(Duration::from_secs(30)),
            greeting: self.greeting_timeout.unwrap_or(Duration::from_secs(300)),
            command: self.command_timeout.unwrap_or(Duration::from_secs(300)),
            data: self.data_timeout.unwrap_or(Duration::from_secs(180)),
            data_end: self.data_end_timeout.unwrap_or(Duration::from_secs(600)),
        }
    }

    pub(crate) fn max_connections(&self, kind: SmtpKind) -> usize {
        self.max_connections.unwrap_or(match kind {
            SmtpKind::Smtp | SmtpKind::Connector | SmtpKind::DirectSend => 10,
            _ => 3,
        })
    }

    /// The sending identity of route `route` and its limits (see [`crate::ratelimit`]):
    /// the mailbox for client submission, the account for HVE, the resource for ACS, the
    /// route itself otherwise.
    pub fn identity_limits(
        &self,
        kind: SmtpKind,
        route: &str,
        identity: Option<&IdentityConfig>,
    ) -> crate::ratelimit::IdentityLimits {
        use crate::ratelimit::{
            DEFAULT_MESSAGE_WINDOW, DEFAULT_RECIPIENT_WINDOW, EXO_MESSAGES_PER_MINUTE,
            EXO_RECIPIENTS_PER_DAY, IdentityLimits,
        };
        let user = self
            .auth_user(kind, identity)
            .map(|u| u.to_ascii_lowercase());
        let key = match (kind, user) {
            (SmtpKind::ClientSubmission, Some(u)) => format!("mailbox:{u}"),
            (SmtpKind::Hve, Some(u)) => format!("hve:{u}"),
            (SmtpKind::Acs, _) if self.resource.is_some() => {
                format!("acs:{}", self.resource.as_deref().unwrap_or_default())
            }
            _ => format!("route:{route}"),
        };
        let (msgs, rcpts) = match kind {
            SmtpKind::ClientSubmission => (EXO_MESSAGES_PER_MINUTE, EXO_RECIPIENTS_PER_DAY),
            _ => (0, 0),
        };
        IdentityLimits::new(key)
            .messages(
                self.max_messages_per_minute.unwrap_or(msgs),
                self.message_window.unwrap_or(DEFAULT_MESSAGE_WINDOW),
            )
            .recipients(
                self.max_recipients_per_day.unwrap_or(rcpts),
                self.recipient_window.unwrap_or(DEFAULT_RECIPIENT_WINDOW),
            )
    }

    /// `direct_send`'s accepted domains, lower-case.
    pub fn accepted_domains(&self) -> Vec<String> {
        if self.accepted_domains.is_empty() {
            self.tenant_domain
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect()
        } else {
            self.accepted_domains
                .iter()
                .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                .collect()
        }
    }

    /// The ACS SMTP user name `<resource>|<app id>|<tenant id>`, from the route and its
    /// identity.
    pub(crate) fn acs_username(&self, identity: Option<&IdentityConfig>) -> Option<String> {
        let resource = self.resource.as_deref()?;
        let app = self
            .app_id
            .as_deref()
            .or_else(|| identity.map(|i| i.client_id.as_str()))?;
        let tenant = self
            .tenant_id
            .as_deref()
            .or_else(|| identity.map(|i| i.tenant.as_str()))?;
        Some(format!("{resource}|{app}|{tenant}"))
    }

    /// The AUTH user name: `username`, else (ACS) the built ACS name, else `mailbox`.
    pub(crate) fn auth_user(
        &self,
        kind: SmtpKind,
        identity: Option<&IdentityConfig>,
    ) -> Option<String> {
        if let Some(u) = &self.username {
            return Some(u.clone());
        }
        if kind == SmtpKind::Acs {
            return self.acs_username(identity);
        }
        self.mailbox.clone()
    }

    /// Checks one route against the identities; `Err((key suffix, message))`.
    pub(crate) fn validate(
        &self,
        kind: SmtpKind,
        identities: &std::collections::BTreeMap<String, IdentityConfig>,
    ) -> Result<(), (&'static str, String)> {
        let tls = self.tls_mode(kind);
        let auth = self.auth_mode(kind);
        if kind.uses_mx() {
            if self.host.is_none() && self.tenant_domain.is_none() {
                return Err((
                    "tenant_domain",
                    "give tenant_domain (its MX is used) or pin a host".into(),
                ));
            }
        } else if self.host(kind).is_none() {
            return Err(("host", "required for type = \"smtp\"".into()));
        }
        for n in &self.name_servers {
            parse_name_server(n).map_err(|e| ("name_servers", e))?;
        }
        if matches!(
            kind,
            SmtpKind::ClientSubmission | SmtpKind::Hve | SmtpKind::Acs
        ) && matches!(tls, TlsMode::None | TlsMode::Opportunistic)
        {
            return Err((
                "tls",
                format!(
                    "{} needs TLS: use \"required\" or \"implicit\"",
                    kind.as_str()
                ),
            ));
        }
        if kind == SmtpKind::Connector && tls != TlsMode::Required && tls != TlsMode::Implicit {
            return Err(("tls", "a connector route needs tls = \"required\"".into()));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err((
                "client_key",
                "client_cert and client_key go together".into(),
            ));
        }
        if kind.uses_mx() && auth != AuthMode::None {
            return Err((
                "auth",
                "the tenant MX takes no AUTH; use a connector (client certificate or IP)".into(),
            ));
        }
        if kind == SmtpKind::DirectSend && self.accepted_domains().is_empty() {
            return Err((
                "accepted_domains",
                "direct_send needs the tenant's accepted domains".into(),
            ));
        }
        if self.sender_rewrite && self.mailbox.is_none() {
            return Err((
                "mailbox",
                "sender_rewrite needs the mailbox to send as".into(),
            ));
        }
        let identity = match &self.identity {
            Some(name) => Some(identities.get(name).ok_or_else(|| {
                (
                    "identity",
                    format!("no identity named {name:?} (define [identities.{name}])"),
                )
            })?),
            None => None,
        };
        match auth {
            AuthMode::None => {}
            AuthMode::Xoauth2 => {
                if identity.is_none() {
                    return Err(("identity", "auth = \"xoauth2\" needs an identity".into()));
                }
                if self.auth_user(kind, identity).is_none() {
                    return Err((
                        "mailbox",
                        "XOAUTH2 needs the mailbox to send as (its user=)".into(),
                    ));
                }
            }
            AuthMode::Plain | AuthMode::Login => {
                if self.auth_user(kind, identity).is_none() {
                    return Err((
                        if kind == SmtpKind::Acs {
                            "resource"
                        } else {
                            "username"
                        },
                        if kind == SmtpKind::Acs {
                            "ACS needs resource (and app_id/tenant_id or an identity) for its \
                             <resource>|<app id>|<tenant id> user name"
                                .into()
                        } else {
                            "a password login needs username (or mailbox)".into()
                        },
                    ));
                }
                let acs_secret = kind == SmtpKind::Acs
                    && identity.is_some_and(|i| {
                        i.client_secret_file.is_some() || i.client_secret_env.is_some()
                    });
                if self.password_file.is_none() && self.password_env.is_none() && !acs_secret {
                    return Err((
                        "password_file",
                        "a password login needs password_file or password_env".into(),
                    ));
                }
                if kind == SmtpKind::Hve && auth == AuthMode::Plain {
                    return Err(("auth", "HVE offers LOGIN and XOAUTH2, not PLAIN".into()));
                }
            }
        }
        Ok(())
    }
}
