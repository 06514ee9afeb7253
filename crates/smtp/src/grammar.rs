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
