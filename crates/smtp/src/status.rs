//! Reply codes (RFC 5321 §4.2) and enhanced status codes (RFC 3463, RFC 2034).
//!
//! A reply such as `550 5.7.1 Unable to relay` carries two codes: the three-digit
//! [`ReplyCode`] that every SMTP server sends, and, when the server advertises
//! `ENHANCEDSTATUSCODES`, an [`EnhancedCode`] (`class.subject.detail`) that says more
//! precisely what went wrong. Retry and bounce decisions start here.

use std::fmt;
use std::str::FromStr;

use crate::error::StatusError;

/// The first digit of a reply code: how the command fared (RFC 5321 §4.2.1).
///
/// Complete by definition: RFC 5321 defines exactly these four values.
#[allow(clippy::exhaustive_enums)] // RFC 5321 defines exactly four severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// `2yz`: the action was completed.
    PositiveCompletion = 2,
    /// `3yz`: accepted so far; the client must send more (`354`, `334`).
    PositiveIntermediate = 3,
    /// `4yz`: not done now; the same command may succeed later.
    TransientNegative = 4,
    /// `5yz`: not done, and repeating the command unchanged will not help.
    PermanentNegative = 5,
}

/// The second digit of a reply code: what the reply is about (RFC 5321 §4.2.1).
///
/// Complete by definition: the digit is one of 0–5 in every code RFC 5321 allows.
#[allow(clippy::exhaustive_enums)] // RFC 5321 defines exactly six categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// `x0z`: syntax errors and commands that fit no other category.
    Syntax = 0,
    /// `x1z`: replies to requests for information (help, status).
    Information = 1,
    /// `x2z`: the transmission channel.
    Connections = 2,
    /// `x3z`: not specified by RFC 5321 (used by AUTH, RFC 4954).
    Unspecified3 = 3,
    /// `x4z`: not specified by RFC 5321 (used by Exchange's `432 4.3.2`).
    Unspecified4 = 4,
    /// `x5z`: the mail system (mailbox, message, envelope).
    MailSystem = 5,
}

/// A three-digit SMTP reply code, such as `250` or `535`.
///
/// The code is validated on construction: the first digit is 2–5, the second 0–5 and the third
/// 0–9, as RFC 5321 §4.2 requires.
///
/// ```
/// use postern_smtp::ReplyCode;
///
/// let code = ReplyCode::new(451).unwrap();
/// assert!(code.is_transient());
/// assert_eq!(u16::from(code), 451);
/// assert_eq!(code.to_string(), "451");
/// assert!(ReplyCode::new(199).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode(u16);

impl ReplyCode {
    /// `220` Service ready.
    pub const SERVICE_READY: Self = Self(220);
    /// `221` Service closing transmission channel.
    pub const CLOSING: Self = Self(221);
    /// `235` Authentication successful (RFC 4954).
    pub const AUTH_SUCCESSFUL: Self = Self(235);
    /// `250` Requested mail action okay, completed.
    pub const OK: Self = Self(250);
    /// `334` Server challenge (RFC 4954).
    pub const AUTH_CONTINUE: Self = Self(334);
    /// `354` Start mail input.
    pub const START_MAIL_INPUT: Self = Self(354);
    /// `421` Service not available, closing transmission channel.
    pub const SERVICE_NOT_AVAILABLE: Self = Self(421);
    /// `451` Requested action aborted: local error in processing.
    pub const LOCAL_ERROR: Self = Self(451);
    /// `452` Requested action not taken: insufficient system storage.
    pub const INSUFFICIENT_STORAGE: Self = Self(452);
    /// `500` Syntax error, command unrecognized.
    pub const SYNTAX_ERROR: Self = Self(500);
    /// `501` Syntax error in parameters or arguments.
    pub const PARAMETER_SYNTAX_ERROR: Self = Self(501);
    /// `502` Command not implemented.
    pub const NOT_IMPLEMENTED: Self = Self(502);
    /// `503` Bad sequence of commands.
    pub const BAD_SEQUENCE: Self = Self(503);
    /// `504` Command parameter not implemented.
    pub const PARAMETER_NOT_IMPLEMENTED: Self = Self(504);
    /// `530` Authentication required (RFC 4954).
    pub const AUTH_REQUIRED: Self = Self(530);
    /// `535` Authentication credentials invalid (RFC 4954).
    pub const AUTH_INVALID: Self = Self(535);
    /// `550` Requested action not taken: mailbox unavailable or policy refusal.
    pub const MAILBOX_UNAVAILABLE: Self = Self(550);
    /// `552` Requested mail action aborted: exceeded storage allocation.
    pub const EXCEEDED_STORAGE: Self = Self(552);
    /// `554` Transaction failed.
    pub const TRANSACTION_FAILED: Self = Self(554);
    /// `555` MAIL FROM/RCPT TO parameters not recognized or not implemented.
    pub const PARAMETERS_NOT_RECOGNIZED: Self = Self(555);

    /// Returns the code if `code` is a valid RFC 5321 reply code (`[2-5][0-5][0-9]`).
    pub const fn new(code: u16) -> Option<Self> {
        let (first, second) = (code / 100, (code / 10) % 10);
        if first >= 2 && first <= 5 && second <= 5 {
            Some(Self(code))
        } else {
            None
        }
    }

    /// The first digit.
    pub const fn severity(self) -> Severity {
        match self.0 / 100 {
            2 => Severity::PositiveCompletion,
            3 => Severity::PositiveIntermediate,
            4 => Severity::TransientNegative,
            _ => Severity::PermanentNegative,
        }
    }

    /// The second digit.
    pub const fn category(self) -> Category {
        match (self.0 / 10) % 10 {
            0 => Category::Syntax,
            1 => Category::Information,
            2 => Category::Connections,
            3 => Category::Unspecified3,
            4 => Category::Unspecified4,
            _ => Category::MailSystem,
        }
    }

    /// The third digit, 0–9.
    pub const fn detail(self) -> u8 {
        (self.0 % 10) as u8
    }

    /// `2yz` or `3yz`: the command was accepted.
    pub const fn is_positive(self) -> bool {
        self.0 < 400
    }

    /// `3yz`: the server waits for more input from the client.
    pub const fn is_intermediate(self) -> bool {
        self.0 / 100 == 3
    }

    /// `4yz`: the action may succeed if tried again later.
    pub const fn is_transient(self) -> bool {
        self.0 / 100 == 4
    }

    /// `5yz`: the action will not succeed if repeated unchanged.
    pub const fn is_permanent(self) -> bool {
        self.0 / 100 == 5
    }

    /// The code as a number.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl From<ReplyCode> for u16 {
    fn from(code: ReplyCode) -> Self {
        code.0
    }
}

impl TryFrom<u16> for ReplyCode {
    type Error = StatusError;

    fn try_from(code: u16) -> Result<Self, Self::Error> {
        Self::new(code).ok_or(StatusError::InvalidReplyCode(code))
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The class of an enhanced status code (RFC 3463 §3.1).
///
/// Complete by definition: RFC 3463 defines exactly these three classes.
#[allow(clippy::exhaustive_enums)] // RFC 3463 defines exactly three classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusClass {
    /// `2.X.X` Success.
    Success = 2,
    /// `4.X.X` Persistent transient failure.
    PersistentTransient = 4,
    /// `5.X.X` Permanent failure.
    Permanent = 5,
}

impl StatusClass {
    /// The class digit.
    pub const fn digit(self) -> u8 {
        self as u8
    }
}

/// An enhanced mail system status code, `class.subject.detail` (RFC 3463, RFC 2034).
///
/// `subject` and `detail` are each at most three digits (0–999), as RFC 3463 §2 allows.
///
/// ```
/// use postern_smtp::{EnhancedCode, StatusClass};
///
/// let code: EnhancedCode = "5.7.139".parse().unwrap();
/// assert_eq!(code.class, StatusClass::Permanent);
/// assert_eq!((code.subject, code.detail), (7, 139));
/// assert_eq!(code.to_string(), "5.7.139");
/// assert!("5.7".parse::<EnhancedCode>().is_err());
/// ```
#[allow(clippy::exhaustive_structs)] // RFC 3463: a code is exactly class, subject and detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnhancedCode {
    /// Success, transient or permanent.
    pub class: StatusClass,
    /// The subject (0–999): 1 addressing, 2 mailbox, 3 mail system, 4 network and routing,
    /// 5 mail delivery protocol, 6 message content, 7 security or policy.
    pub subject: u16,
    /// The detail (0–999) within the subject.
    pub detail: u16,
}

impl EnhancedCode {
    /// Builds a code, checking that `subject` and `detail` have at most three digits.
    pub const fn new(class: StatusClass, subject: u16, detail: u16) -> Option<Self> {
        if subject > 999 || detail > 999 {
            None
        } else {
            Some(Self {
                class,
                subject,
                detail,
            })
        }
    }

    /// Reads an enhanced code at the start of `text` (the part of a reply line after the basic
    /// code and its separator), and returns it with the number of bytes it used, including one
    /// following space if present.
    ///
    /// Returns `None` when `text` does not start with a well-formed code followed by a space or
    /// the end of the text: then the reply simply carries no enhanced code.
    ///
    /// ```
    /// use postern_smtp::EnhancedCode;
    ///
    /// let (code, used) = EnhancedCode::parse_prefix("5.7.57 Client not authenticated").unwrap();
    /// assert_eq!(code.to_string(), "5.7.57");
    /// assert_eq!(used, 7);
    /// assert!(EnhancedCode::parse_prefix("Sender OK").is_none());
    /// ```
    pub fn parse_prefix(text: &str) -> Option<(Self, usize)> {
        let bytes = text.as_bytes();
        let class = match bytes.first()? {
            b'2' => StatusClass::Success,
            b'4' => StatusClass::PersistentTransient,
            b'5' => StatusClass::Permanent,
            _ => return None,
        };
        if bytes.get(1) != Some(&b'.') {
            return None;
        }
        let (subject, n1) = three_digits(&bytes[2..])?;
        let at = 2 + n1;
        if bytes.get(at) != Some(&b'.') {
            return None;
        }
        let (detail, n2) = three_digits(&bytes[at + 1..])?;
        let end = at + 1 + n2;
        match bytes.get(end) {
            None => Some((
                Self {
                    class,
                    subject,
                    detail,
                },
                end,
            )),
            Some(b' ') => Some((
                Self {
                    class,
                    subject,
                    detail,
                },
                end + 1,
            )),
            Some(_) => None,
        }
    }

    /// Whether the class agrees with a basic reply code's first digit (RFC 2034 §3 requires it;
    /// Exchange Online does not always comply, e.g. `451 5.7.3`).
    pub const fn agrees_with(self, code: ReplyCode) -> bool {
        self.class as u16 == code.get() / 100
    }
}

/// Reads 1–3 ASCII digits without a leading zero (RFC 3463 §2), returning the value and length.
fn three_digits(bytes: &[u8]) -> Option<(u16, usize)> {
    let len = bytes
        .iter()
        .take(4)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if len == 0 || len > 3 || (len > 1 && bytes[0] == b'0') {
        return None;
    }
    let value = bytes[..len]
        .iter()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    Some((value, len))
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class.digit(), self.subject, self.detail)
    }
}

impl FromStr for EnhancedCode {
    type Err = StatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Self::parse_prefix(s) {
            Some((code, used)) if used == s.len() => Ok(code),
            _ => Err(StatusError::InvalidEnhancedCode(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reply_code_bounds() {
        for ok in [200, 211, 250, 334, 354, 421, 432, 535, 559] {
            assert!(ReplyCode::new(ok).is_some(), "{ok}");
        }
        for bad in [0, 99, 199, 260, 600, 999, 1250] {
            assert!(ReplyCode::new(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn reply_code_parts() {
        let c = ReplyCode::new(432).unwrap();
        assert_eq!(c.severity(), Severity::TransientNegative);
        assert_eq!(c.category(), Category::Unspecified3);
        assert_eq!(c.detail(), 2);
        assert!(c.is_transient() && !c.is_permanent() && !c.is_positive());
        assert!(ReplyCode::AUTH_CONTINUE.is_intermediate());
    }

    #[test]
    fn enhanced_vectors() {
        // RFC 3463 examples and Exchange Online codes from the spec.
        for (text, class, subject, detail) in [
            ("2.0.0", StatusClass::Success, 0, 0),
            ("5.1.1", StatusClass::Permanent, 1, 1),
            ("4.7.500", StatusClass::PersistentTransient, 7, 500),
            ("5.2.252", StatusClass::Permanent, 2, 252),
            ("5.7.139", StatusClass::Permanent, 7, 139),
        ] {
            let code: EnhancedCode = text.parse().unwrap();
            assert_eq!(
                (code.class, code.subject, code.detail),
                (class, subject, detail)
            );
            assert_eq!(code.to_string(), text);
        }
    }

    #[test]
    fn enhanced_rejects() {
        for bad in [
            "", "5", "5.", "5.7", "5.7.", "3.1.1", "5.1000.1", "5.01.1", "5.7.1x", "x",
        ] {
            assert!(bad.parse::<EnhancedCode>().is_err(), "{bad:?}");
        }
        assert!(EnhancedCode::parse_prefix("5.7.1Unable").is_none());
    }

    #[test]
    fn agreement() {
        let code: EnhancedCode = "5.7.3".parse().unwrap();
        assert!(!code.agrees_with(ReplyCode::new(451).unwrap()));
        assert!(code.agrees_with(ReplyCode::new(535).unwrap()));
    }

    proptest! {
        #[test]
        fn enhanced_round_trip(class in prop::sample::select(vec![2u8, 4, 5]), s in 0u16..1000, d in 0u16..1000) {
            let class = match class { 2 => StatusClass::Success, 4 => StatusClass::PersistentTransient, _ => StatusClass::Permanent };
            let code = EnhancedCode::new(class, s, d).unwrap();
            prop_assert_eq!(code.to_string().parse::<EnhancedCode>().unwrap(), code);
        }

        #[test]
        fn reply_code_round_trip(n in 0u16..1000) {
            if let Some(code) = ReplyCode::new(n) {
                prop_assert_eq!(code.to_string().parse::<u16>().unwrap(), n);
            }
        }

        #[test]
        fn parse_prefix_never_panics(s in ".{0,20}") {
            let _ = EnhancedCode::parse_prefix(&s);
        }
    }
}
