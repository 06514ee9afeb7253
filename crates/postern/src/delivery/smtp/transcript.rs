//! A hook that sees the SMTP conversation of a route, line by line, with secrets redacted
//! before the hook is called (`relay send --transcript`, `relay doctor`).
//!
//! ```text
//! C: AUTH XOAUTH2 [redacted]        every client line while authenticating, payloads and tokens
//! C: [redacted]                     (a LOGIN user name and password, a continuation) redacted
//! S: 235 2.7.0 Authentication successful
//! * message data: 1234 bytes        the body is summarised, never echoed
//! ```

use std::fmt;
use std::sync::Arc;

/// Who a transcript line comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TranscriptSide {
    /// Sent by us (`C:`).
    Client,
    /// Received from the server (`S:`).
    Server,
    /// What happened between lines: connected, TLS established, message data summarised.
    Note,
}

impl TranscriptSide {
    /// `C:`, `S:` or `*`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Client => "C:",
            Self::Server => "S:",
            Self::Note => "*",
        }
    }
}

/// What replaces a secret in a transcript.
pub const REDACTED: &str = "[redacted]";

/// The tracing target of the wire log: with `RUST_LOG=postern::transcript=trace` every
/// outbound SMTP session is logged line by line, redacted as above.
pub const TRACE_TARGET: &str = "postern::transcript";

/// The callback behind a [`Transcript`].
type LineFn = dyn Fn(TranscriptSide, &str) + Send + Sync;

/// Receives each line (without CRLF) of a route's SMTP conversations. Cheap to clone.
#[derive(Clone)]
pub struct Transcript(Arc<LineFn>);

impl fmt::Debug for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Transcript")
    }
}

impl Transcript {
    /// A transcript that calls `f` for every line.
    pub fn new(f: impl Fn(TranscriptSide, &str) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The wire log: each line as a `trace` event of target [`TRACE_TARGET`], with the
    /// server's `host` and the side (`C:`, `S:`, `*`) as fields. `None` when that target
    /// is not enabled (nothing is formatted then).
    pub(crate) fn tracing(host: &str) -> Option<Self> {
        if !tracing::enabled!(target: TRACE_TARGET, tracing::Level::TRACE) {
            return None;
        }
        let host = host.to_owned();
        Some(Self::new(move |side, line| {
            tracing::trace!(target: TRACE_TARGET, host = %host, side = side.prefix(), "{line}");
        }))
    }

    pub(crate) fn line(&self, side: TranscriptSide, text: &str) {
        (self.0)(side, text);
    }

    /// Client bytes (one or more CRLF-terminated command lines); `in_auth` redacts them.
    pub(crate) fn client(&self, bytes: &[u8], in_auth: bool) {
        let text = String::from_utf8_lossy(bytes);
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            if in_auth {
                self.line(TranscriptSide::Client, &redact_auth_line(line));
            } else {
                self.line(TranscriptSide::Client, line);
            }
        }
    }

    /// Server bytes (one reply, possibly multi-line).
    pub(crate) fn server(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            self.line(TranscriptSide::Server, line);
        }
    }
}

/// `AUTH <MECH> <anything>` keeps the mechanism; any other line of an AUTH exchange (a
/// LOGIN user name or password, an XOAUTH2 continuation) is replaced whole.
pub(crate) fn redact_auth_line(line: &str) -> String {
    let mut words = line.split(' ');
    match (words.next(), words.next()) {
        (Some(verb), Some(mech)) if verb.eq_ignore_ascii_case("AUTH") => {
            if words.next().is_some() {
                format!("{verb} {mech} {REDACTED}")
            } else {
                format!("{verb} {mech}")
            }
        }
        _ => REDACTED.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn auth_lines_are_redacted_and_others_kept() {
        assert_eq!(
            redact_auth_line("AUTH XOAUTH2 dXNlcj1hQGIBYXV0aD1CZWFyZXIgeHl6AQE="),
            "AUTH XOAUTH2 [redacted]"
        );
        assert_eq!(redact_auth_line("AUTH LOGIN"), "AUTH LOGIN");
        assert_eq!(redact_auth_line("c2VjcmV0"), "[redacted]");
        assert_eq!(redact_auth_line(""), "[redacted]");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let t = Transcript::new(move |side, l| s2.lock().unwrap().push(format!("{side:?} {l}")));
        t.client(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", false);
        t.client(b"AUTH PLAIN AGEAYg==\r\n", true);
        t.server(b"250-one\r\n250 two\r\n");
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "Client MAIL FROM:<a@b>",
                "Client RCPT TO:<c@d>",
                "Client AUTH PLAIN [redacted]",
                "Server 250-one",
                "Server 250 two"
            ]
        );
    }
}
