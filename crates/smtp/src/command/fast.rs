//! The fast path for the commands a relay reads most: `MAIL FROM:<user@domain> [params]` and
//! `RCPT TO:<user@domain> [params]`, CRLF included.
//!
//! One pass over the raw bytes with a class table: no separate line framing, no UTF-8 pass
//! over the whole line, no nom, no allocation, and the command is built once, in place. It
//! covers the everyday shape only: an ASCII dot-string local part, an ASCII domain name, and
//! the parameters this crate knows (SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH; NOTIFY, ORCPT)
//! separated by spaces, in strict and lenient mode. It declines everything else (quoted local
//! parts, UTF-8, address literals, source routes, `<Postmaster>`, unknown parameters, limits
//! exceeded, incomplete input, any error), and [`Command::decode`] then runs the general
//! grammar, which gives the answer or the precise error.
//!
//! The rule that makes this safe: whenever this returns `Ok((command, used))`,
//! [`Command::decode_reference`] returns the same for the same input and options. Each check
//! below mirrors a rule of `read_line`, `parse_line`, `address::path`, `ParamIter`,
//! `parse_mail` or `parse_rcpt`, and says which. The property tests (`fast_path_*` in
//! `tests.rs`) and the `smtp_command` fuzz target compare the two on generated and mutated
//! lines.

use std::borrow::Cow;
use std::ops::Range;

use super::{
    Body, Command, MailParams, Notify, Orcpt, RareMailParams, RcptParams, Ret, V_MAIL, V_RCPT,
};
use crate::address::{MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH, Mailbox, Path};
use crate::error::DecodeError;
use crate::grammar;
use crate::line::ParseOptions;
use crate::xtext;

type Decoded<'a> = Result<(Command<'a>, usize), DecodeError>;

/// The general grammar, which [`decode_with`] hands every line it does not take.
type General = for<'a> fn(&'a [u8], &ParseOptions) -> Decoded<'a>;

/// In `decode_with`, `mail` and `rcpt`: hand the input to the general grammar (`decline!()`),
/// or take the value of an `Option` and decline on `None` (`some!(x)`). Declining is a tail
/// call, so the fast path and the general one both write `decode`'s result in place.
macro_rules! fallback {
    ($b:ident, $opts:ident, $general:ident) => {
        macro_rules! decline {
            () => {
                return $general($b, $opts)
            };
        }
        #[allow(unused_macros)]
        macro_rules! some {
            ($e:expr) => {
                match $e {
                    Some(x) => x,
                    None => decline!(),
                }
            };
        }
    };
}

/// ASCII `atext` (RFC 5321 §4.1.2), without the dot: the grammar's `ATEXT` minus non-ASCII.
const ATOM: u8 = grammar::ATEXT;
/// ASCII letters, digits and `-`: the grammar's `LDH` minus non-ASCII, and the characters of
/// a parameter keyword (`ParamIter`).
const LDH: u8 = grammar::LDH;
/// A parameter value octet as `ParamIter` accepts it, ASCII only: `!`..=`~` except `=`.
const VALUE: u8 = 4;

/// The grammar's byte classes restricted to ASCII (the fast path leaves UTF-8 to the grammar),
/// plus `VALUE`.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        let mut c = grammar::CLASS[i] & (ATOM | LDH);
        if b >= b'!' && b <= b'~' && b != b'=' {
            c |= VALUE;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Four-letter keywords as integers, as `parse_line` matches verbs.
const FROM: u32 = u32::from_be_bytes(*b"FROM");
const SIZE: u32 = u32::from_be_bytes(*b"SIZE");
const BODY: u32 = u32::from_be_bytes(*b"BODY");
const AUTH: u32 = u32::from_be_bytes(*b"AUTH");

/// Clears the case bit of four bytes: equal to one of the constants above exactly when the
/// bytes are its letters in any case (no other byte maps to a letter).
fn upper4(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b) & !0x2020_2020
}

/// The end of the run of `class` bytes starting at `i`.
#[inline(always)]
fn run(b: &[u8], i: usize, class: u8) -> usize {
    let rest = b.get(i..).unwrap_or_default();
    let len = rest
        .iter()
        .position(|&c| CLASS[usize::from(c)] & class == 0)
        .unwrap_or(rest.len());
    i + len
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

/// Whether `b` is `upper` (an upper-case ASCII keyword) in any case: `eq_ignore_ascii_case`.
fn eq_upper(b: &[u8], upper: &[u8]) -> bool {
    b.len() == upper.len()
        && b.iter()
            .zip(upper)
            .all(|(x, y)| x.to_ascii_uppercase() == *y)
}

/// If the line ends at `i`, the bytes it used: CRLF; in lenient mode also blanks before it,
/// which `parse_line` trims, or a bare LF, which `read_line` accepts. `read_line` finds the
/// first LF: every byte before `i` is printable ASCII here, so this is it.
#[inline(always)]
fn line_end(b: &[u8], i: usize, opts: &ParseOptions) -> Option<usize> {
    let mut j = i;
    if opts.lenient {
        while matches!(b.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
    }
    let used = match b.get(j..) {
        Some([b'\r', b'\n', ..]) => j + 2,
        Some([b'\n', ..]) if opts.lenient => j + 1,
        _ => return None,
    };
    // `read_line` looks for the LF within `max_line` octets.
    (used <= opts.max_line).then_some(used)
}

/// [`Command::decode`]: a MAIL or RCPT command at the start of `b` in its everyday shape
/// here, anything else through [`Command::decode_general`].
#[inline]
pub(super) fn decode<'a>(b: &'a [u8], opts: &ParseOptions) -> Decoded<'a> {
    decode_with(b, opts, |b, opts| Command::decode_general(b, opts))
}

/// The fast path, handing what it declines to `general`. The command is built in the return
/// value, so the large `Result` is written once.
#[inline(always)]
pub(super) fn decode_with<'a>(b: &'a [u8], opts: &ParseOptions, general: General) -> Decoded<'a> {
    fallback!(b, opts, general);
    // `parse_line`: the verb ends at the first space; lenient mode skips more spaces.
    let &[v0, v1, v2, v3, b' ', ..] = b else {
        decline!();
    };
    let verb = upper4([v0, v1, v2, v3]);
    let mut i = 5;
    if opts.lenient {
        i = skip_spaces(b, i);
    }
    match verb {
        V_MAIL => mail(b, i, opts, general),
        V_RCPT => rcpt(b, i, opts, general),
        _ => decline!(),
    }
}

/// `MAIL FROM:<path> [params]` after the verb (`parse_mail`).
#[inline(always)]
fn mail<'a>(b: &'a [u8], mut i: usize, opts: &ParseOptions, general: General) -> Decoded<'a> {
    fallback!(b, opts, general);
    // `strip_keyword`: `FROM:` in any case, then (lenient) spaces.
    let Some(&[f, r, o, m, b':', ..]) = b.get(i..) else {
        decline!();
    };
    if upper4([f, r, o, m]) != FROM {
        decline!();
    }
    i += 5;
    if opts.lenient {
        i = skip_spaces(b, i);
    }
    // `path`: a mailbox, or `<>`, the null reverse-path (which `mailbox_path` declines: its
    // local part would be empty), looked for only then.
    let (mailbox, mut i) = match mailbox_path(b, i, opts) {
        Some((m, i)) => (Some(m), i),
        None if matches!(b.get(i..), Some([b'<', b'>', ..])) => (None, i + 2),
        None => decline!(),
    };
    let mut size = None;
    let mut body = None;
    let mut smtputf8 = false;
    let mut ret = None;
    let mut envid = None;
    let mut auth = None;
    let used = loop {
        if let Some(used) = line_end(b, i, opts) {
            break used;
        }
        // `SIZE=digits`, the parameter nearly every MAIL carries, read in one pass: the value
        // ends at the first non-digit, which the next round requires to be a space or the
        // line's end, as `ParamIter` would (neither is a value octet). This is the only place
        // SIZE is read; `param` below never sees it.
        let mut k = i;
        if opts.lenient && matches!(b.get(i..), Some([b' ', b' ', ..])) {
            // `ParamIter` skips empty words in lenient mode: start at the last space.
            k = skip_spaces(b, i + 1) - 1;
        }
        if let Some(&[b' ', k0, k1, k2, k3, b'=', ..]) = b.get(k..)
            && upper4([k0, k1, k2, k3]) == SIZE
        {
            let v = k + 6;
            let mut n: u64 = 0;
            let mut len = 0;
            for &c in b.get(v..).unwrap_or_default() {
                let d = c.wrapping_sub(b'0');
                if d > 9 {
                    break;
                }
                n = n.wrapping_mul(10).wrapping_add(u64::from(d));
                len += 1;
            }
            if len == 0 || len > 20 || size.is_some() {
                decline!();
            }
            // Up to 19 digits always fit in a u64; 20 may overflow, which `str::parse` refuses.
            if len == 20 {
                n = 0;
                for &c in some!(b.get(v..v + len)) {
                    let d = u64::from(c - b'0');
                    n = some!(n.checked_mul(10).and_then(|n| n.checked_add(d)));
                }
            }
            size = Some(n);
            i = v + len;
            continue;
        }
        let p = some!(param(b, i, opts));
        i = p.end;
        let key = &b[p.key.clone()];
        let value = p.value.clone().map(|v| &b[v]);
        // `parse_mail`: each known keyword in any case; a duplicate or a bad value is an error
        // (declined here); an unknown keyword is declined too.
        match (key, value) {
            (&[k0, k1, k2, k3], Some(v)) if upper4([k0, k1, k2, k3]) == BODY => {
                if body.is_some() {
                    decline!();
                }
                body = Some(if eq_upper(v, b"7BIT") {
                    Body::SevenBit
                } else if eq_upper(v, b"8BITMIME") {
                    Body::EightBitMime
                } else if eq_upper(v, b"BINARYMIME") {
                    Body::BinaryMime
                } else {
                    decline!();
                });
            }
            (_, None) if eq_upper(key, b"SMTPUTF8") => {
                if smtputf8 {
                    decline!();
                }
                smtputf8 = true;
            }
            (_, Some(v)) if eq_upper(key, b"RET") => {
                if ret.is_some() {
                    decline!();
                }
                ret = Some(if eq_upper(v, b"FULL") {
                    Ret::Full
                } else if eq_upper(v, b"HDRS") {
                    Ret::Headers
                } else {
                    decline!();
                });
            }
            (_, Some(v)) if eq_upper(key, b"ENVID") => {
                if envid.is_some() || v.len() > 100 || !xtext::is_valid_bytes(v) {
                    decline!();
                }
                envid = p.value;
            }
            (&[k0, k1, k2, k3], Some(v)) if upper4([k0, k1, k2, k3]) == AUTH => {
                if auth.is_some() || (v != b"<>" && !xtext::is_valid_bytes(v)) {
                    decline!();
                }
                auth = p.value;
            }
            _ => decline!(),
        }
    };
    // The text parts, now that the whole line is known to be ASCII.
    let from = match mailbox {
        None => Path::Null,
        Some(m) => some!(m.path(b, used)),
    };
    let rare = if envid.is_none() && auth.is_none() {
        None
    } else {
        let envid = match envid {
            None => None,
            Some(r) => Some(Cow::Borrowed(some!(ascii_text(b, r, used)))),
        };
        let auth = match auth {
            None => None,
            Some(r) => Some(Cow::Borrowed(some!(ascii_text(b, r, used)))),
        };
        Some(Box::new(RareMailParams {
            envid,
            auth,
            other: Vec::new(),
        }))
    };
    Ok((
        Command::Mail {
            from,
            params: MailParams {
                size,
                body,
                smtputf8,
                ret,
                rare,
            },
        },
        used,
    ))
}

/// `RCPT TO:<path> [params]` after the verb (`parse_rcpt`).
#[inline(always)]
fn rcpt<'a>(b: &'a [u8], mut i: usize, opts: &ParseOptions, general: General) -> Decoded<'a> {
    fallback!(b, opts, general);
    // `strip_keyword`: `TO:` in any case, then (lenient) spaces.
    let Some(&[t, o, b':', ..]) = b.get(i..) else {
        decline!();
    };
    if u16::from_be_bytes([t, o]) & !0x2020 != u16::from_be_bytes(*b"TO") {
        decline!();
    }
    i += 3;
    if opts.lenient {
        i = skip_spaces(b, i);
    }
    let (mailbox, mut i) = some!(mailbox_path(b, i, opts));
    let mut notify = None;
    let mut orcpt = None;
    let used = loop {
        if let Some(used) = line_end(b, i, opts) {
            break used;
        }
        let p = some!(param(b, i, opts));
        i = p.end;
        let key = &b[p.key];
        // Both RCPT parameters this crate knows take a value.
        let v = some!(p.value);
        let value = &b[v.clone()];
        if eq_upper(key, b"NOTIFY") {
            // `parse_rcpt`: NEVER, or a list of SUCCESS, FAILURE, DELAY without repeats.
            if notify.is_some() {
                decline!();
            }
            let mut n = Notify::NEVER;
            if !eq_upper(value, b"NEVER") {
                for item in value.split(|&c| c == b',') {
                    let flag = if eq_upper(item, b"SUCCESS") {
                        &mut n.success
                    } else if eq_upper(item, b"FAILURE") {
                        &mut n.failure
                    } else if eq_upper(item, b"DELAY") {
                        &mut n.delay
                    } else {
                        decline!();
                    };
                    if *flag {
                        decline!();
                    }
                    *flag = true;
                }
            }
            notify = Some(n);
        } else if eq_upper(key, b"ORCPT") {
            // `parse_rcpt`: `type;xtext`, split at the first `;`, at most 500 octets.
            if orcpt.is_some() || value.len() > 500 {
                decline!();
            }
            let semi = some!(value.iter().position(|&c| c == b';'));
            let (addr_type, addr) = (&value[..semi], &value[semi + 1..]);
            let type_ok = addr_type.first().is_some_and(u8::is_ascii_alphanumeric)
                && addr_type
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'-');
            if !type_ok || addr.is_empty() || !xtext::is_valid_bytes(addr) {
                decline!();
            }
            orcpt = Some((v, semi));
        } else {
            decline!();
        }
    };
    // The text parts, now that the whole line is known to be ASCII.
    let to = some!(mailbox.path(b, used));
    let orcpt = match orcpt {
        None => None,
        Some((v, semi)) => {
            let value = some!(ascii_text(b, v, used));
            let (Some(addr_type), Some(addr)) = (value.get(..semi), value.get(semi + 1..)) else {
                decline!();
            };
            Some(Orcpt {
                addr_type: Cow::Borrowed(addr_type),
                addr: Cow::Borrowed(addr),
            })
        }
    };
    Ok((
        Command::Rcpt {
            to,
            params: RcptParams {
                notify,
                orcpt,
                other: None,
            },
        },
        used,
    ))
}

/// `b[r]` as text, where `b[..known]` is all ASCII (so this cannot fail; `None` if it did).
///
/// `from_utf8` goes byte by byte up to the first 8-byte aligned address and after the last
/// whole 16-byte block, but checks whole blocks two words at a time. So where the ASCII bytes
/// around `r` allow, the span it checks starts at the aligned address at or before `r` and
/// runs for whole blocks: about 30 instructions for an address instead of 60 to 200.
#[inline(always)]
fn ascii_text(b: &[u8], r: Range<usize>, known: usize) -> Option<&str> {
    let misalign = b.get(r.start..)?.as_ptr().addr() % 8;
    let span = match r.start.checked_sub(misalign) {
        Some(from) if from + (r.end - from).next_multiple_of(16) <= known => {
            from..from + (r.end - from).next_multiple_of(16)
        }
        _ => r.clone(),
    };
    let text = std::str::from_utf8(b.get(span.clone())?).ok()?;
    let (_, text) = text.split_at_checked(r.start - span.start)?;
    Some(text.split_at_checked(r.end - r.start)?.0)
}

/// Where `mailbox_path` found the local part and the domain.
#[derive(Clone, Copy)]
struct Found {
    local_start: usize,
    at: usize,
    domain_end: usize,
}

impl Found {
    /// The mailbox as a path borrowing from `b`, whose first `known` bytes are ASCII: one
    /// UTF-8 check for both parts.
    #[inline(always)]
    fn path(self, b: &[u8], known: usize) -> Option<Path<'_>> {
        let mailbox = ascii_text(b, self.local_start..self.domain_end, known)?;
        let (local, domain) = mailbox.split_at_checked(self.at - self.local_start)?;
        let domain = domain.strip_prefix('@')?;
        Some(Path::Mailbox(Mailbox::from_parts(local, domain)))
    }
}

/// `<local@domain>` (or, lenient, `local@domain`) at `start`, with the strict grammar's rules
/// and limits (`address::path`, `mailbox`, `local_part`, `domain`): where its parts are and
/// the index after it.
#[inline(always)]
fn mailbox_path(b: &[u8], start: usize, opts: &ParseOptions) -> Option<(Found, usize)> {
    let bracket = b.get(start) == Some(&b'<');
    if !bracket && !opts.lenient {
        return None;
    }
    let local_start = start + usize::from(bracket);
    // Dot-string: atoms separated by single dots, no dot first or last. A local part
    // starting with `"` (quoted), or a path starting with `@` (source route) or `>` has an
    // empty first atom: declined.
    let mut i = local_start;
    loop {
        let end = run(b, i, ATOM);
        if end == i {
            return None;
        }
        i = end;
        if b.get(i) != Some(&b'.') {
            break;
        }
        i += 1;
    }
    if i - local_start > MAX_LOCAL_PART || b.get(i) != Some(&b'@') {
        return None;
    }
    let at = i;
    // Domain name: labels of letters, digits and inner hyphens, at most 63 octets each. An
    // address literal's `[` makes an empty first label: declined.
    i += 1;
    let domain_start = i;
    loop {
        let end = run(b, i, LDH);
        if end == i || end - i > 63 || b[i] == b'-' || b[end - 1] == b'-' {
            return None;
        }
        i = end;
        if b.get(i) != Some(&b'.') {
            break;
        }
        i += 1;
    }
    if i - domain_start > MAX_DOMAIN {
        return None;
    }
    // The grammar's domain stops at this byte as well: it is neither a dot, nor a letter,
    // digit or hyphen, nor (checked next) non-ASCII or `_` (lenient mode's extra).
    let domain_end = i;
    if bracket {
        if b.get(i) != Some(&b'>') {
            return None;
        }
        i += 1;
        if i - start > MAX_PATH {
            return None;
        }
    } else if !matches!(b.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        return None;
    }
    let found = Found {
        local_start,
        at,
        domain_end,
    };
    Some((found, i))
}

/// A ` keyword[=value]` word of a MAIL or RCPT line, as ranges of the input.
struct Word {
    key: Range<usize>,
    value: Option<Range<usize>>,
    /// The index after the word.
    end: usize,
}

/// The ` keyword[=value]` at `i` (`ParamIter`). The caller checks that a space or the
/// line's end follows.
#[inline(always)]
fn param(b: &[u8], i: usize, opts: &ParseOptions) -> Option<Word> {
    if b.get(i) != Some(&b' ') {
        return None;
    }
    let mut i = i + 1;
    if opts.lenient {
        // `ParamIter` skips empty words in lenient mode.
        i = skip_spaces(b, i);
    }
    // The keyword: letters, digits and `-`, a letter or digit first. It ends at `=`, a
    // space or the line's end; anything else is declined by the caller's next step.
    let k_start = i;
    i = run(b, i, LDH);
    if i == k_start || b[k_start] == b'-' {
        return None;
    }
    let key = k_start..i;
    // The value: `ParamIter` takes everything up to the next space, and refuses it empty, or
    // with `=`, a control or a space in it. Here it must also be ASCII.
    let value = if b.get(i) == Some(&b'=') {
        let v_start = i + 1;
        i = run(b, v_start, VALUE);
        if i == v_start {
            return None;
        }
        Some(v_start..i)
    } else {
        None
    };
    Some(Word { key, value, end: i })
}
