//! The client side of a session: which reply answers which (pipelined) command, what the
//! server can do, and when STARTTLS must happen.
//!
//! The delivery code sends commands itself; before sending each one it calls
//! [`ClientSession::expect`] (or [`ClientSession::sent`]), which refuses commands that may
//! not be pipelined now. Each decoded [`Reply`] goes to [`ClientSession::on_reply`], which
//! pairs it with the oldest unanswered command (RFC 2920: replies come in order) and returns
//! a [`ClientEvent`].
//!
//! ```
//! use postern_smtp::{ClientSession, CommandKind, Reply, TlsPolicy};
//!
//! let mut c = ClientSession::new(TlsPolicy::Required);
//! let r = |s: &'static str| Reply::decode(s.as_bytes()).unwrap().0;
//! c.on_reply(r("220 smtp.office365.com ready\r\n")).unwrap();
//! c.expect(CommandKind::Ehlo).unwrap();
//! c.on_reply(r("250-smtp.office365.com\r\n250-PIPELINING\r\n250 STARTTLS\r\n")).unwrap();
//! assert!(c.must_starttls());
//! c.expect(CommandKind::StartTls).unwrap();
//! c.on_reply(r("220 2.0.0 SMTP server ready\r\n")).unwrap();
//! assert!(c.awaiting_tls_handshake());
//! // ... TLS handshake ...
//! c.tls_established();
//! assert!(c.capabilities().is_none()); // EHLO again
//! ```

use std::collections::VecDeque;

use crate::capabilities::Capabilities;
use crate::command::{Command, CommandKind};
use crate::error::ClientError;
use crate::reply::Reply;
use crate::status::ReplyCode;

/// When the client must use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsPolicy {
    /// STARTTLS is mandatory: no MAIL/AUTH before TLS (Exchange Online submission).
    Required,
    /// STARTTLS when advertised, plaintext otherwise.
    Opportunistic,
    /// The connection is already TLS (port 465).
    Implicit,
    /// Never STARTTLS (a local sink, tests).
    Disabled,
}

/// A reply paired with the command it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientEvent<'r> {
    /// The command this reply answers.
    ///
    /// [`CommandKind::Data`] with a `354` means: send the message now (with
    /// [`DataEncoder`](crate::DataEncoder)); its own reply comes as
    /// [`CommandKind::Message`]. [`CommandKind::Auth`] with a `334` is a challenge: send the
    /// next SASL response line; the final AUTH reply comes as another `Auth` event.
    pub command: CommandKind,
    /// The reply.
    pub reply: Reply<'r>,
    /// For RCPT: the index of the recipient (0-based, in the order the RCPT commands were
    /// sent since the last MAIL).
    pub recipient: Option<usize>,
}

impl ClientEvent<'_> {
    /// Whether the reply is positive (`2yz`, or the expected `3yz` for DATA/AUTH).
    pub fn is_positive(&self) -> bool {
        self.reply.is_positive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    kind: CommandKind,
    recipient: Option<usize>,
}

/// The client-side state of one connection.
#[derive(Debug, Clone)]
pub struct ClientSession {
    policy: TlsPolicy,
    pending: VecDeque<Pending>,
    caps: Option<Capabilities>,
    tls: bool,
    tls_pending: bool,
    authenticated: bool,
    rcpts_sent: usize,
    accepted: Vec<usize>,
    mail_accepted: bool,
}

impl ClientSession {
    /// A session for a new connection: the first thing expected is the server's greeting.
    pub fn new(policy: TlsPolicy) -> Self {
        let mut pending = VecDeque::new();
        pending.push_back(Pending {
            kind: CommandKind::Greeting,
            recipient: None,
        });
        Self {
            policy,
            pending,
            caps: None,
            tls: policy == TlsPolicy::Implicit,
            tls_pending: false,
            authenticated: false,
            rcpts_sent: 0,
            accepted: Vec::new(),
            mail_accepted: false,
        }
    }

    /// The capabilities from the last EHLO (an empty set after HELO); `None` before it and
    /// after STARTTLS.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.caps.as_ref()
    }

    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether AUTH succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// STARTTLS was accepted: do the TLS handshake now, then call
    /// [`ClientSession::tls_established`].
    pub fn awaiting_tls_handshake(&self) -> bool {
        self.tls_pending
    }

    /// Whether the next command should be STARTTLS: TLS is not active, the policy wants it,
    /// and the server advertised it.
    pub fn must_starttls(&self) -> bool {
        !self.tls
            && matches!(self.policy, TlsPolicy::Required | TlsPolicy::Opportunistic)
            && self.caps.as_ref().is_some_and(|c| c.starttls)
    }

    /// Whether the policy requires TLS but the server did not offer STARTTLS: give up on
    /// this server (do not send MAIL or AUTH in the clear).
    pub fn tls_unavailable(&self) -> bool {
        self.policy == TlsPolicy::Required
            && !self.tls
            && self.caps.as_ref().is_some_and(|c| !c.starttls)
    }

    /// The TLS handshake after STARTTLS succeeded. The capabilities are forgotten: send EHLO
    /// again (RFC 3207 §4.2).
    pub fn tls_established(&mut self) {
        self.tls = true;
        self.tls_pending = false;
        self.caps = None;
        self.authenticated = false;
        self.reset_transaction();
    }

    /// Whether several commands may be in flight (the server advertised PIPELINING).
    pub fn can_pipeline(&self) -> bool {
        self.caps.as_ref().is_some_and(|c| c.pipelining)
    }

    /// The commands sent and not answered yet, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = CommandKind> + '_ {
        self.pending.iter().map(|p| p.kind)
    }

    /// Whether no reply is awaited.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// Indices of the recipients accepted in the current transaction.
    pub fn accepted_recipients(&self) -> &[usize] {
        &self.accepted
    }

    /// Whether the server accepted MAIL in the current transaction.
    pub fn mail_accepted(&self) -> bool {
        self.mail_accepted
    }

    /// After a `354` to a pipelined DATA: `true` if no recipient (or MAIL) was accepted, in
    /// which case send only the terminator (`.CRLF`, an empty message) and RSET, as
    /// RFC 2920 §3.1 requires.
    pub fn should_abort_data(&self) -> bool {
        !self.mail_accepted || self.accepted.is_empty()
    }

    fn reset_transaction(&mut self) {
        self.rcpts_sent = 0;
        self.accepted.clear();
        self.mail_accepted = false;
    }

    /// Records that `cmd` is being sent.
    pub fn sent(&mut self, cmd: &Command<'_>) -> Result<(), ClientError> {
        self.expect(cmd.kind())
    }

    /// Records that a command of this kind is being sent, so that the next unmatched reply is
    /// attributed to it. Fails, without recording anything, if it may not be sent now:
    /// while a STARTTLS handshake is due, while a command that ends a pipelining group is
    /// unanswered, or while anything is unanswered and the server did not advertise
    /// PIPELINING. [`CommandKind::Greeting`] and [`CommandKind::Message`] are tracked
    /// automatically and cannot be expected.
    pub fn expect(&mut self, kind: CommandKind) -> Result<(), ClientError> {
        if matches!(kind, CommandKind::Greeting | CommandKind::Message) {
            return Err(ClientError::OutOfSequence(kind.name()));
        }
        if self.tls_pending {
            return Err(ClientError::OutOfSequence(
                "a command before the TLS handshake",
            ));
        }
        if let Some(blocking) = self.pending.iter().find(|p| p.kind.ends_group()) {
            let _ = blocking;
            return Err(ClientError::CannotPipeline(kind.name()));
        }
        if !self.pending.is_empty() && !self.can_pipeline() {
            return Err(ClientError::CannotPipeline(kind.name()));
        }
        if self.policy == TlsPolicy::Required
            && !self.tls
            && matches!(
                kind,
                CommandKind::Mail | CommandKind::Auth | CommandKind::Rcpt | CommandKind::Data
            )
        {
            return Err(ClientError::OutOfSequence(
                "a mail or AUTH command before TLS (policy requires it)",
            ));
        }
        let mut recipient = None;
        match kind {
            CommandKind::Mail => self.reset_transaction(),
            CommandKind::Rcpt => {
                recipient = Some(self.rcpts_sent);
                self.rcpts_sent += 1;
            }
            _ => {}
        }
        self.pending.push_back(Pending { kind, recipient });
        Ok(())
    }

    /// Pairs `reply` with the oldest unanswered command and updates the session.
    pub fn on_reply<'r>(&mut self, reply: Reply<'r>) -> Result<ClientEvent<'r>, ClientError> {
        let Some(front) = self.pending.front().copied() else {
            return Err(ClientError::UnexpectedReply(reply.code()));
        };
        let event = ClientEvent {
            command: front.kind,
            recipient: front.recipient,
            reply,
        };
        let code = event.reply.code();
        match front.kind {
            CommandKind::Data if code == ReplyCode::START_MAIL_INPUT => {
                // The message's own reply answers the content that follows.
                if let Some(p) = self.pending.front_mut() {
                    p.kind = CommandKind::Message;
                }
                return Ok(event);
            }
            CommandKind::Auth if code == ReplyCode::AUTH_CONTINUE => return Ok(event),
            _ => {}
        }
        self.pending.pop_front();
        let ok = event.reply.is_positive_completion();
        match front.kind {
            CommandKind::Ehlo if ok => self.caps = Some(Capabilities::from_ehlo(&event.reply)),
            CommandKind::Helo if ok => {
                let mut caps = Capabilities::from_ehlo(&event.reply);
                caps.other.clear();
                self.caps = Some(caps);
            }
            CommandKind::StartTls if ok => {
                self.tls_pending = true;
                self.caps = None;
                self.pending.clear();
            }
            CommandKind::Auth if ok => self.authenticated = true,
            CommandKind::Mail => self.mail_accepted = ok,
            CommandKind::Rcpt if ok => {
                if let Some(i) = front.recipient {
                    self.accepted.push(i);
                }
            }
            CommandKind::Message | CommandKind::Bdat { last: true } | CommandKind::Rset => {
                self.reset_transaction();
            }
            _ => {}
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests;
