//! Generic rules: RFC 4954 AUTH replies (whose enhanced codes mean something else out of
//! context), text heuristics for replies without a specific enhanced code, and the basic
//! reply codes of RFC 5321 §4.2.

use postern_smtp::ReplyCode;

use crate::category::{Category as C, Class, Scope};
use crate::rule::Rule;

/// RFC 4954 (and RFC 5321 expiry) rules, checked after the Exchange rules and before the
/// registry.
pub(crate) const RFC_RULES: &[Rule] = &[
    Rule::new("rfc4954.password_transition", C::AuthFailed)
        .codes(&[432])
        .enh(7, 12, 12)
        .never_retry()
        .remedy("The server asks for a password transition: authenticate once with PLAIN over TLS, then retry."),
    Rule::new("rfc4954.temporary_auth_failure", C::AuthFailed)
        .codes(&[454])
        .text(&["auth"])
        .operator(false)
        .remedy("Temporary authentication failure at the server: retry later."),
    Rule::new("rfc4954.auth_required", C::NotAuthenticated).codes(&[530]),
    Rule::new("rfc4954.mechanism_too_weak", C::AuthFailed)
        .codes(&[534])
        .remedy("The AUTH mechanism is too weak for this account: use a stronger one (XOAUTH2 over TLS)."),
    Rule::new("rfc4954.credentials_invalid", C::AuthFailed).codes(&[535]),
    Rule::new("rfc4954.encryption_required", C::TlsRequired).codes(&[538]),
    Rule::new("rfc3463.expired", C::Expired)
        .enh(4, 7, 7)
        .force(Class::Permanent),
];

/// Text heuristics, used only when the enhanced code is absent or says little (`X.Y.0`,
/// `X.7.1`, unregistered details).
pub(crate) const TEXT_RULES: &[Rule] = &[
    Rule::new("text.sender_rejected", C::BadSender).text(&[
        "sender address rejected",
        "sender rejected",
        "sender domain",
    ]),
    Rule::new("text.mailbox_full", C::MailboxFull).text(&[
        "mailbox full",
        "mailbox is full",
        "over quota",
        "quota exceeded",
        "out of storage",
        "exceeded storage",
    ]),
    Rule::new("text.too_many_recipients", C::TooManyRecipients).text(&["too many recipients"]),
    Rule::new("text.message_too_large", C::MessageTooLarge).text(&[
        "too large",
        "too big",
        "size exceeds",
        "exceeds size",
        "message size",
    ]),
    Rule::new("text.tls_required", C::TlsRequired)
        .text(&["starttls", "tls required", "encryption required"])
        .never_retry(),
    Rule::new("text.not_authenticated", C::NotAuthenticated).text(&[
        "authentication required",
        "auth required",
        "not authenticated",
    ]),
    Rule::new("text.email_auth", C::EmailAuthFailed).text(&["spf", "dkim", "dmarc"]),
    Rule::new("text.throttled", C::Throttled).text(&[
        "greylist",
        "graylist",
        "rate limit",
        "too many connections",
        "too many messages",
        "throttl",
        "try again later",
        "try later",
    ]),
    Rule::new("text.recipient_unknown", C::RecipientUnknown).text(&[
        "user unknown",
        "unknown user",
        "no such user",
        "does not exist",
        "doesn't exist",
        "recipient not found",
        "invalid recipient",
        "no mailbox",
        "unknown recipient",
        "recipient unknown",
    ]),
    Rule::new("text.mailbox_disabled", C::MailboxUnavailable).text(&[
        "mailbox disabled",
        "account disabled",
        "account is disabled",
        "inactive",
    ]),
    Rule::new("text.content", C::ContentRejected).text(&[
        "spam",
        "unsolicited",
        "virus",
        "malware",
        "content rejected",
    ]),
];

/// The verdict from the basic code alone (RFC 5321 §4.2.2/§4.2.3, RFC 4954 §6).
pub(crate) const fn basic(code: ReplyCode) -> (C, Option<Scope>) {
    match code.get() {
        200..=399 => (C::Success, None),
        421 => (C::Temporary, Some(Scope::Route)),
        450 => (C::Temporary, Some(Scope::Recipient)),
        400..=499 => (C::Temporary, None),
        500..=504 | 555 => (C::Syntax, None),
        551 => (C::RecipientUnknown, None),
        552 => (C::MessageTooLarge, None),
        _ => (C::Unknown, None),
    }
}
