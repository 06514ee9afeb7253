//! nom plumbing shared by the parsers. Private to the crate.

use nom::error::{ErrorKind, FromExternalError, ParseError};

/// The parsers' error: the reason a piece of grammar failed, kept through `map_res`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PErr {
    pub(crate) reason: &'static str,
}

impl<I> ParseError<I> for PErr {
    fn from_error_kind(_input: I, kind: ErrorKind) -> Self {
        Self {
            reason: match kind {
                ErrorKind::Char | ErrorKind::Tag => "unexpected character",
                ErrorKind::Eof => "unexpected end of line",
                _ => "malformed",
            },
        }
    }

    fn append(_input: I, _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

impl<I> FromExternalError<I, &'static str> for PErr {
    fn from_external_error(_input: I, _kind: ErrorKind, e: &'static str) -> Self {
        Self { reason: e }
    }
}

pub(crate) type PResult<'a, T> = nom::IResult<&'a str, T, PErr>;

/// A hard failure with a reason.
pub(crate) fn fail<T>(reason: &'static str) -> Result<T, nom::Err<PErr>> {
    Err(nom::Err::Error(PErr { reason }))
}

/// Maps a finished nom result to its reason.
pub(crate) fn reason(e: nom::Err<PErr>) -> &'static str {
    match e {
        nom::Err::Error(e) | nom::Err::Failure(e) => e.reason,
        nom::Err::Incomplete(_) => "unexpected end of line",
    }
}

/// Parsing context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cx {
    pub(crate) lenient: bool,
}

/// Byte classes for the hot loops: one table lookup per byte.
pub(crate) const ATEXT: u8 = 1;
/// Letters, digits, `-` and non-ASCII (UTF-8) bytes: what a domain label holds.
pub(crate) const LDH: u8 = 2;
/// ASCII controls (0x00-0x1f, 0x7f).
pub(crate) const CTL: u8 = 4;
/// Letters, digits and non-ASCII bytes: the inside of a domain label, the common case.
pub(crate) const ALNUM: u8 = 8;

pub(crate) static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if b.is_ascii_alphanumeric() || b >= 0x80 {
            c |= ATEXT | LDH | ALNUM;
        }
        if b == b'-' {
            c |= LDH;
        }
        if matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        ) {
            c |= ATEXT;
        }
        if b < 0x20 || b == 0x7f {
            c |= CTL;
        }
        t[i] = c;
        i += 1;
    }
    t
};
