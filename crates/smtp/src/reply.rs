//! Replies (RFC 5321 §4.2), single and multi-line, with the enhanced status code (RFC 2034)
//! split out.

use std::borrow::Cow;
use std::fmt;

use nom::Parser;
use nom::bytes::complete::take_while_m_n;

use crate::error::{DecodeError, InvalidKind};
use crate::grammar::PResult;
use crate::line::{ParseOptions, read_line};
use crate::status::{EnhancedCode, ReplyCode, Severity};

/// A server reply: a code, an optional enhanced status code, and one or more lines of text.
///
/// The text of each line is kept verbatim, minus the code, the separator and (when it
/// repeats the first line's) the enhanced code. There is no per-line limit: Exchange Online
/// sends lines longer than RFC 5321's 512 octets; a whole reply is bounded by
/// [`ParseOptions::max_reply`] ([`MAX_REPLY_LENGTH`](crate::MAX_REPLY_LENGTH), 64 KiB).
///
/// ```
/// use postern_smtp::{Reply, ReplyCode};
///
/// let input = b"550-5.7.1 Unable to relay\r\n550 5.7.1 see https://aka.ms/x\r\n";
/// let (reply, used) = Reply::decode(input).unwrap();
/// assert_eq!(used, input.len());
/// assert_eq!(reply.code(), ReplyCode::MAILBOX_UNAVAILABLE);
/// assert_eq!(reply.enhanced().unwrap().to_string(), "5.7.1");
/// assert_eq!(reply.lines(), ["Unable to relay", "see https://aka.ms/x"]);
/// assert_eq!(reply.text(), "Unable to relay\nsee https://aka.ms/x");
/// assert!(reply.is_permanent());
///
/// let mut out = Vec::new();
/// reply.encode(&mut out);
/// assert_eq!(out, input);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply<'a> {
    code: ReplyCode,
    enhanced: Option<EnhancedCode>,
    lines: Vec<Cow<'a, str>>,
}

impl<'a> Reply<'a> {
    /// Builds a reply. `text` is split into lines at `\n` (a `\r` before it is dropped).
    pub fn new(
        code: ReplyCode,
        enhanced: Option<EnhancedCode>,
        text: impl Into<Cow<'a, str>>,
    ) -> Self {
        let text = text.into();
        let lines = if text.contains('\n') {
            text.split('\n')
                .map(|l| Cow::Owned(l.strip_suffix('\r').unwrap_or(l).to_owned()))
                .collect()
        } else {
            vec![text]
        };
        Self {
            code,
            enhanced,
            lines,
        }
    }

    /// Builds a reply from its lines (an empty vector gives one empty line).
    pub fn with_lines(
        code: ReplyCode,
        enhanced: Option<EnhancedCode>,
        lines: Vec<Cow<'a, str>>,
    ) -> Self {
        let lines = if lines.is_empty() {
            vec![Cow::Borrowed("")]
        } else {
            lines
        };
        Self {
            code,
            enhanced,
            lines,
        }
    }

    /// Decodes one complete reply (all its lines) with the default options.
    ///
    /// Returns [`DecodeError::Incomplete`] until the last line (`code SP text CRLF`) is in
    /// `input`.
    pub fn decode(input: &'a [u8]) -> Result<(Self, usize), DecodeError> {
        Self::decode_with(input, &ParseOptions::default())
    }

    /// Decodes one complete reply, bounded by `opts.max_reply`; a bare LF line ending is
    /// accepted when `opts.lenient`.
    pub fn decode_with(input: &'a [u8], opts: &ParseOptions) -> Result<(Self, usize), DecodeError> {
        let max = opts.max_reply;
        let mut at = 0;
        let mut code = None;
        let mut enhanced = None;
        let mut lines = Vec::new();
        loop {
            let budget = max.saturating_sub(at);
            let (line, used) = match read_line(&input[at..], budget, opts.lenient) {
                Ok(r) => r,
                Err(DecodeError::TooLong { .. }) => return Err(DecodeError::TooLong { max }),
                Err(DecodeError::Invalid { consumed, kind }) => {
                    return Err(DecodeError::Invalid {
                        consumed: at + consumed,
                        kind,
                    });
                }
                Err(e) => return Err(e),
            };
            at += used;
            let invalid = |why| DecodeError::Invalid {
                consumed: at,
                kind: InvalidKind::Syntax(why),
            };
            let (this_code, last, text) =
                reply_line(line).map_err(|_| invalid("bad reply line"))?;
            match code {
                None => code = Some(this_code),
                Some(c) if c != this_code => {
                    return Err(invalid("reply code changed between lines"));
                }
                Some(_) => {}
            }
            let text = String::from_utf8_lossy(text);
            let text = if lines.is_empty() {
                match EnhancedCode::parse_prefix(&text) {
                    Some((e, n)) => {
                        enhanced = Some(e);
                        cut(text, n)
                    }
                    None => text,
                }
            } else {
                match (enhanced, EnhancedCode::parse_prefix(&text)) {
                    (Some(e), Some((this, n))) if e == this => cut(text, n),
                    _ => text,
                }
            };
            lines.push(text);
            if last {
                let code = code.unwrap_or(this_code);
                return Ok((
                    Self {
                        code,
                        enhanced,
                        lines,
                    },
                    at,
                ));
            }
        }
    }

    /// Appends the reply to `out`, one `code-text` line per line and `code SP text` last. The
    /// enhanced code, if any, starts every line (RFC 2034 §4). CR and LF inside a line are
    /// replaced by spaces so that the output always parses back.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let code = self.code.get().to_string();
        let enhanced = self.enhanced.map(|e| e.to_string());
        let n = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(code.as_bytes());
            out.push(if i + 1 == n { b' ' } else { b'-' });
            if let Some(e) = &enhanced {
                out.extend_from_slice(e.as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            let start = out.len();
            out.extend_from_slice(line.as_bytes());
            for b in &mut out[start..] {
                if *b == b'\r' || *b == b'\n' {
                    *b = b' ';
                }
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The reply as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// The three-digit code.
    pub fn code(&self) -> ReplyCode {
        self.code
    }

    /// The enhanced status code of the first line, if it had one.
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    /// Replaces the enhanced code.
    pub fn with_enhanced(mut self, enhanced: EnhancedCode) -> Self {
        self.enhanced = Some(enhanced);
        self
    }

    /// The lines of text.
    pub fn lines(&self) -> &[Cow<'a, str>] {
        &self.lines
    }

    /// The text, lines joined with `\n`.
    pub fn text(&self) -> Cow<'_, str> {
        match self.lines.as_slice() {
            [one] => Cow::Borrowed(one),
            many => Cow::Owned(many.join("\n")),
        }
    }

    /// The first digit of the code.
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    /// `2yz`: done.
    pub fn is_positive_completion(&self) -> bool {
        self.code.severity() == Severity::PositiveCompletion
    }

    /// `2yz` or `3yz`.
    pub fn is_positive(&self) -> bool {
        self.code.is_positive()
    }

    /// `3yz`: the server waits for more (`354`, `334`).
    pub fn is_intermediate(&self) -> bool {
        self.code.is_intermediate()
    }

    /// `4yz`.
    pub fn is_transient(&self) -> bool {
        self.code.is_transient()
    }

    /// `5yz`.
    pub fn is_permanent(&self) -> bool {
        self.code.is_permanent()
    }

    /// Detaches the reply from the input buffer.
    pub fn into_owned(self) -> Reply<'static> {
        Reply {
            code: self.code,
            enhanced: self.enhanced,
            lines: self
                .lines
                .into_iter()
                .map(|l| Cow::Owned(l.into_owned()))
                .collect(),
        }
    }
}

impl fmt::Display for Reply<'_> {
    /// The reply as it goes on the wire, CRLFs included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

fn cut(text: Cow<'_, str>, n: usize) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(&s[n..]),
        Cow::Owned(s) => Cow::Owned(s[n..].to_owned()),
    }
}

/// `code ("-" / SP / end) text` -> (code, is_last, text).
fn reply_line(line: &[u8]) -> Result<(ReplyCode, bool, &[u8]), ()> {
    let s = line.get(..3).ok_or(())?;
    let s = std::str::from_utf8(s).map_err(|_| ())?;
    let digits: PResult<'_, &str> = take_while_m_n(3, 3, |c: char| c.is_ascii_digit()).parse(s);
    let (_, digits) = digits.map_err(|_| ())?;
    let n: u16 = digits.parse().map_err(|_| ())?;
    let code = ReplyCode::new(n).ok_or(())?;
    match line.get(3) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusClass;
    use proptest::prelude::*;

    #[test]
    fn single_line() {
        let (r, n) = Reply::decode(b"250 OK\r\n").unwrap();
        assert_eq!(
            (r.code(), r.enhanced(), r.text().as_ref(), n),
            (ReplyCode::OK, None, "OK", 8)
        );
        let (r, _) = Reply::decode(b"220\r\n").unwrap();
        assert_eq!(r.lines(), [""]);
        let (r, _) = Reply::decode(b"250 2.0.0\r\n").unwrap();
        assert_eq!(r.enhanced().map(|e| e.class), Some(StatusClass::Success));
        assert_eq!(r.text(), "");
        assert_eq!(r.to_bytes(), b"250 2.0.0\r\n");
    }

    #[test]
    fn incomplete_and_errors() {
        assert_eq!(
            Reply::decode(b"250-a\r\n250 b"),
            Err(DecodeError::Incomplete)
        );
        assert_eq!(Reply::decode(b"250-a\r\n"), Err(DecodeError::Incomplete));
        assert!(matches!(
            Reply::decode(b"250-a\r\n251 b\r\n"),
            Err(DecodeError::Invalid { consumed: 14, .. })
        ));
        assert!(matches!(
            Reply::decode(b"25 x\r\n"),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(matches!(
            Reply::decode(b"199 x\r\n"),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(matches!(
            Reply::decode(b"250x\r\n"),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(matches!(
            Reply::decode(b"250 x\n"),
            Err(DecodeError::Invalid { .. })
        ));
        let lenient = ParseOptions::default().lenient(true);
        assert!(Reply::decode_with(b"250 x\n", &lenient).is_ok());
    }

    #[test]
    fn long_exchange_line() {
        let text = "x".repeat(2000);
        let wire = format!("550 5.7.708 {text}\r\n");
        let (r, _) = Reply::decode(wire.as_bytes()).unwrap();
        assert_eq!(r.text(), text);
        let small = ParseOptions::default().max_reply(100);
        assert_eq!(
            Reply::decode_with(wire.as_bytes(), &small),
            Err(DecodeError::TooLong { max: 100 })
        );
    }

    #[test]
    fn enhanced_on_later_lines_differs() {
        let (r, _) = Reply::decode(b"451-4.7.500 Server busy\r\n451 4.7.501 other\r\n").unwrap();
        assert_eq!(r.lines(), ["Server busy", "4.7.501 other"]);
        let (r, _) = Reply::decode(b"451 5.7.3 Exchange mismatch\r\n").unwrap();
        assert_eq!(r.enhanced().unwrap().to_string(), "5.7.3");
    }

    #[test]
    fn non_utf8_text_is_lossy() {
        let (r, _) = Reply::decode(b"250 caf\xe9\r\n").unwrap();
        assert_eq!(r.text(), "caf\u{fffd}");
    }

    fn enhanced_for(code: ReplyCode) -> impl Strategy<Value = Option<EnhancedCode>> {
        let class = match code.severity() {
            Severity::PositiveCompletion | Severity::PositiveIntermediate => StatusClass::Success,
            Severity::TransientNegative => StatusClass::PersistentTransient,
            Severity::PermanentNegative => StatusClass::Permanent,
        };
        prop::option::of((0u16..1000, 0u16..1000))
            .prop_map(move |sd| sd.and_then(|(s, d)| EnhancedCode::new(class, s, d)))
    }

    fn reply() -> impl Strategy<Value = Reply<'static>> {
        (200u16..560)
            .prop_filter_map("valid code", ReplyCode::new)
            .prop_flat_map(|code| {
                (
                    Just(code),
                    enhanced_for(code),
                    // Text that does not itself start like an enhanced code.
                    prop::collection::vec("([A-Za-z\\[<(][ -~]{0,60})?", 1..5),
                )
            })
            .prop_map(|(code, enhanced, lines)| {
                Reply::with_lines(code, enhanced, lines.into_iter().map(Cow::Owned).collect())
            })
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(r in reply()) {
            let wire = r.to_bytes();
            let (back, n) = Reply::decode(&wire).unwrap();
            prop_assert_eq!(n, wire.len());
            prop_assert_eq!(&back, &r);
            let shown = r.to_string();
            prop_assert_eq!(shown.as_bytes(), &wire[..]);
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            match Reply::decode(&bytes) {
                Ok((_, n)) => prop_assert!(n <= bytes.len()),
                Err(DecodeError::Invalid { consumed, .. }) => prop_assert!(consumed <= bytes.len()),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn new_splits_lines() {
        let r = Reply::new(ReplyCode::OK, None, "a\r\nb");
        assert_eq!(r.to_bytes(), b"250-a\r\n250 b\r\n");
        let r = Reply::with_lines(ReplyCode::OK, None, vec![Cow::Borrowed("x\ry")]);
        assert_eq!(r.to_bytes(), b"250 x y\r\n");
    }
}
