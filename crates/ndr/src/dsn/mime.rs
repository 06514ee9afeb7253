//! Just enough MIME to find the parts of a report: header blocks with folding, content types
//! with parameters, multipart bodies and transfer encodings.

use std::borrow::Cow;

use base64::Engine as _;

/// One header field: the name as written, the unfolded value (trimmed).
pub(crate) type Field = (String, String);

/// Splits a message into its header block and body at the first empty line (CRLF or LF).
/// Without an empty line the whole input is the header block.
pub(crate) fn split_head_body(input: &[u8]) -> (&[u8], &[u8]) {
    let mut at = 0;
    while at < input.len() {
        let end = memchr::memchr(b'\n', &input[at..]).map_or(input.len(), |i| at + i);
        let line = &input[at..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let next = (end + 1).min(input.len());
        if line.is_empty() {
            return (&input[..at], &input[next..]);
        }
        at = next;
    }
    (input, &[])
}

/// Parses header fields, unfolding continuation lines (RFC 5322 §2.2.3). Lines without a
/// colon that are not continuations are skipped.
pub(crate) fn parse_fields(head: &[u8]) -> Vec<Field> {
    let text = String::from_utf8_lossy(head);
    let mut fields: Vec<Field> = Vec::new();
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(line);
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(' ') {
                fields.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    for (_, value) in &mut fields {
        let trimmed = value.trim();
        if trimmed.len() != value.len() {
            *value = trimmed.to_owned();
        }
    }
    fields
}

/// The first value of a field, by case-insensitive name.
pub(crate) fn field<'f>(fields: &'f [Field], name: &str) -> Option<&'f str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A parsed `Content-Type`: lowercase `type/subtype` and its parameters (names lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentType {
    pub(crate) mime: String,
    pub(crate) params: Vec<(String, String)>,
}

impl ContentType {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses `type/subtype; name=value; name="quoted \" value"`.
    pub(crate) fn parse(value: &str) -> Self {
        let (mime, mut rest) = value.split_once(';').unwrap_or((value, ""));
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', '\t', ';', '\r', '\n']);
            let Some(eq) = rest.find('=') else { break };
            let name = rest[..eq].trim().to_ascii_lowercase();
            rest = rest[eq + 1..].trim_start();
            let val;
            if let Some(quoted) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                out.push(n);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        _ => out.push(c),
                    }
                }
                val = out;
                rest = &quoted[end.min(quoted.len())..];
            } else {
                let end = rest.find(';').unwrap_or(rest.len());
                val = rest[..end].trim().to_owned();
                rest = &rest[end..];
            }
            if !name.is_empty() {
                params.push((name, val));
            }
        }
        Self {
            mime: mime.trim().to_ascii_lowercase(),
            params,
        }
    }
}

/// The body parts of a multipart body (RFC 2046 §5.1.1), without their delimiters. The CRLF
/// before a delimiter belongs to the delimiter. Content after the close delimiter and the
/// preamble are ignored; a missing close delimiter ends the last part at the end of input.
pub(crate) fn multipart_parts<'b>(body: &'b [u8], boundary: &str) -> Vec<&'b [u8]> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut at = 0;
    while at < body.len() {
        let end = memchr::memchr(b'\n', &body[at..]).map_or(body.len(), |i| at + i);
        let line = &body[at..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let next = (end + 1).min(body.len());
        if let Some(after) = line.strip_prefix(delim) {
            let close = after.starts_with(b"--");
            let tail = if close { &after[2..] } else { after };
            if tail.iter().all(|b| *b == b' ' || *b == b'\t') {
                if let Some(s) = start {
                    // Drop the line break that precedes the delimiter.
                    let mut e = at;
                    if e > s && body[e - 1] == b'\n' {
                        e -= 1;
                        if e > s && body[e - 1] == b'\r' {
                            e -= 1;
                        }
                    }
                    parts.push(&body[s..e.max(s)]);
                }
                if close {
                    return parts;
                }
                start = Some(next);
            }
        }
        at = next;
    }
    if let Some(s) = start
        && s < body.len()
    {
        parts.push(&body[s..]);
    }
    parts
}

/// Undoes a `Content-Transfer-Encoding` (base64, quoted-printable; anything else as is).
pub(crate) fn decode_transfer<'b>(body: &'b [u8], encoding: Option<&str>) -> Cow<'b, [u8]> {
    let enc = encoding.unwrap_or("7bit").trim();
    if enc.eq_ignore_ascii_case("base64") {
        let clean: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        match engine.decode(&clean) {
            Ok(v) => Cow::Owned(v),
            Err(_) => Cow::Borrowed(body),
        }
    } else if enc.eq_ignore_ascii_case("quoted-printable") {
        Cow::Owned(decode_qp(body))
    } else {
        Cow::Borrowed(body)
    }
}

fn decode_qp(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'=' {
            match (body.get(i + 1), body.get(i + 2)) {
                (Some(b'\r'), Some(b'\n')) => i += 3,
                (Some(b'\n'), _) => i += 2,
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    out.push(hex(*h) << 4 | hex(*l));
                    i += 3;
                }
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

const fn hex(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d.wrapping_sub(b'A').wrapping_add(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_body_crlf_and_lf() {
        assert_eq!(
            split_head_body(b"A: 1\r\nB: 2\r\n\r\nbody"),
            (&b"A: 1\r\nB: 2\r\n"[..], &b"body"[..])
        );
        assert_eq!(
            split_head_body(b"A: 1\n\nbody\n"),
            (&b"A: 1\n"[..], &b"body\n"[..])
        );
        assert_eq!(split_head_body(b"A: 1"), (&b"A: 1"[..], &b""[..]));
        assert_eq!(split_head_body(b"\r\nbody"), (&b""[..], &b"body"[..]));
    }

    #[test]
    fn folding() {
        let f =
            parse_fields(b"Diagnostic-Code: smtp; 550 5.1.1\r\n  more text\r\n\there\r\nX: y\r\n");
        assert_eq!(
            f[0],
            (
                "Diagnostic-Code".to_owned(),
                "smtp; 550 5.1.1  more text\there".to_owned()
            )
        );
        assert_eq!(field(&f, "x"), Some("y"));
    }

    #[test]
    fn content_type_params() {
        let ct = ContentType::parse(
            "multipart/report; report-type=delivery-status;\r\n\tboundary=\"=_a \\\"b\\\"\"; x=1",
        );
        assert_eq!(ct.mime, "multipart/report");
        assert_eq!(ct.param("report-type"), Some("delivery-status"));
        assert_eq!(ct.param("boundary"), Some("=_a \"b\""));
        assert_eq!(ct.param("x"), Some("1"));
        assert_eq!(ContentType::parse("TEXT/Plain").mime, "text/plain");
    }

    #[test]
    fn multipart() {
        let body = b"preamble\r\n--b\r\none\r\n--b \r\ntwo\r\n\r\n--b--\r\nepilogue";
        assert_eq!(
            multipart_parts(body, "b"),
            vec![&b"one"[..], &b"two\r\n"[..]]
        );
        assert_eq!(
            multipart_parts(b"--b\nx\n--bb\ny", "b"),
            vec![&b"x\n--bb\ny"[..]]
        );
        assert!(multipart_parts(b"no delimiters", "b").is_empty());
    }

    #[test]
    fn transfer_encodings() {
        assert_eq!(&*decode_transfer(b"SGVs\r\nbG8=", Some("base64")), b"Hello");
        assert_eq!(
            &*decode_transfer(b"a=3Db=\r\nc", Some("Quoted-Printable")),
            b"a=bc"
        );
        assert_eq!(&*decode_transfer(b"x", None), b"x");
    }
}
