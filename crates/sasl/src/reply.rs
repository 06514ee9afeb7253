//! SMTP replies for the outcomes of a server-side exchange, as plain data.

use core::fmt;

/// An SMTP reply the engine should send, as plain data: basic code, enhanced status code
/// ([RFC 3463](https://www.rfc-editor.org/rfc/rfc3463)) and text.
///
/// This crate does not format SMTP lines (that is `postern-smtp`'s job); `Display` gives the
/// conventional single-line form `"501 5.7.0 Authentication cancelled"` for logs and tests.
/// The codes follow [RFC 4954 §4 and §6](https://www.rfc-editor.org/rfc/rfc4954#section-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Reply {
    /// Basic reply code, e.g. `501`.
    pub code: u16,
    /// Enhanced status code, e.g. `"5.7.0"`.
    pub enhanced: &'static str,
    /// Human-readable text (never contains client data).
    pub text: &'static str,
}

impl Reply {
    const fn new(code: u16, enhanced: &'static str, text: &'static str) -> Self {
        Self {
            code,
            enhanced,
            text,
        }
    }

    /// `235 2.7.0 Authentication successful`: the credentials were verified.
    pub const AUTH_SUCCEEDED: Self = Self::new(235, "2.7.0", "Authentication successful");
    /// `535 5.7.8 Authentication credentials invalid`: the engine's verifier said no.
    pub const INVALID_CREDENTIALS: Self =
        Self::new(535, "5.7.8", "Authentication credentials invalid");
    /// `504 5.5.4 Unrecognized authentication type`: unknown or disabled mechanism.
    pub const UNRECOGNIZED_MECHANISM: Self =
        Self::new(504, "5.5.4", "Unrecognized authentication type");
    /// `501 5.7.0 Authentication cancelled`: the client sent `*`.
    pub const CANCELLED: Self = Self::new(501, "5.7.0", "Authentication cancelled");
    /// `501 5.5.2 Cannot decode base64 response`.
    pub const BAD_BASE64: Self = Self::new(501, "5.5.2", "Cannot decode base64 response");
    /// `501 5.5.2 Syntax error in authentication data`: valid base64, invalid SASL message.
    pub const BAD_SYNTAX: Self = Self::new(501, "5.5.2", "Syntax error in authentication data");
    /// `500 5.5.6 Authentication exchange line is too long`.
    pub const LINE_TOO_LONG: Self =
        Self::new(500, "5.5.6", "Authentication exchange line is too long");
    /// `503 5.5.1 Bad sequence of commands`: a line arrived when none was expected.
    pub const BAD_SEQUENCE: Self = Self::new(503, "5.5.1", "Bad sequence of commands");
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}
