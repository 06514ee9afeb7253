//! Error types. None of them ever carries a secret or raw client bytes.

use crate::{Mechanism, Reply, credentials::CredentialKind};

/// Why a SASL line or the message inside it could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The base64 line is longer than [`MAX_LINE_LEN`](crate::MAX_LINE_LEN).
    #[error("sasl line is {len} bytes, over the {max}-byte limit")]
    TooLong {
        /// Length of the line received, in bytes.
        len: usize,
        /// The limit ([`MAX_LINE_LEN`](crate::MAX_LINE_LEN)).
        max: usize,
    },
    /// The line is not base64 (RFC 4648, standard alphabet).
    #[error("line is not valid base64")]
    BadBase64,
    /// A field that must be UTF-8 is not.
    #[error("{field} is not valid utf-8")]
    NotUtf8 {
        /// Which field, e.g. `"authcid"`.
        field: &'static str,
    },
    /// The decoded message does not follow the mechanism's grammar.
    #[error("malformed {mechanism} message: {reason}")]
    Malformed {
        /// The mechanism whose grammar was broken.
        mechanism: Mechanism,
        /// What was wrong, e.g. `"missing NUL separator"`.
        reason: &'static str,
    },
}

impl DecodeError {
    pub(crate) const fn malformed(mechanism: Mechanism, reason: &'static str) -> Self {
        Self::Malformed { mechanism, reason }
    }
}

/// Why a server-side exchange ended without credentials to verify.
///
/// Every variant maps to the SMTP reply to send with [`AuthError::reply`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The client sent `*` ([RFC 4954 §4](https://www.rfc-editor.org/rfc/rfc4954#section-4)).
    #[error("client cancelled the authentication exchange")]
    Cancelled,
    /// A line could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A line arrived when the exchange expected none (it already finished or failed), or a
    /// method was called in the wrong state.
    #[error("sasl exchange used out of sequence")]
    OutOfSequence,
    /// The client acknowledged a token-failure challenge; the exchange failed as intended.
    #[error("bearer token rejected")]
    TokenRejected,
}

impl AuthError {
    /// The SMTP reply to send for this error.
    ///
    /// | error | reply |
    /// |---|---|
    /// | `Cancelled` (`*`) | `501 5.7.0` |
    /// | `Decode(TooLong)` | `500 5.5.6` |
    /// | `Decode(BadBase64)` | `501 5.5.2` |
    /// | `Decode(NotUtf8 / Malformed)` | `501 5.5.2` |
    /// | `OutOfSequence` | `503 5.5.1` |
    /// | `TokenRejected` | `535 5.7.8` |
    pub fn reply(&self) -> Reply {
        match self {
            Self::Cancelled => Reply::CANCELLED,
            Self::Decode(DecodeError::TooLong { .. }) => Reply::LINE_TOO_LONG,
            Self::Decode(DecodeError::BadBase64) => Reply::BAD_BASE64,
            Self::Decode(_) => Reply::BAD_SYNTAX,
            Self::OutOfSequence => Reply::BAD_SEQUENCE,
            Self::TokenRejected => Reply::INVALID_CREDENTIALS,
        }
    }
}

/// Why the client side cannot produce or continue an exchange.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The mechanism needs another kind of credential.
    #[error("{mechanism} needs {needs} but we hold {held}")]
    WrongCredentialKind {
        /// The mechanism asked for.
        mechanism: Mechanism,
        /// The kind it needs.
        needs: CredentialKind,
        /// The kind we hold.
        held: CredentialKind,
    },
    /// The credential cannot be encoded for this mechanism (e.g. an empty user, a NUL in a
    /// PLAIN field, a token with characters outside RFC 6750's `b64token`).
    #[error("credentials cannot be sent with {mechanism}: {reason}")]
    InvalidCredentials {
        /// The mechanism asked for.
        mechanism: Mechanism,
        /// What is wrong (never the value itself).
        reason: &'static str,
    },
    /// The encoded line would exceed [`MAX_LINE_LEN`](crate::MAX_LINE_LEN).
    #[error("encoded {mechanism} line is {len} bytes, over the {max}-byte limit")]
    TooLong {
        /// The mechanism asked for.
        mechanism: Mechanism,
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The server sent a challenge the mechanism does not expect at this point.
    #[error("unexpected {mechanism} challenge from the server")]
    UnexpectedChallenge {
        /// The mechanism in use.
        mechanism: Mechanism,
    },
    /// The server's challenge could not be decoded.
    #[error("bad challenge from the server: {0}")]
    BadChallenge(#[source] DecodeError),
}

/// Every error this crate returns, for callers that want one type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`DecodeError`].
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// See [`AuthError`].
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// See [`ClientError`].
    #[error(transparent)]
    Client(#[from] ClientError),
    /// See [`ChooseError`](crate::ChooseError).
    #[error(transparent)]
    Choose(#[from] crate::ChooseError),
    /// See [`UnknownMechanism`](crate::UnknownMechanism).
    #[error(transparent)]
    UnknownMechanism(#[from] crate::UnknownMechanism),
}
