//! DATA framing (RFC 5321 §4.1.1.4, §4.5.2): a streaming decoder that removes dot-stuffing
//! and finds the end of data, and a streaming encoder that adds it.
//!
//! Only `CRLF . CRLF` ends the data. The state before the first byte counts as "after CRLF",
//! so `.CRLF` straight after the `354` ends an empty message. A bare CR or bare LF never
//! takes part in an end-of-data, whatever the [`BareLineEnding`] policy: `\n.\n`, `\r\n.\n`,
//! `\n.\r\n`, `\r.\r` and friends are message content (and, with
//! [`BareLineEnding::Reject`], a reason to refuse the message), never a terminator. This is
//! what keeps SMTP smuggling out.

use memchr::memchr2;

use crate::error::DataError;

/// Default longest text line, CRLF included (RFC 5321 §4.5.3.1.6).
pub const MAX_TEXT_LINE_LENGTH: usize = 1000;

/// What to do with a CR or LF that is not part of a CRLF pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BareLineEnding {
    /// Refuse the message ([`DataError::BareLineEnding`], `550 5.6.11`) once its end has been
    /// read. The default, as Exchange Online does.
    #[default]
    Reject,
    /// Turn each bare CR and bare LF into CRLF (what many legacy devices need).
    Normalize,
}

/// Settings of a [`DataDecoder`].
///
/// Defaults: [`BareLineEnding::Reject`], `max_line` [`MAX_TEXT_LINE_LENGTH`] (1000, CRLF
/// included; `usize::MAX` for no limit), `max_size` `None` (no limit).
///
/// ```
/// use postern_smtp::{BareLineEnding, DataOptions};
///
/// let opts = DataOptions::default()
///     .bare_line_ending(BareLineEnding::Normalize)
///     .max_size(Some(35 * 1024 * 1024));
/// assert_eq!(opts.max_line, 1000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataOptions {
    /// Policy for bare CR and bare LF.
    pub bare_line_ending: BareLineEnding,
    /// Longest line in octets, CRLF included, counted on the wire (before unstuffing).
    pub max_line: usize,
    /// Largest decoded message in octets.
    pub max_size: Option<u64>,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            bare_line_ending: BareLineEnding::Reject,
            max_line: MAX_TEXT_LINE_LENGTH,
            max_size: None,
        }
    }
}

impl DataOptions {
    /// Sets [`DataOptions::bare_line_ending`].
    pub fn bare_line_ending(mut self, policy: BareLineEnding) -> Self {
        self.bare_line_ending = policy;
        self
    }

    /// Sets [`DataOptions::max_line`].
    pub fn max_line(mut self, max_line: usize) -> Self {
        self.max_line = max_line;
        self
    }

    /// Sets [`DataOptions::max_size`].
    pub fn max_size(mut self, max_size: Option<u64>) -> Self {
        self.max_size = max_size;
        self
    }
}

/// What one [`DataDecoder::decode`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataProgress {
    /// Input bytes used. When `done`, the bytes after them belong to the next command.
    pub consumed: usize,
    /// Whether the terminating `CRLF.CRLF` has been read.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// At the start of a line (initially, or after a line ending).
    LineStart,
    /// Inside a line.
    Text,
    /// After a CR (already part of the output run), waiting for LF.
    Cr,
    /// After a `.` at the start of a line (not yet emitted).
    Dot,
    /// After `.` CR at the start of a line (neither emitted yet).
    DotCr,
    /// The terminator has been read.
    Done,
}

/// Bytes per block of the encoder's fast path.
const BLOCK: usize = 64;

/// Whether `block`, coming right after the byte `prev` (never a CR), goes out of the encoder
/// unchanged: each LF follows a CR, each CR precedes an LF (so none is last), and, with
/// `dots`, no line starts with `.`. One pass over byte pairs with no early exit, which
/// compiles to vector compares: on ordinary text it is faster than a `memchr2` per line.
#[inline]
fn block_is_plain(prev: u8, block: &[u8; BLOCK], dots: bool) -> bool {
    // `before[j]` is the byte before `block[j]`.
    let mut before = [prev; BLOCK];
    before[1..].copy_from_slice(&block[..BLOCK - 1]);
    let dots = u8::from(dots);
    let mut acc = 0u8;
    for (&a, &b) in before.iter().zip(block) {
        acc |= (u8::from(b == b'\n') ^ u8::from(a == b'\r'))
            | (u8::from(a == b'\n') & u8::from(b == b'.') & dots);
    }
    acc == 0 && block[BLOCK - 1] != b'\r'
}

/// Streaming DATA decoder: removes dot-stuffing and finds `CRLF.CRLF`.
///
/// Feed it whatever bytes arrive; the output does not depend on how the input is split.
/// Once [`DataProgress::done`], call [`DataDecoder::finish`] to learn whether the message is
/// acceptable. After an error the decoder keeps reading (to find the terminator and stay in
/// sync) but writes nothing more, and what it wrote is unusable: drop it.
///
/// ```
/// use postern_smtp::{BareLineEnding, DataDecoder, DataOptions};
///
/// let mut dec = DataDecoder::new(DataOptions::default());
/// let mut out = Vec::new();
/// let p = dec.decode(b"Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n", &mut out);
/// assert!(p.done);
/// assert_eq!(p.consumed, 25); // QUIT is the next command
/// assert_eq!(out, b"Subject: hi\r\n\r\n.dot\r\n");
/// assert_eq!(dec.finish(), Ok(21));
///
/// // A smuggling attempt is content, and refused once the real end arrives.
/// let mut dec = DataDecoder::new(DataOptions::default());
/// let p = dec.decode(b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n", &mut Vec::new());
/// assert!(p.done);
/// assert!(dec.finish().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct DataDecoder {
    opts: DataOptions,
    state: St,
    /// The current line began right after a bare CR/LF: it can never end the data.
    after_bare: bool,
    line_len: usize,
    size: u64,
    error: Option<DataError>,
}

impl DataDecoder {
    /// A decoder for one message.
    pub fn new(opts: DataOptions) -> Self {
        Self {
            opts,
            state: St::LineStart,
            after_bare: false,
            line_len: 0,
            size: 0,
            error: None,
        }
    }

    /// Decodes as much of `input` as belongs to the message, appending the message octets
    /// (CRLF line endings, dots unstuffed, terminator removed) to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataProgress {
        let n = input.len();
        let mut i = 0;
        let mut run = 0; // input[run..i] is pending verbatim output
        while i < n {
            match self.state {
                St::Done => break,
                St::Text => loop {
                    let Some(p) = memchr2(b'\r', b'\n', &input[i..]) else {
                        self.add_line(n - i);
                        i = n;
                        break;
                    };
                    self.add_line(p);
                    i += p;
                    // Fast path: CRLF followed by an ordinary byte starts an ordinary line,
                    // which stays in the same output run.
                    if input[i] == b'\r'
                        && i + 2 < n
                        && input[i + 1] == b'\n'
                        && !matches!(input[i + 2], b'.' | b'\r' | b'\n')
                    {
                        i += 2;
                        self.line_len = 0;
                        self.after_bare = false;
                        continue;
                    }
                    if input[i] == b'\r' {
                        i += 1;
                        self.state = St::Cr;
                    } else {
                        self.emit(out, &input[run..i]);
                        self.bare(out, b"\r\n");
                        i += 1;
                        run = i;
                    }
                    break;
                },
                St::Cr => {
                    if input[i] == b'\n' {
                        i += 1;
                        self.line_start(false);
                    } else {
                        // The CR is already in the output; complete it to CRLF.
                        self.emit(out, &input[run..i]);
                        self.bare(out, b"\n");
                        run = i;
                    }
                }
                St::LineStart => match input[i] {
                    b'.' => {
                        self.emit(out, &input[run..i]);
                        i += 1;
                        run = i;
                        self.add_line(1);
                        self.state = St::Dot;
                    }
                    b'\r' => {
                        i += 1;
                        self.state = St::Cr;
                    }
                    b'\n' => {
                        self.emit(out, &input[run..i]);
                        self.bare(out, b"\r\n");
                        i += 1;
                        run = i;
                    }
                    _ => self.state = St::Text,
                },
                St::Dot => match input[i] {
                    b'\r' => {
                        i += 1;
                        run = i;
                        self.state = St::DotCr;
                    }
                    b'\n' => {
                        // `.` then a bare LF: content, never an end of data.
                        self.bare(out, b".\r\n");
                        i += 1;
                        run = i;
                    }
                    // Dot-stuffing: the leading dot is dropped, the rest of the line is kept.
                    _ => self.state = St::Text,
                },
                St::DotCr => {
                    if input[i] == b'\n' {
                        i += 1;
                        run = i;
                        if !self.after_bare {
                            self.state = St::Done;
                            break;
                        }
                        // `.CRLF` right after a bare line ending: content.
                        self.emit(out, b".\r\n");
                        self.line_start(false);
                    } else {
                        // `.` CR then something else: a bare CR.
                        self.bare(out, b".\r\n");
                    }
                }
            }
        }
        if run < i {
            self.emit(out, &input[run..i]);
        }
        DataProgress {
            consumed: i,
            done: self.state == St::Done,
        }
    }

    /// Whether the terminator has been read.
    pub fn is_done(&self) -> bool {
        self.state == St::Done
    }

    /// The first problem seen so far, if any. Once set, nothing more is written to `out`.
    pub fn error(&self) -> Option<&DataError> {
        self.error.as_ref()
    }

    /// Decoded octets so far (counted even after an error).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// After the terminator: the decoded size, or why the message must be refused (reply with
    /// [`DataError::reply`]). Before it: [`DataError::Unterminated`].
    pub fn finish(&self) -> Result<u64, DataError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.state != St::Done {
            return Err(DataError::Unterminated);
        }
        Ok(self.size)
    }

    fn line_start(&mut self, after_bare: bool) {
        self.state = St::LineStart;
        self.after_bare = after_bare;
        self.line_len = 0;
    }

    #[inline]
    fn add_line(&mut self, n: usize) {
        self.line_len += n;
        if self.line_len > self.opts.max_line.saturating_sub(2) {
            self.fail(DataError::LineTooLong {
                max: self.opts.max_line,
            });
        }
    }

    fn fail(&mut self, e: DataError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// A bare CR or LF was seen; `normalized` is what replaces it.
    fn bare(&mut self, out: &mut Vec<u8>, normalized: &[u8]) {
        if self.opts.bare_line_ending == BareLineEnding::Reject {
            self.fail(DataError::BareLineEnding);
        }
        self.emit(out, normalized);
        self.line_start(true);
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if let Some(max) = self.opts.max_size
            && self.size > max
        {
            self.fail(DataError::TooBig { max });
        }
        if self.error.is_none() {
            out.extend_from_slice(bytes);
        }
    }
}

/// Streaming DATA encoder: line endings normalised to CRLF, dots stuffed, a final CRLF
/// ensured and `.CRLF` appended by [`DataEncoder::finish`].
///
/// ```
/// use postern_smtp::DataEncoder;
///
/// let mut enc = DataEncoder::new();
/// let mut out = Vec::new();
/// enc.encode(b"Subject: x\n\n.hidden\r", &mut out);
/// enc.encode(b"\nno final newline", &mut out);
/// enc.finish(&mut out);
/// assert_eq!(out, b"Subject: x\r\n\r\n..hidden\r\nno final newline\r\n.\r\n");
/// ```
#[derive(Debug, Clone)]
pub struct DataEncoder {
    line_start: bool,
    pending_cr: bool,
    stuff: bool,
    finished: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataEncoder {
    /// An encoder for a DATA transfer.
    pub fn new() -> Self {
        Self {
            line_start: true,
            pending_cr: false,
            stuff: true,
            finished: false,
        }
    }

    /// An encoder for BDAT chunks (RFC 3030): line endings normalised and a final CRLF
    /// ensured, but no dot-stuffing and no terminator. Do not use it for `BODY=BINARYMIME`,
    /// whose octets must go out unchanged.
    pub fn bdat() -> Self {
        Self {
            stuff: false,
            ..Self::new()
        }
    }

    /// Encodes the next piece of the message.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let n = input.len();
        let mut i = 0;
        let mut run = 0;
        while i < n {
            // Whole blocks with nothing to change stay in the verbatim run.
            if !self.pending_cr {
                let j = self.plain_blocks(input, i);
                if j != i {
                    i = j;
                    continue;
                }
            }
            if self.pending_cr {
                self.pending_cr = false;
                self.line_start = true;
                if input[i] == b'\n' {
                    i += 1;
                } else {
                    out.extend_from_slice(&input[run..i]);
                    out.push(b'\n');
                    run = i;
                }
                continue;
            }
            if self.line_start && self.stuff && input[i] == b'.' {
                out.extend_from_slice(&input[run..i]);
                out.push(b'.');
                run = i;
            }
            self.line_start = false;
            match memchr2(b'\r', b'\n', &input[i..]) {
                None => i = n,
                Some(p) => {
                    i += p;
                    if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
                        i += 2;
                        self.line_start = true;
                    } else if input[i] == b'\r' {
                        i += 1;
                        self.pending_cr = true;
                    } else {
                        out.extend_from_slice(&input[run..i]);
                        out.extend_from_slice(b"\r\n");
                        i += 1;
                        run = i;
                        self.line_start = true;
                    }
                }
            }
        }
        out.extend_from_slice(&input[run..n]);
    }

    /// The fast path: skips the whole blocks from `input[i..]` that encode to themselves (see
    /// [`block_is_plain`]). Returns where it stopped. Not after a pending CR.
    fn plain_blocks(&mut self, input: &[u8], mut i: usize) -> usize {
        let mut prev = if self.line_start { b'\n' } else { b'x' };
        while let Some(Ok(block)) = input.get(i..i + BLOCK).map(<&[u8; BLOCK]>::try_from) {
            if !block_is_plain(prev, block, self.stuff) {
                break;
            }
            prev = block[BLOCK - 1];
            self.line_start = prev == b'\n';
            i += BLOCK;
        }
        i
    }

    /// Ends the message: completes the last line with CRLF if needed and, for DATA, appends
    /// `.CRLF`. Calling it again does nothing.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.pending_cr {
            out.push(b'\n');
            self.pending_cr = false;
        } else if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        self.line_start = true;
        if self.stuff {
            out.extend_from_slice(b".\r\n");
        }
    }

    /// Encodes a whole message in one go (DATA framing, terminator included).
    pub fn encode_all(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
        let mut enc = Self::new();
        enc.encode(message, &mut out);
        enc.finish(&mut out);
        out
    }
}

#[cfg(test)]
mod tests;
