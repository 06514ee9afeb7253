//! Line framing shared by the command and reply decoders, and the parse options.

use nom::bytes::streaming::take_until;
use nom::{IResult, Parser};

use crate::error::{DecodeError, InvalidKind};

/// Default maximum command line length, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_LINE_LENGTH: usize = 512;

/// Default maximum size of a whole (multi-line) reply, every CRLF included.
///
/// RFC 5321 §4.5.3.1.5 says a reply line is at most 512 octets, but Exchange Online sends
/// longer ones (long `5.7.x` explanations with URLs), so replies get a generous 64 KiB budget
/// for all of their lines together instead of a per-line limit.
pub const MAX_REPLY_LENGTH: usize = 64 * 1024;

/// How strictly to read commands and replies.
///
/// Defaults: strict (`lenient: false`), `max_line` [`MAX_LINE_LENGTH`] (512),
/// `max_reply` [`MAX_REPLY_LENGTH`] (64 KiB), `smtputf8: true`.
///
/// ```
/// use postern_smtp::ParseOptions;
///
/// let opts = ParseOptions::default().lenient(true).max_line(1024);
/// assert!(opts.lenient && opts.max_line == 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseOptions {
    /// Accept what real devices send and Postfix tolerates: a bare LF line ending, spaces after
    /// `MAIL FROM:`/`RCPT TO:`, paths without angle brackets, extra and trailing spaces,
    /// underscores in HELO/EHLO names and unbracketed IP addresses there. Default `false`.
    pub lenient: bool,
    /// Longest command line accepted, CRLF included. Default 512.
    pub max_line: usize,
    /// Longest reply accepted (all lines, CRLFs included). Default 64 KiB.
    pub max_reply: usize,
    /// Accept UTF-8 in addresses and parameter values (RFC 6531). When `false`, a non-ASCII
    /// address is refused with [`InvalidKind::NonAscii`] (`553 5.6.7`). Default `true`;
    /// whether the client also sent the `SMTPUTF8` MAIL parameter is checked by
    /// [`ServerSession`](crate::ServerSession).
    pub smtputf8: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            lenient: false,
            max_line: MAX_LINE_LENGTH,
            max_reply: MAX_REPLY_LENGTH,
            smtputf8: true,
        }
    }
}

impl ParseOptions {
    /// Sets [`ParseOptions::lenient`].
    pub fn lenient(mut self, lenient: bool) -> Self {
        self.lenient = lenient;
        self
    }

    /// Sets [`ParseOptions::max_line`].
    pub fn max_line(mut self, max_line: usize) -> Self {
        self.max_line = max_line;
        self
    }

    /// Sets [`ParseOptions::max_reply`].
    pub fn max_reply(mut self, max_reply: usize) -> Self {
        self.max_reply = max_reply;
        self
    }

    /// Sets [`ParseOptions::smtputf8`].
    pub fn smtputf8(mut self, smtputf8: bool) -> Self {
        self.smtputf8 = smtputf8;
        self
    }
}

/// Streaming "everything up to LF" on wire bytes.
fn until_lf(input: &[u8]) -> IResult<&[u8], &[u8]> {
    take_until("\n").parse(input)
}

/// Reads one line of at most `max` octets (terminator included).
///
/// Returns the line without its terminator and the number of bytes used. A line ending in a
/// bare LF is accepted only when `lenient`; a CR anywhere else in the line is refused.
pub(crate) fn read_line(
    input: &[u8],
    max: usize,
    lenient: bool,
) -> Result<(&[u8], usize), DecodeError> {
    let window = &input[..input.len().min(max)];
    let body = match until_lf(window) {
        Ok((_, body)) => body,
        Err(_) if window.len() >= max => return Err(DecodeError::TooLong { max }),
        Err(_) => return Err(DecodeError::Incomplete),
    };
    let consumed = body.len() + 1;
    let line = match body.split_last() {
        Some((b'\r', line)) => line,
        _ if lenient => body,
        _ => {
            return Err(DecodeError::Invalid {
                consumed,
                kind: InvalidKind::BareLineEnding,
            });
        }
    };
    if memchr::memchr(b'\r', line).is_some() {
        return Err(DecodeError::Invalid {
            consumed,
            kind: InvalidKind::BareLineEnding,
        });
    }
    Ok((line, consumed))
}

/// The common case of [`read_line`], in one pass over the bytes: the first ASCII control
/// character (0x00-0x1f or 0x7f) within `max` octets is the CR of a CRLF, or a bare LF when
/// `lenient`.
///
/// Returns the line without its terminator, which then holds no control character at all, and
/// the bytes used: exactly what [`read_line`] returns for such input. `None` means any other
/// case (a tab, a lone CR, no line ending yet...): ask [`read_line`].
pub(crate) fn read_plain_line(input: &[u8], max: usize, lenient: bool) -> Option<(&[u8], usize)> {
    let window = &input[..input.len().min(max)];
    let at = first_control(window)?;
    match window[at] {
        b'\r' if window.get(at + 1) == Some(&b'\n') => Some((&window[..at], at + 2)),
        b'\n' if lenient => Some((&window[..at], at + 1)),
        _ => None,
    }
}

/// The index of the first byte below 0x20 or equal to 0x7f, eight bytes per step.
fn first_control(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let (words, tail) = bytes.as_chunks::<8>();
    for (n, word) in words.iter().enumerate() {
        let w = u64::from_le_bytes(*word);
        // "Has a byte less than 0x20" and "has a zero byte" (on w ^ 0x7f7f..), the classic
        // bit tricks: the lowest flagged byte is always a true match, since borrows only run
        // upwards from one, and bytes of 0x80 and above are never flagged.
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let del = w ^ (ONES * 0x7f);
        let is_del = del.wrapping_sub(ONES) & !del & HIGH;
        let flags = below_space | is_del;
        if flags != 0 {
            return Some(n * 8 + (flags.trailing_zeros() / 8) as usize);
        }
    }
    tail.iter()
        .position(|&b| b < 0x20 || b == 0x7f)
        .map(|p| words.len() * 8 + p)
}

/// Reads one CRLF-terminated line (LF alone too when `opts.lenient`), at most `opts.max_line`
/// octets, and returns it without its terminator together with the bytes used.
///
/// Use it for lines that are not commands: the client's SASL responses after a `334`
/// challenge (RFC 4954 §4), for instance.
///
/// ```
/// use postern_smtp::{decode_line, ParseOptions};
///
/// let (line, used) = decode_line(b"dGVzdA==\r\nQUIT\r\n", &ParseOptions::default()).unwrap();
/// assert_eq!((line, used), (&b"dGVzdA=="[..], 10));
/// ```
pub fn decode_line<'a>(
    input: &'a [u8],
    opts: &ParseOptions,
) -> Result<(&'a [u8], usize), DecodeError> {
    read_line(input, opts.max_line, opts.lenient)
}

/// After [`DecodeError::TooLong`], the number of bytes to drop to get past the over-long line:
/// `Some(n)` when its LF is in `input`, `None` when all of `input` belongs to it (drop it all,
/// read more and call again).
///
/// ```
/// assert_eq!(postern_smtp::skip_line(b"xxxx\r\nQUIT\r\n"), Some(6));
/// assert_eq!(postern_smtp::skip_line(b"xxxx"), None);
/// ```
pub fn skip_line(input: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', input).map(|p| p + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn framing() {
        assert_eq!(read_line(b"NOOP\r\n", 512, false), Ok((&b"NOOP"[..], 6)));
        assert_eq!(
            read_line(b"NOOP\r", 512, false),
            Err(DecodeError::Incomplete)
        );
        assert_eq!(read_line(b"", 512, false), Err(DecodeError::Incomplete));
        assert_eq!(
            read_line(b"NOOP\n", 512, false),
            Err(DecodeError::Invalid {
                consumed: 5,
                kind: InvalidKind::BareLineEnding
            })
        );
        assert_eq!(read_line(b"NOOP\n", 512, true), Ok((&b"NOOP"[..], 5)));
        assert!(matches!(
            read_line(b"NO\rOP\r\n", 512, true),
            Err(DecodeError::Invalid { consumed: 7, .. })
        ));
    }

    #[test]
    fn plain_line_examples() {
        for (input, lenient) in [
            (&b"NOOP\r\n"[..], false),
            (b"MAIL FROM:<a@b.c> SIZE=1\r\nRCPT", false),
            (b"NOOP\n", true),
            (b"\n", true),
            (b"\r\n", false),
            (b"0123456789abcdef01234\x7f\r\n", false),
        ] {
            let plain = read_plain_line(input, 512, lenient);
            let expected = match input {
                b"0123456789abcdef01234\x7f\r\n" => None,
                _ => read_line(input, 512, lenient).ok(),
            };
            assert_eq!(plain, expected, "{input:?}");
        }
        for input in [
            &b"NOOP\n"[..],
            b"NO\tOP\r\n",
            b"NOOP\r",
            b"NOOP",
            b"NO\rOP\r\n",
            b"0123456789abcdef\x00\r\n",
        ] {
            assert_eq!(read_plain_line(input, 512, false), None, "{input:?}");
        }
        // The limit counts the CRLF, as in read_line.
        assert_eq!(read_plain_line(b"NOOP\r\n", 6, false).map(|r| r.1), Some(6));
        assert_eq!(read_plain_line(b"NOOP\r\n", 5, false), None);
    }

    #[test]
    fn first_control_finds_the_first() {
        let mut line = vec![b'a'; 40];
        assert_eq!(first_control(&line), None);
        line.extend_from_slice(&[0xc3, 0xa9, 0xff, 0x80]);
        assert_eq!(first_control(&line), None);
        for at in 0..line.len() {
            for c in [0u8, b'\t', b'\r', b'\n', 0x1f, 0x7f] {
                let mut l = line.clone();
                l[at] = c;
                // A later control byte (and borrows above it) must not change the answer.
                l.push(0x01);
                assert_eq!(first_control(&l), Some(at), "{at} {c}");
            }
        }
    }

    #[test]
    fn limits_include_crlf() {
        let mut line = vec![b'a'; 510];
        line.extend_from_slice(b"\r\n");
        assert_eq!(read_line(&line, 512, false).map(|r| r.1), Ok(512));
        let mut long = vec![b'a'; 511];
        long.extend_from_slice(b"\r\n");
        assert_eq!(
            read_line(&long, 512, false),
            Err(DecodeError::TooLong { max: 512 })
        );
        assert_eq!(
            read_line(&long[..400], 512, false),
            Err(DecodeError::Incomplete)
        );
    }

    proptest! {
        /// Whenever the one-pass framing answers, `read_line` answers the same, with a line
        /// free of control characters.
        #[test]
        fn plain_line_agrees_with_read_line(
            bytes in prop::collection::vec(
                prop_oneof![4 => b' '..=b'~', 1 => Just(b'\r'), 1 => Just(b'\n'), 1 => any::<u8>()],
                0..40,
            ),
            max in 0..48usize,
            lenient in any::<bool>(),
        ) {
            if let Some((line, used)) = read_plain_line(&bytes, max, lenient) {
                prop_assert_eq!(read_line(&bytes, max, lenient), Ok((line, used)));
                prop_assert!(!line.iter().any(|&b| b < 0x20 || b == 0x7f));
            }
        }
    }
}
