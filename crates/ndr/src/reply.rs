//! A permissive reader for SMTP reply lines as they appear in logs, DSN `Diagnostic-Code`
//! fields and Exchange NDRs, producing the classifier's input.

use std::borrow::Cow;

use postern_smtp::{EnhancedCode, ReplyCode};

use crate::error::NdrError;

/// The longest reply text [`ReplyView::parse`] accepts, in bytes.
pub const MAX_REPLY_LENGTH: usize = 64 * 1024;

/// The classifier's input: a basic reply code, an optional enhanced code and the text.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyView<'a> {
    /// The three-digit reply code.
    pub code: ReplyCode,
    /// The enhanced status code at the start of the text, if any.
    pub enhanced: Option<EnhancedCode>,
    /// The text after the codes; the lines of a multi-line reply joined by single spaces.
    pub text: Cow<'a, str>,
}

impl<'a> ReplyView<'a> {
    /// A view from parts.
    pub fn new(
        code: ReplyCode,
        enhanced: Option<EnhancedCode>,
        text: impl Into<Cow<'a, str>>,
    ) -> Self {
        Self {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// Parses one reply written as text: `NNN text`, `NNN-text` continuation lines (CRLF or
    /// LF separated, the enhanced code repeated or not), a DSN `Diagnostic-Code` value
    /// (`smtp; 550 5.1.1 …`) or Exchange's NDR form (`#< #5.7.1 smtp;530 5.7.1 …> #SMTP#`).
    /// Lines that do not start with a code continue the previous line's text.
    ///
    /// ```
    /// use postern_ndr::ReplyView;
    ///
    /// let r = ReplyView::parse("550-5.1.1 The email account does not exist.\r\n550 5.1.1 Learn more").unwrap();
    /// assert_eq!(r.code.get(), 550);
    /// assert_eq!(r.enhanced.unwrap().to_string(), "5.1.1");
    /// assert_eq!(r.text, "The email account does not exist. Learn more");
    /// assert!(ReplyView::parse("hello").is_err());
    /// ```
    pub fn parse(input: &'a str) -> Result<Self, NdrError> {
        if input.len() > MAX_REPLY_LENGTH {
            return Err(NdrError::TooLong {
                len: input.len(),
                max: MAX_REPLY_LENGTH,
            });
        }
        let input = unwrap_diagnostic(input.trim());
        let mut lines = input
            .split('\n')
            .map(|l| l.trim_end_matches('\r').trim())
            .filter(|l| !l.is_empty());
        let first = lines.next().ok_or(NdrError::EmptyReply)?;
        let (code, rest) =
            split_code(first).ok_or_else(|| NdrError::NoReplyCode(truncate(first)))?;
        let code = code?;
        let (enhanced, first_text) = match EnhancedCode::parse_prefix(rest) {
            Some((e, used)) => (Some(e), rest[used..].trim()),
            None => (None, rest.trim()),
        };
        let mut text: Cow<'a, str> = Cow::Borrowed(first_text);
        for line in lines {
            let more = match split_code(line) {
                Some((other, rest)) => {
                    let other = other?;
                    if other != code {
                        return Err(NdrError::MixedReplyCodes {
                            first: code.get(),
                            other: other.get(),
                        });
                    }
                    strip_enhanced(rest, enhanced)
                }
                None => line,
            };
            if more.is_empty() {
                continue;
            }
            let owned = text.to_mut();
            if !owned.is_empty() {
                owned.push(' ');
            }
            owned.push_str(more);
        }
        if let Some(e) = enhanced {
            text = strip_inline_repeats(text, code, e);
        }
        Ok(Self {
            code,
            enhanced,
            text,
        })
    }

    /// A view that owns its text.
    pub fn into_owned(self) -> ReplyView<'static> {
        ReplyView {
            code: self.code,
            enhanced: self.enhanced,
            text: Cow::Owned(self.text.into_owned()),
        }
    }
}

impl<'a> From<&'a postern_smtp::Reply<'_>> for ReplyView<'a> {
    /// A view of a reply decoded by `postern-smtp`: its lines joined by single spaces, an
    /// enhanced code repeated at the start of later lines dropped.
    fn from(reply: &'a postern_smtp::Reply<'_>) -> Self {
        let enhanced = reply.enhanced();
        let text = match reply.lines() {
            [one] => Cow::Borrowed(strip_enhanced(one, enhanced)),
            lines => Cow::Owned(
                lines
                    .iter()
                    .map(|l| strip_enhanced(l, enhanced))
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        };
        Self {
            code: reply.code(),
            enhanced,
            text,
        }
    }
}

/// Removes a DSN `smtp;` type prefix or Exchange's `#< #X.Y.Z smtp;…> #SMTP#` wrapper.
fn unwrap_diagnostic(s: &str) -> &str {
    let mut s = s;
    if let Some(rest) = s.strip_prefix("#<") {
        if let Some(at) = find_ci(rest, "smtp;") {
            s = &rest[at + 5..];
            if let Some(end) = s.rfind("#SMTP#").or_else(|| s.rfind("#smtp#")) {
                s = s[..end].trim_end();
            }
            s = s.strip_suffix('>').unwrap_or(s);
        }
    } else if s.len() >= 5 && s.as_bytes()[..5].eq_ignore_ascii_case(b"smtp;") {
        s = &s[5..];
    }
    s.trim()
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// `NNN` followed by `-`, ` ` or the end: the code (or why it is invalid) and the rest.
fn split_code(line: &str) -> Option<(Result<ReplyCode, NdrError>, &str)> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    match b.get(3) {
        None | Some(b' ' | b'-' | b'\t') => {}
        Some(_) => return None,
    }
    let n = b[..3]
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let code = ReplyCode::new(n).ok_or(NdrError::InvalidReplyCode(n));
    Some((code, line.get(4..).unwrap_or("")))
}

fn strip_enhanced(rest: &str, enhanced: Option<EnhancedCode>) -> &str {
    match (enhanced, EnhancedCode::parse_prefix(rest)) {
        (Some(e), Some((again, used))) if again == e => rest[used..].trim(),
        _ => rest.trim(),
    }
}

/// Gmail's multi-line replies arrive in a DSN unfolded onto one line
/// (`… Please try 550-5.1.1 double-checking …`): drop the repeated codes.
fn strip_inline_repeats<'t>(text: Cow<'t, str>, code: ReplyCode, e: EnhancedCode) -> Cow<'t, str> {
    let dash = format!("{code}-{e} ");
    let space = format!("{code} {e} ");
    if !text.contains(&dash) && !text.contains(&space) {
        return text;
    }
    let cleaned = text.replace(&dash, "").replace(&space, "");
    Cow::Owned(cleaned.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_borrows() {
        let r = ReplyView::parse("530 5.7.57 Client not authenticated to send mail.").unwrap();
        assert!(matches!(r.text, Cow::Borrowed(_)));
        assert_eq!(r.enhanced.unwrap().to_string(), "5.7.57");
    }

    #[test]
    fn code_only_and_no_enhanced() {
        let r = ReplyView::parse("421").unwrap();
        assert_eq!((r.code.get(), r.enhanced, r.text.as_ref()), (421, None, ""));
        let r = ReplyView::parse("554 Transaction failed").unwrap();
        assert_eq!((r.enhanced, r.text.as_ref()), (None, "Transaction failed"));
    }

    #[test]
    fn exchange_ndr_wrapper_and_dsn_prefix() {
        let r = ReplyView::parse("#< #5.7.1 smtp;530 5.7.1 Client was not authenticated> #SMTP#")
            .unwrap();
        assert_eq!(r.code.get(), 530);
        assert_eq!(r.text, "Client was not authenticated");
        let r = ReplyView::parse("smtp; 550 5.1.1 <x@y>: Recipient address rejected").unwrap();
        assert_eq!(r.code.get(), 550);
        let r = ReplyView::parse("SMTP;550 5.1.10 RESOLVER.ADR.RecipientNotFound").unwrap();
        assert_eq!(r.enhanced.unwrap().to_string(), "5.1.10");
    }

    #[test]
    fn gmail_unfolded() {
        let r = ReplyView::parse(
            "550-5.1.1 The email account that you tried to reach does not exist. Please try 550-5.1.1 double-checking. 550 5.1.1 https://support.google.com/mail/?p=NoSuchUser x1",
        )
        .unwrap();
        assert_eq!(
            r.text,
            "The email account that you tried to reach does not exist. Please try double-checking. https://support.google.com/mail/?p=NoSuchUser x1"
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(ReplyView::parse(""), Err(NdrError::EmptyReply)));
        assert!(matches!(
            ReplyView::parse("  \r\n "),
            Err(NdrError::EmptyReply)
        ));
        assert!(matches!(
            ReplyView::parse("hello"),
            Err(NdrError::NoReplyCode(_))
        ));
        assert!(matches!(
            ReplyView::parse("5500 x"),
            Err(NdrError::NoReplyCode(_))
        ));
        assert!(matches!(
            ReplyView::parse("199 x"),
            Err(NdrError::InvalidReplyCode(199))
        ));
        assert!(matches!(
            ReplyView::parse("550-a\n451 b"),
            Err(NdrError::MixedReplyCodes {
                first: 550,
                other: 451
            })
        ));
        let long = format!("550 {}", "x".repeat(MAX_REPLY_LENGTH));
        assert!(matches!(
            ReplyView::parse(&long),
            Err(NdrError::TooLong { .. })
        ));
    }

    #[test]
    fn from_smtp_reply() {
        let bytes = b"550-5.1.1 The email account does not exist.\r\n550-5.1.1 Please try\r\n550 5.1.1 double-checking\r\n";
        let (reply, _) = postern_smtp::Reply::decode(bytes).unwrap();
        let view = ReplyView::from(&reply);
        assert_eq!(view.code.get(), 550);
        assert_eq!(view.enhanced.unwrap().to_string(), "5.1.1");
        assert_eq!(
            view.text,
            "The email account does not exist. Please try double-checking"
        );
        assert_eq!(
            crate::classify_reply(&reply).category,
            crate::Category::RecipientUnknown
        );
    }

    #[test]
    fn continuation_without_code() {
        let r = ReplyView::parse("550 5.7.1 first part\n   wrapped by a log viewer").unwrap();
        assert_eq!(r.text, "first part wrapped by a log viewer");
    }
}
