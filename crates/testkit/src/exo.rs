//! Exchange Online client submission (`smtp.office365.com:587`), with the High Volume Email
//! (`smtp.hve.mx.microsoft`) and Azure Communication Services (`smtp.azurecomm.net`)
//! variants as [`Profile`]s of the same server.
//!
//! What it does, wire string for wire string (spec sections A, B, D, E):
//!
//! - greeting `220 <host>.outlook.office365.com Microsoft ESMTP MAIL Service ready at <RFC 5322
//!   date> [<16 hex>]`; `EHLO` lists before and after `STARTTLS` exactly as observed; `AUTH`
//!   only after TLS and only `LOGIN XOAUTH2` (anything else, or any `AUTH` before TLS, is
//!   `504 5.7.4 Unrecognized authentication type [...]`);
//! - `MAIL` before TLS: `451 5.7.3 STARTTLS is required to send mail [...]`; without AUTH:
//!   `530 5.7.57 Client not authenticated to send mail. [...]`;
//! - XOAUTH2 tokens are looked up in a [`TokenValidator`] (the Entra ID simulator); expired,
//!   wrong audience, wrong scope/role, wrong tenant, unknown, or `user=` not matching (not the
//!   token's user; for app-only tokens, a mailbox the service principal has no `FullAccess`
//!   on) are all `535 5.7.3 Authentication unsuccessful [...]` at once, with no base64 failure
//!   challenge; `LOGIN` is checked against mailbox passwords, with
//!   [`BasicAuth`] giving `535 5.7.139 ... basic authentication is
//!   disabled.` or `550 5.7.30 Basic authentication is not supported for Client Submission.`;
//!   SMTP AUTH disabled for the tenant or the mailbox gives the two `535 5.7.139` texts;
//! - more than 3 authenticated sessions per mailbox: the 4th `AUTH` gets `432 4.3.2 Concurrent
//!   connections limit exceeded.`, and the session stays unauthenticated;
//! - after the final dot: Send As is checked on the envelope sender and on the `From:` and
//!   `Sender:` headers (`554 5.2.252 SendAsDenied; <mailbox> not allowed to send as <address>;
//!   STOREDRV...` with a diagnostic blob longer than 512 octets, as the real one); the message
//!   size against `SIZE 157286400` and the mailbox's `MaxSendSize` (`552 5.3.4 Message size
//!   exceeds fixed maximum message size`, also at `MAIL FROM ... SIZE=`); the recipient budget
//!   (`554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException`); then
//!   `250 2.0.0 OK <Message-ID> [Hostname=...]`;
//! - 30 messages a minute per mailbox: the spec says excess submissions are delayed and carried
//!   over, and no wire text for a refusal is known (spec §H), so the simulator holds the final
//!   `250` back until the message fits in the window, and records how long
//!   ([`AcceptedMessage::throttled_for`](crate::record::AcceptedMessage::throttled_for)). The
//!   window is configurable so tests can use a short one.
//!
//! HVE: only HVE accounts ([`Mailbox::hve_account`](crate::org::Mailbox::hve_account)), LOGIN
//! always allowed, SMTP AUTH switches ignored, internal recipients only (`550 5.7.1 Unable to
//! relay`), at most 50 recipients (`452 4.5.3 Too many recipients`). ACS: LOGIN with
//! `<resource>|<app id>|<tenant id>` (or `.` separators) and the app's client secret, XOAUTH2
//! with a token for `https://communication.azure.com` whose app belongs to the resource; 50
//! recipients; no Send As check.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! use postern_testkit::exo::{Profile, SubmissionServer};
//! use postern_testkit::org::{Mailbox, Organization};
//! let org = Organization::builder("tenant-guid", "contoso.com")
//!     .mailbox(Mailbox::new("scanner@contoso.com").password("pw"))
//!     .build();
//! let server = SubmissionServer::builder(Profile::ClientSubmission)
//!     .organization(org)
//!     .start()
//!     .await?;
//! println!("connect to {} as {}, trusting:\n{}", server.addr(), server.tls_server_name(), server.ca_cert_pem());
//! let msgs = server.recorder().wait_for(1, std::time::Duration::from_secs(10)).await;
//! # let _ = msgs; Ok(()) }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use postern_sasl::{AuthError, Credentials, Mechanism, ServerExchange, ServerStep};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::fault::{Fault, Faults, SERVICE_UNAVAILABLE, TEMPORARY};
use crate::org::{BasicAuth, Organization};
use crate::record::{AcceptedMessage, AuthMethod, Endpoint, Identity, Recorder, Refusal};
use crate::tls::TestCa;
use crate::token::{self, ACS_AUDIENCE, SMTP_AUDIENCES, TokenValidator};
use crate::wire::{self, Conn, HostNames, Line};

/// The size advertised in `EHLO` (150 MiB), the service-wide maximum.
pub const SERVICE_MAX_SIZE: usize = 157_286_400;

/// Which Microsoft SMTP submission service the server imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// `smtp.office365.com` SMTP AUTH client submission.
    ClientSubmission,
    /// High Volume Email, `smtp.hve.mx.microsoft`.
    Hve,
    /// Azure Communication Services Email, `smtp.azurecomm.net`.
    Acs,
}

impl Profile {
    /// The public host name, used as the TLS server name (a SAN of the server certificate).
    pub fn tls_server_name(self) -> &'static str {
        match self {
            Self::ClientSubmission => "smtp.office365.com",
            Self::Hve => "smtp.hve.mx.microsoft",
            Self::Acs => "smtp.azurecomm.net",
        }
    }

    /// The endpoint recorded for messages accepted under this profile.
    pub fn endpoint(self) -> Endpoint {
        match self {
            Self::ClientSubmission => Endpoint::ClientSubmission,
            Self::Hve => Endpoint::Hve,
            Self::Acs => Endpoint::Acs,
        }
    }

    fn host_domain(self) -> &'static str {
        match self {
            Self::ClientSubmission | Self::Hve => "outlook.office365.com",
            Self::Acs => "azurecomm.net",
        }
    }

    fn default_max_recipients(self) -> usize {
        match self {
            Self::ClientSubmission => crate::org::DEFAULT_MAX_RECIPIENTS,
            Self::Hve | Self::Acs => 50,
        }
    }
}

/// Builds a [`SubmissionServer`].
#[must_use]
pub struct SubmissionServerBuilder {
    profile: Profile,
    org: Option<Organization>,
    tokens: Arc<dyn TokenValidator>,
    recorder: Option<Recorder>,
    ca: Option<TestCa>,
    bind: SocketAddr,
    rate_window: Duration,
    budget_window: Duration,
    max_concurrent: usize,
    max_recipients: Option<usize>,
}

impl std::fmt::Debug for SubmissionServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmissionServerBuilder")
            .field("profile", &self.profile)
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

impl SubmissionServerBuilder {
    /// The organization whose mailboxes and switches apply (default: an empty organization of
    /// tenant `00000000-0000-0000-0000-000000000000` with accepted domain `contoso.com`).
    pub fn organization(mut self, org: Organization) -> Self {
        self.org = Some(org);
        self
    }

    /// Where bearer tokens are looked up (default: no token is known).
    pub fn tokens(mut self, tokens: impl TokenValidator) -> Self {
        self.tokens = Arc::new(tokens);
        self
    }

    /// Same as [`tokens`](Self::tokens) for an already shared validator.
    pub fn tokens_arc(mut self, tokens: Arc<dyn TokenValidator>) -> Self {
        self.tokens = tokens;
        self
    }

    /// Records into `recorder` (default: a new one, see [`SubmissionServer::recorder`]).
    pub fn recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Issues the server certificate from `ca` (default: a new CA).
    pub fn ca(mut self, ca: TestCa) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Binds `addr` instead of `127.0.0.1:0`.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// The window of the per-mailbox message rate (default one minute).
    pub fn rate_window(mut self, window: Duration) -> Self {
        self.rate_window = window;
        self
    }

    /// The window of the per-mailbox recipient budget (default 24 hours).
    pub fn budget_window(mut self, window: Duration) -> Self {
        self.budget_window = window;
        self
    }

    /// Concurrent authenticated sessions allowed per mailbox (default 3).
    pub fn max_concurrent_per_mailbox(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// Recipients allowed per message (default 500; 50 for HVE and ACS).
    pub fn max_recipients(mut self, n: usize) -> Self {
        self.max_recipients = Some(n);
        self
    }

    /// Binds and starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(self) -> io::Result<SubmissionServer> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let ca = self.ca.unwrap_or_default();
        let name = self.profile.tls_server_name();
        let cert = ca.server_cert(&[name]);
        let tls = ca.server_config(&cert, &[]);
        let org = self.org.unwrap_or_else(|| {
            Organization::builder("00000000-0000-0000-0000-000000000000", "contoso.com").build()
        });
        let recorder = self.recorder.unwrap_or_default();
        let faults = Arc::new(Faults::default());
        let shared = Arc::new(Shared {
            profile: self.profile,
            org: org.clone(),
            tokens: self.tokens,
            recorder: recorder.clone(),
            faults: Arc::clone(&faults),
            tls,
            names: HostNames::random(self.profile.host_domain()),
            rate_window: self.rate_window,
            budget_window: self.budget_window,
            max_concurrent: self.max_concurrent,
            max_recipients: self
                .max_recipients
                .unwrap_or_else(|| self.profile.default_max_recipients()),
            usage: Mutex::default(),
        });
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(accept_loop(listener, shared, Arc::clone(&stop)));
        Ok(SubmissionServer {
            profile: self.profile,
            addr,
            ca,
            org,
            recorder,
            faults,
            stop,
            task: Some(task),
        })
    }
}

/// A running submission simulator. Dropping it (or [`shutdown`](Self::shutdown)) stops it
/// and closes every session.
pub struct SubmissionServer {
    profile: Profile,
    addr: SocketAddr,
    ca: TestCa,
    org: Organization,
    recorder: Recorder,
    faults: Arc<Faults>,
    stop: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SubmissionServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmissionServer")
            .field("profile", &self.profile)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SubmissionServer {
    /// Starts building a server imitating `profile`.
    pub fn builder(profile: Profile) -> SubmissionServerBuilder {
        SubmissionServerBuilder {
            profile,
            org: None,
            tokens: token::none(),
            recorder: None,
            ca: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            rate_window: Duration::from_secs(60),
            budget_window: Duration::from_secs(24 * 3600),
            max_concurrent: 3,
            max_recipients: None,
        }
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The bound address (connect here; STARTTLS with [`tls_server_name`](Self::tls_server_name)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS server name to verify (`smtp.office365.com`, ...); `localhost` and `127.0.0.1`
    /// are on the certificate too.
    pub fn tls_server_name(&self) -> &'static str {
        self.profile.tls_server_name()
    }

    /// The CA that issued the server certificate.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The CA certificate, PEM, for clients to trust.
    pub fn ca_cert_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The organization (change it at runtime to flip switches).
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

    /// Stops accepting, closes every session and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SubmissionServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[derive(Default)]
struct Usage {
    sessions: HashMap<String, usize>,
    sends: HashMap<String, Vec<Instant>>,
    recipients: HashMap<String, Vec<(Instant, usize)>>,
}

struct Shared {
    profile: Profile,
    org: Organization,
    tokens: Arc<dyn TokenValidator>,
    recorder: Recorder,
    faults: Arc<Faults>,
    tls: Arc<rustls::ServerConfig>,
    names: HostNames,
    rate_window: Duration,
    budget_window: Duration,
    max_concurrent: usize,
    max_recipients: usize,
    usage: Mutex<Usage>,
}

impl Shared {
    fn usage(&self) -> MutexGuard<'_, Usage> {
        self.usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// Holds one of a mailbox's concurrent-session slots.
struct Slot {
    shared: Arc<Shared>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut usage = self.shared.usage();
        if let Some(n) = usage.sessions.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

#[derive(Default)]
struct Txn {
    mail_from: Option<String>,
    rcpts: Vec<String>,
    bdat: Vec<u8>,
    bdat_size: usize,
    bdat_fault: Option<Fault>,
}

struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    helo: Option<String>,
    identity: Option<Identity>,
    slot: Option<Slot>,
    txn: Txn,
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
        identity: None,
        slot: None,
        txn: Txn::default(),
    };
    let _ = s.run().await;
    s.conn.close().await;
}

impl Session {
    fn trailer(&self) -> String {
        self.shared.names.trailer()
    }

    async fn reply(&mut self, command: &str, line: &str) -> io::Result<()> {
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if code >= 400 {
            self.shared.recorder.push_refusal(Refusal {
                endpoint: self.shared.profile.endpoint(),
                command: command.to_owned(),
                code,
                text: line.get(4..).unwrap_or_default().to_owned(),
                identity: self.identity.clone(),
                mail_from: self.txn.mail_from.clone(),
                client_addr: self.conn.peer,
            });
        }
        self.conn.send(line).await
    }

    async fn run(&mut self) -> io::Result<()> {
        match self.shared.faults.take_connection_fault() {
            Some(Fault::RefuseConnection) => {
                self.reply("CONNECT", SERVICE_UNAVAILABLE).await?;
                return Ok(());
            }
            Some(Fault::Hang) => {
                std::future::pending::<()>().await;
            }
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
                "EHLO" => self.ehlo(rest).await?,
                "HELO" => self.helo(rest).await?,
                "STARTTLS" => self.starttls().await?,
                "AUTH" => self.auth(rest).await?,
                "MAIL" => self.mail(rest).await?,
                "RCPT" => self.rcpt(rest).await?,
                "DATA" => self.data().await?,
                "BDAT" => self.bdat(rest).await?,
                "RSET" => {
                    self.txn = Txn::default();
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

    async fn ehlo(&mut self, rest: &str) -> io::Result<Flow> {
        if rest.trim().is_empty() {
            self.reply("EHLO", "501 5.5.4 Invalid domain name").await?;
            return Ok(Flow::Continue);
        }
        self.helo = Some(rest.trim().to_owned());
        self.txn = Txn::default();
        let middle = if self.conn.is_tls() {
            "AUTH LOGIN XOAUTH2"
        } else {
            "STARTTLS"
        };
        let lines = [
            format!(
                "250-{} Hello {}",
                self.shared.names.greeting_host(),
                wire::bracket_ip(self.conn.peer)
            ),
            format!("250-SIZE {SERVICE_MAX_SIZE}"),
            "250-PIPELINING".to_owned(),
            "250-DSN".to_owned(),
            "250-ENHANCEDSTATUSCODES".to_owned(),
            format!("250-{middle}"),
            "250-8BITMIME".to_owned(),
            "250-BINARYMIME".to_owned(),
            "250-CHUNKING".to_owned(),
            "250 SMTPUTF8".to_owned(),
        ];
        self.reply("EHLO", &lines.join("\r\n")).await?;
        Ok(Flow::Continue)
    }

    async fn helo(&mut self, rest: &str) -> io::Result<Flow> {
        if rest.trim().is_empty() {
            self.reply("HELO", "501 5.5.4 Invalid domain name").await?;
            return Ok(Flow::Continue);
        }
        self.helo = Some(rest.trim().to_owned());
        self.txn = Txn::default();
        let line = format!(
            "250 {} Hello {}",
            self.shared.names.greeting_host(),
            wire::bracket_ip(self.conn.peer)
        );
        self.reply("HELO", &line).await?;
        Ok(Flow::Continue)
    }

    async fn starttls(&mut self) -> io::Result<Flow> {
        if self.conn.is_tls() {
            self.reply("STARTTLS", "503 5.5.1 Bad sequence of commands")
                .await?;
            return Ok(Flow::Continue);
        }
        self.reply("STARTTLS", "220 2.0.0 SMTP server ready")
            .await?;
        if self
            .conn
            .starttls(Arc::clone(&self.shared.tls))
            .await
            .is_err()
        {
            return Ok(Flow::Stop);
        }
        self.helo = None;
        self.identity = None;
        self.slot = None;
        self.txn = Txn::default();
        Ok(Flow::Continue)
    }

    async fn auth(&mut self, rest: &str) -> io::Result<Flow> {
        let unrecognized = format!(
            "504 5.7.4 Unrecognized authentication type {}",
            self.trailer()
        );
        if !self.conn.is_tls() {
            self.reply("AUTH", &unrecognized).await?;
            return Ok(Flow::Continue);
        }
        if self.identity.is_some() || self.txn.mail_from.is_some() {
            self.reply("AUTH", "503 5.5.1 Bad sequence of commands")
                .await?;
            return Ok(Flow::Continue);
        }
        let (mech, initial) = match rest.split_once(' ') {
            Some((m, ir)) => (m, Some(ir.trim())),
            None => (rest.trim(), None),
        };
        let Ok(mechanism @ (Mechanism::Login | Mechanism::Xoauth2)) = mech.parse::<Mechanism>()
        else {
            self.reply("AUTH", &unrecognized).await?;
            return Ok(Flow::Continue);
        };
        let mut exchange = ServerExchange::new(mechanism);
        let mut step = exchange.start(initial.map(str::as_bytes));
        let creds = loop {
            match step {
                Ok(ServerStep::Challenge(c)) => {
                    self.conn.send(&format!("334 {c}")).await?;
                    let line = match self.conn.read_line().await? {
                        Line::Text(t) => t,
                        Line::Eof => return Ok(Flow::Stop),
                    };
                    step = exchange.step(line.as_bytes());
                }
                Ok(ServerStep::Done(creds)) => break creds,
                Ok(_) => {
                    self.reply("AUTH", "503 5.5.1 Bad sequence of commands")
                        .await?;
                    return Ok(Flow::Continue);
                }
                Err(AuthError::Cancelled) => {
                    // Office 365 answers a cancelled exchange with 535, not RFC 4954's 501.
                    let line = format!("535 5.7.3 Authentication unsuccessful {}", self.trailer());
                    self.reply("AUTH", &line).await?;
                    return Ok(Flow::Continue);
                }
                Err(e) => {
                    self.reply("AUTH", &e.reply().to_string()).await?;
                    return Ok(Flow::Continue);
                }
            }
        };
        let identity = match self.verify(&creds) {
            Ok(identity) => identity,
            Err(line) => {
                self.reply("AUTH", &line).await?;
                return Ok(Flow::Continue);
            }
        };
        // Concurrency is counted per mailbox once a session has authenticated.
        let key = identity.mailbox.to_ascii_lowercase();
        let admitted = {
            let mut usage = self.shared.usage();
            let n = usage.sessions.entry(key.clone()).or_insert(0);
            if *n >= self.shared.max_concurrent {
                false
            } else {
                *n += 1;
                true
            }
        };
        if !admitted {
            let line = format!(
                "432 4.3.2 Concurrent connections limit exceeded. {}",
                self.trailer()
            );
            self.reply("AUTH", &line).await?;
            return Ok(Flow::Continue);
        }
        self.slot = Some(Slot {
            shared: Arc::clone(&self.shared),
            key,
        });
        self.identity = Some(identity);
        self.reply("AUTH", "235 2.7.0 Authentication successful")
            .await?;
        Ok(Flow::Continue)
    }

    /// Checks credentials; `Err` holds the reply line.
    fn verify(&self, creds: &Credentials) -> Result<Identity, String> {
        let unsuccessful = format!("535 5.7.3 Authentication unsuccessful {}", self.trailer());
        let org = &self.shared.org;
        match (self.shared.profile, creds) {
            (Profile::Acs, Credentials::Password { user, password, .. }) => {
                let (resource, app, tenant) =
                    split_acs_user(user).ok_or_else(|| unsuccessful.clone())?;
                let res = org
                    .acs_resource(resource)
                    .ok_or_else(|| unsuccessful.clone())?;
                let ok = tenant.eq_ignore_ascii_case(&org.tenant_id())
                    && res.apps.iter().any(|(id, secret)| {
                        id.eq_ignore_ascii_case(app) && password.ct_eq(secret.as_bytes())
                    });
                if !ok {
                    return Err(unsuccessful);
                }
                Ok(Identity {
                    mailbox: user.clone(),
                    method: AuthMethod::AcsLogin {
                        client_id: app.to_owned(),
                    },
                })
            }
            (Profile::Acs, Credentials::Bearer { user, token, .. }) => {
                let facts = self
                    .token_facts(token.expose_secret())
                    .ok_or_else(|| unsuccessful.clone())?;
                let (resource, app, tenant) =
                    split_acs_user(user).ok_or_else(|| unsuccessful.clone())?;
                let res = org
                    .acs_resource(resource)
                    .ok_or_else(|| unsuccessful.clone())?;
                let ok = facts.audience.trim_end_matches('/') == ACS_AUDIENCE
                    && facts.client_id.eq_ignore_ascii_case(app)
                    && tenant.eq_ignore_ascii_case(&facts.tenant_id)
                    && res.apps.iter().any(|(id, _)| id.eq_ignore_ascii_case(app));
                if !ok {
                    return Err(unsuccessful);
                }
                Ok(Identity {
                    mailbox: user.clone(),
                    method: AuthMethod::AcsLogin {
                        client_id: facts.client_id,
                    },
                })
            }
            (profile, Credentials::Password { user, password, .. }) => {
                let hve = profile == Profile::Hve;
                if !hve {
                    match org.basic_auth() {
                        BasicAuth::Retired => {
                            return Err(format!(
                                "550 5.7.30 Basic authentication is not supported for Client Submission. {}",
                                self.trailer()
                            ));
                        }
                        BasicAuth::Disabled => {
                            return Err(format!(
                                "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. {}",
                                self.trailer()
                            ));
                        }
                        _ => {}
                    }
                }
                let mailbox = org.mailbox(user).ok_or_else(|| unsuccessful.clone())?;
                let good = mailbox
                    .password
                    .as_ref()
                    .is_some_and(|p| password.ct_eq(p.as_bytes()));
                if !good || mailbox.hve != hve {
                    return Err(unsuccessful);
                }
                if !hve {
                    self.check_smtp_auth_enabled(&mailbox)?;
                }
                Ok(Identity {
                    mailbox: mailbox.address,
                    method: AuthMethod::Login,
                })
            }
            (profile, Credentials::Bearer { user, token, .. }) => {
                let hve = profile == Profile::Hve;
                let facts = self
                    .token_facts(token.expose_secret())
                    .ok_or_else(|| unsuccessful.clone())?;
                let (scopes, roles): (&[&str], &[&str]) = if hve {
                    (
                        &["SMTP.Send", "Mail.Send"],
                        &["SMTP.SendAsApp", "Mail.Send"],
                    )
                } else {
                    (&["SMTP.Send"], &["SMTP.SendAsApp"])
                };
                if !facts.grants(&SMTP_AUDIENCES, scopes, roles) {
                    return Err(unsuccessful);
                }
                let mailbox = org.mailbox(user).ok_or_else(|| unsuccessful.clone())?;
                if mailbox.hve != hve {
                    return Err(unsuccessful);
                }
                let method = match &facts.user {
                    Some(upn) => {
                        if !upn.eq_ignore_ascii_case(user) {
                            return Err(unsuccessful);
                        }
                        AuthMethod::Xoauth2Delegated {
                            client_id: facts.client_id.clone(),
                        }
                    }
                    None => {
                        if !hve {
                            let sp = org
                                .service_principal(&facts.client_id)
                                .ok_or_else(|| unsuccessful.clone())?;
                            if !sp.full_access.contains(&user.to_ascii_lowercase()) {
                                return Err(unsuccessful);
                            }
                        }
                        AuthMethod::Xoauth2App {
                            client_id: facts.client_id.clone(),
                        }
                    }
                };
                if !hve {
                    self.check_smtp_auth_enabled(&mailbox)?;
                }
                Ok(Identity {
                    mailbox: mailbox.address,
                    method,
                })
            }
            _ => Err(unsuccessful),
        }
    }

    /// The token's facts if it is known, unexpired and of this organization's tenant.
    fn token_facts(&self, token: &str) -> Option<token::AccessToken> {
        let facts = self.shared.tokens.validate(token)?;
        if facts.is_expired(SystemTime::now()) {
            return None;
        }
        if self.shared.profile != Profile::Acs
            && !facts
                .tenant_id
                .eq_ignore_ascii_case(&self.shared.org.tenant_id())
        {
            return None;
        }
        Some(facts)
    }

    fn check_smtp_auth_enabled(&self, mailbox: &crate::org::Mailbox) -> Result<(), String> {
        let scope = match mailbox.smtp_auth_disabled {
            Some(true) => "Mailbox",
            Some(false) => return Ok(()),
            None if self.shared.org.smtp_auth_disabled() => "Tenant",
            None => return Ok(()),
        };
        Err(format!(
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the {scope}. Visit https://aka.ms/smtp_auth_disabled for more information. {}",
            self.trailer()
        ))
    }

    async fn mail(&mut self, rest: &str) -> io::Result<Flow> {
        if !self.conn.is_tls() {
            let line = format!(
                "451 5.7.3 STARTTLS is required to send mail {}",
                self.trailer()
            );
            self.reply("MAIL", &line).await?;
            return Ok(Flow::Continue);
        }
        let Some(identity) = self.identity.clone() else {
            let line = format!(
                "530 5.7.57 Client not authenticated to send mail. {}",
                self.trailer()
            );
            self.reply("MAIL", &line).await?;
            return Ok(Flow::Continue);
        };
        if self.txn.mail_from.is_some() {
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
        if let Some(size) = declared
            && size > self.max_size(&identity)
        {
            self.reply(
                "MAIL",
                "552 5.3.4 Message size exceeds fixed maximum message size",
            )
            .await?;
            return Ok(Flow::Continue);
        }
        self.txn.mail_from = Some(path.address);
        self.reply("MAIL", "250 2.1.0 Sender OK").await?;
        Ok(Flow::Continue)
    }

    fn max_size(&self, identity: &Identity) -> usize {
        let mailbox = self.shared.org.mailbox(&identity.mailbox);
        mailbox.map_or(SERVICE_MAX_SIZE, |m| m.max_send_size.min(SERVICE_MAX_SIZE))
    }

    async fn rcpt(&mut self, rest: &str) -> io::Result<Flow> {
        if self.txn.mail_from.is_none() {
            self.reply("RCPT", "503 5.5.1 Bad sequence of commands")
                .await?;
            return Ok(Flow::Continue);
        }
        let Some(path) = wire::parse_path(rest, "TO") else {
            self.reply("RCPT", "501 5.1.3 Invalid address").await?;
            return Ok(Flow::Continue);
        };
        if path.address.is_empty() {
            self.reply("RCPT", "501 5.1.3 Invalid address").await?;
            return Ok(Flow::Continue);
        }
        if self.txn.rcpts.len() >= self.shared.max_recipients {
            self.reply("RCPT", "452 4.5.3 Too many recipients").await?;
            return Ok(Flow::Continue);
        }
        if self.shared.profile == Profile::Hve && !self.shared.org.is_internal(&path.address) {
            let line = format!("550 5.7.1 Unable to relay {}", self.trailer());
            self.reply("RCPT", &line).await?;
            return Ok(Flow::Continue);
        }
        self.txn.rcpts.push(path.address);
        self.reply("RCPT", "250 2.1.5 Recipient OK").await?;
        Ok(Flow::Continue)
    }

    async fn data(&mut self) -> io::Result<Flow> {
        if self.txn.mail_from.is_none() || self.txn.rcpts.is_empty() {
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
        self.finish("DATA", data.bytes, data.size, fault).await
    }

    async fn bdat(&mut self, rest: &str) -> io::Result<Flow> {
        let mut parts = rest.split_whitespace();
        let size = parts.next().and_then(|n| n.parse::<usize>().ok());
        let last = parts.next().is_some_and(|p| p.eq_ignore_ascii_case("LAST"));
        let Some(size) = size else {
            self.reply("BDAT", "501 5.5.4 Invalid arguments").await?;
            return Ok(Flow::Stop);
        };
        if self.txn.bdat_size == 0 && self.txn.bdat.is_empty() {
            self.txn.bdat_fault = self.shared.faults.take_message_fault();
        }
        if matches!(self.txn.bdat_fault, Some(Fault::DropMidData)) {
            self.conn.close().await;
            return Ok(Flow::Stop);
        }
        let keep = (SERVICE_MAX_SIZE + 1).saturating_sub(self.txn.bdat.len());
        let Some(chunk) = self.conn.read_chunk(size, keep).await? else {
            return Ok(Flow::Stop);
        };
        if self.txn.mail_from.is_none() || self.txn.rcpts.is_empty() {
            self.txn.bdat.clear();
            self.reply("BDAT", "503 5.5.1 Bad sequence of commands")
                .await?;
            return Ok(Flow::Continue);
        }
        self.txn.bdat.extend_from_slice(&chunk);
        self.txn.bdat_size += size;
        if !last {
            let line = format!("250 2.0.0 {size} bytes received");
            self.reply("BDAT", &line).await?;
            return Ok(Flow::Continue);
        }
        let bytes = std::mem::take(&mut self.txn.bdat);
        let total = self.txn.bdat_size;
        let fault = self.txn.bdat_fault.take();
        self.finish("BDAT", bytes, total, fault).await
    }

    /// Everything after the end of the message data: faults, policy, throttling, recording.
    async fn finish(
        &mut self,
        command: &str,
        bytes: Vec<u8>,
        size: usize,
        fault: Option<Fault>,
    ) -> io::Result<Flow> {
        let txn = std::mem::take(&mut self.txn);
        let mail_from = txn.mail_from.unwrap_or_default();
        let rcpts = txn.rcpts;
        match fault {
            Some(Fault::ServiceUnavailable) => {
                self.reply(command, SERVICE_UNAVAILABLE).await?;
                return Ok(Flow::Stop);
            }
            Some(Fault::Temporary) => {
                let line = format!("{TEMPORARY} {}", self.trailer());
                self.reply(command, &line).await?;
                return Ok(Flow::Continue);
            }
            Some(Fault::ReplyAfterData(line)) => {
                self.reply(command, &line).await?;
                return Ok(Flow::Continue);
            }
            Some(Fault::HangAfterData(d)) => {
                self.conn.hang(d).await;
                return Ok(Flow::Stop);
            }
            _ => {}
        }
        let Some(identity) = self.identity.clone() else {
            self.reply(command, "503 5.5.1 Bad sequence of commands")
                .await?;
            return Ok(Flow::Continue);
        };
        if size > self.max_size(&identity) {
            self.reply(
                command,
                "552 5.3.4 Message size exceeds fixed maximum message size",
            )
            .await?;
            return Ok(Flow::Continue);
        }
        if self.shared.profile != Profile::Acs {
            let mut senders = Vec::new();
            if !mail_from.is_empty() {
                senders.push(mail_from.clone());
            }
            for header in ["From", "Sender"] {
                for value in wire::header_values(&bytes, header) {
                    senders.extend(wire::addresses_in(&value));
                }
            }
            if let Some(denied) = senders
                .iter()
                .find(|a| !self.shared.org.may_send_as(&identity.mailbox, a))
            {
                let line = send_as_denied(&identity.mailbox, denied, &self.shared.names);
                self.txn = Txn::default();
                self.reply(command, &line).await?;
                return Ok(Flow::Continue);
            }
        }
        let key = identity.mailbox.to_ascii_lowercase();
        let mailbox = self.shared.org.mailbox(&identity.mailbox);
        let (budget, rate) = mailbox.as_ref().map_or(
            (
                crate::org::DEFAULT_RECIPIENT_BUDGET,
                crate::org::DEFAULT_MESSAGES_PER_MINUTE,
            ),
            |m| (m.recipient_budget, m.messages_per_minute),
        );
        let now = Instant::now();
        let delay = {
            let mut usage = self.shared.usage();
            let window = self.shared.budget_window;
            let used: usize = {
                let entries = usage.recipients.entry(key.clone()).or_default();
                entries.retain(|(t, _)| now.duration_since(*t) < window);
                entries.iter().map(|(_, n)| n).sum()
            };
            if used + rcpts.len() > budget {
                None
            } else {
                usage
                    .recipients
                    .entry(key.clone())
                    .or_default()
                    .push((now, rcpts.len()));
                let window = self.shared.rate_window;
                let sends = usage.sends.entry(key).or_default();
                sends.retain(|t| *t + window > now);
                let at = if sends.len() < rate.max(1) {
                    now
                } else {
                    sends[sends.len() - rate.max(1)] + window
                };
                sends.push(at);
                Some(at.saturating_duration_since(now))
            }
        };
        let Some(delay) = delay else {
            let line = format!(
                "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException {}",
                self.trailer()
            );
            self.reply(command, &line).await?;
            return Ok(Flow::Continue);
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let message_id = wire::header_values(&bytes, "Message-ID")
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
        self.shared.recorder.push_accepted(AcceptedMessage {
            seq: 0,
            endpoint: self.shared.profile.endpoint(),
            mail_from,
            rcpt_to: rcpts,
            identity: Some(identity),
            data: bytes,
            message_id: message_id.clone(),
            tls: self.conn.is_tls(),
            client_cert_subject: self.conn.client_cert.as_ref().map(|c| c.subject.clone()),
            client_addr: self.conn.peer,
            helo: self.helo.clone(),
            accepted_at: SystemTime::now(),
            throttled_for: delay,
        });
        let line = format!(
            "250 2.0.0 OK {message_id} {}",
            self.shared.names.hostname_tag()
        );
        self.reply(command, &line).await?;
        Ok(Flow::Continue)
    }
}

/// `<resource>|<app id>|<tenant id>` or `<resource>.<app id>.<tenant id>`.
fn split_acs_user(user: &str) -> Option<(&str, &str, &str)> {
    for sep in ['|', '.'] {
        let parts: Vec<&str> = user.split(sep).collect();
        if let [resource, app, tenant] = parts[..]
            && !resource.is_empty()
            && !app.is_empty()
            && !tenant.is_empty()
        {
            return Some((resource, app, tenant));
        }
    }
    None
}

/// The `554 5.2.252 SendAsDenied` line, with a store-driver diagnostic blob of the real
/// reply's shape (longer than 512 octets).
fn send_as_denied(mailbox: &str, address: &str, names: &HostNames) -> String {
    let mut diag = String::from(
        "Cannot submit message. 0.35250:0A000000, 1.36674:0A000000, 1.61250:00000000, 1.45378:02000000, 1.44866:3C000000, 1.36674:0E000000, 1.61250:00000000, 1.45378:3D000000, 1.44866:A8040000, 16.55847:D80B0000, 17.43559:0000000098020000000000000000000000000000, 20.52176:140F20891000103100000000, 20.50032:140F20897817001000000000, 0.35180:0A000000, 255.23226:0A000000, 255.27962:0A000000, 0.27962:00000000, 4.21921:DD040000, 255.27962:FA000000, 255.1494:0A000000, 0.38698:05000780, 1.41134:46000000, 0.37692:86030000, 0.37948:00000000, 5.33852:00000000534D545000010480, 7.40748:010000000000010A00000000, 7.57132:00000000000000000000000000000000, 1.63016:32000000, 4.39640:DD040000, 8.45434:A0D2E14A9C3A6A4A9B16F4F1B2E0D5E700000000, 5.10786:0000000031352E32302E383732322E3032303A",
    );
    diag.push_str(&names.mailbox_server);
    diag.push_str(":00000000");
    format!(
        "554 5.2.252 SendAsDenied; {mailbox} not allowed to send as {address}; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]{diag}[EndDiagnosticData] {}",
        names.hostname_tag()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acs_user_names() {
        assert_eq!(split_acs_user("res|app|tid"), Some(("res", "app", "tid")));
        assert_eq!(split_acs_user("res.app.tid"), Some(("res", "app", "tid")));
        assert_eq!(split_acs_user("res|app"), None);
        assert_eq!(split_acs_user("a.b.c.d"), None);
    }

    #[test]
    fn send_as_denied_is_long_like_the_real_one() {
        let names = HostNames::random("outlook.office365.com");
        let line = send_as_denied("info@a.au", "noreply@a.au", &names);
        assert!(line.starts_with("554 5.2.252 SendAsDenied; info@a.au not allowed to send as noreply@a.au; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message."));
        assert!(line.len() > 512);
    }
}
