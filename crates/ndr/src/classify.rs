//! The classifier: `(basic code, enhanced code, text)` in, [`Classification`] out.

use std::fmt;
use std::sync::LazyLock;

use postern_smtp::{EnhancedCode, ReplyCode, StatusClass};

use crate::category::{Category, Class, Scope};
use crate::reply::ReplyView;
use crate::rule::{Table, Verdict, class_of};
use crate::{exchange, generic, registry};

/// How many bytes of reply text the classifier reads (Exchange's store-driver diagnostics
/// run past 512 octets; nothing that decides a verdict sits beyond this).
pub const MAX_CLASSIFIED_TEXT: usize = 8 * 1024;

/// What the engine should do about one reply.
///
/// Invariants: a [`Class::Success`] never retries and needs no operator; a
/// [`Class::Permanent`] never retries. A [`Class::Transient`] with `retry == false` means
/// *hold*: keep the message queued, do not retry it blindly, tell the operator (until the
/// retry window expires and it is bounced). See [`Classification::disposition`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Classification {
    /// The effective class (see the crate docs for where it differs from the basic code).
    pub class: Class,
    /// The cause.
    pub category: Category,
    /// Whether an automatic retry (with backoff) of the same transaction may succeed.
    pub retry: bool,
    /// Whether someone must change a setting (credentials, connector, tenant setting, DNS,
    /// permissions) before this can succeed: log the remedy loudly / alert.
    pub operator_action: bool,
    /// What the failure affects: hold back just this recipient, the message, every message
    /// from the sending mailbox, or the whole route.
    pub scope: Scope,
    /// A sentence an administrator can follow.
    pub remedy: &'static str,
    /// The IANA registry meaning of the enhanced code, when it is registered.
    pub meaning: Option<&'static str>,
    /// The name of the rule that decided (`exo.send_as_denied`, `registry`, `basic`, …), for
    /// logs and tests.
    pub rule: &'static str,
}

/// The engine's next step for a message (or recipient), derived from a [`Classification`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Accepted: nothing more to do.
    Done,
    /// Keep it queued and retry with backoff.
    Retry,
    /// Keep it queued but do not retry until the operator acts or the pause ends; bounce when
    /// the retry window expires.
    Hold,
    /// Give up: send a DSN to the sender (unless the sender is `<>`).
    Bounce,
}

impl Disposition {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Retry => "retry",
            Self::Hold => "hold",
            Self::Bounce => "bounce",
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Classification {
    /// What to do next: [`Disposition::Done`], `Retry`, `Hold` or `Bounce`.
    pub const fn disposition(&self) -> Disposition {
        match (self.class, self.retry) {
            (Class::Success, _) => Disposition::Done,
            (Class::Transient, true) => Disposition::Retry,
            (Class::Transient, false) => Disposition::Hold,
            (Class::Permanent, _) => Disposition::Bounce,
        }
    }
}

/// Classifies an SMTP reply from its parts. Total: every input gets a classification.
///
/// Order: Exchange Online rules (code and text), RFC 4954 AUTH rules, the IANA registry by
/// enhanced code, text heuristics (when the enhanced code is absent or vague), then the basic
/// code alone.
///
/// ```
/// use postern_ndr::{Category, Class, classify};
/// use postern_smtp::ReplyCode;
///
/// let c = classify(
///     ReplyCode::new(554).unwrap(),
///     "5.2.252".parse().ok(),
///     "SendAsDenied; info@a.au not allowed to send as noreply@a.au; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
/// );
/// assert_eq!(c.category, Category::SendAsDenied);
/// assert_eq!(c.class, Class::Permanent);
/// assert!(!c.retry && c.operator_action);
/// ```
pub fn classify(code: ReplyCode, enhanced: Option<EnhancedCode>, text: &str) -> Classification {
    let meaning = enhanced.and_then(registry::meaning);
    let verdict = decide(code, enhanced, text);
    finish(verdict, meaning)
}

/// Classifies a [`ReplyView`] (see [`ReplyView::parse`] for raw reply lines).
pub fn classify_view(reply: &ReplyView<'_>) -> Classification {
    classify(reply.code, reply.enhanced, &reply.text)
}

/// Classifies a reply decoded by `postern-smtp` (what the engine holds after each command).
///
/// ```
/// let (reply, _) = postern_smtp::Reply::decode(b"432 4.3.2 Concurrent connections limit exceeded.\r\n").unwrap();
/// let c = postern_ndr::classify_reply(&reply);
/// assert_eq!(c.category, postern_ndr::Category::Throttled);
/// assert!(c.retry);
/// ```
pub fn classify_reply(reply: &postern_smtp::Reply<'_>) -> Classification {
    classify_view(&ReplyView::from(reply))
}

/// Classifies a bare enhanced status code with optional text, as found in a DSN's `Status:`
/// field when no SMTP diagnostic is available. The basic code is synthesised from the class
/// (`2.x.x` → 250, `4.x.x` → 450, `5.x.x` → 550).
pub fn classify_status(status: EnhancedCode, text: &str) -> Classification {
    let code = match status.class {
        StatusClass::Success => ReplyCode::OK,
        StatusClass::PersistentTransient => ReplyCode::new(450).unwrap_or(ReplyCode::LOCAL_ERROR),
        StatusClass::Permanent => ReplyCode::MAILBOX_UNAVAILABLE,
    };
    classify(code, Some(status), text)
}

/// The Exchange rules, then RFC 4954's: tried first, in this order.
static PRIMARY: LazyLock<Table> =
    LazyLock::new(|| Table::new(&[exchange::RULES, generic::RFC_RULES]));

/// The text heuristics, for replies whose enhanced code says little.
static TEXT: LazyLock<Table> = LazyLock::new(|| Table::new(&[generic::TEXT_RULES]));

fn decide(code: ReplyCode, enhanced: Option<EnhancedCode>, text: &str) -> Verdict {
    if code.is_positive() {
        return success();
    }
    let lower = lowercase_prefix(text);
    if let Some(rule) = PRIMARY.first_match(code, enhanced, &lower) {
        return rule.verdict(code);
    }
    let entry = enhanced.and_then(|e| registry::lookup(e.subject, e.detail));
    let vague = match (enhanced, entry) {
        (None, _) | (_, None) => true,
        (Some(e), Some(_)) => e.detail == 0 || (e.subject, e.detail) == (7, 1),
    };
    if vague && let Some(rule) = TEXT.first_match(code, enhanced, &lower) {
        return rule.verdict(code);
    }
    let class = class_of(code);
    let (category, scope, rule) = match (enhanced, entry) {
        (_, Some(e)) => (e.category, None, "registry"),
        (Some(e), None) => (registry::subject_category(e.subject), None, "subject"),
        (None, None) => {
            let (c, s) = generic::basic(code);
            (c, s, "basic")
        }
    };
    // A success detail under a failure code (`550 2.1.5`) tells us nothing.
    let category = if category == Category::Success {
        Category::Unknown
    } else {
        category
    };
    Verdict {
        rule,
        class,
        category,
        retry: class == Class::Transient,
        operator_action: category.operator_action(),
        scope: scope.unwrap_or_else(|| category.scope()),
        remedy: category.remedy(),
    }
}

fn success() -> Verdict {
    Verdict {
        rule: "positive",
        class: Class::Success,
        category: Category::Success,
        retry: false,
        operator_action: false,
        scope: Scope::Message,
        remedy: Category::Success.remedy(),
    }
}

fn finish(v: Verdict, meaning: Option<&'static str>) -> Classification {
    // Enforce the documented invariants whatever a table says.
    let (retry, operator_action) = match v.class {
        Class::Success => (false, false),
        Class::Permanent => (false, v.operator_action),
        Class::Transient => (v.retry, v.operator_action),
    };
    Classification {
        class: v.class,
        category: v.category,
        retry,
        operator_action,
        scope: v.scope,
        remedy: v.remedy,
        meaning,
        rule: v.rule,
    }
}

/// The first [`MAX_CLASSIFIED_TEXT`] bytes of `text`, ASCII-lowercased.
fn lowercase_prefix(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    bytes[..bytes.len().min(MAX_CLASSIFIED_TEXT)].to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Rule;
    use proptest::prelude::*;

    fn c(line: &str) -> Classification {
        classify_view(&ReplyView::parse(line).unwrap())
    }

    /// One sample per rule: (reply, rule id, category). Every rule of every table must appear.
    const SAMPLES: &[(&str, &str, Category)] = &[
        (
            "550 5.2.252 Sender throttled due to continuous send as denied errors.",
            "exo.suspended.send_as_denied",
            Category::SenderSuspended,
        ),
        (
            "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
            "exo.send_as_denied",
            Category::SendAsDenied,
        ),
        (
            "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
            "exo.send_as_permission",
            Category::SendAsDenied,
        ),
        (
            "554 5.2.252 rejected",
            "exo.send_as_denied.code",
            Category::SendAsDenied,
        ),
        (
            "550 5.2.251 Sender throttled due to continuous mailbox full errors.",
            "exo.suspended.mailbox_full",
            Category::SenderSuspended,
        ),
        (
            "550 5.2.252 blocked",
            "exo.suspended.send_as",
            Category::SenderSuspended,
        ),
        (
            "550 5.2.253 Sender throttled due to continuous invalid license errors.",
            "exo.suspended.license",
            Category::SenderSuspended,
        ),
        (
            "550 5.2.254 Sender throttled due to continuous too many recipients errors.",
            "exo.suspended.too_many_recipients",
            Category::SenderSuspended,
        ),
        (
            "550 5.2.255 Sender throttled due to continuous invalid recipients errors.",
            "exo.suspended.invalid_recipients",
            Category::SenderSuspended,
        ),
        (
            "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
            "exo.daily_limit",
            Category::DailyLimit,
        ),
        (
            "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded",
            "exo.sender_mailbox_full",
            Category::SenderMailboxFull,
        ),
        (
            "554 5.3.4 STOREDRV.Submission.Exception:MessageSubmissionExceededException.MapiExceptionMaxSubmissionExceeded",
            "exo.message_too_large",
            Category::MessageTooLarge,
        ),
        (
            "552 5.3.4 Header size exceeds fixed maximum size",
            "exo.header_too_large",
            Category::MessageTooLarge,
        ),
        (
            "432 4.3.2 Concurrent connections limit exceeded.",
            "exo.concurrent_connections",
            Category::Throttled,
        ),
        (
            "432 4.3.2 STOREDRV.Deliver; recipient thread limit exceeded",
            "exo.recipient_thread_limit",
            Category::Throttled,
        ),
        (
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
            "exo.auth_disabled.tenant",
            Category::AuthDisabled,
        ),
        (
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.",
            "exo.auth_disabled.mailbox",
            Category::AuthDisabled,
        ),
        (
            "535 5.7.139 Authentication unsuccessful, basic authentication is disabled.",
            "exo.basic_auth_disabled",
            Category::AuthDisabled,
        ),
        (
            "535 5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy.",
            "exo.auth_policy",
            Category::AuthPolicy,
        ),
        (
            "535 5.7.139 Authentication unsuccessful, federated STS service was unreachable.",
            "exo.federated_sts",
            Category::AuthFailed,
        ),
        (
            "535 5.7.139 Authentication unsuccessful, the federated STS URL does not support HTTPS.",
            "exo.federated_sts_https",
            Category::AuthFailed,
        ),
        (
            "501 5.5.127 Invalid XOAUTH2 auth data - Token will expire soon",
            "exo.token_expiring",
            Category::TokenExpiring,
        ),
        (
            "501 5.5.122 Invalid XOAUTH2 argument",
            "exo.xoauth2_malformed",
            Category::AuthFailed,
        ),
        (
            "535 5.7.3 Authentication unsuccessful",
            "exo.auth_unsuccessful",
            Category::AuthFailed,
        ),
        (
            "535 5.7.139 Something new",
            "exo.auth_5_7_139",
            Category::AuthFailed,
        ),
        (
            "504 5.7.4 Unrecognized authentication type",
            "exo.unrecognized_auth_type",
            Category::AuthFailed,
        ),
        (
            "451 5.7.3 STARTTLS is required to send mail",
            "exo.starttls_required",
            Category::TlsRequired,
        ),
        (
            "451 5.7.3 no text we know",
            "exo.starttls_required.code",
            Category::TlsRequired,
        ),
        (
            "421 4.7.66 TLS 1.0 and 1.1 are not supported.",
            "exo.tls_too_old",
            Category::TlsTooOld,
        ),
        (
            "530 5.7.57 Client not authenticated to send mail.",
            "exo.not_authenticated",
            Category::NotAuthenticated,
        ),
        (
            "550 5.7.68 TenantInboundAttribution; Direct Send not allowed",
            "exo.direct_send_rejected",
            Category::RelayDenied,
        ),
        (
            "550 5.7.64 TenantAttribution; Relay Access Denied",
            "exo.tenant_attribution",
            Category::RelayDenied,
        ),
        (
            "451 4.4.62 Mail sent to the wrong Office 365 region. ATTR35.",
            "exo.wrong_region",
            Category::WrongRegion,
        ),
        (
            "550 5.7.606 Access denied, banned sending IP [1.2.3.4]",
            "exo.banned_ip",
            Category::SenderIpBlocked,
        ),
        (
            "550 5.7.750 Service unavailable. Client blocked from sending from unregistered domains",
            "exo.unregistered_domain",
            Category::UnregisteredDomain,
        ),
        (
            "451 4.7.850 Access denied, please try again later",
            "exo.ip_temporarily_restricted",
            Category::SenderIpBlocked,
        ),
        (
            "451 4.7.500 Server busy. Please try again later from [174.136.107.245]. (AS843)",
            "exo.server_busy",
            Category::Throttled,
        ),
        (
            "421 Server busy, come back later",
            "exo.server_busy.text",
            Category::Throttled,
        ),
        (
            "550 5.7.501 Access denied, spam abuse detected",
            "exo.spam_abuse",
            Category::BadSender,
        ),
        (
            "550 5.7.511 Access denied, banned sender",
            "exo.banned_sender",
            Category::BadSender,
        ),
        (
            "550 5.7.506 Access Denied, Bad HELO",
            "exo.bad_helo",
            Category::Policy,
        ),
        (
            "550 5.7.512 Access denied, message must be RFC 5322 section 3.6.2 compliant",
            "exo.rfc5322_from",
            Category::ContentRejected,
        ),
        (
            "550 5.7.513 Service unavailable, Client host [1.2.3.4] blocked by contoso.com using Customer Block list (AS16012607)",
            "exo.customer_block_list",
            Category::SenderIpBlocked,
        ),
        (
            "550 5.7.509 Access denied",
            "exo.access_denied",
            Category::Policy,
        ),
        (
            "550 5.7.703 Your message can't be delivered because one or more recipients are blocked",
            "exo.tenant_recipient_block",
            Category::Policy,
        ),
        (
            "550 5.7.708 Access denied, traffic not accepted from this IP",
            "exo.low_reputation_pool",
            Category::TenantBlocked,
        ),
        (
            "550 5.7.705 Access denied, tenant has exceeded threshold",
            "exo.tenant_blocked",
            Category::TenantBlocked,
        ),
        (
            "550 5.7.1 Service unavailable, Client host [92.239.49.239] blocked using Spamhaus.",
            "exo.blocklist",
            Category::SenderIpBlocked,
        ),
        (
            "550 5.1.8 Access denied, bad outbound sender",
            "exo.bad_outbound_sender",
            Category::BadSender,
        ),
        (
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            "exo.recipient_not_found",
            Category::RecipientUnknown,
        ),
        (
            "550 5.4.1 Recipient address rejected: Access denied.",
            "exo.recipient_access_denied",
            Category::RecipientUnknown,
        ),
        (
            "550 5.7.1 Unable to relay",
            "exo.relay_access_denied",
            Category::RelayDenied,
        ),
        (
            "550 5.7.12 Sender was not authenticated by organization",
            "exo.recipient_restriction",
            Category::Policy,
        ),
        (
            "550 5.6.11 Invalid characters",
            "exo.bare_lf",
            Category::ContentRejected,
        ),
        (
            "554 5.6.211 Invalid MIME Content: Number of Header objects (100001) exceeded",
            "exo.invalid_mime",
            Category::ContentRejected,
        ),
        (
            "550 5.2.121 Recipient's per hour message receive limit from specific sender exceeded",
            "exo.receive_limit",
            Category::Throttled,
        ),
        (
            "451 4.7.323 tlsa-invalid: The domain failed DANE validation",
            "exo.dane",
            Category::TlsFailed,
        ),
        (
            "550 5.4.300 Message expired",
            "exo.message_expired",
            Category::Expired,
        ),
        (
            "432 4.7.12 A password transition is needed",
            "rfc4954.password_transition",
            Category::AuthFailed,
        ),
        (
            "454 4.7.0 Temporary authentication failure",
            "rfc4954.temporary_auth_failure",
            Category::AuthFailed,
        ),
        (
            "530 5.7.0 Authentication required",
            "rfc4954.auth_required",
            Category::NotAuthenticated,
        ),
        (
            "534 5.7.9 Authentication mechanism is too weak",
            "rfc4954.mechanism_too_weak",
            Category::AuthFailed,
        ),
        (
            "535 5.7.8 Authentication credentials invalid",
            "rfc4954.credentials_invalid",
            Category::AuthFailed,
        ),
        (
            "538 5.7.11 Encryption required for requested authentication mechanism",
            "rfc4954.encryption_required",
            Category::TlsRequired,
        ),
        (
            "451 4.4.7 Delivery time expired",
            "rfc3463.expired",
            Category::Expired,
        ),
        (
            "553 5.1.0 <x@y>: Sender address rejected: not owned by user",
            "text.sender_rejected",
            Category::BadSender,
        ),
        (
            "552 Mailbox is full",
            "text.mailbox_full",
            Category::MailboxFull,
        ),
        (
            "452 Too many recipients received this hour",
            "text.too_many_recipients",
            Category::TooManyRecipients,
        ),
        (
            "554 Message too large",
            "text.message_too_large",
            Category::MessageTooLarge,
        ),
        (
            "550 5.7.0 Must use STARTTLS first",
            "text.tls_required",
            Category::TlsRequired,
        ),
        (
            "550 5.7.0 Authentication required for relaying",
            "text.not_authenticated",
            Category::NotAuthenticated,
        ),
        (
            "550 5.7.1 Message rejected due to DMARC policy",
            "text.email_auth",
            Category::EmailAuthFailed,
        ),
        (
            "450 4.7.1 Greylisted, please come back in 5 minutes",
            "text.throttled",
            Category::Throttled,
        ),
        (
            "550 Requested action not taken: no such user here",
            "text.recipient_unknown",
            Category::RecipientUnknown,
        ),
        (
            "550 5.2.0 Account disabled",
            "text.mailbox_disabled",
            Category::MailboxUnavailable,
        ),
        (
            "550 5.7.1 Our system has detected that this message is likely unsolicited mail",
            "text.content",
            Category::ContentRejected,
        ),
    ];

    #[test]
    fn every_rule_has_a_sample_that_hits_it() {
        for (line, rule, category) in SAMPLES {
            let got = c(line);
            assert_eq!((got.rule, got.category), (*rule, *category), "{line}");
        }
        let all: Vec<&Rule> = exchange::RULES
            .iter()
            .chain(generic::RFC_RULES)
            .chain(generic::TEXT_RULES)
            .collect();
        for rule in all {
            assert!(
                SAMPLES.iter().any(|s| s.1 == rule.id),
                "no sample for {}",
                rule.id
            );
        }
    }

    #[test]
    fn rule_ids_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for rule in exchange::RULES
            .iter()
            .chain(generic::RFC_RULES)
            .chain(generic::TEXT_RULES)
        {
            assert!(seen.insert(rule.id), "duplicate rule id {}", rule.id);
        }
    }

    #[test]
    fn basic_code_table() {
        for (code, category, class) in [
            (250, Category::Success, Class::Success),
            (354, Category::Success, Class::Success),
            (421, Category::Temporary, Class::Transient),
            (450, Category::Temporary, Class::Transient),
            (451, Category::Temporary, Class::Transient),
            (452, Category::Temporary, Class::Transient),
            (455, Category::Temporary, Class::Transient),
            (500, Category::Syntax, Class::Permanent),
            (501, Category::Syntax, Class::Permanent),
            (502, Category::Syntax, Class::Permanent),
            (503, Category::Syntax, Class::Permanent),
            (504, Category::Syntax, Class::Permanent),
            (530, Category::NotAuthenticated, Class::Permanent),
            (534, Category::AuthFailed, Class::Permanent),
            (535, Category::AuthFailed, Class::Permanent),
            (538, Category::TlsRequired, Class::Permanent),
            (550, Category::Unknown, Class::Permanent),
            (551, Category::RecipientUnknown, Class::Permanent),
            (552, Category::MessageTooLarge, Class::Permanent),
            (553, Category::Unknown, Class::Permanent),
            (554, Category::Unknown, Class::Permanent),
            (555, Category::Syntax, Class::Permanent),
        ] {
            let got = classify(ReplyCode::new(code).unwrap(), None, "");
            assert_eq!((got.category, got.class), (category, class), "{code}");
            assert_eq!(got.retry, class == Class::Transient, "{code}");
        }
        assert_eq!(
            classify(ReplyCode::new(421).unwrap(), None, "").scope,
            Scope::Route
        );
    }

    #[test]
    fn unregistered_detail_falls_back_to_subject() {
        let got = c("550 5.7.999 something");
        assert_eq!(
            (got.category, got.rule, got.meaning),
            (Category::Policy, "subject", None)
        );
        let got = c("550 5.9.1 something");
        assert_eq!(got.category, Category::Unknown);
        let got = c("550 2.1.5 odd");
        assert_eq!(got.category, Category::Unknown);
    }

    #[test]
    fn status_only() {
        let got = classify_status("4.2.2".parse().unwrap(), "");
        assert_eq!(
            (got.class, got.category, got.retry),
            (Class::Transient, Category::MailboxFull, true)
        );
        let got = classify_status("2.0.0".parse().unwrap(), "");
        assert_eq!(got.class, Class::Success);
    }

    #[test]
    fn dispositions() {
        assert_eq!(c("250 2.0.0 OK").disposition(), Disposition::Done);
        assert_eq!(
            c("451 4.7.500 Server busy").disposition(),
            Disposition::Retry
        );
        assert_eq!(
            c("451 5.7.3 STARTTLS is required to send mail").disposition(),
            Disposition::Hold
        );
        assert_eq!(c("550 5.1.1 unknown").disposition(), Disposition::Bounce);
        assert_eq!(Disposition::Hold.to_string(), "hold");
    }

    fn any_enhanced() -> impl Strategy<Value = Option<EnhancedCode>> {
        prop::option::of((
            prop::sample::select(vec![2u8, 4, 5]),
            0u16..1000,
            0u16..1000,
        ))
        .prop_map(|o| {
            o.and_then(|(c, s, d)| {
                let class = match c {
                    2 => StatusClass::Success,
                    4 => StatusClass::PersistentTransient,
                    _ => StatusClass::Permanent,
                };
                EnhancedCode::new(class, s, d)
            })
        })
    }

    proptest! {
        #[test]
        fn classification_is_total_and_consistent(
            n in 200u16..560,
            enhanced in any_enhanced(),
            text in ".{0,200}",
        ) {
            let Some(code) = ReplyCode::new(n) else { return Ok(()) };
            let got = classify(code, enhanced, &text);
            match got.class {
                Class::Success => prop_assert!(!got.retry && !got.operator_action && code.is_positive()),
                Class::Permanent => prop_assert!(!got.retry),
                Class::Transient => {}
            }
            if code.is_positive() {
                prop_assert_eq!(got.category, Category::Success);
            } else {
                prop_assert!(got.category != Category::Success);
            }
            prop_assert!(!got.remedy.is_empty());
            prop_assert_eq!(got.meaning, enhanced.and_then(registry::meaning));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            if let Ok(r) = ReplyView::parse(&s) {
                let _ = classify_view(&r);
            }
        }

        #[test]
        fn parse_line_round_trip(n in 400u16..560, s in 0u16..1000, d in 0u16..1000, text in "[a-zA-Z0-9 .,;:]{0,80}") {
            let Some(code) = ReplyCode::new(n) else { return Ok(()) };
            let e = EnhancedCode::new(StatusClass::Permanent, s, d).unwrap();
            let line = format!("{code} {e} {text}");
            let r = ReplyView::parse(&line).unwrap();
            prop_assert_eq!(r.code, code);
            prop_assert_eq!(r.enhanced, Some(e));
            prop_assert_eq!(r.text.as_ref(), text.trim());
        }
    }
}
