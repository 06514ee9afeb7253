//! xtext (RFC 3461 §4), the encoding of `ENVID=`, `ORCPT=` and `AUTH=` parameter values.
//!
//! ```
//! use postern_smtp::xtext;
//!
//! assert_eq!(xtext::encode("a+b=c d"), "a+2Bb+3Dc+20d");
//! assert_eq!(xtext::decode("a+2Bb+3Dc+20d").unwrap(), "a+b=c d");
//! assert!(xtext::decode("a+2").is_none());
//! ```

use std::borrow::Cow;

/// Whether `c` may appear unencoded in xtext.
fn is_xchar(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && b != b'+' && b != b'='
}

/// Whether `s` is valid xtext (`xchar` or `+HH` with upper-case hex). Non-ASCII octets are
/// allowed, as RFC 6533 `utf-8-addr-xtext` does.
pub fn is_valid(s: &str) -> bool {
    is_valid_bytes(s.as_bytes())
}

/// [`is_valid`] on bytes.
pub(crate) fn is_valid_bytes(b: &[u8]) -> bool {
    let mut rest = b;
    loop {
        // A run of plain characters (`is_xchar(c) || c >= 0x80`, in fewer steps), then `+HH`
        // or the end.
        let plain = rest
            .iter()
            .position(|&c| c <= b' ' || c == 0x7f || c == b'+' || c == b'=')
            .unwrap_or(rest.len());
        match &rest[plain..] {
            [] => return true,
            [b'+', h, l, tail @ ..] if is_hex(*h) && is_hex(*l) => rest = tail,
            _ => return false,
        }
    }
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

/// Encodes `s` as xtext (`+`, `=`, controls, space and non-ASCII octets become `+HH`).
pub fn encode(s: &str) -> Cow<'_, str> {
    if s.bytes().all(is_xchar) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if is_xchar(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// Decodes xtext; `None` if it is malformed or does not decode to UTF-8.
pub fn decode(s: &str) -> Option<Cow<'_, str>> {
    if !is_valid(s) {
        return None;
    }
    if !s.contains('+') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc3461_examples() {
        assert!(is_valid("QQ314159"));
        assert!(is_valid("rfc822;Dana@Ivory.example.org"));
        assert!(!is_valid("a=b"));
        assert!(!is_valid("a b"));
        assert!(!is_valid("+2b"));
        assert_eq!(decode("Bob+2BJones").unwrap(), "Bob+Jones");
    }

    /// `is_valid` as RFC 3461 words it, one octet at a time.
    fn is_valid_simple(b: &[u8]) -> bool {
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' if b.len() > i + 2 && is_hex(b[i + 1]) && is_hex(b[i + 2]) => i += 3,
                c if c != b'+' && (is_xchar(c) || c >= 0x80) => i += 1,
                _ => return false,
            }
        }
        true
    }

    proptest! {
        #[test]
        fn is_valid_bytes_agrees(
            b in prop::collection::vec(
                prop_oneof![Just(b'+'), Just(b'='), Just(b'A'), Just(b'f'), any::<u8>()],
                0..12,
            ),
        ) {
            prop_assert_eq!(is_valid_bytes(&b), is_valid_simple(&b));
        }

        #[test]
        fn round_trip(s in ".{0,40}") {
            let e = encode(&s);
            prop_assert!(is_valid(&e));
            let d = decode(&e).unwrap();
            prop_assert_eq!(d.as_ref(), s.as_str());
        }
    }
}
