//! Writing the relay's own bounces: a complete RFC 6522 `multipart/report` message.

use std::fmt::Write as _;

use super::{Action, RecipientStatus, TypedValue, mime};
use crate::error::NdrError;

/// How much of the original message goes back to the sender (RFC 3461 `RET`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    /// `RET=HDRS` (the default): only the original header block, as `text/rfc822-headers`.
    #[default]
    Headers,
    /// `RET=FULL`: the whole original message as `message/rfc822`, if it is no larger than
    /// the builder's cap (otherwise the headers only).
    Full,
}

/// The default cap on a returned full message (`RET=FULL`): 1 MiB.
pub const DEFAULT_FULL_RETURN_CAP: usize = 1024 * 1024;

/// A built DSN and its envelope.
///
/// The engine must send it with the null reverse path, `MAIL FROM:<>` (RFC 5321 §4.5.5,
/// RFC 3464 §2), to [`BuiltDsn::rcpt_to`], so that a failing bounce never bounces again.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltDsn {
    /// The envelope recipient: the original message's envelope sender.
    pub rcpt_to: String,
    /// The complete message, CRLF line endings, ready for DATA (before dot-stuffing).
    pub message: Vec<u8>,
}

impl BuiltDsn {
    /// The envelope sender to use: always empty (`MAIL FROM:<>`).
    pub const MAIL_FROM: &'static str = "";
}

/// Builds a DSN. Sans-IO: the date, the Message-ID and the MIME boundary are inputs (the engine
/// draws them from its clock and RNG), so the output is a pure function of the inputs.
///
/// ```
/// use postern_ndr::{Action, DeliveryReport, RecipientStatus};
///
/// let rcpt = RecipientStatus::new("bob@contoso.com", Action::Failed, "5.2.252".parse().unwrap())
///     .with_smtp_diagnostic("554 5.2.252 SendAsDenied; scanner@contoso.com not allowed to send as ceo@contoso.com")
///     .with_remote_mta("smtp.office365.com");
/// let dsn = DeliveryReport::builder("relay.contoso.com")
///     .to("scanner@contoso.com")
///     .date("Sun, 22 Nov 2026 14:00:00 +0000")
///     .message_id("dsn.7f3a9c", "relay.contoso.com")
///     .boundary("=_postern_7f3a9c")
///     .recipient(rcpt)
///     .original(b"From: ceo@contoso.com\r\nSubject: Scan\r\n\r\nbody\r\n")
///     .build()
///     .unwrap();
/// assert_eq!(dsn.rcpt_to, "scanner@contoso.com");
/// let parsed = DeliveryReport::parse(&dsn.message).unwrap();
/// assert_eq!(parsed.recipients[0].recipient(), "bob@contoso.com");
/// ```
#[derive(Debug, Clone)]
pub struct DsnBuilder<'a> {
    reporting_mta: &'a str,
    to: Option<&'a str>,
    date: Option<&'a str>,
    message_id: Option<(&'a str, &'a str)>,
    boundary: Option<&'a str>,
    envelope_id: Option<&'a str>,
    arrival_date: Option<&'a str>,
    recipients: Vec<RecipientStatus>,
    /// Per recipient (same order): the remedy the explanation gives instead of the
    /// classifier's.
    remedies: Vec<Option<String>>,
    original: Option<&'a [u8]>,
    ret: Return,
    full_cap: usize,
}

impl<'a> DsnBuilder<'a> {
    pub(super) fn new(reporting_mta: &'a str) -> Self {
        Self {
            reporting_mta,
            to: None,
            date: None,
            message_id: None,
            boundary: None,
            envelope_id: None,
            arrival_date: None,
            recipients: Vec::new(),
            remedies: Vec::new(),
            original: None,
            ret: Return::Headers,
            full_cap: DEFAULT_FULL_RETURN_CAP,
        }
    }

    /// The original message's envelope sender (required; never the null sender).
    pub fn to(mut self, sender: &'a str) -> Self {
        self.to = Some(sender);
        self
    }

    /// The `Date:` header value, RFC 5322 format (required).
    pub fn date(mut self, date: &'a str) -> Self {
        self.date = Some(date);
        self
    }

    /// The Message-ID, `<unique@domain>` (required; the engine passes a unique token, such as
    /// the spool id plus a counter, and usually its host name).
    pub fn message_id(mut self, unique: &'a str, domain: &'a str) -> Self {
        self.message_id = Some((unique, domain));
        self
    }

    /// The MIME boundary (required): 1–70 characters of RFC 2046 `bchars`, and it must not
    /// occur in the content (checked).
    pub fn boundary(mut self, boundary: &'a str) -> Self {
        self.boundary = Some(boundary);
        self
    }

    /// The original `ENVID` (RFC 3461), echoed as `Original-Envelope-Id`.
    pub fn envelope_id(mut self, envid: &'a str) -> Self {
        self.envelope_id = Some(envid);
        self
    }

    /// When the relay received the message (`Arrival-Date`, RFC 5322 format).
    pub fn arrival_date(mut self, date: &'a str) -> Self {
        self.arrival_date = Some(date);
        self
    }

    /// Adds a recipient's report (at least one is required). The explanation's "What to
    /// do" comes from classifying its diagnostic.
    pub fn recipient(mut self, status: RecipientStatus) -> Self {
        self.recipients.push(status);
        self.remedies.push(None);
        self
    }

    /// Adds a recipient's report whose explanation gives `remedy` as "What to do" (for a
    /// sender that knows more than the diagnostic says, e.g. the failure's category was
    /// decided by the sender's own queue, not by a reply).
    pub fn recipient_with_remedy(mut self, status: RecipientStatus, remedy: &str) -> Self {
        self.recipients.push(status);
        self.remedies.push(Some(remedy.to_owned()));
        self
    }

    /// The original message (headers and body, as spooled).
    pub fn original(mut self, message: &'a [u8]) -> Self {
        self.original = Some(message);
        self
    }

    /// What to return of the original (default [`Return::Headers`]).
    pub fn ret(mut self, ret: Return) -> Self {
        self.ret = ret;
        self
    }

    /// The largest original returned whole with [`Return::Full`] (default
    /// [`DEFAULT_FULL_RETURN_CAP`]); larger ones return their headers only.
    pub fn full_return_cap(mut self, bytes: usize) -> Self {
        self.full_cap = bytes;
        self
    }

    /// Writes the message: headers from `MAILER-DAEMON@<reporting MTA>` to the original
    /// sender, then a `text/plain` explanation with each recipient's remedy, the
    /// `message/delivery-status` part, and the original headers (or message).
    pub fn build(self) -> Result<BuiltDsn, NdrError> {
        let to = self
            .to
            .ok_or(NdrError::MissingInput("the original sender (to)"))?;
        let date = self.date.ok_or(NdrError::MissingInput("a date"))?;
        let (unique, domain) = self
            .message_id
            .ok_or(NdrError::MissingInput("a message id"))?;
        let boundary = self
            .boundary
            .ok_or(NdrError::MissingInput("a MIME boundary"))?;
        if self.recipients.is_empty() {
            return Err(NdrError::MissingInput("at least one recipient"));
        }
        if to.trim().is_empty() {
            return Err(NdrError::InvalidInput {
                field: "to",
                reason: "the null sender never gets a DSN",
            });
        }
        check_boundary(boundary)?;
        for (field, value) in [
            ("to", to),
            ("date", date),
            ("message id", unique),
            ("message id domain", domain),
            ("reporting MTA", self.reporting_mta),
        ] {
            if value
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' && field != "date")
            {
                return Err(NdrError::InvalidInput {
                    field,
                    reason: "contains spaces or control characters",
                });
            }
        }
        if self.reporting_mta.is_empty() || unique.is_empty() || domain.is_empty() {
            return Err(NdrError::InvalidInput {
                field: "reporting MTA / message id",
                reason: "must not be empty",
            });
        }

        let original = self.original.map(to_crlf);
        let original_head: Option<&[u8]> = original.as_deref().map(|o| mime::split_head_body(o).0);
        let orig_fields = original_head.map(mime::parse_fields).unwrap_or_default();
        let orig_subject = mime::field(&orig_fields, "subject").map(clean);
        let orig_msgid = mime::field(&orig_fields, "message-id").map(clean);

        let any_failed = self.recipients.iter().any(|r| r.action == Action::Failed);
        let any_delayed = self.recipients.iter().any(|r| r.action == Action::Delayed);
        let prefix = if any_failed {
            "Undeliverable"
        } else if any_delayed {
            "Delivery delayed"
        } else {
            "Delivery report"
        };
        let subject = match &orig_subject {
            Some(s) if !s.is_empty() => format!("{prefix}: {s}"),
            _ => format!("{prefix}: message from {to}"),
        };

        let mut out = String::new();
        header(
            &mut out,
            "From",
            &format!(
                "Mail Delivery System <MAILER-DAEMON@{}>",
                self.reporting_mta
            ),
        );
        header(&mut out, "To", &format!("<{to}>"));
        header(&mut out, "Subject", &subject);
        header(&mut out, "Date", date);
        header(&mut out, "Message-ID", &format!("<{unique}@{domain}>"));
        if let Some(id) = &orig_msgid {
            header(&mut out, "In-Reply-To", id);
            header(&mut out, "References", id);
        }
        header(&mut out, "Auto-Submitted", "auto-replied");
        header(&mut out, "MIME-Version", "1.0");
        let global = self.recipients.iter().any(|r| !is_ascii_status(r));
        let status_type = if global {
            "message/global-delivery-status"
        } else {
            "message/delivery-status"
        };
        header(
            &mut out,
            "Content-Type",
            &format!(
                "multipart/report; report-type={}; boundary=\"{boundary}\"",
                &status_type[8..]
            ),
        );
        out.push_str("\r\nThis is a MIME-formatted delivery status notification.\r\n");

        // 1. The human-readable explanation.
        let human = explanation(
            self.reporting_mta,
            &self.recipients,
            &self.remedies,
            any_failed,
        );
        let _ = write!(out, "\r\n--{boundary}\r\n");
        let charset = if human.is_ascii() {
            "us-ascii"
        } else {
            "utf-8"
        };
        header(
            &mut out,
            "Content-Type",
            &format!("text/plain; charset={charset}"),
        );
        header(&mut out, "Content-Description", "Notification");
        header(
            &mut out,
            "Content-Transfer-Encoding",
            if human.is_ascii() { "7bit" } else { "8bit" },
        );
        out.push_str("\r\n");
        out.push_str(&human);

        // 2. The machine-readable report.
        let _ = write!(out, "\r\n--{boundary}\r\n");
        header(&mut out, "Content-Type", status_type);
        header(&mut out, "Content-Description", "Delivery report");
        out.push_str("\r\n");
        field(
            &mut out,
            "Reporting-MTA",
            &format!("dns; {}", self.reporting_mta),
        );
        if let Some(envid) = self.envelope_id {
            field(&mut out, "Original-Envelope-Id", envid);
        }
        if let Some(d) = self.arrival_date {
            field(&mut out, "Arrival-Date", d);
        }
        for r in &self.recipients {
            out.push_str("\r\n");
            recipient_fields(&mut out, r);
        }

        let mut message = out.into_bytes();
        // 3. The original headers, or message.
        if let Some(original) = original.as_deref() {
            let full = self.ret == Return::Full && original.len() <= self.full_cap;
            let (ct, desc, content) = if full {
                ("message/rfc822", "Undelivered Message", original)
            } else {
                (
                    "text/rfc822-headers",
                    "Undelivered Message Headers",
                    original_head.unwrap_or_default(),
                )
            };
            let mut part = String::new();
            let _ = write!(part, "\r\n--{boundary}\r\n");
            header(&mut part, "Content-Type", ct);
            header(&mut part, "Content-Description", desc);
            header(
                &mut part,
                "Content-Transfer-Encoding",
                if content.is_ascii() { "7bit" } else { "8bit" },
            );
            part.push_str("\r\n");
            message.extend_from_slice(part.as_bytes());
            message.extend_from_slice(content);
            if !content.ends_with(b"\r\n") && !content.is_empty() {
                message.extend_from_slice(b"\r\n");
            }
        }
        message.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

        let delim = format!("--{boundary}");
        let occurrences = message
            .split(|b| *b == b'\n')
            .filter(|l| l.starts_with(delim.as_bytes()))
            .count();
        let expected = if self.original.is_some() { 4 } else { 3 };
        if occurrences != expected {
            return Err(NdrError::InvalidInput {
                field: "boundary",
                reason: "occurs in the content",
            });
        }
        Ok(BuiltDsn {
            rcpt_to: to.to_owned(),
            message,
        })
    }
}

fn is_ascii_status(r: &RecipientStatus) -> bool {
    let tv = |t: &Option<TypedValue>| {
        t.as_ref()
            .is_none_or(|t| t.kind.is_ascii() && t.value.is_ascii())
    };
    r.final_recipient.value.is_ascii()
        && tv(&r.original_recipient)
        && tv(&r.remote_mta)
        && tv(&r.diagnostic_code)
}

fn check_boundary(b: &str) -> Result<(), NdrError> {
    const SPECIALS: &[u8] = b"'()+_,-./:=? ";
    let ok = !b.is_empty()
        && b.len() <= 70
        && !b.ends_with(' ')
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(&c));
    if ok {
        Ok(())
    } else {
        Err(NdrError::InvalidInput {
            field: "boundary",
            reason: "must be 1-70 RFC 2046 bchars, not ending in a space",
        })
    }
}

/// Replaces line breaks and other control characters (which would end or forge a header)
/// with spaces, and trims.
fn clean(value: &str) -> String {
    let s: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s.trim().to_owned()
}

/// Writes `Name: value` CRLF, cleaned and folded at spaces to keep lines near 78 octets.
fn header(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let value = clean(value);
    let mut line_len = name.len() + 1;
    let mut first = true;
    for word in split_keep_space(&value) {
        // `word` starts with its separating space except the first one.
        let word = if first {
            format!(" {word}")
        } else {
            word.to_owned()
        };
        first = false;
        if line_len + word.len() > 78 && line_len > name.len() + 1 && word.starts_with(' ') {
            out.push_str("\r\n");
            line_len = 0;
        }
        line_len += word.len();
        out.push_str(&word);
    }
    out.push_str("\r\n");
}

/// Same as [`header`] (delivery-status fields use header syntax).
fn field(out: &mut String, name: &str, value: &str) {
    header(out, name, value);
}

/// Splits `a b  c` into `a`, ` b`, ` `, ` c`: each piece after the first starts with the
/// single space that precedes it, so folding before a piece keeps every space.
fn split_keep_space(s: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == ' ' && i > start {
            pieces.push(&s[start..i]);
            start = i;
        }
    }
    if start < s.len() {
        pieces.push(&s[start..]);
    }
    pieces
}

fn recipient_fields(out: &mut String, r: &RecipientStatus) {
    let typed = |t: &TypedValue| {
        let kind = if t.kind.eq_ignore_ascii_case("rfc822") && !t.value.is_ascii() {
            "utf-8"
        } else {
            &t.kind
        };
        if kind.is_empty() {
            t.value.clone()
        } else {
            format!("{kind}; {}", t.value)
        }
    };
    if let Some(o) = &r.original_recipient {
        field(out, "Original-Recipient", &typed(o));
    }
    field(out, "Final-Recipient", &typed(&r.final_recipient));
    field(out, "Action", r.action.as_str());
    field(out, "Status", &r.status.to_string());
    if let Some(m) = &r.remote_mta {
        field(out, "Remote-MTA", &typed(m));
    }
    if let Some(d) = &r.diagnostic_code {
        field(out, "Diagnostic-Code", &typed(d));
    }
    if let Some(d) = &r.last_attempt_date {
        field(out, "Last-Attempt-Date", d);
    }
    if let Some(d) = &r.final_log_id {
        field(out, "Final-Log-ID", d);
    }
    if let Some(d) = &r.will_retry_until {
        field(out, "Will-Retry-Until", d);
    }
    for (name, value) in &r.extensions {
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            field(out, name, value);
        }
    }
}

fn explanation(
    host: &str,
    recipients: &[RecipientStatus],
    remedies: &[Option<String>],
    any_failed: bool,
) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "This is the mail relay at {host}.");
    t.push('\n');
    if any_failed {
        t.push_str("Your message could not be delivered to one or more recipients.\n");
    } else {
        t.push_str(
            "This is a report on your message's delivery; no action is needed unless noted.\n",
        );
    }
    for (i, r) in recipients.iter().enumerate() {
        t.push('\n');
        let c = r.classify();
        let what = match r.action {
            Action::Failed => "delivery failed",
            Action::Delayed => "not delivered yet; the relay keeps trying",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "delivered to a list",
        };
        wrap(&mut t, "", &format!("<{}>: {what}.", clean(r.recipient())));
        if let Some(d) = &r.diagnostic_code {
            wrap(
                &mut t,
                "    ",
                &format!("The server said: {}", clean(&d.value)),
            );
        }
        if let Some(m) = c.meaning {
            wrap(&mut t, "    ", &format!("Status {}: {m}.", r.status));
        }
        if let Some(until) = &r.will_retry_until {
            wrap(
                &mut t,
                "    ",
                &format!("The relay will keep trying until {}.", clean(until)),
            );
        }
        if r.action == Action::Failed || r.action == Action::Delayed {
            let remedy = remedies.get(i).and_then(Option::as_deref).map(clean);
            let remedy = remedy.as_deref().unwrap_or(c.remedy);
            wrap(&mut t, "    ", &format!("What to do: {remedy}"));
        }
    }
    t.push('\n');
    t.push_str("The machine-readable report and the original message's headers are attached.\n");
    t.replace('\n', "\r\n")
}

/// Appends `text` wrapped at 76 columns, continuation lines indented by `indent` (the first
/// line too).
fn wrap(out: &mut String, indent: &str, text: &str) {
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + word.len() > 76 {
            out.push_str(&line);
            out.push('\n');
            line = format!("{indent}    ");
        } else if line.len() > indent.len() && !line.ends_with(' ') {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// Normalises every line ending (bare CR, bare LF, CRLF) to CRLF.
fn to_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_normalisation() {
        assert_eq!(to_crlf(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd");
    }

    #[test]
    fn folding_keeps_spaces() {
        let mut s = String::new();
        let long = "word ".repeat(30);
        header(&mut s, "Diagnostic-Code", long.trim());
        assert!(s.split("\r\n").all(|l| l.len() <= 78), "{s}");
        let fields = mime::parse_fields(s.as_bytes());
        assert_eq!(fields[0].1, long.trim());
    }

    #[test]
    fn header_injection_is_neutralised() {
        let mut s = String::new();
        header(&mut s, "Subject", "hi\r\nBcc: evil@example.com");
        assert_eq!(s, "Subject: hi  Bcc: evil@example.com\r\n");
    }

    #[test]
    fn remedy_override_replaces_the_classifier_s() {
        let status = |a: &str| {
            RecipientStatus::new(a, Action::Failed, "5.3.0".parse().unwrap())
                .with_smtp_diagnostic("550 5.3.0 Returned by the administrator")
        };
        let dsn = super::super::DeliveryReport::builder("relay.example")
            .to("s@example.com")
            .date("Thu, 01 Jan 1970 00:00:00 +0000")
            .message_id("x", "relay.example")
            .boundary("=_b")
            .recipient_with_remedy(status("a@example.com"), "Ask the\r\nadministrator.")
            .recipient(status("b@example.com"))
            .build()
            .unwrap();
        let text = String::from_utf8(dsn.message).unwrap();
        assert!(
            text.contains("What to do: Ask the administrator.\r\n"),
            "{text}"
        );
        let classified = status("b@example.com").classify().remedy;
        let first_words = classified.split(' ').take(3).collect::<Vec<_>>().join(" ");
        assert!(
            text.contains(&format!("What to do: {first_words}")),
            "{text}"
        );
    }

    #[test]
    fn boundary_rules() {
        assert!(check_boundary("=_postern_1").is_ok());
        assert!(check_boundary("").is_err());
        assert!(check_boundary("a\"b").is_err());
        assert!(check_boundary(&"a".repeat(71)).is_err());
        assert!(check_boundary("ends ").is_err());
    }
}
