//! What the simulators accepted and refused, for tests to assert on.
//!
//! A [`Recorder`] is a cheap, cloneable handle to one shared log. Give the same recorder to
//! several simulators (`.recorder(rec.clone())` on their builders) to see every path of a
//! delivery in one place. Each accepted message keeps its envelope, the authenticated
//! identity, the endpoint, the TLS facts and the raw bytes exactly as received (after
//! un-dot-stuffing for `DATA`, concatenated chunks for `BDAT`, decoded base64 for Graph), so a
//! test can prove that nothing was lost, altered or duplicated. Every 4xx/5xx reply is
//! recorded too, as a [`Refusal`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use postern_testkit::record::Recorder;
//! let rec = Recorder::new();
//! // ... run a simulator with `.recorder(rec.clone())` and send two messages ...
//! let got = rec.wait_for(0, Duration::from_millis(10)).await.expect("zero is immediate");
//! assert!(got.is_empty());
//! # }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// Which simulated service took (or refused) the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// Exchange Online client submission (`smtp.office365.com`).
    ClientSubmission,
    /// High Volume Email (`smtp.hve.mx.microsoft`).
    Hve,
    /// Azure Communication Services Email (`smtp.azurecomm.net`).
    Acs,
    /// The tenant MX (`<domain>.mail.protection.outlook.com`), anonymous Direct Send.
    DirectSend,
    /// The tenant MX, attributed to an inbound (partner) connector.
    Connector,
    /// Microsoft Graph `sendMail`.
    Graph,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClientSubmission => "client-submission",
            Self::Hve => "hve",
            Self::Acs => "acs",
            Self::DirectSend => "direct-send",
            Self::Connector => "connector",
            Self::Graph => "graph",
        })
    }
}

/// How a session or request proved who it was.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMethod {
    /// `AUTH LOGIN` with a mailbox password (Basic authentication).
    Login,
    /// `AUTH XOAUTH2` with a delegated token (`scp`) issued to this user.
    Xoauth2Delegated {
        /// The application that obtained the token.
        client_id: String,
    },
    /// `AUTH XOAUTH2` with an app-only token (`roles`) for a mailbox the app may use.
    Xoauth2App {
        /// The application (service principal) id.
        client_id: String,
    },
    /// ACS `AUTH LOGIN` with `<resource>|<app id>|<tenant id>` and the app's secret.
    AcsLogin {
        /// The Entra application id from the user name.
        client_id: String,
    },
    /// A Graph bearer token.
    GraphBearer {
        /// The application that obtained the token.
        client_id: String,
        /// Whether the token was app-only (`roles`) rather than delegated (`scp`).
        app_only: bool,
    },
}

/// The authenticated identity of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The mailbox the session sends as by default (for ACS: the SMTP user name).
    pub mailbox: String,
    /// How it authenticated.
    pub method: AuthMethod,
}

/// One message a simulator accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcceptedMessage {
    /// Position in the recorder, from 0, in acceptance order.
    pub seq: usize,
    /// Which service accepted it.
    pub endpoint: Endpoint,
    /// The envelope sender (`MAIL FROM`), without angle brackets; empty for `<>`. For Graph:
    /// the mailbox in the URL.
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`) in order, without angle brackets. For Graph: the
    /// `To`, `Cc` and `Bcc` addresses of the MIME header.
    pub rcpt_to: Vec<String>,
    /// Who authenticated, if anyone.
    pub identity: Option<Identity>,
    /// The message bytes exactly as received (after un-dot-stuffing).
    pub data: Vec<u8>,
    /// The `Message-ID` the server reported in its `250 2.0.0 OK <id>` reply.
    pub message_id: String,
    /// Whether the session was under TLS when the message was accepted.
    pub tls: bool,
    /// The subject (`CN=...`) of the client certificate, if one was presented.
    pub client_cert_subject: Option<String>,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// The `EHLO`/`HELO` argument, if any.
    pub helo: Option<String>,
    /// When it was accepted.
    pub accepted_at: SystemTime,
    /// How long the simulator held the final reply back for message-rate throttling.
    pub throttled_for: Duration,
}

/// One refused command or request, with the reply the client got.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusal {
    /// Which service refused.
    pub endpoint: Endpoint,
    /// The command verb (`MAIL`, `RCPT`, `DATA`, `AUTH`, ...; `CONNECT` for a greeting
    /// refusal; the HTTP method and path for Graph).
    pub command: String,
    /// The SMTP reply code (for Graph: the HTTP status).
    pub code: u16,
    /// The reply text after the code (for Graph: the JSON body).
    pub text: String,
    /// Who had authenticated when it happened, if anyone.
    pub identity: Option<Identity>,
    /// The envelope sender of the transaction in progress, if any.
    pub mail_from: Option<String>,
    /// The client's address.
    pub client_addr: SocketAddr,
}

impl Refusal {
    /// The reply as it went on the wire (`"<code> <text>"`, first line only for multi-line).
    pub fn line(&self) -> String {
        format!("{} {}", self.code, self.text)
    }
}

/// The error of [`Recorder::wait_for`]: fewer messages than wanted arrived in time.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitTimeout {
    /// How many were wanted.
    pub wanted: usize,
    /// How many had arrived.
    pub got: usize,
}

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out waiting for {} accepted messages, got {}",
            self.wanted, self.got
        )
    }
}

impl std::error::Error for WaitTimeout {}

#[derive(Default)]
struct Log {
    accepted: Vec<AcceptedMessage>,
    refused: Vec<Refusal>,
}

/// A shared log of accepted messages and refusals. Clones share the log.
#[derive(Clone)]
pub struct Recorder {
    log: Arc<Mutex<Log>>,
    count: Arc<watch::Sender<usize>>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = self.lock();
        f.debug_struct("Recorder")
            .field("accepted", &log.accepted.len())
            .field("refused", &log.refused.len())
            .finish()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty log.
    pub fn new() -> Self {
        Self {
            log: Arc::default(),
            count: Arc::new(watch::Sender::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends an accepted message, setting its `seq`, and wakes waiters.
    pub fn push_accepted(&self, mut message: AcceptedMessage) {
        let n = {
            let mut log = self.lock();
            message.seq = log.accepted.len();
            log.accepted.push(message);
            log.accepted.len()
        };
        self.count.send_replace(n);
    }

    /// Appends a refusal.
    pub fn push_refusal(&self, refusal: Refusal) {
        self.lock().refused.push(refusal);
    }

    /// Every accepted message so far, in order.
    pub fn messages(&self) -> Vec<AcceptedMessage> {
        self.lock().accepted.clone()
    }

    /// How many messages were accepted so far.
    pub fn len(&self) -> usize {
        self.lock().accepted.len()
    }

    /// Whether no message was accepted yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every refusal so far, in order.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.lock().refused.clone()
    }

    /// Accepted messages with `rcpt` among their envelope recipients (case-insensitive).
    pub fn messages_to(&self, rcpt: &str) -> Vec<AcceptedMessage> {
        self.filter(|m| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(rcpt)))
    }

    /// Accepted messages whose envelope sender is `sender` (case-insensitive).
    pub fn messages_from(&self, sender: &str) -> Vec<AcceptedMessage> {
        self.filter(|m| m.mail_from.eq_ignore_ascii_case(sender))
    }

    /// Accepted messages taken by `endpoint`.
    pub fn messages_at(&self, endpoint: Endpoint) -> Vec<AcceptedMessage> {
        self.filter(|m| m.endpoint == endpoint)
    }

    /// Accepted messages whose bytes contain `needle` (e.g. a unique `Message-ID` header).
    pub fn messages_containing(&self, needle: &[u8]) -> Vec<AcceptedMessage> {
        self.filter(|m| !needle.is_empty() && m.data.windows(needle.len()).any(|w| w == needle))
    }

    /// Accepted messages matching `pred`.
    pub fn filter(&self, pred: impl Fn(&AcceptedMessage) -> bool) -> Vec<AcceptedMessage> {
        self.lock()
            .accepted
            .iter()
            .filter(|m| pred(m))
            .cloned()
            .collect()
    }

    /// Forgets everything recorded so far (sequence numbers restart at 0).
    pub fn clear(&self) {
        {
            let mut log = self.lock();
            log.accepted.clear();
            log.refused.clear();
        }
        self.count.send_replace(0);
    }

    /// Waits until at least `count` messages were accepted, then returns all of them.
    ///
    /// # Errors
    /// [`WaitTimeout`] when `timeout` passes first.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<AcceptedMessage>, WaitTimeout> {
        let mut rx = self.count.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|n| *n >= count)).await;
        match waited {
            Ok(Ok(_)) => Ok(self.messages()),
            _ => Err(WaitTimeout {
                wanted: count,
                got: self.len(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(rcpt: &str, data: &[u8]) -> AcceptedMessage {
        AcceptedMessage {
            seq: 99,
            endpoint: Endpoint::ClientSubmission,
            mail_from: "a@contoso.com".into(),
            rcpt_to: vec![rcpt.into()],
            identity: None,
            data: data.to_vec(),
            message_id: "<x@y>".into(),
            tls: true,
            client_cert_subject: None,
            client_addr: "127.0.0.1:1".parse().expect("addr"),
            helo: None,
            accepted_at: SystemTime::UNIX_EPOCH,
            throttled_for: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn wait_for_wakes_on_push_and_times_out() {
        let rec = Recorder::new();
        let r2 = rec.clone();
        let waiter = tokio::spawn(async move { r2.wait_for(2, Duration::from_secs(30)).await });
        rec.push_accepted(message("b@fabrikam.com", b"one"));
        rec.push_accepted(message("c@fabrikam.com", b"two"));
        let got = waiter.await.expect("join").expect("two arrive");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].seq, 1);
        assert_eq!(rec.messages_to("B@fabrikam.com").len(), 1);
        assert_eq!(rec.messages_containing(b"tw").len(), 1);
        let err = rec
            .wait_for(3, Duration::from_millis(20))
            .await
            .expect_err("only two");
        assert_eq!(err, WaitTimeout { wanted: 3, got: 2 });
        rec.clear();
        assert!(rec.is_empty());
    }
}
