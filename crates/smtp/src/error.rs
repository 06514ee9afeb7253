//! The crate's errors.
//!
//! [`Error`] is the one crate-wide enum; the per-operation enums ([`DecodeError`],
//! [`DataError`], [`ClientError`], [`StatusError`]) are what callers match on. Every refusal a
//! server must answer maps to the reply it should send with `reply()`.

use crate::reply::Reply;
use crate::status::{EnhancedCode, ReplyCode, StatusClass};

/// Everything that can go wrong in `postern-smtp`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command, reply or line could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A DATA stream was refused.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A reply or enhanced status code was out of range.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The client state machine was used out of order.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A reply code or enhanced status code that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// A number outside RFC 5321's reply code grammar (`[2-5][0-5][0-9]`).
    #[error("invalid reply code {0}: must be 200-559 with a second digit 0-5")]
    InvalidReplyCode(u16),
    /// Text that is not an RFC 3463 `class.subject.detail` code.
    #[error("invalid enhanced status code {0:?}")]
    InvalidEnhancedCode(String),
}

/// Why decoding a command line, a reply or a single line failed.
///
/// [`DecodeError::Incomplete`] is not a failure: the input holds no complete line yet; read
/// more and call again with the longer buffer. [`DecodeError::TooLong`] means no line ending
/// was found within the limit: reply with [`DecodeError::reply`], then drop input up to and
/// including the next LF (see [`skip_line`](crate::skip_line)). [`DecodeError::Invalid`] is a
/// complete but malformed line: reply, drop `consumed` bytes, and carry on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More input is needed: no complete line (or multi-line reply) yet.
    #[error("incomplete input: need more bytes")]
    Incomplete,
    /// No line ending within `max` octets (the limit includes the CRLF).
    #[error("line longer than {max} octets")]
    TooLong {
        /// The limit that was exceeded.
        max: usize,
    },
    /// A complete line that is malformed.
    #[error("{kind}")]
    Invalid {
        /// Bytes the bad line occupies, terminator included: skip them to resynchronise.
        consumed: usize,
        /// What is wrong with it.
        kind: InvalidKind,
    },
}

/// What is wrong with a complete but malformed line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidKind {
    /// The verb is not an SMTP command this crate knows.
    #[error("command not recognized")]
    UnknownCommand,
    /// The line breaks the grammar (control characters, bad UTF-8, bad reply line...).
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// The line ended with a bare LF (strict mode), or contains a bare CR.
    #[error("bare CR or LF in command line")]
    BareLineEnding,
    /// The verb is fine but its arguments are not.
    #[error("invalid arguments: {0}")]
    BadArgument(&'static str),
    /// The MAIL FROM reverse-path is malformed.
    #[error("bad sender address syntax: {0}")]
    BadReversePath(&'static str),
    /// The RCPT TO forward-path is malformed.
    #[error("bad recipient address syntax: {0}")]
    BadForwardPath(&'static str),
    /// A known MAIL/RCPT parameter has a bad value.
    #[error("invalid value for parameter {0}")]
    BadParameter(String),
    /// A MAIL/RCPT parameter appears twice.
    #[error("duplicate parameter {0}")]
    DuplicateParameter(String),
    /// A UTF-8 address or parameter while SMTPUTF8 is not enabled.
    #[error("non-ASCII address without SMTPUTF8")]
    NonAscii,
}

impl DecodeError {
    /// The reply a server should send for this error.
    ///
    /// [`DecodeError::Incomplete`] is not a protocol error; it maps to `500 5.5.2` only so that
    /// the function is total (a connection closed mid-line gets no reply in practice).
    pub fn reply(&self) -> Reply<'static> {
        match self {
            Self::Incomplete => refusal(500, 5, 2, "incomplete command"),
            Self::TooLong { .. } => refusal(500, 5, 6, "line too long"),
            Self::Invalid { kind, .. } => kind.reply(),
        }
    }
}

impl InvalidKind {
    /// The reply a server should send for this kind of malformed line.
    pub fn reply(&self) -> Reply<'static> {
        match self {
            Self::UnknownCommand => refusal(500, 5, 2, "command not recognized"),
            Self::Syntax(why) => refusal(500, 5, 2, &format!("syntax error: {why}")),
            Self::BareLineEnding => refusal(500, 5, 2, "bare CR or LF not allowed in commands"),
            Self::BadArgument(why) => refusal(501, 5, 4, &format!("invalid arguments: {why}")),
            Self::BadReversePath(why) => {
                refusal(501, 1, 7, &format!("bad sender address syntax: {why}"))
            }
            Self::BadForwardPath(why) => {
                refusal(501, 1, 3, &format!("bad recipient address syntax: {why}"))
            }
            Self::BadParameter(k) => refusal(501, 5, 4, &format!("invalid value for {k}")),
            Self::DuplicateParameter(k) => refusal(501, 5, 4, &format!("duplicate parameter {k}")),
            Self::NonAscii => refusal(553, 6, 7, "non-ASCII address requires SMTPUTF8"),
        }
    }
}

/// Why a DATA stream was refused. The decoder reports it only once the terminating
/// `CRLF.CRLF` has been read, so the session stays in sync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A bare CR or bare LF in the message while the policy is
    /// [`BareLineEnding::Reject`](crate::BareLineEnding::Reject).
    #[error("bare CR or LF in message data")]
    BareLineEnding,
    /// The message is larger than the configured maximum.
    #[error("message exceeds the maximum size of {max} octets")]
    TooBig {
        /// The limit, in octets of decoded message.
        max: u64,
    },
    /// A text line is longer than the configured maximum (CRLF included).
    #[error("message line longer than {max} octets")]
    LineTooLong {
        /// The limit, in octets including CRLF.
        max: usize,
    },
    /// The stream has not reached its terminator yet.
    #[error("message data not terminated yet")]
    Unterminated,
}

impl DataError {
    /// The reply a server should send after the end of data.
    pub fn reply(&self) -> Reply<'static> {
        match self {
            Self::BareLineEnding => refusal(550, 6, 11, "bare CR or LF not allowed; use CRLF"),
            Self::TooBig { max } => refusal(
                552,
                3,
                4,
                &format!("message exceeds the maximum size of {max} octets"),
            ),
            Self::LineTooLong { max } => {
                refusal(500, 5, 6, &format!("message line longer than {max} octets"))
            }
            Self::Unterminated => refusal(451, 3, 0, "message data not terminated"),
        }
    }
}

/// Misuse of the [`ClientSession`](crate::ClientSession) state machine, or a server reply that
/// answers no command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A reply arrived while no command was waiting for one.
    #[error("unexpected reply {0}: no command is waiting for one")]
    UnexpectedReply(ReplyCode),
    /// The command may not be sent while others are unanswered: the server did not advertise
    /// PIPELINING, or a pending command must end its group (RFC 2920 §3.1), or the greeting
    /// has not arrived.
    #[error("cannot pipeline {0} now: wait for the pending replies")]
    CannotPipeline(&'static str),
    /// The command is not valid in the current state (e.g. after STARTTLS was accepted but
    /// before the TLS handshake completed).
    #[error("{0} is not allowed now")]
    OutOfSequence(&'static str),
}

/// Builds a permanent/transient refusal with an enhanced code whose class follows the code.
pub(crate) fn refusal(code: u16, subject: u16, detail: u16, text: &str) -> Reply<'static> {
    let code = ReplyCode::new(code).unwrap_or(ReplyCode::SYNTAX_ERROR);
    let class = if code.is_transient() {
        StatusClass::PersistentTransient
    } else if code.is_positive() {
        StatusClass::Success
    } else {
        StatusClass::Permanent
    };
    Reply::new(
        code,
        EnhancedCode::new(class, subject, detail),
        text.to_owned(),
    )
}
