//! The crate's error type.

/// Everything that can go wrong in `postern-smtp`.
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
