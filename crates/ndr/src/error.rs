//! The crate's error type.

/// Everything that can go wrong in `postern-ndr`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NdrError {
    /// The reply text was empty.
    #[error("empty reply: expected a line such as \"550 5.1.1 text\"")]
    EmptyReply,
    /// The reply does not start with a three-digit code.
    #[error("no SMTP reply code at the start of {0:?}: expected \"NNN text\" or \"NNN-text\"")]
    NoReplyCode(String),
    /// Three digits that are not an RFC 5321 reply code.
    #[error("invalid reply code {0}: must be 200-559 with a second digit 0-5")]
    InvalidReplyCode(u16),
    /// The lines of a multi-line reply carry different codes.
    #[error("multi-line reply mixes codes {first} and {other}")]
    MixedReplyCodes {
        /// The first line's code.
        first: u16,
        /// The disagreeing code.
        other: u16,
    },
    /// The input is longer than the parser accepts.
    #[error("input too long: {len} bytes, at most {max}")]
    TooLong {
        /// The input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message has no `message/delivery-status` part.
    #[error("not a delivery status notification: no message/delivery-status part found")]
    NotADsn,
    /// A required DSN field is missing.
    #[error("delivery status is missing the required {field} field")]
    MissingField {
        /// The field name, e.g. `Final-Recipient`.
        field: &'static str,
    },
    /// A DSN field has a value that cannot be read.
    #[error("invalid {field} field: {value:?}")]
    InvalidField {
        /// The field name.
        field: &'static str,
        /// The offending value (truncated).
        value: String,
    },
    /// The DSN builder was not given a required input.
    #[error("DSN builder needs {0}")]
    MissingInput(&'static str),
    /// A builder input would break the message (a CR or LF in a header, a bad boundary).
    #[error("invalid DSN builder input {field}: {reason}")]
    InvalidInput {
        /// Which input.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}
