//! Delivery Status Notifications: RFC 3464 `message/delivery-status` inside an RFC 6522
//! (formerly RFC 3462) `multipart/report`, plus RFC 6533's `message/global-delivery-status`.
//!
//! [`DeliveryReport::parse`] reads a received bounce (Exchange Online, Postfix, Gmail and
//! other shapes); [`DeliveryReport::builder`] writes the bounce the relay sends to a device's
//! sender.

mod build;
mod mime;

use std::fmt;

use postern_smtp::EnhancedCode;

pub use build::{BuiltDsn, DEFAULT_FULL_RETURN_CAP, DsnBuilder, Return};

use crate::classify::{Classification, classify, classify_status, classify_view};
use crate::error::NdrError;
use crate::reply::ReplyView;
use mime::{ContentType, Field};

/// The largest message [`DeliveryReport::parse`] accepts, in bytes.
pub const MAX_DSN_LENGTH: usize = 16 * 1024 * 1024;

/// How deep multipart nesting is followed.
const MAX_DEPTH: usize = 16;

/// A `type; value` field such as `dns; mail.example.com` or `rfc822; user@example.com`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedValue {
    /// The type (`dns`, `rfc822`, `smtp`, `utf-8`, …); empty when the field had none.
    pub kind: String,
    /// The value.
    pub value: String,
}

impl TypedValue {
    /// A typed value.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// Splits `type; value` at the first `;` (no `;`: an empty type).
    pub fn parse(field: &str) -> Self {
        match field.split_once(';') {
            Some((k, v)) => Self::new(k.trim(), v.trim()),
            None => Self::new("", field.trim()),
        }
    }
}

impl fmt::Display for TypedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.is_empty() {
            f.write_str(&self.value)
        } else {
            write!(f, "{}; {}", self.kind, self.value)
        }
    }
}

/// The `Action` of a per-recipient report (RFC 3464 §2.3.3).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The message could not be delivered.
    Failed,
    /// Not delivered yet; the MTA keeps trying.
    Delayed,
    /// Delivered to the recipient.
    Delivered,
    /// Relayed to a system that does not send DSNs.
    Relayed,
    /// Delivered and forwarded to several addresses (a list).
    Expanded,
}

impl Action {
    /// The field value: `failed`, `delayed`, `delivered`, `relayed` or `expanded`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Delayed => "delayed",
            Self::Delivered => "delivered",
            Self::Relayed => "relayed",
            Self::Expanded => "expanded",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        let word = value.split([' ', '\t', '(']).next().unwrap_or("");
        [
            Self::Failed,
            Self::Delayed,
            Self::Delivered,
            Self::Relayed,
            Self::Expanded,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(word))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The per-message fields of a delivery-status report (RFC 3464 §2.2).
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerMessage {
    /// `Reporting-MTA`: the MTA that wrote the report.
    pub reporting_mta: Option<TypedValue>,
    /// `DSN-Gateway`.
    pub dsn_gateway: Option<TypedValue>,
    /// `Received-From-MTA`.
    pub received_from_mta: Option<TypedValue>,
    /// `Original-Envelope-Id` (the `ENVID` of RFC 3461).
    pub original_envelope_id: Option<String>,
    /// `Arrival-Date` (RFC 5322 date-time, as written).
    pub arrival_date: Option<String>,
    /// Other fields (`X-…` extensions), in order.
    pub extensions: Vec<(String, String)>,
}

/// One recipient's report (RFC 3464 §2.3).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// `Original-Recipient`: the address as the sender gave it (ORCPT).
    pub original_recipient: Option<TypedValue>,
    /// `Final-Recipient` (required).
    pub final_recipient: TypedValue,
    /// `Action` (required).
    pub action: Action,
    /// `Status` (required): the enhanced status code.
    pub status: EnhancedCode,
    /// `Remote-MTA`: the MTA that gave the diagnostic.
    pub remote_mta: Option<TypedValue>,
    /// `Diagnostic-Code`, usually `smtp; <the reply>`.
    pub diagnostic_code: Option<TypedValue>,
    /// `Last-Attempt-Date`.
    pub last_attempt_date: Option<String>,
    /// `Final-Log-ID`.
    pub final_log_id: Option<String>,
    /// `Will-Retry-Until` (for `delayed`).
    pub will_retry_until: Option<String>,
    /// Other fields (`X-…` extensions), in order.
    pub extensions: Vec<(String, String)>,
}

impl RecipientStatus {
    /// A report for `address` (as an `rfc822` Final-Recipient) with no optional fields.
    pub fn new(address: impl Into<String>, action: Action, status: EnhancedCode) -> Self {
        Self {
            original_recipient: None,
            final_recipient: TypedValue::new("rfc822", address),
            action,
            status,
            remote_mta: None,
            diagnostic_code: None,
            last_attempt_date: None,
            final_log_id: None,
            will_retry_until: None,
            extensions: Vec::new(),
        }
    }

    /// Sets `Diagnostic-Code: smtp; <reply>` from an SMTP reply line.
    pub fn with_smtp_diagnostic(mut self, reply: impl Into<String>) -> Self {
        self.diagnostic_code = Some(TypedValue::new("smtp", reply));
        self
    }

    /// Sets `Remote-MTA: dns; <host>`.
    pub fn with_remote_mta(mut self, host: impl Into<String>) -> Self {
        self.remote_mta = Some(TypedValue::new("dns", host));
        self
    }

    /// The recipient's address (the Final-Recipient value).
    pub fn recipient(&self) -> &str {
        &self.final_recipient.value
    }

    /// The SMTP reply in the `Diagnostic-Code`, if it is of type `smtp` and readable.
    pub fn smtp_reply(&self) -> Option<ReplyView<'_>> {
        let diag = self.diagnostic_code.as_ref()?;
        if !diag.kind.eq_ignore_ascii_case("smtp") {
            return None;
        }
        ReplyView::parse(&diag.value).ok()
    }

    /// Classifies this recipient's outcome: the SMTP diagnostic when there is one, else the
    /// `Status` code with any diagnostic text. `delivered`, `relayed` and `expanded` are
    /// successes whatever the codes say.
    pub fn classify(&self) -> Classification {
        if matches!(
            self.action,
            Action::Delivered | Action::Relayed | Action::Expanded
        ) {
            return classify(postern_smtp::ReplyCode::OK, Some(self.status), "");
        }
        match self.smtp_reply() {
            Some(reply) => classify_view(&reply),
            None => classify_status(
                self.status,
                self.diagnostic_code
                    .as_ref()
                    .map_or("", |d| d.value.as_str()),
            ),
        }
    }
}

/// A parsed delivery status notification.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The per-message fields.
    pub per_message: PerMessage,
    /// One entry per recipient, in order.
    pub recipients: Vec<RecipientStatus>,
    /// The human-readable first part (text/plain), if any, decoded.
    pub human_readable: Option<String>,
    /// The returned header block (text/rfc822-headers, or the headers of a returned
    /// message/rfc822), if any.
    pub original_headers: Option<String>,
}

impl DeliveryReport {
    /// Parses a DSN message: finds the `message/delivery-status` (or
    /// `message/global-delivery-status`) part in a `multipart/report` or any nesting of
    /// multiparts (CRLF or LF line ends, folded fields, base64 or quoted-printable parts).
    /// A bare delivery-status body (starting with its fields) is accepted too.
    ///
    /// Input is bounded by [`MAX_DSN_LENGTH`].
    pub fn parse(input: &[u8]) -> Result<Self, NdrError> {
        if input.len() > MAX_DSN_LENGTH {
            return Err(NdrError::TooLong {
                len: input.len(),
                max: MAX_DSN_LENGTH,
            });
        }
        let mut found = Found::default();
        let (head, _) = mime::split_head_body(input);
        let fields = mime::parse_fields(head);
        let bare = mime::field(&fields, "content-type").is_none()
            && ["reporting-mta", "final-recipient", "original-envelope-id"]
                .iter()
                .any(|f| mime::field(&fields, f).is_some());
        if bare {
            found.status = Some(input.to_vec());
        } else {
            walk(input, 0, &mut found);
        }
        let status = found.status.ok_or(NdrError::NotADsn)?;
        let mut report = parse_status_body(&status)?;
        report.human_readable = found.human;
        report.original_headers = found.original;
        Ok(report)
    }

    /// Starts building a DSN sent by the relay `reporting_mta` (its host name: the report's
    /// `Reporting-MTA` and the domain of `MAILER-DAEMON@…`).
    pub fn builder(reporting_mta: &str) -> DsnBuilder<'_> {
        DsnBuilder::new(reporting_mta)
    }
}

#[derive(Default)]
struct Found {
    status: Option<Vec<u8>>,
    human: Option<String>,
    original: Option<String>,
}

fn walk(entity: &[u8], depth: usize, found: &mut Found) {
    if depth > MAX_DEPTH || (found.status.is_some() && found.original.is_some()) {
        return;
    }
    let (head, body) = mime::split_head_body(entity);
    let fields = mime::parse_fields(head);
    let ct = ContentType::parse(mime::field(&fields, "content-type").unwrap_or("text/plain"));
    let cte = mime::field(&fields, "content-transfer-encoding");
    match ct.mime.as_str() {
        "message/delivery-status" | "message/global-delivery-status" if found.status.is_none() => {
            found.status = Some(mime::decode_transfer(body, cte).into_owned());
        }
        "text/rfc822-headers" | "text/global-headers" if found.original.is_none() => {
            let decoded = mime::decode_transfer(body, cte);
            found.original = Some(String::from_utf8_lossy(&decoded).into_owned());
        }
        "message/rfc822" | "message/global" if found.original.is_none() => {
            let decoded = mime::decode_transfer(body, cte);
            let (h, _) = mime::split_head_body(&decoded);
            found.original = Some(String::from_utf8_lossy(h).into_owned());
        }
        "text/plain" if depth > 0 && found.human.is_none() => {
            let decoded = mime::decode_transfer(body, cte);
            found.human = Some(String::from_utf8_lossy(&decoded).into_owned());
        }
        m if m.starts_with("multipart/") => {
            if let Some(boundary) = ct.param("boundary").filter(|b| !b.is_empty()) {
                for part in mime::multipart_parts(body, boundary) {
                    walk(part, depth + 1, found);
                }
            }
        }
        _ => {}
    }
}

/// Parses the content of a delivery-status part: the per-message group, then one group per
/// recipient, separated by empty lines.
fn parse_status_body(body: &[u8]) -> Result<DeliveryReport, NdrError> {
    let mut groups: Vec<Vec<Field>> = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (head, tail) = mime::split_head_body(rest);
        let fields = mime::parse_fields(head);
        if !fields.is_empty() {
            groups.push(fields);
        }
        if tail.len() >= rest.len() {
            break;
        }
        rest = tail;
    }
    let mut report = DeliveryReport::default();
    let mut groups = groups.into_iter().peekable();
    let first_is_recipient = groups.peek().is_some_and(|first| {
        mime::field(first, "final-recipient").is_some()
            && mime::field(first, "reporting-mta").is_none()
    });
    if !first_is_recipient && let Some(first) = groups.next() {
        report.per_message = per_message(first);
    }
    for group in groups {
        report.recipients.push(recipient(group)?);
    }
    if report.recipients.is_empty() {
        return Err(NdrError::MissingField {
            field: "Final-Recipient",
        });
    }
    Ok(report)
}

fn per_message(fields: Vec<Field>) -> PerMessage {
    let mut pm = PerMessage::default();
    for (name, value) in fields {
        match name.to_ascii_lowercase().as_str() {
            "reporting-mta" => pm.reporting_mta = Some(TypedValue::parse(&value)),
            "dsn-gateway" => pm.dsn_gateway = Some(TypedValue::parse(&value)),
            "received-from-mta" => pm.received_from_mta = Some(TypedValue::parse(&value)),
            "original-envelope-id" => pm.original_envelope_id = Some(value),
            "arrival-date" => pm.arrival_date = Some(value),
            _ => pm.extensions.push((name, value)),
        }
    }
    pm
}

fn recipient(fields: Vec<Field>) -> Result<RecipientStatus, NdrError> {
    let mut original_recipient = None;
    let mut final_recipient = None;
    let mut action = None;
    let mut status = None;
    let mut rs_remote = None;
    let mut diagnostic = None;
    let mut last_attempt = None;
    let mut log_id = None;
    let mut retry_until = None;
    let mut extensions = Vec::new();
    for (name, value) in fields {
        match name.to_ascii_lowercase().as_str() {
            "original-recipient" => original_recipient = Some(TypedValue::parse(&value)),
            "final-recipient" => final_recipient = Some(TypedValue::parse(&value)),
            "action" => {
                action = Some(Action::parse(&value).ok_or_else(|| invalid("Action", &value))?);
            }
            "status" => {
                let code = value.split([' ', '\t', '(']).next().unwrap_or("");
                status = Some(
                    code.parse::<EnhancedCode>()
                        .map_err(|_| invalid("Status", &value))?,
                );
            }
            "remote-mta" => rs_remote = Some(TypedValue::parse(&value)),
            "diagnostic-code" => diagnostic = Some(TypedValue::parse(&value)),
            "last-attempt-date" => last_attempt = Some(value),
            "final-log-id" => log_id = Some(value),
            "will-retry-until" => retry_until = Some(value),
            _ => extensions.push((name, value)),
        }
    }
    Ok(RecipientStatus {
        original_recipient,
        final_recipient: final_recipient.ok_or(NdrError::MissingField {
            field: "Final-Recipient",
        })?,
        action: action.ok_or(NdrError::MissingField { field: "Action" })?,
        status: status.ok_or(NdrError::MissingField { field: "Status" })?,
        remote_mta: rs_remote,
        diagnostic_code: diagnostic,
        last_attempt_date: last_attempt,
        final_log_id: log_id,
        will_retry_until: retry_until,
        extensions,
    })
}

fn invalid(field: &'static str, value: &str) -> NdrError {
    NdrError::InvalidField {
        field,
        value: value.chars().take(80).collect(),
    }
}
