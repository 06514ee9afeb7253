//! The server side of a session: which command may come when (RFC 5321 §4.1.4, RFC 3207,
//! RFC 4954, RFC 3030, RFC 2920).
//!
//! The engine owns the socket. For each decoded [`Command`] it asks
//! [`ServerSession::handle`], which either refuses it with the reply to send or returns an
//! [`Action`] saying what to do. Policy (who may relay, which sender is allowed) stays in the
//! engine: after applying it, the engine reports the outcome with
//! [`ServerSession::mail_accepted`], [`ServerSession::rcpt_accepted`],
//! [`ServerSession::auth_succeeded`] and so on.
//!
//! # Pipelining (RFC 2920)
//!
//! The engine may decode and handle every complete command already in its input buffer, queue
//! the replies in order, and flush them when the buffer holds no further complete command
//! (or before it blocks reading). Flush at once whenever [`Action::must_flush`] is true:
//! the client waits for that reply (`354`, `334`, STARTTLS's `220`, QUIT's `221`...). After a
//! STARTTLS that is accepted, the engine must **discard any input already buffered** before
//! the TLS handshake (plaintext command injection, CVE-2011-0411); [`Action::StartTls`] says
//! so too.

use crate::address::Domain;
use crate::address::Path;
use crate::capabilities::Capabilities;
use crate::command::{AuthResponse, Body, Command, MailParams, RcptParams};
use crate::data::{DataDecoder, DataOptions};
use crate::error::refusal;
use crate::reply::Reply;
use crate::status::ReplyCode;

/// Server session settings.
///
/// Defaults: an empty [`Capabilities`] (set what you advertise), `tls_active: false`,
/// `auth_requires_tls: true`, `max_recipients: 100` (RFC 5321 §4.5.3.1.8's minimum),
/// default [`DataOptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// What the server advertises (before [`ServerSession::advertised`] removes STARTTLS after
    /// TLS and AUTH before it). `size` there is also the limit enforced on `SIZE=` and BDAT.
    pub capabilities: Capabilities,
    /// The connection is already TLS (implicit TLS, port 465).
    pub tls_active: bool,
    /// Refuse AUTH (and do not advertise it) until TLS is active (RFC 4954 §4: `538 5.7.11`).
    pub auth_requires_tls: bool,
    /// Most recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Settings for [`ServerSession::data_decoder`]; `max_size` falls back to
    /// `capabilities.size` when `None`.
    pub data: DataOptions,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            capabilities: Capabilities::default(),
            tls_active: false,
            auth_requires_tls: true,
            max_recipients: 100,
            data: DataOptions::default(),
        }
    }
}

impl ServerConfig {
    /// A configuration advertising `capabilities`.
    pub fn new(capabilities: Capabilities) -> Self {
        Self {
            capabilities,
            ..Self::default()
        }
    }
}

/// Where a server session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerState {
    /// Connected, greeted, but no HELO/EHLO yet (also right after a TLS handshake).
    Connected,
    /// HELO/EHLO done, no transaction.
    Ready,
    /// MAIL accepted, no recipient accepted yet.
    Mail,
    /// At least one recipient accepted.
    Rcpt,
    /// DATA accepted: the engine is reading message data.
    Data,
    /// BDAT chunks are being received (the last one has not come yet).
    Bdat,
    /// STARTTLS accepted; waiting for [`ServerSession::tls_established`].
    TlsHandshake,
    /// AUTH accepted; the SASL exchange is in progress.
    Auth,
    /// QUIT received.
    Closed,
}

/// What the engine should do with a command that the sequence rules allow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action<'c> {
    /// HELO: reply `250 <server name>`. The session is now ready (ESMTP parameters refused).
    Helo {
        /// The client's name.
        domain: &'c Domain<'c>,
    },
    /// EHLO: reply with [`ServerSession::ehlo_reply`]. Any transaction was reset.
    Ehlo {
        /// The client's name.
        domain: &'c Domain<'c>,
    },
    /// STARTTLS: reply `220 2.0.0 Ready to start TLS`, flush, **discard any buffered input**,
    /// do the handshake, then call [`ServerSession::tls_established`].
    StartTls,
    /// AUTH: run the SASL exchange (`334` challenges, lines read with
    /// [`decode_line`](crate::decode_line)); on success call
    /// [`ServerSession::auth_succeeded`], otherwise [`ServerSession::auth_failed`].
    Auth {
        /// The mechanism, upper-cased; it is one the server advertised.
        mechanism: &'c str,
        /// The initial response, if sent with the command.
        initial: Option<&'c AuthResponse<'c>>,
    },
    /// MAIL: apply sender policy, then reply and call [`ServerSession::mail_accepted`] if it
    /// was accepted. Parameters were checked against what was advertised.
    Mail {
        /// The reverse-path.
        from: &'c Path<'c>,
        /// The parameters.
        params: &'c MailParams<'c>,
    },
    /// RCPT: apply recipient policy, then reply and call [`ServerSession::rcpt_accepted`] if
    /// it was accepted.
    Rcpt {
        /// The forward-path.
        to: &'c Path<'c>,
        /// The parameters.
        params: &'c RcptParams<'c>,
    },
    /// DATA: reply `354`, flush, and decode the message with
    /// [`ServerSession::data_decoder`]; once its end has been read, reply and call
    /// [`ServerSession::message_done`].
    Data,
    /// BDAT: read exactly `size` octets of message, reply, and after the last chunk call
    /// [`ServerSession::message_done`].
    Bdat {
        /// Octets to read now.
        size: u64,
        /// Whether this ends the message.
        last: bool,
    },
    /// A refused BDAT: the chunk still follows the command, so read and **discard exactly
    /// `size` octets**, then send `reply` (RFC 3030 §2).
    BdatDiscard {
        /// Octets to read and throw away.
        size: u64,
        /// The reply to send after them.
        reply: Reply<'static>,
    },
    /// RSET: the transaction was reset; reply `250 2.0.0`.
    Rset,
    /// NOOP: reply `250 2.0.0`.
    Noop,
    /// QUIT: reply `221 2.0.0`, flush and close.
    Quit,
    /// VRFY: reply per policy (usually `252 2.5.0`).
    Vrfy {
        /// The argument.
        target: &'c str,
    },
    /// EXPN: reply per policy (usually `502 5.5.1` or `252`).
    Expn {
        /// The argument.
        list: &'c str,
    },
    /// HELP: reply `214`.
    Help {
        /// The topic, if any.
        topic: Option<&'c str>,
    },
}

impl Action<'_> {
    /// Whether the engine must flush its queued replies right after answering this command
    /// (the client waits for the reply before sending more, RFC 2920 §3.1).
    pub fn must_flush(&self) -> bool {
        matches!(
            self,
            Self::Ehlo { .. }
                | Self::Helo { .. }
                | Self::StartTls
                | Self::Auth { .. }
                | Self::Data
                | Self::Quit
                | Self::Vrfy { .. }
                | Self::Expn { .. }
                | Self::Help { .. }
                | Self::Noop
        )
    }
}

/// Canonical replies the engine sends for common outcomes.
pub mod replies {
    use super::*;

    /// `250 2.0.0 OK` (RSET, NOOP, accepted MAIL/RCPT).
    pub fn ok() -> Reply<'static> {
        refusal(250, 0, 0, "OK")
    }

    /// `354 Start mail input; end with <CRLF>.<CRLF>` (no enhanced code: RFC 2034 §3).
    pub fn start_data() -> Reply<'static> {
        Reply::new(
            ReplyCode::START_MAIL_INPUT,
            None,
            "Start mail input; end with <CRLF>.<CRLF>",
        )
    }

    /// `220 2.0.0 Ready to start TLS`.
    pub fn ready_for_tls() -> Reply<'static> {
        refusal(220, 0, 0, "Ready to start TLS")
    }

    /// `221 2.0.0 <domain> closing connection`.
    pub fn closing(domain: &str) -> Reply<'static> {
        refusal(221, 0, 0, &format!("{domain} closing connection"))
    }

    /// `235 2.7.0 Authentication successful`.
    pub fn auth_ok() -> Reply<'static> {
        refusal(235, 7, 0, "Authentication successful")
    }

    /// `535 5.7.8 Authentication credentials invalid`.
    pub fn auth_invalid() -> Reply<'static> {
        refusal(535, 7, 8, "Authentication credentials invalid")
    }

    /// `530 5.7.0 Authentication required`.
    pub fn auth_required() -> Reply<'static> {
        refusal(530, 7, 0, "Authentication required")
    }

    /// `550 5.7.1 Relaying denied`.
    pub fn relay_denied() -> Reply<'static> {
        refusal(550, 7, 1, "Relaying denied")
    }

    /// `503 5.5.1` bad sequence of commands.
    pub fn bad_sequence(why: &str) -> Reply<'static> {
        refusal(503, 5, 1, &format!("Bad sequence of commands: {why}"))
    }

    /// `555 5.5.4` unknown or unadvertised MAIL/RCPT parameter.
    pub fn unknown_parameter(keyword: &str) -> Reply<'static> {
        refusal(555, 5, 4, &format!("Unsupported parameter {keyword}"))
    }

    /// `552 5.3.4` message too big.
    pub fn too_big(max: u64) -> Reply<'static> {
        refusal(
            552,
            3,
            4,
            &format!("Message size exceeds fixed limit of {max} octets"),
        )
    }

    /// `250 2.0.0 Message accepted` (after the message is safely on disk).
    pub fn message_accepted(id: &str) -> Reply<'static> {
        refusal(250, 0, 0, &format!("OK queued as {id}"))
    }
}

/// The server-side sequence rules of one connection.
///
/// ```
/// use postern_smtp::{Action, Capabilities, Command, ParseOptions, ServerConfig, ServerSession};
///
/// let mut caps = Capabilities::default();
/// caps.pipelining = true;
/// let mut session = ServerSession::new(ServerConfig::new(caps));
/// let opts = ParseOptions::default();
/// let cmd = |s: &'static str| Command::decode(s.as_bytes(), &opts).unwrap().0;
///
/// assert!(matches!(session.handle(&cmd("EHLO printer.lan\r\n")), Ok(Action::Ehlo { .. })));
/// // DATA before MAIL is a bad sequence.
/// assert_eq!(session.handle(&cmd("DATA\r\n")).unwrap_err().code().get(), 503);
/// assert!(matches!(session.handle(&cmd("MAIL FROM:<scan@contoso.com>\r\n")), Ok(Action::Mail { .. })));
/// session.mail_accepted();
/// assert!(matches!(session.handle(&cmd("RCPT TO:<a@contoso.com>\r\n")), Ok(Action::Rcpt { .. })));
/// // The engine's policy refused that recipient, so DATA has no one to deliver to.
/// assert_eq!(session.handle(&cmd("DATA\r\n")).unwrap_err().code().get(), 554);
/// ```
#[derive(Debug, Clone)]
pub struct ServerSession {
    config: ServerConfig,
    state: ServerState,
    /// HELO (not EHLO) was used: no ESMTP parameters.
    helo_only: bool,
    tls: bool,
    authenticated: bool,
    /// The current MAIL used `SMTPUTF8`.
    utf8_transaction: bool,
    /// The current MAIL used `BODY=BINARYMIME` (BDAT only).
    binary: bool,
    recipients: usize,
    bdat_total: u64,
    /// A BDAT chunk failed: the rest of the message is refused until RSET.
    bdat_failed: bool,
    /// `(smtputf8, binarymime)` of the MAIL command last returned as [`Action::Mail`].
    pending_mail: (bool, bool),
}

impl ServerSession {
    /// A session for a new connection (the engine sends its `220` greeting itself).
    pub fn new(config: ServerConfig) -> Self {
        let tls = config.tls_active;
        Self {
            config,
            state: ServerState::Connected,
            helo_only: false,
            tls,
            authenticated: false,
            utf8_transaction: false,
            binary: false,
            recipients: 0,
            bdat_total: 0,
            bdat_failed: false,
            pending_mail: (false, false),
        }
    }

    /// Where the session stands.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether the client has authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Recipients accepted in the current transaction.
    pub fn recipients(&self) -> usize {
        self.recipients
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The capabilities to advertise now: STARTTLS only before TLS, AUTH only after it when
    /// `auth_requires_tls`, and no AUTH once authenticated.
    pub fn advertised(&self) -> Capabilities {
        let mut caps = self.config.capabilities.clone();
        if self.tls {
            caps.starttls = false;
        }
        if (self.config.auth_requires_tls && !self.tls) || self.authenticated {
            caps.auth.clear();
        }
        caps
    }

    /// The `250` EHLO reply for the current state.
    pub fn ehlo_reply(&self, server_name: &str, greeting: &str) -> Reply<'static> {
        self.advertised().encode_ehlo(server_name, greeting)
    }

    /// The message size limit: `config.data.max_size`, else a non-zero advertised `SIZE`.
    pub fn max_size(&self) -> Option<u64> {
        self.config
            .data
            .max_size
            .or_else(|| self.config.capabilities.size.filter(|n| *n > 0))
    }

    /// A DATA decoder configured for this session (size limit included).
    pub fn data_decoder(&self) -> DataDecoder {
        DataDecoder::new(self.config.data.clone().max_size(self.max_size()))
    }

    fn in_transaction(&self) -> bool {
        matches!(
            self.state,
            ServerState::Mail | ServerState::Rcpt | ServerState::Data | ServerState::Bdat
        )
    }

    fn reset_transaction(&mut self) {
        if self.state != ServerState::Connected && self.state != ServerState::Closed {
            self.state = ServerState::Ready;
        }
        self.utf8_transaction = false;
        self.binary = false;
        self.recipients = 0;
        self.bdat_total = 0;
        self.bdat_failed = false;
    }

    /// Checks `cmd` against the sequence rules.
    ///
    /// `Err` carries the reply to send (`503 5.5.1` bad sequence, `555 5.5.4` parameter not
    /// advertised, `552 5.3.4` too big, `553 5.6.7` UTF-8 without SMTPUTF8, `538 5.7.11`
    /// AUTH before TLS, `504 5.5.4` unknown mechanism, `452 4.5.3` too many recipients,
    /// `554 5.5.1` DATA without recipients). A refused command changes nothing.
    pub fn handle<'c>(&mut self, cmd: &'c Command<'_>) -> Result<Action<'c>, Reply<'static>> {
        use replies::bad_sequence;
        match self.state {
            ServerState::Data | ServerState::Auth => {
                return Err(bad_sequence("the engine must finish DATA/AUTH first"));
            }
            ServerState::TlsHandshake => {
                return Err(bad_sequence("TLS handshake pending"));
            }
            ServerState::Closed => return Err(bad_sequence("session closed")),
            _ => {}
        }
        if self.state == ServerState::Bdat
            && !matches!(
                cmd,
                Command::Bdat { .. } | Command::Rset | Command::Quit | Command::Noop { .. }
            )
        {
            return Err(bad_sequence(
                "BDAT transfer in progress; send BDAT, RSET or QUIT",
            ));
        }
        match cmd {
            Command::Helo { domain } => {
                self.reset_transaction();
                self.state = ServerState::Ready;
                self.helo_only = true;
                Ok(Action::Helo { domain })
            }
            Command::Ehlo { domain } => {
                self.reset_transaction();
                self.state = ServerState::Ready;
                self.helo_only = false;
                Ok(Action::Ehlo { domain })
            }
            Command::StartTls => {
                if self.tls {
                    return Err(bad_sequence("TLS already active"));
                }
                if !self.config.capabilities.starttls || self.helo_only {
                    return Err(refusal(502, 5, 5, "STARTTLS not available"));
                }
                if self.state == ServerState::Connected {
                    return Err(bad_sequence("send EHLO first"));
                }
                if self.in_transaction() {
                    return Err(bad_sequence("STARTTLS not allowed in a mail transaction"));
                }
                self.state = ServerState::TlsHandshake;
                Ok(Action::StartTls)
            }
            Command::Auth { mechanism, initial } => {
                if self.state == ServerState::Connected || self.helo_only {
                    return Err(bad_sequence("send EHLO first"));
                }
                if self.authenticated {
                    return Err(bad_sequence("already authenticated"));
                }
                if self.in_transaction() {
                    return Err(bad_sequence("AUTH not allowed in a mail transaction"));
                }
                if self.config.capabilities.auth.is_empty() {
                    return Err(refusal(502, 5, 5, "AUTH not available"));
                }
                if self.config.auth_requires_tls && !self.tls {
                    return Err(refusal(
                        538,
                        7,
                        11,
                        "Encryption required for requested authentication mechanism",
                    ));
                }
                if !self.config.capabilities.supports_auth(mechanism) {
                    return Err(refusal(504, 5, 4, "Unrecognized authentication type"));
                }
                self.state = ServerState::Auth;
                Ok(Action::Auth {
                    mechanism,
                    initial: initial.as_ref(),
                })
            }
            Command::Mail { from, params } => {
                if self.state == ServerState::Connected {
                    return Err(bad_sequence("send HELO/EHLO first"));
                }
                if self.in_transaction() {
                    return Err(bad_sequence("nested MAIL command"));
                }
                self.check_mail(from, params)?;
                self.pending_mail = (params.smtputf8, params.body == Some(Body::BinaryMime));
                Ok(Action::Mail { from, params })
            }
            Command::Rcpt { to, params } => {
                if !matches!(self.state, ServerState::Mail | ServerState::Rcpt) {
                    return Err(bad_sequence("need MAIL before RCPT"));
                }
                if self.recipients >= self.config.max_recipients {
                    return Err(refusal(452, 5, 3, "Too many recipients"));
                }
                if !to.is_ascii() && !self.utf8_transaction {
                    return Err(refusal(
                        553,
                        6,
                        7,
                        "Non-ASCII address requires SMTPUTF8 on MAIL FROM",
                    ));
                }
                if (params.notify.is_some() || params.orcpt.is_some())
                    && !self.config.capabilities.dsn
                {
                    let k = if params.notify.is_some() {
                        "NOTIFY"
                    } else {
                        "ORCPT"
                    };
                    return Err(replies::unknown_parameter(k));
                }
                if let Some(p) = params.other().first() {
                    return Err(replies::unknown_parameter(&p.keyword));
                }
                Ok(Action::Rcpt { to, params })
            }
            Command::Data => {
                if self.state == ServerState::Mail && self.recipients == 0 {
                    return Err(refusal(554, 5, 1, "No valid recipients"));
                }
                if self.state != ServerState::Rcpt {
                    return Err(bad_sequence("need MAIL and RCPT before DATA"));
                }
                if self.binary {
                    return Err(bad_sequence("BODY=BINARYMIME requires BDAT"));
                }
                self.state = ServerState::Data;
                Ok(Action::Data)
            }
            Command::Bdat { size, last } => self.handle_bdat(*size, *last),
            Command::Rset => {
                self.reset_transaction();
                Ok(Action::Rset)
            }
            Command::Noop { .. } => Ok(Action::Noop),
            Command::Quit => {
                self.state = ServerState::Closed;
                Ok(Action::Quit)
            }
            Command::Vrfy { target } => Ok(Action::Vrfy { target }),
            Command::Expn { list } => Ok(Action::Expn { list }),
            Command::Help { topic } => Ok(Action::Help {
                topic: topic.as_deref(),
            }),
        }
    }

    fn check_mail(&self, from: &Path<'_>, params: &MailParams<'_>) -> Result<(), Reply<'static>> {
        let caps = &self.config.capabilities;
        let unknown = replies::unknown_parameter;
        if self.helo_only && !params.is_empty() {
            return Err(unknown("(ESMTP parameters need EHLO)"));
        }
        if let Some(p) = params.other().first() {
            return Err(unknown(&p.keyword));
        }
        if params.size.is_some() && caps.size.is_none() {
            return Err(unknown("SIZE"));
        }
        if let (Some(n), Some(max)) = (params.size, self.max_size())
            && n > max
        {
            return Err(replies::too_big(max));
        }
        match params.body {
            Some(Body::EightBitMime) if !caps.eightbitmime => return Err(unknown("BODY")),
            Some(Body::BinaryMime) if !caps.binarymime || !caps.chunking => {
                return Err(unknown("BODY"));
            }
            _ => {}
        }
        if params.smtputf8 && !caps.smtputf8 {
            return Err(unknown("SMTPUTF8"));
        }
        if (params.ret.is_some() || params.envid().is_some()) && !caps.dsn {
            return Err(unknown(if params.ret.is_some() { "RET" } else { "ENVID" }));
        }
        if params.auth().is_some() && caps.auth.is_empty() {
            return Err(unknown("AUTH"));
        }
        if !from.is_ascii() && !params.smtputf8 {
            return Err(refusal(553, 6, 7, "Non-ASCII address requires SMTPUTF8"));
        }
        Ok(())
    }

    fn handle_bdat(&mut self, size: u64, last: bool) -> Result<Action<'static>, Reply<'static>> {
        let discard = |reply| Ok(Action::BdatDiscard { size, reply });
        if !self.config.capabilities.chunking {
            return discard(refusal(502, 5, 5, "CHUNKING not available"));
        }
        if self.bdat_failed {
            return discard(replies::bad_sequence(
                "an earlier BDAT chunk failed; send RSET",
            ));
        }
        match self.state {
            ServerState::Rcpt | ServerState::Bdat => {}
            ServerState::Mail => return discard(refusal(554, 5, 1, "No valid recipients")),
            _ => return discard(replies::bad_sequence("need MAIL and RCPT before BDAT")),
        }
        let total = self.bdat_total.saturating_add(size);
        if let Some(max) = self.max_size()
            && total > max
        {
            self.bdat_failed = true;
            return discard(replies::too_big(max));
        }
        self.bdat_total = total;
        self.state = ServerState::Bdat;
        Ok(Action::Bdat { size, last })
    }

    /// The engine accepted the MAIL command last returned as [`Action::Mail`]: a transaction
    /// starts.
    pub fn mail_accepted(&mut self) {
        if self.state == ServerState::Ready {
            self.state = ServerState::Mail;
            (self.utf8_transaction, self.binary) = self.pending_mail;
            self.recipients = 0;
        }
    }

    /// The engine accepted a recipient.
    pub fn rcpt_accepted(&mut self) {
        if matches!(self.state, ServerState::Mail | ServerState::Rcpt) {
            self.recipients += 1;
            self.state = ServerState::Rcpt;
        }
    }

    /// The engine failed to store a BDAT chunk (or refused it after reading): later chunks of
    /// this message are refused until RSET.
    pub fn bdat_failed(&mut self) {
        if self.state == ServerState::Bdat {
            self.bdat_failed = true;
        }
    }

    /// The message ended (DATA terminator read, or BDAT LAST handled), whatever the reply
    /// was: the transaction is over.
    pub fn message_done(&mut self) {
        self.reset_transaction();
    }

    /// The TLS handshake after STARTTLS succeeded: everything learnt before is forgotten and
    /// the client must send EHLO again (RFC 3207 §4.2).
    pub fn tls_established(&mut self) {
        self.tls = true;
        self.authenticated = false;
        self.helo_only = false;
        self.reset_transaction();
        self.state = ServerState::Connected;
    }

    /// The TLS handshake failed: the engine closes the connection.
    pub fn tls_failed(&mut self) {
        self.state = ServerState::Closed;
    }

    /// The SASL exchange succeeded.
    pub fn auth_succeeded(&mut self) {
        self.authenticated = true;
        if self.state == ServerState::Auth {
            self.state = ServerState::Ready;
        }
    }

    /// The SASL exchange failed or was cancelled.
    pub fn auth_failed(&mut self) {
        if self.state == ServerState::Auth {
            self.state = ServerState::Ready;
        }
    }

    /// The message data was refused or the decoder was abandoned; same as
    /// [`ServerSession::message_done`].
    pub fn data_aborted(&mut self) {
        self.reset_transaction();
    }
}

#[cfg(test)]
mod tests;
