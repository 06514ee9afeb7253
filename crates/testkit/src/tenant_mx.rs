//! The tenant MX endpoint (`<domain-with-dashes>.mail.protection.outlook.com:25`), for Direct
//! Send and connector relay.
//!
//! - TLS is optional (`STARTTLS` is offered); the server asks for a client certificate during
//!   the handshake but also accepts clients that present none. There is no `AUTH` (`504 5.7.4`).
//! - A session is *attributed* to the tenant when an [`InboundConnector`] matches: a
//!   certificate connector needs TLS and a client certificate (chained to the test CA or an
//!   extra root) whose subject CN or a DNS SAN is its `TlsSenderCertificateName` or a
//!   subdomain; an IP connector needs the client's address in its list (and TLS if it says
//!   `RequireTls`, else `451 5.7.3 STARTTLS is required to send mail` at `MAIL`).
//! - Per recipient (`RCPT`), in this order: a blocked client IP gets the Spamhaus-style
//!   `550 5.7.1 Service unavailable, Client host [<ip>] blocked using Spamhaus. ...`; a
//!   recipient domain configured as served from another region gets `451 4.4.62 Mail sent to
//!   the wrong Office 365 region. ATTR35.`; an internal recipient (accepted domain) is taken,
//!   unless the session is anonymous, Reject Direct Send is on and the `MAIL FROM` domain is an
//!   accepted domain (`550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this
//!   organization from unauthorized sources`); an external recipient is relayed only for an
//!   attributed session, else `550 5.7.64 TenantAttribution; Relay Access Denied`.
//! - Accepted messages are recorded with endpoint [`Endpoint::DirectSend`] or
//!   [`Endpoint::Connector`], the TLS flag and the client certificate subject.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! use postern_testkit::org::{InboundConnector, Organization};
//! use postern_testkit::tenant_mx::TenantMx;
//! let org = Organization::builder("tenant-guid", "contoso.com")
//!     .connector(InboundConnector::certificate("relay", "relay.contoso.com"))
//!     .build();
//! let mx = TenantMx::builder().organization(org).start().await?;
//! assert_eq!(mx.tls_server_name(), "contoso-com.mail.protection.outlook.com");
//! # Ok(()) }
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::exo::SERVICE_MAX_SIZE;
use crate::fault::{Fault, Faults, SERVICE_UNAVAILABLE, TEMPORARY};
use crate::org::{InboundConnector, Organization};
use crate::record::{AcceptedMessage, Endpoint, Recorder, Refusal};
use crate::tls::TestCa;
use crate::wire::{self, Conn, HostNames, Line};

/// Builds a [`TenantMx`].
#[derive(Debug)]
#[must_use]
pub struct TenantMxBuilder {
    org: Option<Organization>,
    recorder: Option<Recorder>,
    ca: Option<TestCa>,
    bind: SocketAddr,
    blocked: Vec<IpAddr>,
    wrong_region: Vec<String>,
    extra_roots: Vec<CertificateDer<'static>>,
}

impl TenantMxBuilder {
    /// The organization (default: tenant `00000000-...` with accepted domain `contoso.com`).
    pub fn organization(mut self, org: Organization) -> Self {
        self.org = Some(org);
        self
    }

    /// Records into `recorder` (default: a new one).
    pub fn recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Issues the server certificate from `ca`, which client certificates must also chain to
    /// (default: a new CA).
    pub fn ca(mut self, ca: TestCa) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Binds `addr` instead of `127.0.0.1:0`.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Refuses every recipient from `ip` as listed on Spamhaus.
    pub fn blocked_ip(mut self, ip: IpAddr) -> Self {
        self.blocked.push(ip);
        self
    }

    /// Answers recipients in `domain` with the wrong-region deferral (`451 4.4.62`).
    pub fn wrong_region_domain(mut self, domain: &str) -> Self {
        self.wrong_region.push(domain.to_ascii_lowercase());
        self
    }

    /// Also trusts client certificates issued under `root`.
    pub fn client_root(mut self, root: CertificateDer<'static>) -> Self {
        self.extra_roots.push(root);
        self
    }

    /// Binds and starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(self) -> io::Result<TenantMx> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let ca = self.ca.unwrap_or_default();
        let org = self.org.unwrap_or_else(|| {
            Organization::builder("00000000-0000-0000-0000-000000000000", "contoso.com").build()
        });
        let host = mx_host(&org.accepted_domains()[0]);
        let cert = ca.server_cert(&[
            &host,
            "mail.protection.outlook.com",
            "*.mail.protection.outlook.com",
        ]);
        let tls = ca.server_config_optional_client_auth(&cert, &self.extra_roots);
        let recorder = self.recorder.unwrap_or_default();
        let faults = Arc::new(Faults::default());
        let shared = Arc::new(Shared {
            org: org.clone(),
            recorder: recorder.clone(),
            faults: Arc::clone(&faults),
            tls,
            names: HostNames::random("mail.protection.outlook.com"),
            knobs: Mutex::new(Knobs {
                blocked: self.blocked,
                wrong_region: self.wrong_region,
            }),
        });
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            Arc::clone(&stop),
        ));
        Ok(TenantMx {
            addr,
            host,
            ca,
            org,
            recorder,
            faults,
            shared,
            stop,
            task: Some(task),
        })
    }
}

/// `contoso.com` → `contoso-com.mail.protection.outlook.com`.
pub fn mx_host(domain: &str) -> String {
    format!(
        "{}.mail.protection.outlook.com",
        domain.to_ascii_lowercase().replace('.', "-")
    )
}

struct Knobs {
    blocked: Vec<IpAddr>,
    wrong_region: Vec<String>,
}

struct Shared {
    org: Organization,
    recorder: Recorder,
    faults: Arc<Faults>,
    tls: Arc<rustls::ServerConfig>,
    names: HostNames,
    knobs: Mutex<Knobs>,
}

impl Shared {
    fn knobs(&self) -> MutexGuard<'_, Knobs> {
        self.knobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running tenant MX simulator. Dropping it (or [`shutdown`](Self::shutdown)) stops it.
pub struct TenantMx {
    addr: SocketAddr,
    host: String,
    ca: TestCa,
    org: Organization,
    recorder: Recorder,
    faults: Arc<Faults>,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TenantMx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantMx")
            .field("addr", &self.addr)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl TenantMx {
    /// Starts building a tenant MX.
    pub fn builder() -> TenantMxBuilder {
        TenantMxBuilder {
            org: None,
            recorder: None,
            ca: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            blocked: Vec::new(),
            wrong_region: Vec::new(),
            extra_roots: Vec::new(),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MX host name of the first accepted domain, on the server certificate (with
    /// `*.mail.protection.outlook.com`, `localhost` and `127.0.0.1`).
    pub fn tls_server_name(&self) -> &str {
        &self.host
    }

    /// The CA of the server certificate (and of acceptable client certificates).
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The organization.
    pub fn organization(&self) -> &Organization {
        &self.org
    }

    /// What was accepted and refused.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Fault-injection knobs.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Blocks or unblocks a client IP at runtime.
    pub fn set_blocked_ip(&self, ip: IpAddr, blocked: bool) {
        let mut k = self.shared.knobs();
        k.blocked.retain(|b| *b != ip);
        if blocked {
            k.blocked.push(ip);
        }
    }

    /// Marks or unmarks a recipient domain as served from another region at runtime.
    pub fn set_wrong_region_domain(&self, domain: &str, wrong: bool) {
        let d = domain.to_ascii_lowercase();
        let mut k = self.shared.knobs();
        k.wrong_region.retain(|w| *w != d);
        if wrong {
            k.wrong_region.push(d);
        }
    }

    /// Stops accepting, closes every session and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TenantMx {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<Notify>) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, peer)) = accepted {
                    sessions.spawn(session(Arc::clone(&shared), stream, peer));
                }
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            () = stop.notified() => break,
        }
    }
    sessions.shutdown().await;
}

struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    helo: Option<String>,
    mail_from: Option<String>,
    connector: Option<InboundConnector>,
    rcpts: Vec<String>,
}

enum Flow {
    Continue,
    Stop,
}

async fn session(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let conn = Conn::new(stream, peer, Arc::clone(&shared.faults));
    let mut s = Session {
        shared,
        conn,
        helo: None,
        mail_from: None,
        connector: None,
        rcpts: Vec::new(),
    };
    let _ = s.run().await;
    s.conn.close().await;
}

impl Session {
    fn trailer(&self) -> String {
        self.shared.names.trailer()
    }

    fn endpoint(&self) -> Endpoint {
        if self.connector.is_some() {
            Endpoint::Connector
        } else {
            Endpoint::DirectSend
        }
    }

    async fn reply(&mut self, command: &str, line: &str) -> io::Result<()> {
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if code >= 400 {
            self.shared.recorder.push_refusal(Refusal {
                endpoint: self.endpoint(),
                command: command.to_owned(),
                code,
                text: line.get(4..).unwrap_or_default().to_owned(),
                identity: None,
                mail_from: self.mail_from.clone(),
                client_addr: self.conn.peer,
            });
        }
        self.conn.send(line).await
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.connector = None;
        self.rcpts.clear();
    }

    async fn run(&mut self) -> io::Result<()> {
        match self.shared.faults.take_connection_fault() {
            Some(Fault::RefuseConnection) => {
                return self.reply("CONNECT", SERVICE_UNAVAILABLE).await;
            }
            Some(Fault::Hang) => std::future::pending::<()>().await,
            _ => {}
        }
        let greeting = format!(
            "220 {} Microsoft ESMTP MAIL Service ready at {} [{}]",
            self.shared.names.greeting_host(),
            wire::rfc5322_now(),
            wire::hex16()
        );
        self.conn.send(&greeting).await?;
        loop {
            let line = match self.conn.read_line().await? {
                Line::Text(t) => t,
                Line::Eof => return Ok(()),
            };
            let (verb, rest) = wire::split_command(&line);
            let flow = match verb.as_str() {
                "EHLO" | "HELO" => self.ehlo(&verb, rest).await?,
                "STARTTLS" => {
                    if self.conn.is_tls() {
                        self.reply("STARTTLS", "503 5.5.1 Bad sequence of commands")
                            .await?;
                        Flow::Continue
                    } else {
                        self.reply("STARTTLS", "220 2.0.0 SMTP server ready")
                            .await?;
                        self.reset();
                        self.helo = None;
                        match self.conn.starttls(Arc::clone(&self.shared.tls)).await {
                            Ok(()) => Flow::Continue,
                            Err(_) => Flow::Stop,
                        }
                    }
                }
                "AUTH" => {
                    let line = format!(
                        "504 5.7.4 Unrecognized authentication type {}",
                        self.trailer()
                    );
                    self.reply("AUTH", &line).await?;
                    Flow::Continue
                }
                "MAIL" => self.mail(rest).await?,
                "RCPT" => self.rcpt(rest).await?,
                "DATA" => self.data().await?,
                "RSET" => {
                    self.reset();
                    self.reply("RSET", "250 2.0.0 Resetting").await?;
                    Flow::Continue
                }
                "NOOP" => {
                    self.reply("NOOP", "250 2.0.0 OK").await?;
                    Flow::Continue
                }
                "QUIT" => {
                    self.reply("QUIT", "221 2.0.0 Service closing transmission channel")
                        .await?;
                    Flow::Stop
                }
                _ => {
                    let text = format!("500 5.3.3 Unrecognized command '{verb}'");
                    self.reply(&verb, &text).await?;
                    Flow::Continue
                }
            };
            if let Flow::Stop = flow {
                return Ok(());
            }
        }
    }

    async fn ehlo(&mut self, verb: &str, rest: &str) -> io::Result<Flow> {
        if rest.trim().is_empty() {
            self.reply(verb, "501 5.5.4 Invalid domain name").await?;
            return Ok(Flow::Continue);
        }
        self.helo = Some(rest.trim().to_owned());
        self.reset();
        let hello = format!(
            "{} Hello {}",
            self.shared.names.greeting_host(),
            wire::bracket_ip(self.conn.peer)
        );
        if verb == "HELO" {
            self.reply(verb, &format!("250 {hello}")).await?;
            return Ok(Flow::Continue);
        }
        let mut lines = vec![
            format!("250-{hello}"),
            format!("250-SIZE {SERVICE_MAX_SIZE}"),
            "250-PIPELINING".to_owned(),
            "250-DSN".to_owned(),
            "250-ENHANCEDSTATUSCODES".to_owned(),
        ];
        if !self.conn.is_tls() {
            lines.push("250-STARTTLS".to_owned());
        }
        lines.extend(
            [
                "250-8BITMIME",
                "250-BINARYMIME",
                "250-CHUNKING",
                "250 SMTPUTF8",
            ]
            .map(str::to_owned),
        );
        self.reply(verb, &lines.join("\r\n")).await?;
        Ok(Flow::Continue)
    }

    /// The connector this session is attributed to, or `Err(reply)` for an IP connector that
    /// requires TLS on a plain session.
    fn attribute(&self) -> Result<Option<InboundConnector>, String> {
        let tls = self.conn.is_tls();
        let ip = self.conn.peer.ip();
        let mut needs_tls = false;
        for c in self.shared.org.connectors() {
            if let Some(name) = &c.tls_sender_certificate_name {
                if tls
                    && self
                        .conn
                        .client_cert
                        .as_ref()
                        .is_some_and(|n| n.matches_domain(name))
                {
                    return Ok(Some(c));
                }
            } else if c.sender_ips.contains(&ip) {
                if c.require_tls && !tls {
                    needs_tls = true;
                } else {
                    return Ok(Some(c));
                }
            }
        }
        if needs_tls {
            return Err(format!(
                "451 5.7.3 STARTTLS is required to send mail {}",
                self.trailer()
            ));
        }
        Ok(None)
    }

    async fn mail(&mut self, rest: &str) -> io::Result<Flow> {
        if self.mail_from.is_some() {
            self.reply("MAIL", "503 5.5.1 Bad sequence of commands")
                .await?;
            return Ok(Flow::Continue);
        }
        let Some(path) = wire::parse_path(rest, "FROM") else {
            self.reply("MAIL", "501 5.1.7 Invalid address").await?;
            return Ok(Flow::Continue);
        };
        let declared = path
            .params
            .iter()
            .find(|(k, _)| k == "SIZE")
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|s| s > SERVICE_MAX_SIZE) {
            self.reply(
                "MAIL",
                "552 5.3.4 Message size exceeds fixed maximum message size",
            )
            .await?;
            return Ok(Flow::Continue);
        }
        match self.attribute() {
            Ok(connector) => self.connector = connector,
            Err(line) => {
                self.reply("MAIL", &line).await?;
                return Ok(Flow::Continue);
            }
        }
        self.mail_from = Some(path.address);
        self.reply("MAIL", "250 2.1.0 Sender OK").await?;
        Ok(Flow::Continue)
    }

    async fn rcpt(&mut self, rest: &str) -> io::Result<Flow> {
        let Some(mail_from) = self.mail_from.clone() else {
            self.reply("RCPT", "503 5.5.1 Bad sequence of commands")
                .await?;
            return Ok(Flow::Continue);
        };
        let Some(path) = wire::parse_path(rest, "TO").filter(|p| !p.address.is_empty()) else {
            self.reply("RCPT", "501 5.1.3 Invalid address").await?;
            return Ok(Flow::Continue);
        };
        let ip = self.conn.peer.ip();
        let (blocked, wrong_region) = {
            let k = self.shared.knobs();
            (
                k.blocked.contains(&ip),
                k.wrong_region.contains(&wire::domain_of(&path.address)),
            )
        };
        let org = &self.shared.org;
        let line = if blocked {
            format!(
                "550 5.7.1 Service unavailable, Client host [{ip}] blocked using Spamhaus. To request removal from this list see https://www.spamhaus.org/query/ip/{ip} AS(1450) {}",
                self.trailer()
            )
        } else if wrong_region {
            format!(
                "451 4.4.62 Mail sent to the wrong Office 365 region. ATTR35. {}",
                self.trailer()
            )
        } else if org.is_internal(&path.address) {
            if self.connector.is_none() && org.reject_direct_send() && org.is_internal(&mail_from) {
                format!(
                    "550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this organization from unauthorized sources {}",
                    self.trailer()
                )
            } else {
                String::new()
            }
        } else if self.connector.is_some() {
            String::new()
        } else {
            format!(
                "550 5.7.64 TenantAttribution; Relay Access Denied {}",
                self.trailer()
            )
        };
        if !line.is_empty() {
            self.reply("RCPT", &line).await?;
            return Ok(Flow::Continue);
        }
        self.rcpts.push(path.address);
        self.reply("RCPT", "250 2.1.5 Recipient OK").await?;
        Ok(Flow::Continue)
    }

    async fn data(&mut self) -> io::Result<Flow> {
        if self.mail_from.is_none() || self.rcpts.is_empty() {
            self.reply("DATA", "503 5.5.1 Bad sequence of commands")
                .await?;
            return Ok(Flow::Continue);
        }
        let fault = self.shared.faults.take_message_fault();
        self.reply("DATA", "354 Start mail input; end with <CRLF>.<CRLF>")
            .await?;
        let drop = matches!(fault, Some(Fault::DropMidData));
        let Some(data) = self.conn.read_data(SERVICE_MAX_SIZE + 1, drop).await? else {
            return Ok(Flow::Stop);
        };
        match fault {
            Some(Fault::ServiceUnavailable) => {
                self.reply("DATA", SERVICE_UNAVAILABLE).await?;
                return Ok(Flow::Stop);
            }
            Some(Fault::Temporary) => {
                let line = format!("{TEMPORARY} {}", self.trailer());
                self.reset();
                self.reply("DATA", &line).await?;
                return Ok(Flow::Continue);
            }
            Some(Fault::ReplyAfterData(line)) => {
                self.reset();
                self.reply("DATA", &line).await?;
                return Ok(Flow::Continue);
            }
            Some(Fault::HangAfterData(d)) => {
                self.conn.hang(d).await;
                return Ok(Flow::Stop);
            }
            _ => {}
        }
        if data.size > SERVICE_MAX_SIZE {
            self.reset();
            self.reply(
                "DATA",
                "552 5.3.4 Message size exceeds fixed maximum message size",
            )
            .await?;
            return Ok(Flow::Continue);
        }
        let message_id = wire::header_values(&data.bytes, "Message-ID")
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                format!(
                    "<{}@{}.{}.PROD.OUTLOOK.COM>",
                    wire::hex16(),
                    self.shared.names.mailbox_server,
                    self.shared.names.region
                )
            });
        let size = data.size;
        let endpoint = self.endpoint();
        self.shared.recorder.push_accepted(AcceptedMessage {
            seq: 0,
            endpoint,
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpt_to: std::mem::take(&mut self.rcpts),
            identity: None,
            data: data.bytes,
            message_id: message_id.clone(),
            tls: self.conn.is_tls(),
            client_cert_subject: self.conn.client_cert.as_ref().map(|c| c.subject.clone()),
            client_addr: self.conn.peer,
            helo: self.helo.clone(),
            accepted_at: SystemTime::now(),
            throttled_for: Duration::ZERO,
        });
        self.reset();
        let line = format!(
            "250 2.6.0 {message_id} [InternalId={}, Hostname={}.{}.PROD.OUTLOOK.COM] {size} bytes in 0.012, Queued mail for delivery",
            u64::from_str_radix(&wire::hex16()[..10], 16).unwrap_or(0),
            self.shared.names.mailbox_server,
            self.shared.names.region
        );
        self.reply("DATA", &line).await?;
        Ok(Flow::Continue)
    }
}
