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

use postern_sasl::{Credentials, Mechanism};
use tokio::net::TcpListener;

use crate::fault::Faults;
use crate::listener::{ServerTask, default_organization};
use crate::org::{BasicAuth, Organization};
use crate::record::{AuthMethod, Endpoint, Identity, Recorder};
use crate::smtp_server::{self, Core, Cx, Message, Policy};
use crate::tls::TestCa;
use crate::token::{self, ACS_AUDIENCE, SMTP_AUDIENCES, TokenValidator};
use crate::wire::{self, HostNames};

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
        let org = self.org.unwrap_or_else(default_organization);
        let recorder = self.recorder.unwrap_or_default();
        let faults = Arc::new(Faults::default());
        let core = Arc::new(Core {
            names: HostNames::random(self.profile.host_domain()),
            faults: Arc::clone(&faults),
            recorder: recorder.clone(),
            tls: ca.server_config(&cert, &[]),
        });
        let shared = Arc::new(Shared {
            profile: self.profile,
            org: org.clone(),
            tokens: self.tokens,
            rate_window: self.rate_window,
            budget_window: self.budget_window,
            max_concurrent: self.max_concurrent,
            max_recipients: self
                .max_recipients
                .unwrap_or_else(|| self.profile.default_max_recipients()),
            usage: Mutex::default(),
        });
        let task = ServerTask::spawn(listener, move |stream, peer| {
            let policy = Submission {
                shared: Arc::clone(&shared),
                identity: None,
                slot: None,
            };
            smtp_server::serve(Arc::clone(&core), policy, stream, peer)
        });
        Ok(SubmissionServer {
            profile: self.profile,
            addr,
            ca,
            org,
            recorder,
            faults,
            task,
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
    task: ServerTask,
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
        self.task.shutdown().await;
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

/// What client submission (and HVE, ACS) does differently from the MX: `AUTH` after TLS, a
/// mailbox's limits, Send As, and the message rate and recipient budget.
struct Submission {
    shared: Arc<Shared>,
    identity: Option<Identity>,
    slot: Option<Slot>,
}

impl Policy for Submission {
    fn endpoint(&self) -> Endpoint {
        self.shared.profile.endpoint()
    }

    fn identity(&self) -> Option<Identity> {
        self.identity.clone()
    }

    fn ehlo_keyword(&self, tls: bool) -> Option<&'static str> {
        Some(if tls {
            "AUTH LOGIN XOAUTH2"
        } else {
            "STARTTLS"
        })
    }

    fn auth_mechanisms(&self, tls: bool) -> &'static [Mechanism] {
        if tls {
            &[Mechanism::Login, Mechanism::Xoauth2]
        } else {
            &[]
        }
    }

    fn authenticate(&mut self, cx: &Cx<'_>, creds: &Credentials) -> Result<(), String> {
        let identity = self.verify(cx, creds)?;
        // Concurrency is counted per mailbox once a session has authenticated.
        let key = identity.mailbox.to_ascii_lowercase();
        {
            let mut usage = self.shared.usage();
            let n = usage.sessions.entry(key.clone()).or_insert(0);
            if *n >= self.shared.max_concurrent {
                return Err(format!(
                    "432 4.3.2 Concurrent connections limit exceeded. {}",
                    cx.trailer()
                ));
            }
            *n += 1;
        }
        self.slot = Some(Slot {
            shared: Arc::clone(&self.shared),
            key,
        });
        self.identity = Some(identity);
        Ok(())
    }

    fn mail_gate(&self, cx: &Cx<'_>) -> Result<(), String> {
        if !cx.conn.is_tls() {
            return Err(format!(
                "451 5.7.3 STARTTLS is required to send mail {}",
                cx.trailer()
            ));
        }
        if self.identity.is_none() {
            return Err(format!(
                "530 5.7.57 Client not authenticated to send mail. {}",
                cx.trailer()
            ));
        }
        Ok(())
    }

    fn max_size(&self) -> usize {
        let mailbox = self
            .identity
            .as_ref()
            .and_then(|identity| self.shared.org.mailbox(&identity.mailbox));
        mailbox.map_or(SERVICE_MAX_SIZE, |m| m.max_send_size.min(SERVICE_MAX_SIZE))
    }

    fn rcpt(
        &self,
        cx: &Cx<'_>,
        _mail_from: &str,
        rcpts: &[String],
        rcpt: &str,
    ) -> Result<(), String> {
        if rcpts.len() >= self.shared.max_recipients {
            return Err("452 4.5.3 Too many recipients".to_owned());
        }
        if self.shared.profile == Profile::Hve && !self.shared.org.is_internal(rcpt) {
            return Err(format!("550 5.7.1 Unable to relay {}", cx.trailer()));
        }
        Ok(())
    }

    fn accept(&mut self, cx: &Cx<'_>, message: &Message<'_>) -> Result<Duration, String> {
        let Some(identity) = &self.identity else {
            return Err("503 5.5.1 Bad sequence of commands".to_owned());
        };
        if self.shared.profile != Profile::Acs {
            let mut senders = Vec::new();
            if !message.mail_from.is_empty() {
                senders.push(message.mail_from.to_owned());
            }
            for header in ["From", "Sender"] {
                for value in wire::header_values(message.data, header) {
                    senders.extend(wire::addresses_in(&value));
                }
            }
            if let Some(denied) = senders
                .iter()
                .find(|a| !self.shared.org.may_send_as(&identity.mailbox, a))
            {
                return Err(send_as_denied(&identity.mailbox, denied, cx.names));
            }
        }
        self.shared
            .admit(&identity.mailbox, message.rcpts.len())
            .ok_or_else(|| {
                format!(
                    "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException {}",
                    cx.trailer()
                )
            })
    }

    fn accepted_reply(&self, cx: &Cx<'_>, message_id: &str, _size: usize) -> String {
        format!("250 2.0.0 OK {message_id} {}", cx.names.hostname_tag())
    }

    fn reset_session(&mut self) {
        self.identity = None;
        self.slot = None;
    }
}

impl Shared {
    /// Counts a message of `rcpts` recipients from `mailbox` against its recipient budget and
    /// message rate: how long to hold the final reply back, or `None` when over budget.
    fn admit(&self, mailbox: &str, rcpts: usize) -> Option<Duration> {
        let key = mailbox.to_ascii_lowercase();
        let (budget, rate) = self.org.mailbox(mailbox).as_ref().map_or(
            (
                crate::org::DEFAULT_RECIPIENT_BUDGET,
                crate::org::DEFAULT_MESSAGES_PER_MINUTE,
            ),
            |m| (m.recipient_budget, m.messages_per_minute),
        );
        let now = Instant::now();
        let mut usage = self.usage();
        let window = self.budget_window;
        let used: usize = {
            let entries = usage.recipients.entry(key.clone()).or_default();
            entries.retain(|(t, _)| now.duration_since(*t) < window);
            entries.iter().map(|(_, n)| n).sum()
        };
        if used + rcpts > budget {
            return None;
        }
        usage
            .recipients
            .entry(key.clone())
            .or_default()
            .push((now, rcpts));
        let window = self.rate_window;
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
}

impl Submission {
    /// Checks credentials; `Err` holds the reply line.
    fn verify(&self, cx: &Cx<'_>, creds: &Credentials) -> Result<Identity, String> {
        let unsuccessful = format!("535 5.7.3 Authentication unsuccessful {}", cx.trailer());
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
                                cx.trailer()
                            ));
                        }
                        BasicAuth::Disabled => {
                            return Err(format!(
                                "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. {}",
                                cx.trailer()
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
                    self.check_smtp_auth_enabled(cx, &mailbox)?;
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
                    self.check_smtp_auth_enabled(cx, &mailbox)?;
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

    fn check_smtp_auth_enabled(
        &self,
        cx: &Cx<'_>,
        mailbox: &crate::org::Mailbox,
    ) -> Result<(), String> {
        let scope = match mailbox.smtp_auth_disabled {
            Some(true) => "Mailbox",
            Some(false) => return Ok(()),
            None if self.shared.org.smtp_auth_disabled() => "Tenant",
            None => return Ok(()),
        };
        Err(format!(
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the {scope}. Visit https://aka.ms/smtp_auth_disabled for more information. {}",
            cx.trailer()
        ))
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
