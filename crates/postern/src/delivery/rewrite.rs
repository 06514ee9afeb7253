//! Sender handling: rewrite the `From:` header to a route's mailbox so that Exchange
//! Online's Send As rule is met, keeping the original sender where replies and people can
//! still see it.
//!
//! Only the header block is touched (it is read whole, bounded by
//! [`MAX_HEADER_BLOCK`], before the body is streamed unchanged behind it):
//!
//! - `From:` becomes the original display name (if any) with the mailbox's address;
//! - the original `From:` value is kept in `X-Original-From:`, and in `Reply-To:` when the
//!   message has none (so replies still reach the device's sender);
//! - a `Sender:` header (also checked by Exchange) is removed and kept as
//!   `X-Original-Sender:`;
//! - a message without `From:` gets `From: <mailbox>`.
//!
//! ```
//! use postern::delivery::rewrite::rewrite_headers;
//! let h = b"From: Scanner 3F <scan3f@printers.contoso.com>\r\nSubject: scan\r\n\r\n";
//! let out = rewrite_headers(h, "relay@contoso.com");
//! let text = String::from_utf8(out).unwrap();
//! assert!(text.starts_with("From: Scanner 3F <relay@contoso.com>\r\n"));
//! assert!(text.contains("Reply-To: Scanner 3F <scan3f@printers.contoso.com>\r\n"));
//! assert!(text.contains("X-Original-From: Scanner 3F <scan3f@printers.contoso.com>\r\n"));
//! assert!(text.ends_with("Subject: scan\r\n\r\n"));
//! ```

/// The largest header block read for rewriting (256 KiB); a message whose headers do not
/// end within it is sent with its headers unchanged.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// The length of the header block at the start of `message`, blank line included, if it
/// ends within `message`.
pub fn header_block_len(message: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < message.len() {
        let end = memchr_lf(&message[at..]).map(|p| at + p + 1)?;
        let line = &message[at..end];
        if line == b"\r\n" || line == b"\n" {
            return Some(end);
        }
        at = end;
    }
    None
}

fn memchr_lf(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}

/// One header field: its name and its raw value (continuation lines included, line endings
/// stripped of the final CRLF).
struct Field<'a> {
    name: &'a [u8],
    raw: &'a [u8],
}

impl Field<'_> {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value, unfolded (CRLF before whitespace removed) and trimmed.
    fn value(&self) -> Vec<u8> {
        let colon = self.raw.iter().position(|&b| b == b':').unwrap_or(0);
        let mut v: Vec<u8> = Vec::with_capacity(self.raw.len());
        for &b in &self.raw[colon + 1..] {
            if b != b'\r' && b != b'\n' {
                v.push(b);
            }
        }
        trim(&v).to_vec()
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &s[start..end.max(start)]
}

fn fields(block: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let end = memchr_lf(&block[at..]).map_or(block.len(), |p| at + p + 1);
        let line = &block[at..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        match out.last_mut() {
            Some(last) if continuation => {
                let start = last.raw.as_ptr() as usize - block.as_ptr() as usize;
                last.raw = &block[start..end];
            }
            _ => {
                let name = line
                    .iter()
                    .position(|&b| b == b':')
                    .map_or(&line[..0], |c| trim(&line[..c]));
                out.push(Field { name, raw: line });
            }
        }
        at = end;
    }
    out
}

/// The display-name part of an address header value (`Name <addr>` → `Name`), if any.
fn display_name(value: &[u8]) -> Option<&[u8]> {
    let lt = value.iter().rposition(|&b| b == b'<')?;
    let name = trim(&value[..lt]);
    (!name.is_empty()).then_some(name)
}

fn push_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Rewrites a header block (as found by [`header_block_len`], blank line included) so the
/// message is from `mailbox`; see the [module documentation](self). Returns the new block,
/// blank line included. Lines other than `From:` and `Sender:` are kept byte for byte.
pub fn rewrite_headers(block: &[u8], mailbox: &str) -> Vec<u8> {
    let fields = fields(block);
    let has_reply_to = fields.iter().any(|f| f.is("Reply-To"));
    let has_from = fields.iter().any(|f| f.is("From"));
    let mut out = Vec::with_capacity(block.len() + 256);
    if !has_from {
        push_line(&mut out, "From", format!("<{mailbox}>").as_bytes());
    }
    let mut from_done = false;
    for f in &fields {
        if f.is("From") && !from_done {
            from_done = true;
            let original = f.value();
            let mut new = Vec::new();
            if let Some(name) = display_name(&original) {
                new.extend_from_slice(name);
                new.push(b' ');
            }
            new.extend_from_slice(format!("<{mailbox}>").as_bytes());
            push_line(&mut out, "From", &new);
            if !has_reply_to && !original.is_empty() {
                push_line(&mut out, "Reply-To", &original);
            }
            push_line(&mut out, "X-Original-From", &original);
        } else if f.is("From") {
            // A second From: would make Exchange check it too; keep it only as a record.
            push_line(&mut out, "X-Original-From", &f.value());
        } else if f.is("Sender") {
            push_line(&mut out, "X-Original-Sender", &f.value());
        } else {
            out.extend_from_slice(f.raw);
            if !f.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(h: &str) -> String {
        String::from_utf8(rewrite_headers(h.as_bytes(), "relay@contoso.com")).unwrap()
    }

    #[test]
    fn block_length() {
        assert_eq!(header_block_len(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(header_block_len(b"A: b\n\nbody"), Some(6));
        assert_eq!(header_block_len(b"A: b\r\nB: c"), None);
        assert_eq!(header_block_len(b"\r\nbody"), Some(2));
    }

    #[test]
    fn keeps_reply_to_and_folds() {
        let out = rw(
            "Received: from x\r\n\tby y\r\nFrom: \"Scan, 3F\"\r\n <scan@dev.local>\r\nReply-To: boss@contoso.com\r\nSender: s@dev.local\r\n\r\n",
        );
        assert_eq!(
            out,
            "Received: from x\r\n\tby y\r\nFrom: \"Scan, 3F\" <relay@contoso.com>\r\n\
             X-Original-From: \"Scan, 3F\" <scan@dev.local>\r\nReply-To: boss@contoso.com\r\n\
             X-Original-Sender: s@dev.local\r\n\r\n"
        );
    }

    #[test]
    fn bare_address_and_missing_from() {
        let out = rw("from: scan@dev.local\r\nSubject: x\r\n\r\n");
        assert!(out.starts_with("From: <relay@contoso.com>\r\nReply-To: scan@dev.local\r\n"));
        let out = rw("Subject: x\r\n\r\n");
        assert_eq!(out, "From: <relay@contoso.com>\r\nSubject: x\r\n\r\n");
    }
}
