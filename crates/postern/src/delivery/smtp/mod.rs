//! The SMTP routes: an outbound SMTP client on postern-smtp's session, and the
//! [`SmtpTransport`] every SMTP-based route type (`smtp`, `client_submission`, `hve`, `acs`,
//! `connector`, `direct_send`) is built as.
//!
//! ```text
//!  deliver(msg, rcpts) ─▶ pooled connection or open: connect ─▶ 220 ─▶ EHLO ─▶ STARTTLS
//!     ─▶ EHLO ─▶ AUTH (XOAUTH2 token / LOGIN / PLAIN) ─▶ SIZE / SMTPUTF8 / 8BITMIME checks
//!     ─▶ MAIL ─▶ RCPT × n ─▶ DATA (pipelined when offered) ─▶ body (dot-stuffed, streamed
//!     from the spool, headers rewritten if asked) ─▶ final reply ─▶ one outcome per recipient
//! ```
//!
//! Every reply is classified with postern-ndr. Failures before `MAIL` (connect, TLS, AUTH,
//! tokens, timeouts) concern the route, not the message: they are transient for every
//! recipient (the message waits for the operator's fix, and is bounced only when its
//! lifetime runs out), and when the classifier says an operator must act, the remedy is
//! logged at error level. A `535 5.7.3` to XOAUTH2 invalidates the cached token and the
//! connection is tried once more with a fresh one. A pooled connection is reused without a
//! `RSET` (its last transaction ended cleanly); if the server had closed it and answers
//! nothing, the message goes out on a new connection in the same attempt.

mod config;
mod conn;
mod probe;
mod tls;
mod transcript;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use postern_mx::{MxResolver, ResolverSettings};
use postern_ndr::{Class, classify};
use postern_sasl::Mechanism;
use postern_smtp::{
    Body, Command, EnhancedCode, MailParams, Mailbox, Notify, Orcpt, ParseOptions, Path,
    RcptParams, Reply, ReplyCode, Ret,
};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

pub use self::config::{
    ACS_HOST, AuthMode, CLIENT_SUBMISSION_HOST, HVE_HOST, SmtpKind, SmtpRouteConfig, TlsMode,
};
use self::conn::{AuthPlan, Conn, ConnError, SessionSettings, Target, reply_text};
pub use self::probe::{ProbeError, ProbeReport, ProbeStage};
pub use self::transcript::{REDACTED, TRACE_TARGET, Transcript, TranscriptSide};
use super::rewrite::{MAX_HEADER_BLOCK, header_block_len, rewrite_headers};
use super::{DeliveryFuture, DeliveryReport, RcptOutcome, Transport};
use crate::identity::{ACS_SCOPE, Identities};
use crate::spool::{BodyType, SpooledMessage};

pub(crate) use self::config::parse_name_server;

/// Why an SMTP route could not be built (read at start: bad files, unknown identity).
#[derive(Debug, thiserror::Error)]
#[error("route {route:?}: {message}")]
#[non_exhaustive]
pub struct BuildError {
    /// The route's name.
    pub route: String,
    /// What is wrong.
    pub message: String,
}

/// Where a route connects.
enum Endpoint {
    /// A fixed host (and port).
    Host { host: String, port: u16 },
    /// The tenant MX of a domain, looked up (or derived) then resolved.
    Mx {
        domain: String,
        derive: bool,
        port: u16,
        resolver: Box<MxResolver>,
    },
}

/// An SMTP route: one upstream, its TLS and AUTH settings, a small pool of idle connections.
pub struct SmtpTransport {
    name: String,
    kind: SmtpKind,
    endpoint: Endpoint,
    tls_name: Option<String>,
    session: SessionSettings,
    rewrite_to: Option<String>,
    pauses: ThrottlePauses,
    pool: Mutex<Vec<Conn>>,
    pool_size: usize,
    idle_timeout: Duration,
    connections: Semaphore,
}

impl std::fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn read_secret(
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> Result<Option<String>, String> {
    if let Some(path) = file {
        let s = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read password_file {}: {e}", path.display()))?;
        return Ok(Some(s.trim_end_matches(['\r', '\n']).to_owned()));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| format!("environment variable {var} is not set"));
    }
    Ok(None)
}

impl SmtpTransport {
    /// Builds route `name` of type `kind`: reads its password, CA, client certificate and
    /// identity now, so a broken file fails at start. `hostname` is the EHLO name unless
    /// the route sets `helo`.
    pub fn build(
        name: &str,
        kind: SmtpKind,
        cfg: &SmtpRouteConfig,
        identities: &Identities,
        identity_configs: &BTreeMap<String, crate::identity::IdentityConfig>,
        hostname: &str,
    ) -> Result<Self, BuildError> {
        let err = |message: String| BuildError {
            route: name.to_owned(),
            message,
        };
        cfg.validate(kind, identity_configs)
            .map_err(|(k, m)| err(format!("{k}: {m}")))?;
        let tls_mode = cfg.tls_mode(kind);
        let port = cfg.port(kind);
        let endpoint = match (cfg.host(kind), &cfg.tenant_domain) {
            (Some(host), _) => Endpoint::Host { host, port },
            (None, Some(domain)) => {
                let resolver = if cfg.name_servers.is_empty() {
                    MxResolver::system()
                } else {
                    let servers = cfg
                        .name_servers
                        .iter()
                        .map(|s| parse_name_server(s))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(err)?;
                    MxResolver::with_name_servers(&servers, &ResolverSettings::default())
                }
                .map_err(|e| err(format!("resolver: {e}")))?;
                Endpoint::Mx {
                    domain: domain.clone(),
                    derive: cfg.derive_mx,
                    port,
                    resolver: Box::new(resolver),
                }
            }
            (None, None) => return Err(err("no host".into())),
        };
        let client_cert = cfg.client_cert.as_deref().zip(cfg.client_key.as_deref());
        let tls_config = tls::client_config(cfg.ca_file.as_deref(), client_cert).map_err(err)?;
        let identity_cfg = cfg.identity.as_ref().and_then(|n| identity_configs.get(n));
        let user = cfg.auth_user(kind, identity_cfg);
        let auth = match cfg.auth_mode(kind) {
            AuthMode::None => AuthPlan::None,
            AuthMode::Xoauth2 => {
                let id = cfg.identity.as_deref().unwrap_or_default();
                let scope = (kind == SmtpKind::Acs).then_some(ACS_SCOPE);
                let source = identities
                    .source(id, cfg.mailbox.as_deref(), scope)
                    .ok_or_else(|| err(format!("identity: no identity named {id:?}")))?;
                AuthPlan::Token {
                    user: user.unwrap_or_default(),
                    source,
                }
            }
            mode @ (AuthMode::Plain | AuthMode::Login) => {
                let mut password =
                    read_secret(cfg.password_file.as_deref(), cfg.password_env.as_deref())
                        .map_err(err)?;
                if password.is_none() && kind == SmtpKind::Acs {
                    // ACS: the password is the Entra app's client secret.
                    let id = identity_cfg;
                    password = read_secret(
                        id.and_then(|i| i.client_secret_file.as_deref()),
                        id.and_then(|i| i.client_secret_env.as_deref()),
                    )
                    .map_err(err)?;
                }
                let password = password.ok_or_else(|| err("no password".into()))?;
                AuthPlan::Password {
                    user: user.unwrap_or_default(),
                    password: postern_sasl::Password::new(password),
                    allowed: vec![if mode == AuthMode::Plain {
                        Mechanism::Plain
                    } else {
                        Mechanism::Login
                    }],
                }
            }
        };
        let max_connections = cfg.max_connections(kind).max(1);
        Ok(Self {
            name: name.to_owned(),
            kind,
            endpoint,
            tls_name: cfg.tls_name.clone(),
            session: SessionSettings {
                tls: tls_mode,
                tls_config,
                helo: cfg.helo.clone().unwrap_or_else(|| hostname.to_owned()),
                timeouts: cfg.timeouts(),
                auth,
                transcript: None,
            },
            rewrite_to: cfg.sender_rewrite.then(|| cfg.mailbox.clone()).flatten(),
            pauses: ThrottlePauses {
                throttle: cfg
                    .throttle_pause
                    .unwrap_or(crate::ratelimit::DEFAULT_THROTTLE_PAUSE),
                quota: cfg
                    .recipient_window
                    .unwrap_or(crate::ratelimit::DEFAULT_RECIPIENT_WINDOW),
            },
            pool: Mutex::new(Vec::new()),
            pool_size: cfg.pool_size.unwrap_or(1),
            idle_timeout: cfg.idle_timeout.unwrap_or(Duration::from_secs(30)),
            connections: Semaphore::new(max_connections),
        })
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn targets(&self) -> Result<Vec<Target>, ConnError> {
        match &self.endpoint {
            Endpoint::Host { host, port } => {
                let tls_name = self.tls_name.clone().unwrap_or_else(|| host.clone());
                let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
                    vec![SocketAddr::new(ip, *port)]
                } else {
                    let lookup = tokio::time::timeout(
                        self.session.timeouts.connect,
                        tokio::net::lookup_host((host.as_str(), *port)),
                    )
                    .await
                    .map_err(|_| ConnError::Resolve(format!("{host}: timed out")))?
                    .map_err(|e| ConnError::Resolve(format!("{host}: {e}")))?;
                    lookup.collect()
                };
                Ok(addrs
                    .into_iter()
                    .map(|addr| Target {
                        host: host.clone(),
                        addr,
                        tls_name: tls_name.clone(),
                    })
                    .collect())
            }
            Endpoint::Mx {
                domain,
                derive,
                port,
                resolver,
            } => {
                let hosts: Vec<(String, Vec<IpAddr>)> = if *derive {
                    let host = postern_mx::exo::tenant_mx_host(domain)
                        .map_err(|e| ConnError::Resolve(e.to_string()))?;
                    let ips = resolver
                        .addresses(&host)
                        .await
                        .map_err(|e| ConnError::Resolve(format!("{host}: {e}")))?;
                    vec![(host, ips)]
                } else {
                    let mx = resolver
                        .lookup_mx(domain)
                        .await
                        .map_err(|e| ConnError::Resolve(format!("MX of {domain}: {e}")))?;
                    if mx.null_mx {
                        return Err(ConnError::Resolve(format!(
                            "{domain} publishes a null MX: it takes no mail"
                        )));
                    }
                    mx.hosts
                        .into_iter()
                        .map(|h| (h.exchange, h.addresses))
                        .collect()
                };
                Ok(hosts
                    .into_iter()
                    .flat_map(|(host, ips)| {
                        let tls_name = self.tls_name.clone().unwrap_or_else(|| host.clone());
                        ips.into_iter().map(move |ip| Target {
                            host: host.clone(),
                            addr: SocketAddr::new(ip, *port),
                            tls_name: tls_name.clone(),
                        })
                    })
                    .collect())
            }
        }
    }

    /// A pooled connection, else a new one ([`SmtpTransport::new_connection`]); `true` with a
    /// pooled one.
    ///
    /// A pooled connection ended its last transaction cleanly (`250` to the data, or `RSET`
    /// after an unfinished one), so it needs no `RSET` first: that was a round trip per
    /// message. One the server has visibly closed is dropped; one whose close is not visible
    /// yet fails before its first reply, and [`SmtpTransport::deliver_inner`] then tries once
    /// more on a new connection.
    async fn connection(&self) -> Result<(Conn, bool), ConnError> {
        loop {
            let pooled = {
                let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
                pool.retain(|c| c.last_used.elapsed() < self.idle_timeout);
                pool.pop()
            };
            let Some(conn) = pooled else { break };
            if !conn.looks_closed() {
                tracing::debug!(route = %self.name, host = %conn.host, "reusing connection");
                return Ok((conn, true));
            }
            tracing::debug!(route = %self.name, host = %conn.host, "pooled connection closed by the server");
        }
        Ok((self.new_connection().await?, false))
    }

    /// A new connection, through the session up to AUTH. A `535 5.7.3` to XOAUTH2 refreshes
    /// the token and tries once more.
    async fn new_connection(&self) -> Result<Conn, ConnError> {
        let targets = self.targets().await?;
        let opened = match Conn::open(&targets, &self.session).await {
            Err(ConnError::Reply("AUTH", r)) if is_bad_token(&r, &self.session.auth) => {
                if let AuthPlan::Token { source, .. } = &self.session.auth {
                    tracing::info!(route = %self.name, identity = source.identity(), reply = %reply_text(&r), "token refused: fetching a new one and trying again");
                    source.invalidate();
                }
                Conn::open(&targets, &self.session).await
            }
            other => other,
        }?;
        tracing::debug!(route = %self.name, host = %opened.host, addr = %opened.addr, tls = opened.session.is_tls(), "connected");
        Ok(opened)
    }

    fn give_back(&self, conn: Conn) -> Option<Conn> {
        if !conn.reusable() || self.pool_size == 0 {
            return Some(conn);
        }
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < self.pool_size {
            pool.push(conn);
            None
        } else {
            Some(conn)
        }
    }

    async fn deliver_inner(&self, msg: &SpooledMessage, rcpts: &[usize]) -> DeliveryReport {
        let Ok(_permit) = self.connections.acquire().await else {
            return DeliveryReport::all(rcpts, &RcptOutcome::transient("route closed", "internal"));
        };
        let prepared = match prepare(msg, self.rewrite_to.as_deref()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(route = %self.name, queue_id = %msg.id(), error = %e, "cannot read the spooled message");
                return DeliveryReport::all(
                    rcpts,
                    &RcptOutcome::transient(
                        format!("cannot read the spooled message: {e}"),
                        "internal",
                    ),
                );
            }
        };
        let (mut conn, reused) = match self.connection().await {
            Ok(c) => c,
            Err(e) => return DeliveryReport::all(rcpts, &self.session_failure(&e)),
        };
        let replies = conn.replies_read();
        let mut result = self.transaction(&mut conn, msg, rcpts, &prepared).await;
        if reused
            && conn.replies_read() == replies
            && matches!(&result, Err(ConnError::Io(stage, _)) if *stage != READING_THE_MESSAGE)
        {
            // The server had closed the pooled connection and answered nothing in this
            // transaction, so it accepted nothing: once more, on a new connection.
            tracing::debug!(route = %self.name, host = %conn.host, "pooled connection was closed; retrying on a new one");
            drop(conn);
            conn = match self.new_connection().await {
                Ok(c) => c,
                Err(e) => return DeliveryReport::all(rcpts, &self.session_failure(&e)),
            };
            result = self.transaction(&mut conn, msg, rcpts, &prepared).await;
        }
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                let outcome = self.session_failure(&e);
                DeliveryReport::all(rcpts, &outcome)
            }
        };
        if let Some(conn) = self.give_back(conn) {
            conn.quit().await;
        }
        report
    }

    /// The outcome of every recipient when the session failed: always transient (the
    /// message is not at fault), with the remedy logged when an operator must act.
    fn session_failure(&self, e: &ConnError) -> RcptOutcome {
        let reason = format!("{e}");
        match e {
            ConnError::Reply(stage, r) => {
                let c = classify(r.code(), r.enhanced(), &r.text());
                if c.operator_action {
                    tracing::error!(route = %self.name, stage, reply = %reply_text(r), category = c.category.as_str(), remedy = c.remedy, "route needs the operator; mail is deferred");
                } else {
                    tracing::warn!(route = %self.name, stage, reply = %reply_text(r), category = c.category.as_str(), "session refused; mail is deferred");
                }
                RcptOutcome::Transient {
                    reason,
                    category: c.category.as_str().to_owned(),
                    retry_after: self.pauses.retry_after(&c),
                }
            }
            ConnError::Token(t) => {
                tracing::error!(route = %self.name, error = %t, aadsts = t.aadsts(), remedy = %t.remedy(), "no access token; mail is deferred");
                RcptOutcome::transient(format!("{reason} (remedy: {})", t.remedy()), "token")
            }
            ConnError::Auth(_) => {
                tracing::error!(route = %self.name, error = %e, remedy = "check the route's auth setting against what the server offers (AUTH is often only offered after STARTTLS)", "cannot authenticate; mail is deferred");
                RcptOutcome::transient(reason, "auth_failed")
            }
            ConnError::Tls(_) | ConnError::NoStartTls(_) => {
                tracing::error!(route = %self.name, error = %e, remedy = "check tls, tls_name and ca_file of the route (the server certificate must chain to a trusted CA and name the host)", "TLS failed; mail is deferred");
                RcptOutcome::transient(reason, "tls_failed")
            }
            ConnError::Timeout(..)
            | ConnError::Io(..)
            | ConnError::Connect(_)
            | ConnError::Resolve(_)
            | ConnError::Protocol(_) => {
                tracing::warn!(route = %self.name, error = %e, "connection failed; mail is deferred");
                RcptOutcome::transient(reason, "network")
            }
        }
    }

    /// One transaction on an open connection: checks, MAIL, RCPT × n, DATA, body.
    async fn transaction(
        &self,
        conn: &mut Conn,
        msg: &SpooledMessage,
        rcpts: &[usize],
        p: &Prepared,
    ) -> Result<DeliveryReport, ConnError> {
        let env = msg.envelope();
        let caps = conn.caps();
        let all = |o: RcptOutcome| Ok(DeliveryReport::all(rcpts, &o));
        // SIZE (RFC 1870): refuse what the server said it will refuse.
        if let Some(limit) = caps.size.filter(|n| *n > 0)
            && p.size > limit
        {
            return all(synthesized(
                552,
                "5.3.4",
                &format!(
                    "message size {} exceeds the fixed maximum message size of {limit} bytes of {}",
                    p.size, conn.host
                ),
            ));
        }
        let rcpt_addrs: Vec<&str> = rcpts
            .iter()
            .map(|&i| env.recipients[i].address.as_str())
            .collect();
        let needs_utf8 =
            env.smtputf8 || !p.mail_from.is_ascii() || rcpt_addrs.iter().any(|a| !a.is_ascii());
        if needs_utf8 && !caps.smtputf8 {
            return all(synthesized(
                553,
                "5.6.7",
                &format!(
                    "the message needs SMTPUTF8 (internationalized addresses) and {} does not support it",
                    conn.host
                ),
            ));
        }
        let mut body_param = None;
        if matches!(env.body, BodyType::EightBitMime | BodyType::BinaryMime) {
            if caps.eightbitmime {
                body_param = Some(Body::EightBitMime);
            } else if is_8bit(msg)
                .await
                .map_err(|e| ConnError::Io(READING_THE_MESSAGE, e))?
            {
                return all(synthesized(
                    554,
                    "5.6.3",
                    &format!(
                        "the message has 8-bit content and {} does not support 8BITMIME; \
                         conversion is not supported",
                        conn.host
                    ),
                ));
            }
        }
        let opts = ParseOptions::default().lenient(true);
        let from = if p.mail_from.is_empty() {
            Path::Null
        } else {
            match Mailbox::parse(&p.mail_from, &opts) {
                Ok(m) => Path::Mailbox(m),
                Err(e) => {
                    return all(synthesized(
                        553,
                        "5.1.7",
                        &format!("invalid sender address {:?}: {e}", p.mail_from),
                    ));
                }
            }
        };
        let mut params = MailParams::default();
        params.size = caps.size.map(|_| p.size);
        params.body = body_param;
        params.smtputf8 = needs_utf8;
        if caps.dsn {
            params.ret = env.ret.map(|r| match r {
                crate::spool::Ret::Full => Ret::Full,
                _ => Ret::Headers,
            });
            params.set_envid(
                env.envid
                    .as_deref()
                    .map(|e| postern_smtp::xtext::encode(e).into_owned().into()),
            );
        }
        let mail = Command::Mail { from, params };
        // Recipients that parse; the rest fail now.
        let mut outcomes: Vec<(usize, RcptOutcome)> = Vec::new();
        let mut sent: Vec<(usize, Command<'_>)> = Vec::new();
        for (&i, addr) in rcpts.iter().zip(&rcpt_addrs) {
            match Mailbox::parse(addr, &opts) {
                Ok(m) => {
                    let r = &env.recipients[i];
                    let mut rp = RcptParams::default();
                    if caps.dsn {
                        rp.notify = r.notify.map(|n| {
                            let mut x = Notify::NEVER;
                            x.success = n.success;
                            x.failure = n.failure;
                            x.delay = n.delay;
                            x
                        });
                        rp.orcpt = r.orcpt.as_deref().and_then(|o| {
                            let (t, a) = o.split_once(';')?;
                            let mut orcpt = Orcpt::new(t.to_owned(), "");
                            orcpt.addr = a.to_owned().into();
                            Some(orcpt)
                        });
                    }
                    sent.push((
                        i,
                        Command::Rcpt {
                            to: Path::Mailbox(m),
                            params: rp,
                        },
                    ));
                }
                Err(e) => outcomes.push((
                    i,
                    synthesized(
                        553,
                        "5.1.3",
                        &format!("invalid recipient address {addr:?}: {e}"),
                    ),
                )),
            }
        }
        if sent.is_empty() {
            let mut report = DeliveryReport::new();
            for (i, o) in outcomes {
                report.push(i, o);
            }
            return Ok(report);
        }
        let t = conn_timeouts(&self.session);
        let pipelining = conn.session.can_pipeline();
        let mail_reply;
        let mut rcpt_replies: Vec<Reply<'static>> = Vec::new();
        let data_reply;
        if pipelining {
            let mut batch = String::new();
            conn.queue_command(&mail)?;
            batch.push_str(&mail.to_string());
            for (_, c) in &sent {
                conn.queue_command(c)?;
                batch.push_str(&c.to_string());
            }
            conn.queue_command(&Command::Data)?;
            batch.push_str("DATA\r\n");
            conn.send(batch.as_bytes(), t.command, "MAIL, RCPT and DATA")
                .await?;
            mail_reply = conn.event(t.command, "MAIL").await?;
            for _ in &sent {
                rcpt_replies.push(conn.event(t.command, "RCPT").await?);
            }
            data_reply = Some(conn.event(t.command, "DATA").await?);
        } else {
            mail_reply = conn.command(&mail, "MAIL").await?;
            if mail_reply.is_positive_completion() {
                for (_, c) in &sent {
                    rcpt_replies.push(conn.command(c, "RCPT").await?);
                }
            }
            data_reply = if conn.session.accepted_recipients().is_empty()
                || !mail_reply.is_positive_completion()
            {
                None
            } else {
                Some(conn.command(&Command::Data, "DATA").await?)
            };
        }
        if !mail_reply.is_positive_completion() {
            let o = self.classified(&mail_reply, "MAIL");
            for (i, _) in &sent {
                outcomes.push((*i, o.clone()));
            }
            if data_reply.is_some_and(|r| r.code() == ReplyCode::START_MAIL_INPUT) {
                // Pipelined DATA accepted after a refused MAIL: send an empty message.
                conn.send(b".\r\n", t.data, "the end of data").await?;
                let _ = conn.event(t.data_end, "the end of data").await?;
            }
        } else {
            let accepted = conn.session.accepted_recipients().to_vec();
            let mut accepted_idx = Vec::new();
            for (k, (i, _)) in sent.iter().enumerate() {
                if accepted.contains(&k) {
                    accepted_idx.push(*i);
                } else {
                    let o = rcpt_replies.get(k).map_or_else(
                        || RcptOutcome::transient("no reply to RCPT", "network"),
                        |r| self.classified(r, "RCPT"),
                    );
                    outcomes.push((*i, o));
                }
            }
            match data_reply {
                Some(r) if r.code() == ReplyCode::START_MAIL_INPUT => {
                    if conn.session.should_abort_data() {
                        // Pipelined DATA accepted with no recipient (RFC 2920 §3.1).
                        conn.send(b".\r\n", t.data, "the end of data").await?;
                        let _ = conn.event(t.data_end, "the end of data").await?;
                    } else {
                        self.send_body(conn, msg, p).await?;
                        let fin = conn.event(t.data_end, "the end of data").await?;
                        let o = self.classified(&fin, "DATA");
                        for i in &accepted_idx {
                            outcomes.push((*i, o.clone()));
                        }
                    }
                }
                Some(r) => {
                    let o = self.classified(&r, "DATA");
                    for i in &accepted_idx {
                        outcomes.push((*i, o.clone()));
                    }
                }
                None => {}
            }
        }
        if !conn.session.is_idle() {
            conn.broken = true;
        }
        if conn.session.mail_accepted() && !conn.broken {
            // The transaction did not end with a message: reset it for the next one.
            if !conn.reset().await {
                conn.broken = true;
            }
        }
        let mut report = DeliveryReport::new();
        for (i, o) in outcomes {
            report.push(i, o);
        }
        Ok(report)
    }

    /// Streams the (rewritten) header block and the body, dot-stuffed, CRLF-normalised.
    async fn send_body(
        &self,
        conn: &mut Conn,
        msg: &SpooledMessage,
        p: &Prepared,
    ) -> Result<(), ConnError> {
        const FLUSH_AT: usize = 64 * 1024;
        let t = conn_timeouts(&self.session);
        let mut enc = postern_smtp::DataEncoder::new();
        // The connection's buffer, reused message after message.
        let mut out = std::mem::take(&mut conn.data_buf);
        out.clear();
        out.reserve(FLUSH_AT + FLUSH_AT / 8);
        let mut reader = msg
            .open_body()
            .await
            .map_err(|e| ConnError::Io(READING_THE_MESSAGE, e))?;
        if let Some(h) = &p.header {
            enc.encode(h, &mut out);
            let mut skip = (&mut reader).take(p.body_offset);
            tokio::io::copy(&mut skip, &mut tokio::io::sink())
                .await
                .map_err(|e| ConnError::Io(READING_THE_MESSAGE, e))?;
        }
        if let Some(body) = reader.remaining_in_memory() {
            // A small message is already in memory: encode it in place.
            for piece in body.chunks(FLUSH_AT) {
                enc.encode(piece, &mut out);
                if out.len() >= FLUSH_AT {
                    conn.send(&out, t.data, "message data").await?;
                    out.clear();
                }
            }
        } else {
            let mut chunk = vec![0u8; FLUSH_AT];
            loop {
                let n = reader
                    .read(&mut chunk)
                    .await
                    .map_err(|e| ConnError::Io(READING_THE_MESSAGE, e))?;
                if n == 0 {
                    break;
                }
                enc.encode(&chunk[..n], &mut out);
                if out.len() >= FLUSH_AT {
                    conn.send(&out, t.data, "message data").await?;
                    out.clear();
                }
            }
        }
        enc.finish(&mut out);
        let sent = conn.send(&out, t.data, "message data").await;
        conn.data_buf = out;
        sent
    }

    /// Classifies a refusal (or success) into an outcome; operator-action refusals are
    /// logged at error level with the remedy.
    fn classified(&self, r: &Reply<'_>, stage: &'static str) -> RcptOutcome {
        let text = reply_text(r);
        let c = classify(r.code(), r.enhanced(), &r.text());
        if c.operator_action && c.class != Class::Success {
            tracing::error!(route = %self.name, stage, reply = %text, category = c.category.as_str(), remedy = c.remedy, "upstream refusal needs the operator");
        }
        match c.class {
            Class::Success => RcptOutcome::delivered(text),
            Class::Transient => RcptOutcome::Transient {
                reason: text,
                category: c.category.as_str().to_owned(),
                retry_after: self.pauses.retry_after(&c),
            },
            Class::Permanent => RcptOutcome::Permanent {
                reason: text,
                category: c.category.as_str().to_owned(),
                remedy: c.operator_action.then(|| c.remedy.to_owned()),
            },
        }
    }
}

/// How long throttling replies pause the route's sending identity (the queue holds every
/// message of that identity meanwhile; spec D.3).
#[derive(Clone, Copy, Debug)]
struct ThrottlePauses {
    /// `432 4.3.2`, `451 4.7.500`-`699` and the like: `throttle_pause`.
    throttle: Duration,
    /// `554 5.2.0 ...SubmissionQuotaExceededException`: the recipient window (Exchange does
    /// not say when its sliding budget frees up).
    quota: Duration,
}

impl ThrottlePauses {
    /// The pause a transient reply asks for, if it is a throttling reply about the sender
    /// or the route (a throttled *recipient* mailbox holds back only that recipient).
    fn retry_after(&self, c: &postern_ndr::Classification) -> Option<Duration> {
        use postern_ndr::{Category, Scope};
        if c.class != Class::Transient || c.scope == Scope::Recipient {
            return None;
        }
        match c.category {
            Category::Throttled => Some(self.throttle),
            Category::DailyLimit => Some(self.quota),
            Category::SenderSuspended => Some(crate::ratelimit::SUSPENDED_PAUSE.max(self.throttle)),
            _ => None,
        }
    }
}

/// The stage of an I/O error reading the spooled message (not the connection's fault).
const READING_THE_MESSAGE: &str = "reading the message";

fn conn_timeouts(s: &SessionSettings) -> config::Timeouts {
    s.timeouts
}

/// An outcome for a refusal we decide ourselves, in the words of an SMTP reply.
fn synthesized(code: u16, enhanced: &str, text: &str) -> RcptOutcome {
    let code = ReplyCode::new(code).unwrap_or(ReplyCode::TRANSACTION_FAILED);
    let enhanced: Option<EnhancedCode> = enhanced.parse().ok();
    let c = classify(code, enhanced, text);
    let reason = format!(
        "{} {} {text}",
        u16::from(code),
        enhanced.map(|e| e.to_string()).unwrap_or_default()
    );
    match c.class {
        Class::Permanent | Class::Success => RcptOutcome::Permanent {
            reason,
            category: c.category.as_str().to_owned(),
            remedy: None,
        },
        Class::Transient => RcptOutcome::transient(reason, c.category.as_str()),
    }
}

fn is_bad_token(r: &Reply<'_>, auth: &AuthPlan) -> bool {
    matches!(auth, AuthPlan::Token { .. })
        && u16::from(r.code()) == 535
        && r.enhanced().is_some_and(|e| e.to_string() == "5.7.3")
}

/// What goes on the wire for one message.
struct Prepared {
    /// The envelope sender (empty: `<>`).
    mail_from: String,
    /// The rewritten header block, sent instead of the first `body_offset` bytes.
    header: Option<Vec<u8>>,
    body_offset: u64,
    /// The size announced with `SIZE=`.
    size: u64,
}

async fn prepare(msg: &SpooledMessage, rewrite_to: Option<&str>) -> std::io::Result<Prepared> {
    let env = msg.envelope();
    let Some(mailbox) = rewrite_to else {
        return Ok(Prepared {
            mail_from: env.mail_from.clone().unwrap_or_default(),
            header: None,
            body_offset: 0,
            size: msg.body_len(),
        });
    };
    let mut head = Vec::new();
    let mut reader = msg.open_body().await?.take(MAX_HEADER_BLOCK as u64);
    let mut chunk = vec![0u8; 16 * 1024];
    let end = loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            break header_block_len(&head);
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = header_block_len(&head) {
            break Some(end);
        }
    };
    let (header, body_offset) = match end {
        Some(end) => (Some(rewrite_headers(&head[..end], mailbox)), end as u64),
        None => {
            tracing::warn!(queue_id = %msg.id(), "header block too long or unterminated: From: not rewritten");
            (None, 0)
        }
    };
    let size = msg.body_len() - body_offset + header.as_ref().map_or(0, |h| h.len() as u64);
    Ok(Prepared {
        mail_from: mailbox.to_owned(),
        header,
        body_offset,
        size,
    })
}

/// Whether the body holds any byte above 127.
async fn is_8bit(msg: &SpooledMessage) -> std::io::Result<bool> {
    let mut reader = msg.open_body().await?;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        if chunk[..n].iter().any(|b| *b >= 0x80) {
            return Ok(true);
        }
    }
}

impl Transport for SmtpTransport {
    fn deliver<'a>(&'a self, msg: &'a SpooledMessage, rcpts: &'a [usize]) -> DeliveryFuture<'a> {
        Box::pin(self.deliver_inner(msg, rcpts))
    }
}
