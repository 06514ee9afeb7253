//! Sans-IO classification of SMTP replies and Delivery Status Notifications.
//!
//! ```text
//!   upstream reply (code, enhanced code, text) ──▶ classify() ──▶ Classification
//!                                                                 (class, category, retry,
//!                                                                  operator_action, scope, remedy)
//!   bounce bytes ──▶ DeliveryReport::parse() ──▶ per-recipient Action / Status / Diagnostic-Code
//!   recipients + original ──▶ DeliveryReport::builder()…build() ──▶ multipart/report bytes
//! ```
//!
//! This crate never touches sockets, files or clocks: the engine passes in replies, dates,
//! Message-IDs and MIME boundaries, and gets values and bytes back.
//!
//! # Classifying a reply
//!
//! [`classify`] takes the basic [`ReplyCode`](postern_smtp::ReplyCode), the optional
//! [`EnhancedCode`](postern_smtp::EnhancedCode) and the reply text. It is total: every input
//! gets an answer. Rules are tried in order, first match wins:
//!
//! 1. `2xx`/`3xx`: success.
//! 2. Exchange Online rules: code and text patterns (`SendAsDenied`,
//!    `SmtpClientAuthentication is disabled for the Tenant`, `SubmissionQuotaExceededException`,
//!    `TenantAttribution`, Spamhaus, `Concurrent connections limit exceeded`, `Server busy`, …).
//! 3. RFC 4954 AUTH replies (`530`, `534`, `535`, `538`, `432 4.7.12`, `454 … auth`) and
//!    `X.4.7` expiry.
//! 4. The IANA enhanced status code registry ([`REGISTRY`], RFC 3463 / RFC 5248 and later).
//! 5. Text heuristics, only when the enhanced code is absent, `X.Y.0`, `X.7.1` or unregistered
//!    (`user unknown`, `mailbox full`, `rate limit`, …).
//! 6. The enhanced code's subject, then the basic code alone.
//!
//! ```
//! use postern_ndr::{Category, Class, Disposition, ReplyView, classify_view};
//!
//! let reply = ReplyView::parse("432 4.3.2 Concurrent connections limit exceeded.").unwrap();
//! let c = classify_view(&reply);
//! assert_eq!((c.class, c.category, c.retry), (Class::Transient, Category::Throttled, true));
//! assert_eq!(c.disposition(), Disposition::Retry);
//!
//! let reply = ReplyView::parse("451 5.7.3 STARTTLS is required to send mail").unwrap();
//! let c = classify_view(&reply);
//! assert_eq!(c.category, Category::TlsRequired);
//! assert_eq!(c.disposition(), Disposition::Hold); // transient, but retrying cannot help
//! ```
//!
//! ## Class: where it differs from the basic code
//!
//! The basic code decides the class when it and the enhanced code disagree (RFC 5321 clients
//! act on the basic code; Exchange sends `451 5.7.3`). The exceptions are deliberate:
//!
//! | reply | class | retry | why |
//! |---|---|---|---|
//! | `451 5.7.3 STARTTLS is required` | transient | no | the 4xx keeps the message queued; retrying without TLS cannot succeed: hold and alert |
//! | `421 4.7.66 TLS 1.0 and 1.1 are not supported` | transient | no | same: a configuration problem |
//! | `550 5.2.251`–`5.2.255` (continuous-error throttling) | transient | no | the mailbox is suspended for a while; retrying prolongs it: hold every message of that sender |
//! | `554 5.2.0 …SubmissionQuotaExceededException`, `5.1.90` | transient | yes | a quota pause that clears as the 24 h window rolls, not a hard bounce |
//! | `501 5.5.127 … Token will expire soon` | transient | yes | refresh the token and retry |
//! | `535 5.7.139 … federated STS service was unreachable` | transient | yes | the on-premises STS may come back |
//! | `5.2.121`/`5.2.122` recipient receive limits | transient | yes | per-hour limits |
//! | `X.4.7` / `5.4.300` message expired | permanent | no | the final verdict of a queue |
//! | `SendAsDenied` / `5.7.60` | permanent | no | never retried unchanged: it feeds 5.2.252 throttling |
//!
//! A transient class with `retry == false` is a *hold* ([`Disposition::Hold`]): keep the
//! message, do not retry blindly, alert the operator, bounce only when the retry window ends.
//!
//! ## Categories
//!
//! Stable snake_case names ([`Category::as_str`], `Display`, and serde with the `serde`
//! feature). Each has a default scope, operator-action flag and remedy; rules may refine them.
//!
//! | name | meaning | typical codes |
//! |---|---|---|
//! | `success` | accepted | `2xx`, `3xx` |
//! | `send_as_denied` | the mailbox may not send as the `From:` address | `554 5.2.252 SendAsDenied`, `554 5.2.0 …SendAsDenied…`, `550 5.7.60` |
//! | `auth_failed` | credentials or token refused | `535 5.7.3`, `535 5.7.139`, `535 5.7.8`, `534 5.7.9`, `504 5.7.4`, `501 5.5.121`–`126` |
//! | `auth_disabled` | SMTP AUTH or Basic auth switched off | `535 5.7.139 …SmtpClientAuthentication is disabled…`, `…basic authentication is disabled`, `550 5.7.30` |
//! | `auth_policy` | Conditional Access / security defaults blocked sign-in | `535 5.7.139 …did not meet the criteria…` |
//! | `token_expiring` | OAuth token about to expire: refresh and retry | `501 5.5.127` |
//! | `tls_required` | STARTTLS needed | `451 5.7.3 STARTTLS is required`, `538 5.7.11`, `X.7.10`, `X.7.30` |
//! | `tls_too_old` | TLS 1.0/1.1 refused | `421 4.7.66` |
//! | `tls_failed` | TLS / DANE / DNSSEC check failed between servers | `4.7.321`–`325`, `5.7.321`–`325` |
//! | `not_authenticated` | no AUTH where required | `530 5.7.57`, `530 5.7.0`, `5.7.1 Client was not authenticated` |
//! | `relay_denied` | no relaying: connector, accepted domain, Direct Send | `550 5.7.64 TenantAttribution`, `550 5.7.68 TenantInboundAttribution`, `5.7.1 Unable to relay`, `X.7.14` |
//! | `wrong_region` | sent to the wrong Microsoft 365 region | `451 4.4.62`, `5.4.62` |
//! | `sender_ip_blocked` | the relay's IP is on a block list | `550 5.7.1 … Spamhaus`, `5.7.606`–`649`, `5.7.513`, `4.7.850`–`899` |
//! | `tenant_blocked` | the tenant's outbound mail is blocked | `5.7.700`–`749` (e.g. `5.7.705`, `5.7.708`) |
//! | `unregistered_domain` | sending from domains not in the tenant | `5.7.750` |
//! | `throttled` | slow down and retry | `432 4.3.2`, `451 4.7.500`–`699`, `X.4.5`, `X.7.28`, `5.2.121`/`122` |
//! | `sender_suspended` | the mailbox is suspended after repeated errors | `550 5.2.251`–`255` |
//! | `daily_limit` | the mailbox's sending quota is used up | `554 5.2.0 …SubmissionQuotaExceededException`, `5.1.90` |
//! | `recipient_unknown` | no such recipient | `5.1.1`, `5.1.10`, `5.1.0`–`5.1.6`, `5.4.1 Recipient address rejected`, `X.7.17`/`18` |
//! | `mailbox_unavailable` | recipient mailbox disabled or unavailable | `X.2.0`, `X.2.1`, `X.2.4` |
//! | `mailbox_full` | recipient mailbox full | `X.2.2` |
//! | `sender_mailbox_full` | the *sending* mailbox is over quota | `554 5.2.2 …QuotaExceededException` |
//! | `message_too_large` | too big | `552 5.3.4`, `X.2.3`, `X.3.4`, `X.7.16`, `…MaxSubmissionExceeded` |
//! | `too_many_recipients` | too many recipients | `452 4.5.3`, `5.5.3` |
//! | `bad_sender` | sender account or address refused | `550 5.1.8 bad outbound sender`, `5.7.501`–`503`, `5.7.511`, `X.1.7`, `X.1.8`, `X.7.27` |
//! | `content_rejected` | content or format refused | `554 5.6.211`, `5.6.11`, `X.6.*`, `5.7.512`, `X.7.7` |
//! | `email_auth_failed` | SPF / DKIM / DMARC / ARC / reverse DNS failed | `X.7.20`–`26`, `X.7.29` |
//! | `policy` | a receiving-side policy refused it | `5.7.1`, `5.7.703`, `5.7.504`–`510`, `5.7.12`/`13`/`124`/`133`–`136` (restrictions) |
//! | `syntax` | malformed or unsupported command | `500`–`504`, `555`, `X.5.*` |
//! | `network` | no answer, bad connection, DNS, loop | `X.4.0`–`X.4.4`, `X.4.6` |
//! | `mail_system` | the receiving system is full or misconfigured | `X.3.*` |
//! | `expired` | gave up after the retry window | `X.4.7`, `5.4.300` |
//! | `temporary` | unspecified temporary failure | `421`, `450`, `451`, `452`, other `4xx` |
//! | `unknown` | nothing identified the cause | `550`/`554` without a telling code or text |
//!
//! # DSNs
//!
//! [`DeliveryReport::parse`] reads a bounce ([RFC 3464](https://www.rfc-editor.org/rfc/rfc3464)
//! in an [RFC 6522](https://www.rfc-editor.org/rfc/rfc6522) `multipart/report`);
//! [`DeliveryReport::builder`] writes one: `From: MAILER-DAEMON@<relay>`, `To:` the original
//! envelope sender, a `text/plain` explanation with each recipient's remedy, the
//! `message/delivery-status` part, and the original headers (`text/rfc822-headers`) or, for
//! `RET=FULL`, the message (`message/rfc822`, capped). **The engine must send it with an
//! empty envelope sender, `MAIL FROM:<>`** ([`BuiltDsn::MAIL_FROM`]), and never to the null
//! sender (the builder refuses).
//!
//! # Features
//!
//! - `serde` (off by default): `Serialize` for [`Class`], [`Category`], [`Scope`] and
//!   [`Classification`], using the snake_case names.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod category;
mod classify;
mod dsn;
mod error;
mod exchange;
mod generic;
mod registry;
mod reply;
mod rule;

pub use category::{Category, Class, Scope};
pub use classify::{
    Classification, Disposition, MAX_CLASSIFIED_TEXT, classify, classify_reply, classify_status,
    classify_view,
};
pub use dsn::{
    Action, BuiltDsn, DEFAULT_FULL_RETURN_CAP, DeliveryReport, DsnBuilder, MAX_DSN_LENGTH,
    PerMessage, RecipientStatus, Return, TypedValue,
};
pub use error::NdrError;
pub use registry::{REGISTRY, RegistryEntry, meaning, subject_name};
pub use reply::{MAX_REPLY_LENGTH, ReplyView};
