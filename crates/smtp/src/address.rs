//! Paths, mailboxes and domains (RFC 5321 §4.1.2, RFC 6531 §3.3).

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use nom::Parser;
use nom::bytes::complete::tag_no_case;
use nom::character::complete::char;
use nom::multi::separated_list1;

use crate::error::{DecodeError, InvalidKind};
use crate::grammar::{ALNUM, ATEXT, CLASS, Cx, LDH, PResult, fail, reason};
use crate::line::ParseOptions;

/// Longest local part in strict mode (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain in strict mode (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest path, angle brackets included, in strict mode (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;

/// The domain part of a mailbox, or the argument of HELO/EHLO: a name or an address literal.
///
/// ```
/// use postern_smtp::{Domain, ParseOptions};
///
/// let opts = ParseOptions::default();
/// assert_eq!(Domain::parse("[192.0.2.1]", &opts).unwrap(), Domain::Ipv4("192.0.2.1".parse().unwrap()));
/// assert_eq!(Domain::parse("[IPv6:2001:db8::1]", &opts).unwrap().to_string(), "[IPv6:2001:db8::1]");
/// assert!(Domain::parse("-bad-.example", &opts).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Domain<'a> {
    /// A domain name, as sent (`mail.contoso.com`, or a U-label name with SMTPUTF8).
    Name(Cow<'a, str>),
    /// `[192.0.2.1]`.
    Ipv4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]`.
    Ipv6(Ipv6Addr),
    /// A general address literal `[tag:content]` (RFC 5321 §4.1.3). Boxed: it is rare, and
    /// inline its two strings would double the size of every domain, mailbox and command.
    General(Box<GeneralLiteral<'a>>),
}

/// The general address literal `[tag:content]` of RFC 5321 §4.1.3, the form of
/// [`Domain::General`].
///
/// ```
/// use postern_smtp::{Domain, GeneralLiteral, ParseOptions};
///
/// let d = Domain::parse("[x-test:abc]", &ParseOptions::default()).unwrap();
/// assert_eq!(d, Domain::General(Box::new(GeneralLiteral::new("x-test", "abc"))));
/// assert_eq!(d.to_string(), "[x-test:abc]");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct GeneralLiteral<'a> {
    /// The standardized tag.
    pub tag: Cow<'a, str>,
    /// The literal's content.
    pub content: Cow<'a, str>,
}

impl<'a> GeneralLiteral<'a> {
    /// A literal from its tag and content, as sent (not checked against the grammar).
    pub fn new(tag: impl Into<Cow<'a, str>>, content: impl Into<Cow<'a, str>>) -> Self {
        Self {
            tag: tag.into(),
            content: content.into(),
        }
    }

    /// Detaches the literal from the input buffer.
    pub fn into_owned(self) -> GeneralLiteral<'static> {
        GeneralLiteral {
            tag: Cow::Owned(self.tag.into_owned()),
            content: Cow::Owned(self.content.into_owned()),
        }
    }
}

impl<'a> Domain<'a> {
    /// Parses a whole string as a domain name or address literal.
    pub fn parse(s: &'a str, opts: &ParseOptions) -> Result<Self, DecodeError> {
        let cx = Cx {
            lenient: opts.lenient,
        };
        let bad = |why| DecodeError::Invalid {
            consumed: s.len(),
            kind: InvalidKind::BadArgument(why),
        };
        match domain(s, cx) {
            Ok(("", d)) => {
                if !opts.smtputf8 && !d.is_ascii() {
                    return Err(DecodeError::Invalid {
                        consumed: s.len(),
                        kind: InvalidKind::NonAscii,
                    });
                }
                Ok(d)
            }
            Ok(_) => Err(bad("trailing characters after domain")),
            Err(e) => Err(bad(reason(e))),
        }
    }

    /// Whether the domain is pure ASCII (address literals always are).
    pub fn is_ascii(&self) -> bool {
        match self {
            Self::Name(n) => n.is_ascii(),
            Self::General(g) => g.tag.is_ascii() && g.content.is_ascii(),
            Self::Ipv4(_) | Self::Ipv6(_) => true,
        }
    }

    /// The name, if this is a domain name rather than an address literal.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Name(n) => Some(n),
            _ => None,
        }
    }

    /// Detaches the domain from the input buffer.
    pub fn into_owned(self) -> Domain<'static> {
        match self {
            Self::Name(n) => Domain::Name(Cow::Owned(n.into_owned())),
            Self::Ipv4(a) => Domain::Ipv4(a),
            Self::Ipv6(a) => Domain::Ipv6(a),
            Self::General(g) => Domain::General(Box::new(g.into_owned())),
        }
    }
}

impl fmt::Display for Domain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ipv4(a) => write!(f, "[{a}]"),
            Self::Ipv6(a) => write!(f, "[IPv6:{a}]"),
            Self::General(g) => write!(f, "[{}:{}]", g.tag, g.content),
        }
    }
}

/// A mailbox `local-part@domain` (RFC 5321 §4.1.2).
///
/// The local part is kept in its wire form: a quoted string keeps its quotes and
/// backslashes, so the address is relayed exactly as received. Use
/// [`Mailbox::local_part_unquoted`] for the value.
///
/// ```
/// use postern_smtp::{Mailbox, ParseOptions};
///
/// let m = Mailbox::parse(r#""scan to"@contoso.com"#, &ParseOptions::default()).unwrap();
/// assert_eq!(m.local_part(), r#""scan to""#);
/// assert_eq!(m.local_part_unquoted(), "scan to");
/// assert_eq!(m.domain().to_string(), "contoso.com");
/// assert_eq!(m.to_string(), r#""scan to"@contoso.com"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox<'a> {
    local_part: Cow<'a, str>,
    domain: Domain<'a>,
}

impl<'a> Mailbox<'a> {
    /// Parses a whole string as `local-part@domain`.
    pub fn parse(s: &'a str, opts: &ParseOptions) -> Result<Self, DecodeError> {
        let cx = Cx {
            lenient: opts.lenient,
        };
        let bad = |why| DecodeError::Invalid {
            consumed: s.len(),
            kind: InvalidKind::BadArgument(why),
        };
        match mailbox(s, cx) {
            Ok(("", m)) => {
                if !opts.smtputf8 && !m.is_ascii() {
                    return Err(DecodeError::Invalid {
                        consumed: s.len(),
                        kind: InvalidKind::NonAscii,
                    });
                }
                Ok(m)
            }
            Ok(_) => Err(bad("trailing characters after mailbox")),
            Err(e) => Err(bad(reason(e))),
        }
    }

    /// A mailbox from parts already validated by a parser of this crate.
    pub(crate) fn from_parts(local_part: &'a str, domain: &'a str) -> Self {
        Self {
            local_part: Cow::Borrowed(local_part),
            domain: Domain::Name(Cow::Borrowed(domain)),
        }
    }

    /// The local part in wire form (quotes and escapes kept).
    pub fn local_part(&self) -> &str {
        &self.local_part
    }

    /// The local part with the quoting of a quoted string removed.
    pub fn local_part_unquoted(&self) -> Cow<'_, str> {
        let lp: &str = &self.local_part;
        match lp.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            None => Cow::Borrowed(lp),
            Some(inner) if !inner.contains('\\') => Cow::Borrowed(inner),
            Some(inner) => {
                let mut out = String::with_capacity(inner.len());
                let mut chars = inner.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    } else {
                        out.push(c);
                    }
                }
                Cow::Owned(out)
            }
        }
    }

    /// The domain part.
    pub fn domain(&self) -> &Domain<'a> {
        &self.domain
    }

    /// Whether local part and domain are pure ASCII (false means SMTPUTF8 is needed).
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.is_ascii()
    }

    /// Detaches the mailbox from the input buffer.
    pub fn into_owned(self) -> Mailbox<'static> {
        Mailbox {
            local_part: Cow::Owned(self.local_part.into_owned()),
            domain: self.domain.into_owned(),
        }
    }
}

impl fmt::Display for Mailbox<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain)
    }
}

impl std::str::FromStr for Mailbox<'static> {
    type Err = DecodeError;

    /// Parses with the default (strict, SMTPUTF8-enabled) options.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mailbox::parse(s, &ParseOptions::default()).map(Mailbox::into_owned)
    }
}

/// A reverse-path (MAIL FROM) or forward-path (RCPT TO).
///
/// Source routes (`<@relay1,@relay2:user@example.com>`) are accepted and dropped, as RFC 5321
/// §4.1.1.3 and Appendix C allow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Path<'a> {
    /// The null reverse-path `<>` (bounces, DSNs); only valid in MAIL FROM.
    Null,
    /// `<Postmaster>` without a domain; only valid in RCPT TO (RFC 5321 §4.1.1.3).
    Postmaster,
    /// An ordinary mailbox.
    Mailbox(Mailbox<'a>),
}

impl<'a> Path<'a> {
    /// The mailbox, if any.
    pub fn mailbox(&self) -> Option<&Mailbox<'a>> {
        match self {
            Self::Mailbox(m) => Some(m),
            _ => None,
        }
    }

    /// Whether the path is pure ASCII.
    pub fn is_ascii(&self) -> bool {
        self.mailbox().is_none_or(Mailbox::is_ascii)
    }

    /// Detaches the path from the input buffer.
    pub fn into_owned(self) -> Path<'static> {
        match self {
            Self::Null => Path::Null,
            Self::Postmaster => Path::Postmaster,
            Self::Mailbox(m) => Path::Mailbox(m.into_owned()),
        }
    }
}

impl fmt::Display for Path<'_> {
    /// The path in angle brackets, as it goes on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("<>"),
            Self::Postmaster => f.write_str("<Postmaster>"),
            Self::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

impl<'a> From<Mailbox<'a>> for Path<'a> {
    fn from(m: Mailbox<'a>) -> Self {
        Self::Mailbox(m)
    }
}

// ---------------------------------------------------------------------------------------------
// Grammar.

/// Dot-string or quoted-string, returned in wire form.
pub(crate) fn local_part(i: &str, cx: Cx) -> PResult<'_, &str> {
    if i.starts_with('"') {
        return quoted_string(i);
    }
    // One byte-level pass (ASCII stops keep char boundaries): atext runs separated by dots.
    let bytes = i.as_bytes();
    let mut end = 0;
    let mut prev_dot = true;
    let mut bad_dots = false;
    while end < bytes.len() {
        let b = bytes[end];
        if b == b'.' {
            bad_dots |= prev_dot;
            prev_dot = true;
        } else if CLASS[usize::from(b)] & ATEXT != 0 {
            prev_dot = false;
        } else {
            break;
        }
        end += 1;
    }
    if end == 0 {
        return fail("empty local part");
    }
    // Real devices send `john..doe` or `.x`; Postfix accepts them outside strict mode.
    if !cx.lenient && (bad_dots || prev_dot) {
        return fail("bad dot-string local part");
    }
    Ok((&i[end..], &i[..end]))
}

fn quoted_string(i: &str) -> PResult<'_, &str> {
    let mut chars = i.char_indices().skip(1);
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((&i[at + 1..], &i[..at + 1])),
            '\\' => match chars.next() {
                Some((_, ' '..='~')) => {}
                _ => return fail("bad quoted-pair in local part"),
            },
            ' '..='~' => {}
            c if !c.is_ascii() => {}
            _ => return fail("control character in quoted local part"),
        }
    }
    fail("unterminated quoted local part")
}

/// A domain name (validated labels) or an address literal.
pub(crate) fn domain(i: &str, cx: Cx) -> PResult<'_, Domain<'_>> {
    if i.starts_with('[') {
        return address_literal(i);
    }
    // One byte-level pass validating labels as it goes.
    let bytes = i.as_bytes();
    let mut end = 0;
    let mut label_start = 0;
    let mut prev = b'.';
    while end < bytes.len() {
        let b = bytes[end];
        if CLASS[usize::from(b)] & ALNUM != 0 {
            // The common case first: inside a label.
        } else if b == b'.' {
            if end == label_start {
                return fail("empty domain label");
            }
            if !cx.lenient && (prev == b'-' || end - label_start > 63) {
                return fail("bad domain label");
            }
            label_start = end + 1;
        } else if CLASS[usize::from(b)] & LDH != 0 {
            if b == b'-' && !cx.lenient && end == label_start {
                return fail("bad domain label");
            }
        } else if !(cx.lenient && b == b'_') {
            break;
        }
        prev = b;
        end += 1;
    }
    if end == 0 {
        return fail("empty domain");
    }
    if end == label_start {
        return fail("empty domain label");
    }
    if !cx.lenient && (prev == b'-' || end - label_start > 63 || end > MAX_DOMAIN) {
        return fail("bad domain label");
    }
    Ok((&i[end..], Domain::Name(Cow::Borrowed(&i[..end]))))
}

fn is_dcontent(c: char) -> bool {
    matches!(c, '!'..='Z' | '^'..='~')
}

fn address_literal(i: &str) -> PResult<'_, Domain<'_>> {
    let Some(end) = i.find(']') else {
        return fail("unterminated address literal");
    };
    let inner = &i[1..end];
    let rest = &i[end + 1..];
    if let Some(v6) = inner.get(..5).filter(|t| t.eq_ignore_ascii_case("IPv6:")) {
        let _ = v6;
        return match inner[5..].parse::<Ipv6Addr>() {
            Ok(a) => Ok((rest, Domain::Ipv6(a))),
            Err(_) => fail("bad IPv6 address literal"),
        };
    }
    if let Ok(a) = inner.parse::<Ipv4Addr>() {
        return Ok((rest, Domain::Ipv4(a)));
    }
    match inner.split_once(':') {
        Some((tag, content))
            if !tag.is_empty()
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !tag.ends_with('-')
                && !content.is_empty()
                && content.chars().all(is_dcontent) =>
        {
            Ok((
                rest,
                Domain::General(Box::new(GeneralLiteral::new(tag, content))),
            ))
        }
        _ => fail("bad address literal"),
    }
}

/// `local-part@domain`.
pub(crate) fn mailbox(i: &str, cx: Cx) -> PResult<'_, Mailbox<'_>> {
    let (rest, lp) = local_part(i, cx)?;
    if !cx.lenient && lp.len() > MAX_LOCAL_PART {
        return fail("local part longer than 64 octets");
    }
    let (rest, _) = char('@').parse(rest)?;
    let (rest, domain) = domain(rest, cx)?;
    Ok((
        rest,
        Mailbox {
            local_part: Cow::Borrowed(lp),
            domain,
        },
    ))
}

/// `@one,@two:` source route, dropped.
fn source_route(i: &str, cx: Cx) -> PResult<'_, ()> {
    let at_domain = |i| {
        let (i, _) = char('@').parse(i)?;
        domain(i, cx)
    };
    let (i, _) = separated_list1(char(','), at_domain).parse(i)?;
    let (i, _) = char(':').parse(i)?;
    Ok((i, ()))
}

/// Which side of the envelope a path is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathKind {
    Reverse,
    Forward,
}

/// A path, bracketed (or bare in lenient mode). Leaves the input after the path.
pub(crate) fn path(i: &str, cx: Cx, kind: PathKind) -> PResult<'_, Path<'_>> {
    let Some(after) = i.strip_prefix('<') else {
        if cx.lenient && !i.is_empty() {
            // Missing angle brackets: `MAIL FROM:user@example.com`.
            let (rest, m) = mailbox(i, cx)?;
            return Ok((rest, Path::Mailbox(m)));
        }
        return fail("path must be in angle brackets");
    };
    if let Some(rest) = after.strip_prefix('>') {
        return match kind {
            PathKind::Reverse => Ok((rest, Path::Null)),
            PathKind::Forward => fail("empty forward-path"),
        };
    }
    let after = if after.starts_with('@') {
        source_route(after, cx)?.0
    } else {
        after
    };
    if kind == PathKind::Forward {
        let pm: PResult<'_, &str> = tag_no_case("postmaster>").parse(after);
        if let Ok((rest, _)) = pm {
            return Ok((rest, Path::Postmaster));
        }
    }
    let (rest, m) = mailbox(after, cx)?;
    let Some(rest) = rest.strip_prefix('>') else {
        return fail("missing closing angle bracket");
    };
    if !cx.lenient && i.len() - rest.len() > MAX_PATH {
        return fail("path longer than 256 octets");
    }
    Ok((rest, Path::Mailbox(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Cx = Cx { lenient: false };
    const LENIENT: Cx = Cx { lenient: true };

    fn rev(s: &str, cx: Cx) -> Result<Path<'_>, &'static str> {
        match path(s, cx, PathKind::Reverse) {
            Ok(("", p)) => Ok(p),
            Ok(_) => Err("trailing"),
            Err(e) => Err(reason(e)),
        }
    }

    fn fwd(s: &str, cx: Cx) -> Result<Path<'_>, &'static str> {
        match path(s, cx, PathKind::Forward) {
            Ok(("", p)) => Ok(p),
            Ok(_) => Err("trailing"),
            Err(e) => Err(reason(e)),
        }
    }

    #[test]
    fn rfc5321_paths() {
        assert_eq!(rev("<>", STRICT), Ok(Path::Null));
        assert!(fwd("<>", STRICT).is_err());
        assert_eq!(fwd("<Postmaster>", STRICT), Ok(Path::Postmaster));
        assert_eq!(fwd("<postmaster>", STRICT), Ok(Path::Postmaster));
        assert!(rev("<Postmaster>", STRICT).is_err());
        let p = fwd("<@hosta.int,@jkl.org:userc@d.bar.org>", STRICT).unwrap();
        assert_eq!(p.to_string(), "<userc@d.bar.org>");
        let p = rev("<Smith@bar.com>", STRICT).unwrap();
        assert_eq!(p.mailbox().unwrap().local_part(), "Smith");
        assert!(rev("<a@b.c", STRICT).is_err());
        assert!(rev("a@b.c", STRICT).is_err());
        assert!(rev("a@b.c", LENIENT).is_ok());
        assert!(rev("<a..b@c>", STRICT).is_err());
        assert!(rev("<a..b@c>", LENIENT).is_ok());
        assert!(rev("<.a@c>", STRICT).is_err());
        assert!(rev("<a.@c>", STRICT).is_err());
        assert!(rev("<a@>", STRICT).is_err());
        assert!(rev("<@c>", STRICT).is_err());
    }

    #[test]
    fn literals() {
        for (s, ok) in [
            ("[192.0.2.1]", true),
            ("[IPv6:2001:db8::1]", true),
            ("[ipv6:::1]", true),
            ("[IPv6:1.2.3.4]", false),
            ("[300.0.0.1]", false),
            ("[x-tag:abc]", true),
            ("[]", false),
            ("[192.0.2.1", false),
        ] {
            assert_eq!(
                domain(s, STRICT).is_ok_and(|(r, _)| r.is_empty()),
                ok,
                "{s}"
            );
        }
    }

    #[test]
    fn domains() {
        assert!(domain("a-b.example", STRICT).is_ok());
        assert!(domain("-a.example", STRICT).is_err());
        assert!(domain("a-.example", STRICT).is_err());
        assert!(domain("a..example", STRICT).is_err());
        assert!(domain("a..example", LENIENT).is_err());
        assert_eq!(domain("printer_01", STRICT).map(|r| r.0), Ok("_01"));
        assert_eq!(domain("printer_01", LENIENT).map(|r| r.0), Ok(""));
        let long = format!("{}.com", "a".repeat(63));
        assert!(domain(&long, STRICT).is_ok());
        let bad = format!("{}.com", "a".repeat(64));
        assert!(domain(&bad, STRICT).is_err());
    }

    #[test]
    fn quoted_local_parts() {
        let p = rev(r#"<"john \"jr\" doe"@example.com>"#, STRICT).unwrap();
        let m = p.mailbox().unwrap();
        assert_eq!(m.local_part(), r#""john \"jr\" doe""#);
        assert_eq!(m.local_part_unquoted(), r#"john "jr" doe"#);
        assert!(rev("<\"abc@example.com>", STRICT).is_err());
        assert!(rev("<\"a\tb\"@example.com>", STRICT).is_err());
    }

    #[test]
    fn utf8_addresses() {
        let p = rev("<用户@例子.广告>", STRICT).unwrap();
        assert!(!p.is_ascii());
        let p = rev("<jöran@bücher.de>", STRICT).unwrap();
        assert_eq!(p.to_string(), "<jöran@bücher.de>");
        let opts = ParseOptions::default().smtputf8(false);
        assert!(matches!(
            Mailbox::parse("jöran@bücher.de", &opts),
            Err(DecodeError::Invalid {
                kind: InvalidKind::NonAscii,
                ..
            })
        ));
    }

    #[test]
    fn length_limits() {
        let lp = "a".repeat(65);
        assert!(rev(&format!("<{lp}@x.com>"), STRICT).is_err());
        assert!(rev(&format!("<{lp}@x.com>"), LENIENT).is_ok());
    }
}
