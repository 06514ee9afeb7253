//! SMTP commands (RFC 5321 §4.1 and the extensions), parse and format.

use std::borrow::Cow;
use std::fmt;

use crate::address::{Domain, Path, PathKind, domain, path};
use crate::error::{DecodeError, InvalidKind};
use crate::grammar::{CLASS, CTL, Cx, reason};
use crate::line::{ParseOptions, read_line, read_plain_line};
use crate::xtext;

mod fast;

/// One SMTP command, borrowing from the input buffer.
///
/// ```
/// use postern_smtp::{Command, ParseOptions, Path};
///
/// let opts = ParseOptions::default();
/// let input = b"MAIL FROM:<scanner@contoso.com> SIZE=12345\r\nRCPT TO:<a@contoso.com>\r\n";
/// let (cmd, used) = Command::decode(input, &opts).unwrap();
/// let Command::Mail { from, params } = &cmd else { panic!() };
/// assert_eq!(from.to_string(), "<scanner@contoso.com>");
/// assert_eq!(params.size, Some(12345));
/// assert_eq!(used, 44);
/// assert_eq!(cmd.to_string(), "MAIL FROM:<scanner@contoso.com> SIZE=12345\r\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command<'a> {
    /// `HELO domain` (RFC 5321 §4.1.1.1).
    Helo {
        /// The client's name or address literal.
        domain: Domain<'a>,
    },
    /// `EHLO domain` (RFC 5321 §4.1.1.1).
    Ehlo {
        /// The client's name or address literal.
        domain: Domain<'a>,
    },
    /// `MAIL FROM:<path> [params]` (RFC 5321 §4.1.1.2).
    Mail {
        /// The reverse-path; [`Path::Null`] for bounces.
        from: Path<'a>,
        /// ESMTP parameters.
        params: MailParams<'a>,
    },
    /// `RCPT TO:<path> [params]` (RFC 5321 §4.1.1.3).
    Rcpt {
        /// The forward-path (a mailbox or [`Path::Postmaster`]).
        to: Path<'a>,
        /// ESMTP parameters.
        params: RcptParams<'a>,
    },
    /// `DATA` (RFC 5321 §4.1.1.4).
    Data,
    /// `BDAT size [LAST]` (RFC 3030): exactly `size` octets of message follow the line.
    Bdat {
        /// Octets in this chunk.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET` (RFC 5321 §4.1.1.5).
    Rset,
    /// `VRFY string` (RFC 5321 §4.1.1.6).
    Vrfy {
        /// The user or mailbox to verify.
        target: Cow<'a, str>,
    },
    /// `EXPN string` (RFC 5321 §4.1.1.7).
    Expn {
        /// The list to expand.
        list: Cow<'a, str>,
    },
    /// `HELP [string]` (RFC 5321 §4.1.1.8).
    Help {
        /// The topic, if any.
        topic: Option<Cow<'a, str>>,
    },
    /// `NOOP [string]` (RFC 5321 §4.1.1.9).
    Noop {
        /// The ignored argument, if any.
        text: Option<Cow<'a, str>>,
    },
    /// `QUIT` (RFC 5321 §4.1.1.10).
    Quit,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism name, upper-cased (`PLAIN`, `LOGIN`, `XOAUTH2`).
        mechanism: Cow<'a, str>,
        /// The base64 initial response (`=` for an empty one), redacted in `Debug`.
        initial: Option<AuthResponse<'a>>,
    },
}

/// A SASL response as sent on the wire (base64, or `=` for empty, or `*` to cancel). It may
/// hold a password, so `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthResponse<'a>(Cow<'a, str>);

impl<'a> AuthResponse<'a> {
    /// Wraps a response.
    pub fn new(s: impl Into<Cow<'a, str>>) -> Self {
        Self(s.into())
    }

    /// The response text (base64). Handle with care: it may hold a credential.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Detaches the response from the input buffer.
    pub fn into_owned(self) -> AuthResponse<'static> {
        AuthResponse(Cow::Owned(self.0.into_owned()))
    }
}

impl fmt::Debug for AuthResponse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthResponse(<redacted, {} bytes>)", self.0.len())
    }
}

/// `BODY=` (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Body {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME` (RFC 6152).
    EightBitMime,
    /// `BINARYMIME` (RFC 3030; requires BDAT).
    BinaryMime,
}

impl Body {
    /// The keyword as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SevenBit => "7BIT",
            Self::EightBitMime => "8BITMIME",
            Self::BinaryMime => "BINARYMIME",
        }
    }
}

/// `RET=` (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ret {
    /// `FULL`: return the whole message in a DSN.
    Full,
    /// `HDRS`: return only the headers.
    Headers,
}

impl Ret {
    /// The keyword as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Headers => "HDRS",
        }
    }
}

/// `NOTIFY=` (RFC 3461 §4.1). All three `false` means `NEVER`.
#[allow(clippy::exhaustive_structs)] // RFC 3461 defines exactly these three conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Notify {
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: Self = Self {
        success: false,
        failure: false,
        delay: false,
    };

    /// Whether this is `NEVER`.
    pub fn is_never(self) -> bool {
        self == Self::NEVER
    }
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_never() {
            return f.write_str("NEVER");
        }
        let mut sep = "";
        for (on, name) in [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ] {
            if on {
                write!(f, "{sep}{name}")?;
                sep = ",";
            }
        }
        Ok(())
    }
}

/// `ORCPT=addr-type;xtext` (RFC 3461 §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Orcpt<'a> {
    /// The address type, usually `rfc822` (or `utf-8`, RFC 6533).
    pub addr_type: Cow<'a, str>,
    /// The address, still xtext-encoded; decode with [`xtext::decode`].
    pub addr: Cow<'a, str>,
}

impl<'a> Orcpt<'a> {
    /// Builds an ORCPT value from a plain address, xtext-encoding it.
    pub fn new(addr_type: impl Into<Cow<'a, str>>, addr: &str) -> Self {
        Self {
            addr_type: addr_type.into(),
            addr: Cow::Owned(xtext::encode(addr).into_owned()),
        }
    }

    fn into_owned(self) -> Orcpt<'static> {
        Orcpt {
            addr_type: Cow::Owned(self.addr_type.into_owned()),
            addr: Cow::Owned(self.addr.into_owned()),
        }
    }
}

/// An ESMTP parameter this crate does not interpret, kept for policy to decide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Param<'a> {
    /// The keyword, as sent.
    pub keyword: Cow<'a, str>,
    /// The value after `=`, if any.
    pub value: Option<Cow<'a, str>>,
}

impl<'a> Param<'a> {
    /// Builds a parameter.
    pub fn new(keyword: impl Into<Cow<'a, str>>, value: Option<Cow<'a, str>>) -> Self {
        Self {
            keyword: keyword.into(),
            value,
        }
    }

    fn into_owned(self) -> Param<'static> {
        Param {
            keyword: Cow::Owned(self.keyword.into_owned()),
            value: self.value.map(|v| Cow::Owned(v.into_owned())),
        }
    }
}

impl fmt::Display for Param<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.keyword),
            None => f.write_str(&self.keyword),
        }
    }
}

/// MAIL FROM parameters.
///
/// The everyday ones are fields; `ENVID`, `AUTH` and parameters this crate does not know are
/// rare, so they live out of line behind accessors, which keeps every [`Command`] small.
///
/// ```
/// use std::borrow::Cow;
/// use postern_smtp::{Command, MailParams, Param, ParseOptions, Path};
///
/// let mut params = MailParams::default();
/// params.size = Some(52311);
/// params.set_envid(Some(Cow::Borrowed("QQ314159")));
/// params.push_other(Param::new("X-TRACE", Some(Cow::Borrowed("7"))));
/// let cmd = Command::Mail { from: Path::Null, params };
/// assert_eq!(cmd.to_string(), "MAIL FROM:<> SIZE=52311 ENVID=QQ314159 X-TRACE=7\r\n");
///
/// let wire = cmd.to_string();
/// let (back, _) = Command::decode(wire.as_bytes(), &ParseOptions::default()).unwrap();
/// let Command::Mail { params, .. } = &back else { panic!() };
/// assert_eq!(params.envid(), Some("QQ314159"));
/// assert_eq!(params.auth(), None);
/// assert_eq!(params.other()[0].keyword, "X-TRACE");
/// assert_eq!(back, cmd);
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MailParams<'a> {
    /// `SIZE=n` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152, RFC 3030).
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID`, `AUTH` and the others; `None` when all three are absent, so that the derived
    /// equality holds.
    rare: Option<Box<RareMailParams<'a>>>,
}

/// The parameters of [`MailParams`] kept out of line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct RareMailParams<'a> {
    envid: Option<Cow<'a, str>>,
    auth: Option<Cow<'a, str>>,
    other: Vec<Param<'a>>,
}

impl<'a> MailParams<'a> {
    /// `ENVID=`, still xtext-encoded (RFC 3461).
    pub fn envid(&self) -> Option<&str> {
        self.rare.as_ref()?.envid.as_deref()
    }

    /// Sets or clears `ENVID=`; the value is sent as is, so it must be xtext already
    /// ([`xtext::encode`]).
    pub fn set_envid(&mut self, envid: Option<Cow<'a, str>>) {
        self.update_rare(|r| r.envid = envid);
    }

    /// `AUTH=`, the xtext-encoded authorized sender or `<>` (RFC 4954 §5).
    pub fn auth(&self) -> Option<&str> {
        self.rare.as_ref()?.auth.as_deref()
    }

    /// Sets or clears `AUTH=` (xtext or `<>`, sent as is).
    pub fn set_auth(&mut self, auth: Option<Cow<'a, str>>) {
        self.update_rare(|r| r.auth = auth);
    }

    /// Every other parameter, in order.
    pub fn other(&self) -> &[Param<'a>] {
        self.rare.as_ref().map_or(&[], |r| &r.other)
    }

    /// Appends a parameter this crate does not interpret.
    pub fn push_other(&mut self, param: Param<'a>) {
        self.update_rare(|r| r.other.push(param));
    }

    /// Changes the out-of-line parameters, and drops their box when none is left.
    fn update_rare(&mut self, f: impl FnOnce(&mut RareMailParams<'a>)) {
        let mut rare = self.rare.take().unwrap_or_default();
        f(&mut rare);
        if *rare != RareMailParams::default() {
            self.rare = Some(rare);
        }
    }

    /// Detaches the parameters from the input buffer.
    pub fn into_owned(self) -> MailParams<'static> {
        MailParams {
            size: self.size,
            body: self.body,
            smtputf8: self.smtputf8,
            ret: self.ret,
            rare: self.rare.map(|r| {
                Box::new(RareMailParams {
                    envid: r.envid.map(|v| Cow::Owned(v.into_owned())),
                    auth: r.auth.map(|v| Cow::Owned(v.into_owned())),
                    other: r.other.into_iter().map(Param::into_owned).collect(),
                })
            }),
        }
    }

    /// Whether any parameter was given (a HELO session may not use any).
    pub fn is_empty(&self) -> bool {
        *self == MailParams::default()
    }
}

impl fmt::Debug for MailParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailParams")
            .field("size", &self.size)
            .field("body", &self.body)
            .field("smtputf8", &self.smtputf8)
            .field("ret", &self.ret)
            .field("envid", &self.envid())
            .field("auth", &self.auth())
            .field("other", &self.other())
            .finish()
    }
}

impl fmt::Display for MailParams<'_> {
    /// Each parameter preceded by a space.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.size {
            write!(f, " SIZE={n}")?;
        }
        if let Some(b) = self.body {
            write!(f, " BODY={}", b.as_str())?;
        }
        if self.smtputf8 {
            f.write_str(" SMTPUTF8")?;
        }
        if let Some(r) = self.ret {
            write!(f, " RET={}", r.as_str())?;
        }
        if let Some(e) = self.envid() {
            write!(f, " ENVID={e}")?;
        }
        if let Some(a) = self.auth() {
            write!(f, " AUTH={a}")?;
        }
        for p in self.other() {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

/// RCPT TO parameters. Parameters this crate does not know are rare, so they live out of
/// line behind [`RcptParams::other`], which keeps every [`Command`] small.
///
/// ```
/// use postern_smtp::{Command, Notify, Orcpt, ParseOptions};
///
/// let line = b"RCPT TO:<a@contoso.com> NOTIFY=FAILURE ORCPT=rfc822;a@contoso.com X-Y=1\r\n";
/// let (cmd, _) = Command::decode(line, &ParseOptions::default()).unwrap();
/// let Command::Rcpt { params, .. } = &cmd else { panic!() };
/// assert_eq!(params.notify, Some(Notify { failure: true, ..Notify::NEVER }));
/// assert_eq!(params.orcpt, Some(Orcpt::new("rfc822", "a@contoso.com")));
/// assert_eq!(params.other()[0].to_string(), "X-Y=1");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RcptParams<'a> {
    /// `NOTIFY=` (RFC 3461).
    pub notify: Option<Notify>,
    /// `ORCPT=` (RFC 3461).
    pub orcpt: Option<Orcpt<'a>>,
    /// The other parameters; `None` when there are none, so that the derived equality holds.
    #[allow(clippy::box_collection)] // One word in every command instead of three: it is rare.
    other: Option<Box<Vec<Param<'a>>>>,
}

impl<'a> RcptParams<'a> {
    /// Every other parameter, in order.
    pub fn other(&self) -> &[Param<'a>] {
        self.other.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Appends a parameter this crate does not interpret.
    pub fn push_other(&mut self, param: Param<'a>) {
        self.other.get_or_insert_default().push(param);
    }

    /// Detaches the parameters from the input buffer.
    pub fn into_owned(self) -> RcptParams<'static> {
        RcptParams {
            notify: self.notify,
            orcpt: self.orcpt.map(Orcpt::into_owned),
            other: self
                .other
                .map(|o| Box::new(o.into_iter().map(Param::into_owned).collect())),
        }
    }

    /// Whether no parameter was given.
    pub fn is_empty(&self) -> bool {
        *self == RcptParams::default()
    }
}

impl fmt::Debug for RcptParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcptParams")
            .field("notify", &self.notify)
            .field("orcpt", &self.orcpt)
            .field("other", &self.other())
            .finish()
    }
}

impl fmt::Display for RcptParams<'_> {
    /// Each parameter preceded by a space.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.notify {
            write!(f, " NOTIFY={n}")?;
        }
        if let Some(o) = &self.orcpt {
            write!(f, " ORCPT={};{}", o.addr_type, o.addr)?;
        }
        for p in self.other() {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

/// A command's verb, without arguments: what a [`ClientSession`](crate::ClientSession) waits
/// on, and what [`Command::kind`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CommandKind {
    /// The server greeting (answers the connection, not a command).
    Greeting,
    /// HELO.
    Helo,
    /// EHLO.
    Ehlo,
    /// MAIL.
    Mail,
    /// RCPT.
    Rcpt,
    /// DATA (answered by `354`).
    Data,
    /// The message content after `354`, answered once `CRLF.CRLF` has been sent.
    Message,
    /// BDAT; `last` is true for `BDAT n LAST`, whose reply is the message's.
    Bdat {
        /// Whether this was the last chunk.
        last: bool,
    },
    /// RSET.
    Rset,
    /// VRFY.
    Vrfy,
    /// EXPN.
    Expn,
    /// HELP.
    Help,
    /// NOOP.
    Noop,
    /// QUIT.
    Quit,
    /// STARTTLS.
    StartTls,
    /// AUTH (answered by `334` challenges, then the outcome).
    Auth,
}

impl CommandKind {
    /// The verb (`"MAIL"`), or a description for [`CommandKind::Greeting`] and
    /// [`CommandKind::Message`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Greeting => "greeting",
            Self::Helo => "HELO",
            Self::Ehlo => "EHLO",
            Self::Mail => "MAIL",
            Self::Rcpt => "RCPT",
            Self::Data => "DATA",
            Self::Message => "message data",
            Self::Bdat { .. } => "BDAT",
            Self::Rset => "RSET",
            Self::Vrfy => "VRFY",
            Self::Expn => "EXPN",
            Self::Help => "HELP",
            Self::Noop => "NOOP",
            Self::Quit => "QUIT",
            Self::StartTls => "STARTTLS",
            Self::Auth => "AUTH",
        }
    }

    /// Whether the command must be the last in a pipelined group: the client waits for its
    /// reply before sending anything else (RFC 2920 §3.1, RFC 3207 §4.2, RFC 4954 §4).
    pub fn ends_group(self) -> bool {
        matches!(
            self,
            Self::Greeting
                | Self::Ehlo
                | Self::Helo
                | Self::Data
                | Self::Vrfy
                | Self::Expn
                | Self::Quit
                | Self::Noop
                | Self::StartTls
                | Self::Auth
                | Self::Help
        )
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'a> Command<'a> {
    /// Decodes one command line from the start of `input`.
    ///
    /// Returns the command and the bytes it used (the line and its CRLF). The line may be at
    /// most `opts.max_line` octets, CRLF included ([`MAX_LINE_LENGTH`](crate::MAX_LINE_LENGTH),
    /// 512, by default). Verbs are case-insensitive. See [`DecodeError`] for how to resume
    /// after an error, and [`DecodeError::reply`] for what to answer.
    pub fn decode(input: &'a [u8], opts: &ParseOptions) -> Result<(Self, usize), DecodeError> {
        // `MAIL FROM:<user@domain> SIZE=n` and friends skip the general grammar; the fast path
        // gives every other line to `decode_general` (see `fast`).
        fast::decode(input, opts)
    }

    /// [`Command::decode`] for the lines its fast path declines. A CRLF line without control
    /// characters is framed in one pass; anything else (tabs, bare CR, no line ending yet...)
    /// takes the reference path from the start.
    #[inline(never)]
    fn decode_general(input: &'a [u8], opts: &ParseOptions) -> Result<(Self, usize), DecodeError> {
        let Some((line, consumed)) = read_plain_line(input, opts.max_line, opts.lenient) else {
            return Self::decode_reference(input, opts);
        };
        if let Some(cmd) = bare_verb(line, opts.lenient) {
            return Ok((cmd, consumed));
        }
        let line = std::str::from_utf8(line).map_err(|_| DecodeError::Invalid {
            consumed,
            kind: InvalidKind::Syntax("command line is not UTF-8"),
        })?;
        parse_line(line, opts)
            .map(|c| (c, consumed))
            .map_err(|kind| DecodeError::Invalid { consumed, kind })
    }

    /// [`Command::decode`] without its fast paths: the line framing, UTF-8 and control
    /// character checks, then the general grammar. The fast paths must agree with it on every
    /// input; the property tests and the fuzz target check that they do.
    pub(crate) fn decode_reference(
        input: &'a [u8],
        opts: &ParseOptions,
    ) -> Result<(Self, usize), DecodeError> {
        let (line, consumed) = read_line(input, opts.max_line, opts.lenient)?;
        let invalid = |kind| DecodeError::Invalid { consumed, kind };
        let line = std::str::from_utf8(line)
            .map_err(|_| invalid(InvalidKind::Syntax("command line is not UTF-8")))?;
        if has_control(line.as_bytes())
            && line
                .bytes()
                .any(|b| (b < b' ' && !(opts.lenient && b == b'\t')) || b == 0x7f)
        {
            return Err(invalid(InvalidKind::Syntax("control character in command")));
        }
        parse_line(line, opts)
            .map(|c| (c, consumed))
            .map_err(invalid)
    }

    /// The verb.
    pub fn kind(&self) -> CommandKind {
        match self {
            Self::Helo { .. } => CommandKind::Helo,
            Self::Ehlo { .. } => CommandKind::Ehlo,
            Self::Mail { .. } => CommandKind::Mail,
            Self::Rcpt { .. } => CommandKind::Rcpt,
            Self::Data => CommandKind::Data,
            Self::Bdat { last, .. } => CommandKind::Bdat { last: *last },
            Self::Rset => CommandKind::Rset,
            Self::Vrfy { .. } => CommandKind::Vrfy,
            Self::Expn { .. } => CommandKind::Expn,
            Self::Help { .. } => CommandKind::Help,
            Self::Noop { .. } => CommandKind::Noop,
            Self::Quit => CommandKind::Quit,
            Self::StartTls => CommandKind::StartTls,
            Self::Auth { .. } => CommandKind::Auth,
        }
    }

    /// Appends the command, CRLF-terminated, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{self}");
    }

    /// Detaches the command from the input buffer.
    pub fn into_owned(self) -> Command<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        match self {
            Self::Helo { domain } => Command::Helo {
                domain: domain.into_owned(),
            },
            Self::Ehlo { domain } => Command::Ehlo {
                domain: domain.into_owned(),
            },
            Self::Mail { from, params } => Command::Mail {
                from: from.into_owned(),
                params: params.into_owned(),
            },
            Self::Rcpt { to, params } => Command::Rcpt {
                to: to.into_owned(),
                params: params.into_owned(),
            },
            Self::Data => Command::Data,
            Self::Bdat { size, last } => Command::Bdat { size, last },
            Self::Rset => Command::Rset,
            Self::Vrfy { target } => Command::Vrfy {
                target: own(target),
            },
            Self::Expn { list } => Command::Expn { list: own(list) },
            Self::Help { topic } => Command::Help {
                topic: topic.map(own),
            },
            Self::Noop { text } => Command::Noop {
                text: text.map(own),
            },
            Self::Quit => Command::Quit,
            Self::StartTls => Command::StartTls,
            Self::Auth { mechanism, initial } => Command::Auth {
                mechanism: own(mechanism),
                initial: initial.map(AuthResponse::into_owned),
            },
        }
    }
}

impl fmt::Display for Command<'_> {
    /// The command as sent on the wire, CRLF included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Helo { domain } => write!(f, "HELO {domain}\r\n"),
            Self::Ehlo { domain } => write!(f, "EHLO {domain}\r\n"),
            Self::Mail { from, params } => write!(f, "MAIL FROM:{from}{params}\r\n"),
            Self::Rcpt { to, params } => write!(f, "RCPT TO:{to}{params}\r\n"),
            Self::Data => f.write_str("DATA\r\n"),
            Self::Bdat { size, last: false } => write!(f, "BDAT {size}\r\n"),
            Self::Bdat { size, last: true } => write!(f, "BDAT {size} LAST\r\n"),
            Self::Rset => f.write_str("RSET\r\n"),
            Self::Vrfy { target } => write!(f, "VRFY {target}\r\n"),
            Self::Expn { list } => write!(f, "EXPN {list}\r\n"),
            Self::Help { topic: None } => f.write_str("HELP\r\n"),
            Self::Help { topic: Some(t) } => write!(f, "HELP {t}\r\n"),
            Self::Noop { text: None } => f.write_str("NOOP\r\n"),
            Self::Noop { text: Some(t) } => write!(f, "NOOP {t}\r\n"),
            Self::Quit => f.write_str("QUIT\r\n"),
            Self::StartTls => f.write_str("STARTTLS\r\n"),
            Self::Auth {
                mechanism,
                initial: None,
            } => write!(f, "AUTH {mechanism}\r\n"),
            Self::Auth {
                mechanism,
                initial: Some(r),
            } => write!(f, "AUTH {mechanism} {}\r\n", r.expose()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Line grammar.

const V_MAIL: u32 = u32::from_be_bytes(*b"MAIL");
const V_RCPT: u32 = u32::from_be_bytes(*b"RCPT");
const V_HELO: u32 = u32::from_be_bytes(*b"HELO");
const V_EHLO: u32 = u32::from_be_bytes(*b"EHLO");
const V_DATA: u32 = u32::from_be_bytes(*b"DATA");
const V_BDAT: u32 = u32::from_be_bytes(*b"BDAT");
const V_RSET: u32 = u32::from_be_bytes(*b"RSET");
const V_QUIT: u32 = u32::from_be_bytes(*b"QUIT");
const V_VRFY: u32 = u32::from_be_bytes(*b"VRFY");
const V_EXPN: u32 = u32::from_be_bytes(*b"EXPN");
const V_HELP: u32 = u32::from_be_bytes(*b"HELP");
const V_NOOP: u32 = u32::from_be_bytes(*b"NOOP");
const V_AUTH: u32 = u32::from_be_bytes(*b"AUTH");

/// `DATA`, `RSET`, `QUIT`, `NOOP`, `HELP` or `STARTTLS` alone on its line, exactly as
/// `parse_line` reads it, without a UTF-8 pass: `None` for any other line.
fn bare_verb(line: &[u8], lenient: bool) -> Option<Command<'static>> {
    let mut line = line;
    // `parse_line` trims trailing blanks in lenient mode.
    while let [rest @ .., b' ' | b'\t'] = line
        && lenient
    {
        line = rest;
    }
    match *line {
        [a, b, c, d] => match u32::from_be_bytes([a, b, c, d]) & !0x2020_2020 {
            V_DATA => Some(Command::Data),
            V_RSET => Some(Command::Rset),
            V_QUIT => Some(Command::Quit),
            V_NOOP => Some(Command::Noop { text: None }),
            V_HELP => Some(Command::Help { topic: None }),
            _ => None,
        },
        _ if line.eq_ignore_ascii_case(b"STARTTLS") => Some(Command::StartTls),
        _ => None,
    }
}

/// Whether `b` holds an ASCII control character (branch-free per 16-byte block).
fn has_control(b: &[u8]) -> bool {
    b.iter().fold(0u8, |m, &x| m | CLASS[usize::from(x)]) & CTL != 0
}

fn parse_line<'a>(line: &'a str, opts: &ParseOptions) -> Result<Command<'a>, InvalidKind> {
    let cx = Cx {
        lenient: opts.lenient,
    };
    let line = if opts.lenient {
        line.trim_end_matches([' ', '\t'])
    } else {
        line
    };
    let (verb, args) = match line.bytes().position(|b| b == b' ') {
        Some(at) => (&line[..at], Some(&line[at + 1..])),
        None => (line, None),
    };
    let args = match args {
        Some(a) if opts.lenient => Some(a.trim_start_matches(' ')).filter(|a| !a.is_empty()),
        Some("") => return Err(InvalidKind::BadArgument("trailing space")),
        a => a,
    };
    let no_args = |cmd: Command<'a>| match args {
        None => Ok(cmd),
        Some(_) => Err(InvalidKind::BadArgument("command takes no arguments")),
    };
    if verb.len() == 4 {
        let v = verb.as_bytes();
        // Upper-case four ASCII letters at once and match the verb as one integer.
        let upper = u32::from_be_bytes([v[0], v[1], v[2], v[3]]) & !0x2020_2020;
        return match upper {
            V_MAIL => parse_mail(args, opts, cx),
            V_RCPT => parse_rcpt(args, opts, cx),
            V_HELO => parse_hello(args, opts, cx).map(|domain| Command::Helo { domain }),
            V_EHLO => parse_hello(args, opts, cx).map(|domain| Command::Ehlo { domain }),
            V_DATA => no_args(Command::Data),
            V_BDAT => parse_bdat(args),
            V_RSET => no_args(Command::Rset),
            V_QUIT => no_args(Command::Quit),
            V_VRFY => args
                .map(|a| Command::Vrfy {
                    target: Cow::Borrowed(a),
                })
                .ok_or(InvalidKind::BadArgument("VRFY needs an argument")),
            V_EXPN => args
                .map(|a| Command::Expn {
                    list: Cow::Borrowed(a),
                })
                .ok_or(InvalidKind::BadArgument("EXPN needs an argument")),
            V_HELP => Ok(Command::Help {
                topic: args.map(Cow::Borrowed),
            }),
            V_NOOP => Ok(Command::Noop {
                text: args.map(Cow::Borrowed),
            }),
            V_AUTH => parse_auth(args),
            _ => Err(InvalidKind::UnknownCommand),
        };
    }
    if verb.eq_ignore_ascii_case("STARTTLS") {
        return no_args(Command::StartTls);
    }
    Err(InvalidKind::UnknownCommand)
}

fn parse_hello<'a>(
    args: Option<&'a str>,
    opts: &ParseOptions,
    cx: Cx,
) -> Result<Domain<'a>, InvalidKind> {
    let Some(args) = args else {
        return Err(InvalidKind::BadArgument("HELO/EHLO needs a domain"));
    };
    if opts.lenient {
        // Devices send `EHLO printer_01`, `EHLO [printer]`, `HELO host extra words`.
        let Some(token) = args.split([' ', '\t']).find(|t| !t.is_empty()) else {
            return Err(InvalidKind::BadArgument("HELO/EHLO needs a domain"));
        };
        return match domain(token, cx) {
            Ok(("", d)) => Ok(d),
            _ => Ok(Domain::Name(Cow::Borrowed(token))),
        };
    }
    match domain(args, cx) {
        Ok(("", d)) if opts.smtputf8 || d.is_ascii() => Ok(d),
        Ok(("", _)) => Err(InvalidKind::NonAscii),
        Ok(_) => Err(InvalidKind::BadArgument("HELO/EHLO takes one domain")),
        Err(e) => Err(InvalidKind::BadArgument(reason(e))),
    }
}

/// Strips `FROM:`/`TO:` (case-insensitive) and, in lenient mode, spaces after the colon.
fn strip_keyword<'a>(args: Option<&'a str>, kw: &str, cx: Cx) -> Option<&'a str> {
    let args = args?;
    let head = args.get(..kw.len())?;
    if !head.eq_ignore_ascii_case(kw) {
        return None;
    }
    let rest = &args[kw.len()..];
    Some(if cx.lenient {
        rest.trim_start_matches(' ')
    } else {
        rest
    })
}

/// Splits the text after a path into parameters, without allocating.
fn params(rest: &str, cx: Cx) -> Result<ParamIter<'_>, InvalidKind> {
    if rest.is_empty() {
        return Ok(ParamIter { words: None, cx });
    }
    let Some(rest) = rest.strip_prefix(' ') else {
        return Err(InvalidKind::BadArgument(
            "expected a space before parameters",
        ));
    };
    Ok(ParamIter {
        words: Some(rest),
        cx,
    })
}

/// `keyword[=value]` words of a MAIL/RCPT line.
struct ParamIter<'a> {
    words: Option<&'a str>,
    cx: Cx,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Result<(&'a str, Option<&'a str>), InvalidKind>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.words?;
            // One pass over the word: find its end and its first `=`.
            let bytes = rest.as_bytes();
            let mut eq = None;
            let mut end = 0;
            while end < bytes.len() && bytes[end] != b' ' {
                if bytes[end] == b'=' && eq.is_none() {
                    eq = Some(end);
                }
                end += 1;
            }
            self.words = (end < bytes.len()).then(|| &rest[end + 1..]);
            let word = &rest[..end];
            if word.is_empty() {
                if self.cx.lenient {
                    continue;
                }
                return Some(Err(InvalidKind::BadArgument("empty parameter")));
            }
            let (k, v) = match eq {
                Some(at) => (&word[..at], Some(&word[at + 1..])),
                None => (word, None),
            };
            let kb = k.as_bytes();
            if kb.is_empty()
                || !kb[0].is_ascii_alphanumeric()
                || !kb.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            {
                return Some(Err(InvalidKind::BadArgument("bad parameter keyword")));
            }
            if let Some(v) = v
                && (v.is_empty() || v.bytes().any(|b| b == b'=' || b < b'!' || b == 0x7f))
            {
                return Some(Err(InvalidKind::BadParameter(k.to_owned())));
            }
            return Some(Ok((k, v)));
        }
    }
}

fn ascii_check<'a>(p: Path<'a>, opts: &ParseOptions) -> Result<Path<'a>, InvalidKind> {
    if !opts.smtputf8 && !p.is_ascii() {
        return Err(InvalidKind::NonAscii);
    }
    Ok(p)
}

fn parse_mail<'a>(
    args: Option<&'a str>,
    opts: &ParseOptions,
    cx: Cx,
) -> Result<Command<'a>, InvalidKind> {
    let Some(rest) = strip_keyword(args, "FROM:", cx) else {
        return Err(InvalidKind::BadArgument("expected MAIL FROM:<address>"));
    };
    let (rest, from) =
        path(rest, cx, PathKind::Reverse).map_err(|e| InvalidKind::BadReversePath(reason(e)))?;
    let from = ascii_check(from, opts)?;
    let mut p = MailParams::default();
    for param in params(rest, cx)? {
        let (k, v) = param?;
        let dup = || InvalidKind::DuplicateParameter(k.to_owned());
        let bad = || InvalidKind::BadParameter(k.to_owned());
        if k.eq_ignore_ascii_case("SIZE") {
            let v = v.ok_or_else(bad)?;
            if p.size.is_some() {
                return Err(dup());
            }
            if v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.size = Some(v.parse().map_err(|_| bad())?);
        } else if k.eq_ignore_ascii_case("BODY") {
            let v = v.ok_or_else(bad)?;
            if p.body.is_some() {
                return Err(dup());
            }
            p.body = Some(if v.eq_ignore_ascii_case("7BIT") {
                Body::SevenBit
            } else if v.eq_ignore_ascii_case("8BITMIME") {
                Body::EightBitMime
            } else if v.eq_ignore_ascii_case("BINARYMIME") {
                Body::BinaryMime
            } else {
                return Err(bad());
            });
        } else if k.eq_ignore_ascii_case("SMTPUTF8") {
            if v.is_some() {
                return Err(bad());
            }
            if p.smtputf8 {
                return Err(dup());
            }
            p.smtputf8 = true;
        } else if k.eq_ignore_ascii_case("RET") {
            let v = v.ok_or_else(bad)?;
            if p.ret.is_some() {
                return Err(dup());
            }
            p.ret = Some(if v.eq_ignore_ascii_case("FULL") {
                Ret::Full
            } else if v.eq_ignore_ascii_case("HDRS") {
                Ret::Headers
            } else {
                return Err(bad());
            });
        } else if k.eq_ignore_ascii_case("ENVID") {
            let v = v.ok_or_else(bad)?;
            if p.envid().is_some() {
                return Err(dup());
            }
            if v.len() > 100 || !xtext::is_valid(v) {
                return Err(bad());
            }
            p.set_envid(Some(Cow::Borrowed(v)));
        } else if k.eq_ignore_ascii_case("AUTH") {
            let v = v.ok_or_else(bad)?;
            if p.auth().is_some() {
                return Err(dup());
            }
            if v != "<>" && !xtext::is_valid(v) {
                return Err(bad());
            }
            p.set_auth(Some(Cow::Borrowed(v)));
        } else {
            check_value(v, opts, k)?;
            p.push_other(Param {
                keyword: Cow::Borrowed(k),
                value: v.map(Cow::Borrowed),
            });
        }
    }
    Ok(Command::Mail { from, params: p })
}

fn check_value(v: Option<&str>, opts: &ParseOptions, k: &str) -> Result<(), InvalidKind> {
    if let Some(v) = v
        && !opts.smtputf8
        && !v.is_ascii()
    {
        return Err(InvalidKind::BadParameter(k.to_owned()));
    }
    Ok(())
}

fn parse_rcpt<'a>(
    args: Option<&'a str>,
    opts: &ParseOptions,
    cx: Cx,
) -> Result<Command<'a>, InvalidKind> {
    let Some(rest) = strip_keyword(args, "TO:", cx) else {
        return Err(InvalidKind::BadArgument("expected RCPT TO:<address>"));
    };
    let (rest, to) =
        path(rest, cx, PathKind::Forward).map_err(|e| InvalidKind::BadForwardPath(reason(e)))?;
    let to = ascii_check(to, opts)?;
    let mut p = RcptParams::default();
    for param in params(rest, cx)? {
        let (k, v) = param?;
        let dup = || InvalidKind::DuplicateParameter(k.to_owned());
        let bad = || InvalidKind::BadParameter(k.to_owned());
        if k.eq_ignore_ascii_case("NOTIFY") {
            let v = v.ok_or_else(bad)?;
            if p.notify.is_some() {
                return Err(dup());
            }
            let mut n = Notify::NEVER;
            if !v.eq_ignore_ascii_case("NEVER") {
                for item in v.split(',') {
                    let flag = if item.eq_ignore_ascii_case("SUCCESS") {
                        &mut n.success
                    } else if item.eq_ignore_ascii_case("FAILURE") {
                        &mut n.failure
                    } else if item.eq_ignore_ascii_case("DELAY") {
                        &mut n.delay
                    } else {
                        return Err(bad());
                    };
                    if *flag {
                        return Err(bad());
                    }
                    *flag = true;
                }
            }
            p.notify = Some(n);
        } else if k.eq_ignore_ascii_case("ORCPT") {
            let v = v.ok_or_else(bad)?;
            if p.orcpt.is_some() {
                return Err(dup());
            }
            let Some((t, a)) = v.split_once(';') else {
                return Err(bad());
            };
            let type_ok = !t.is_empty()
                && t.as_bytes()[0].is_ascii_alphanumeric()
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !type_ok || a.is_empty() || !xtext::is_valid(a) || v.len() > 500 {
                return Err(bad());
            }
            p.orcpt = Some(Orcpt {
                addr_type: Cow::Borrowed(t),
                addr: Cow::Borrowed(a),
            });
        } else {
            check_value(v, opts, k)?;
            p.push_other(Param {
                keyword: Cow::Borrowed(k),
                value: v.map(Cow::Borrowed),
            });
        }
    }
    Ok(Command::Rcpt { to, params: p })
}

fn parse_bdat(args: Option<&str>) -> Result<Command<'_>, InvalidKind> {
    let bad = InvalidKind::BadArgument("expected BDAT <size> [LAST]");
    let Some(args) = args else { return Err(bad) };
    let (size, last) = match args.split_once(' ') {
        None => (args, false),
        Some((s, l)) if l.eq_ignore_ascii_case("LAST") => (s, true),
        Some(_) => return Err(bad),
    };
    if size.is_empty() || size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    let size = size.parse().map_err(|_| bad)?;
    Ok(Command::Bdat { size, last })
}

fn parse_auth(args: Option<&str>) -> Result<Command<'_>, InvalidKind> {
    let bad = InvalidKind::BadArgument("expected AUTH <mechanism> [initial-response]");
    let Some(args) = args else { return Err(bad) };
    let (mech, initial) = match args.split_once(' ') {
        None => (args, None),
        Some((m, r)) => (m, Some(r)),
    };
    let mech_ok = !mech.is_empty()
        && mech.len() <= 20
        && mech
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !mech_ok {
        return Err(bad);
    }
    if let Some(r) = initial {
        let ok = r == "="
            || (!r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='));
        if !ok {
            return Err(bad);
        }
    }
    let mechanism = if mech.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(mech.to_ascii_uppercase())
    } else {
        Cow::Borrowed(mech)
    };
    Ok(Command::Auth {
        mechanism,
        initial: initial.map(|r| AuthResponse(Cow::Borrowed(r))),
    })
}

#[cfg(test)]
mod tests;
