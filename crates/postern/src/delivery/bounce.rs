//! Delivery status notifications (RFC 3464) for failed recipients, written with
//! `postern-ndr`'s DSN builder.
//!
//! The engine supplies what the sans-IO builder cannot know: the dates (from the clock and the
//! recipient state), a Message-ID and MIME boundary derived from the bounce's deterministic
//! queue id, and each recipient's remedy from the category its outcome was filed under.

use std::time::SystemTime;

use postern_ndr::{
    Action, BuiltDsn, Category, DeliveryReport, NdrError, RecipientStatus, Return, TypedValue,
};
use postern_smtp::{EnhancedCode, StatusClass};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::queue::ADMIN_BOUNCE_CATEGORY;
use crate::spool::{Envelope, FinalOutcome, MessageState, QueueId, Ret};

/// The failure category of a recipient no route matched (set by the queue).
const NO_ROUTE_CATEGORY: &str = "no_route";
/// The category of a recipient held under a sending rate limit (set by the queue).
const RATE_LIMITED_CATEGORY: &str = "rate_limited";

/// The status of a recipient whose retry period ran out: RFC 3463's persistent transient
/// failure that made the relay give up.
const EXPIRED: EnhancedCode = EnhancedCode {
    class: StatusClass::PersistentTransient,
    subject: 4,
    detail: 7,
};
/// The status of a permanent failure whose reply has no permanent enhanced code.
const OTHER_PERMANENT: EnhancedCode = EnhancedCode {
    class: StatusClass::Permanent,
    subject: 0,
    detail: 0,
};

/// How many fresh MIME boundaries to try when the original message happens to contain one.
const BOUNDARY_TRIES: usize = 4;

/// Builds the `multipart/report; report-type=delivery-status` notice for the failures of
/// message `id` that `state.dsn_pending` lists: a human explanation with each recipient's
/// remedy, the `message/delivery-status` part, and the original headers, or the whole
/// `original` when the envelope asked for `RET=FULL` (up to
/// [`postern_ndr::DEFAULT_FULL_RETURN_CAP`]; pass at most one byte more than that).
///
/// The notice's Message-ID and MIME boundary derive from its queue id
/// (`id.bounce(state.dsn_seq)`), so the same inputs give the same bytes. Send it from the
/// null sender ([`BuiltDsn::MAIL_FROM`]) to [`BuiltDsn::rcpt_to`].
///
/// Returns `Ok(None)` when there is nobody to notify: a null sender (a bounce never goes to
/// `<>`), or no pending recipient that wants a failure notice (`NOTIFY=NEVER`, or a
/// `NOTIFY=` list without `FAILURE`). Fails only when the builder refuses the inputs (for
/// example a sender address with spaces in a quoted local part).
pub fn build_bounce(
    id: &QueueId,
    envelope: &Envelope,
    state: &MessageState,
    original: &[u8],
    reporting_mta: &str,
    now: SystemTime,
) -> Result<Option<BuiltDsn>, NdrError> {
    let Some(sender) = envelope
        .mail_from
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    else {
        return Ok(None);
    };
    let rcpts: Vec<(RecipientStatus, Option<String>)> = state
        .dsn_pending
        .iter()
        .filter(|&&i| {
            envelope
                .recipients
                .get(i)
                .is_some_and(|r| r.wants_failure_notice())
                && i < state.recipients.len()
        })
        .map(|&i| recipient_status(id, envelope, state, i, now))
        .collect();
    if rcpts.is_empty() {
        return Ok(None);
    }

    let bounce_id = id.bounce(state.dsn_seq);
    let date = rfc2822(now);
    let arrival = rfc2822(envelope.received_at);
    let ret = match envelope.ret {
        Some(Ret::Full) => Return::Full,
        _ => Return::Headers,
    };
    let mut boundary = format!("=_postern_{bounce_id}");
    let mut tries = 0;
    loop {
        let mut b = DeliveryReport::builder(reporting_mta)
            .to(sender)
            .date(&date)
            .message_id(bounce_id.as_str(), reporting_mta)
            .boundary(&boundary)
            .arrival_date(&arrival)
            .original(original)
            .ret(ret);
        if let Some(envid) = envelope.envid.as_deref() {
            b = b.envelope_id(envid);
        }
        for (status, remedy) in &rcpts {
            b = match remedy {
                Some(remedy) => b.recipient_with_remedy(status.clone(), remedy),
                None => b.recipient(status.clone()),
            };
        }
        match b.build() {
            Err(NdrError::InvalidInput {
                field: "boundary", ..
            }) if tries < BOUNDARY_TRIES => {
                // The original contains the boundary: draw another.
                tries += 1;
                boundary = format!("=_postern_{bounce_id}_{:016x}", rand::random::<u64>());
            }
            r => return r.map(Some),
        }
    }
}

/// The report of failed recipient `i`, and the remedy its category calls for (`None`: let
/// the builder classify the diagnostic).
fn recipient_status(
    id: &QueueId,
    envelope: &Envelope,
    state: &MessageState,
    i: usize,
    now: SystemTime,
) -> (RecipientStatus, Option<String>) {
    let rcpt = &envelope.recipients[i];
    let r = &state.recipients[i];
    let (reason, category, expired, at) = match &r.outcome {
        Some(FinalOutcome::Failed {
            reason,
            category,
            expired,
            at,
            ..
        }) => (reason.as_str(), category.as_str(), *expired, *at),
        _ => (
            r.last_reply.as_deref().unwrap_or_default(),
            r.last_category.as_deref().unwrap_or_default(),
            false,
            now,
        ),
    };
    let reason = one_line(reason);
    let reply = postern_ndr::ReplyView::parse(&reason).ok();
    let is_reply = reply.is_some();
    let status = if expired {
        EXPIRED
    } else {
        reply
            .and_then(|r| r.enhanced)
            .filter(|c| c.class == StatusClass::Permanent)
            .unwrap_or(OTHER_PERMANENT)
    };
    let mut s = RecipientStatus::new(rcpt.address.clone(), Action::Failed, status);
    s.original_recipient = rcpt.orcpt.as_deref().map(TypedValue::parse);
    s.diagnostic_code = Some(if is_reply {
        TypedValue::new("smtp", reason)
    } else {
        TypedValue::new("x-postern", reason)
    });
    let attempted = r.attempts > 0
        && category != ADMIN_BOUNCE_CATEGORY
        && category != NO_ROUTE_CATEGORY
        && category != RATE_LIMITED_CATEGORY;
    if attempted {
        s.last_attempt_date = Some(rfc2822(at));
    }
    s.final_log_id = Some(id.to_string());
    (s, remedy(category, expired))
}

/// The remedy for a failure filed under the engine's `category`: the NDR category's own
/// where the name is one (`Category::from_name`), the engine's sentence for its own
/// categories, and for expiry what the last failure called for.
fn remedy(category: &str, expired: bool) -> Option<String> {
    let own = match category {
        ADMIN_BOUNCE_CATEGORY => Some(
            "The relay's administrator returned this message without delivering it; \
             ask them if it should be sent.",
        ),
        NO_ROUTE_CATEGORY => Some(
            "The relay has no route for this recipient: its administrator must add a rule \
             or a default route that covers the recipient's domain.",
        ),
        RATE_LIMITED_CATEGORY => Some(
            "The relay held the message under its sending rate limit until the retry \
             period ran out: send less mail at once, or ask the relay's administrator to \
             raise the limit or add sending identities.",
        ),
        _ => Category::from_name(category).map(Category::remedy),
    };
    if !expired {
        return own.map(str::to_owned);
    }
    let expiry = Category::Expired.remedy();
    match own {
        Some(last) if category != Category::Expired.as_str() => {
            Some(format!("{expiry} The last failure ({category}): {last}"))
        }
        _ => Some(expiry.to_owned()),
    }
}

fn rfc2822(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into())
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{ClientInfo, Notify, Recipient};

    fn failed(reason: &str, category: &str, expired: bool) -> FinalOutcome {
        FinalOutcome::Failed {
            reason: reason.into(),
            category: category.into(),
            expired,
            notified: true,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    fn setup() -> (Envelope, MessageState) {
        let mut env = Envelope::new(
            Some("scanner@contoso.com".into()),
            vec![
                Recipient::new("gone@fabrikam.com"),
                Recipient::new("slow@fabrikam.com"),
                Recipient::new("quiet@fabrikam.com"),
            ],
            ClientInfo::new("127.0.0.1:1".parse().unwrap(), "h", "l"),
        );
        env.recipients[0].orcpt = Some("rfc822;Gone@Fabrikam.com".into());
        env.recipients[2].notify = Some(Notify::NEVER);
        let mut state = MessageState::new(3);
        for r in &mut state.recipients {
            r.attempts = 1;
        }
        state.recipients[0].outcome = Some(failed(
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound",
            "recipient_unknown",
            false,
        ));
        state.recipients[1].outcome = Some(failed("451 4.7.500 Server busy", "throttled", true));
        state.recipients[2].outcome = Some(failed("550 5.1.10 gone", "recipient_unknown", false));
        state.dsn_pending = vec![0, 1, 2];
        (env, state)
    }

    #[test]
    fn report_names_each_failed_recipient_with_status() {
        let (env, state) = setup();
        let id = QueueId::generate();
        let dsn = build_bounce(
            &id,
            &env,
            &state,
            b"Subject: scan\r\n\r\nbody\r\n",
            "relay.contoso.com",
            SystemTime::UNIX_EPOCH,
        )
        .unwrap()
        .unwrap();
        assert_eq!(dsn.rcpt_to, "scanner@contoso.com");
        let text = String::from_utf8(dsn.message.clone()).unwrap();
        assert!(text.contains(&format!("Message-ID: <{}@relay.contoso.com>", id.bounce(0))));
        assert!(!text.contains("body"), "RET=HDRS by default");
        let parsed = DeliveryReport::parse(&dsn.message).unwrap();
        let pm = &parsed.per_message;
        assert_eq!(
            pm.reporting_mta.as_ref().unwrap().value,
            "relay.contoso.com"
        );
        assert!(pm.arrival_date.is_some());
        assert_eq!(parsed.recipients.len(), 2, "NOTIFY=NEVER is left out");
        let gone = &parsed.recipients[0];
        assert_eq!(gone.recipient(), "gone@fabrikam.com");
        assert_eq!(gone.status.to_string(), "5.1.10");
        assert_eq!(
            gone.original_recipient.as_ref().unwrap().value,
            "Gone@Fabrikam.com"
        );
        assert_eq!(
            gone.diagnostic_code.as_ref().unwrap().to_string(),
            "smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound"
        );
        assert_eq!(
            gone.last_attempt_date.as_deref(),
            Some("Thu, 01 Jan 1970 00:00:00 +0000")
        );
        assert_eq!(gone.final_log_id.as_deref(), Some(id.as_str()));
        let slow = &parsed.recipients[1];
        assert_eq!(slow.status.to_string(), "4.4.7");
        assert_eq!(slow.action, Action::Failed);
        let human = parsed.human_readable.unwrap();
        assert!(
            human.contains("Check the recipient address for typos"),
            "{human}"
        );
        assert!(human.contains("retry window ran out"), "{human}");
        assert_eq!(
            parsed.original_headers.as_deref(),
            Some("Subject: scan\r\n")
        );
    }

    #[test]
    fn deterministic_and_nothing_for_null_sender_or_never() {
        let (mut env, mut state) = setup();
        let id = QueueId::generate();
        let build = |env: &Envelope, state: &MessageState| {
            build_bounce(
                &id,
                env,
                state,
                b"Subject: x\r\n\r\n",
                "r.test",
                SystemTime::UNIX_EPOCH,
            )
            .unwrap()
        };
        assert_eq!(build(&env, &state), build(&env, &state));
        state.dsn_pending = vec![2];
        assert_eq!(build(&env, &state), None, "NOTIFY=NEVER only");
        state.dsn_pending = vec![0];
        env.recipients[0].notify = Some(Notify::new(true, false, true));
        assert_eq!(build(&env, &state), None, "NOTIFY without FAILURE");
        env.recipients[0].notify = None;
        env.mail_from = None;
        assert_eq!(build(&env, &state), None, "never to <>");
    }

    #[test]
    fn full_return_and_engine_categories() {
        let (mut env, mut state) = setup();
        env.ret = Some(Ret::Full);
        state.recipients[0].outcome = Some(failed(
            crate::queue::ADMIN_BOUNCE_REPLY,
            ADMIN_BOUNCE_CATEGORY,
            false,
        ));
        state.dsn_pending = vec![0];
        // The original carries the default boundary: another one is drawn.
        let id = QueueId::generate();
        let original = format!(
            "Subject: scan\r\n\r\n--=_postern_{}\r\nbody\r\n",
            id.bounce(0)
        );
        let dsn = build_bounce(
            &id,
            &env,
            &state,
            original.as_bytes(),
            "r.test",
            SystemTime::now(),
        )
        .unwrap()
        .unwrap();
        let text = String::from_utf8(dsn.message.clone()).unwrap();
        assert!(text.contains("Content-Type: message/rfc822"), "{text}");
        assert!(text.contains("\r\nbody\r\n"));
        let parsed = DeliveryReport::parse(&dsn.message).unwrap();
        assert_eq!(parsed.recipients[0].status.to_string(), "5.3.0");
        assert!(parsed.recipients[0].last_attempt_date.is_none());
        assert!(
            parsed
                .human_readable
                .unwrap()
                .contains("administrator returned this message")
        );
    }

    #[test]
    fn remedies_follow_the_category() {
        assert_eq!(
            remedy("send_as_denied", false).as_deref(),
            Some(Category::SendAsDenied.remedy())
        );
        assert_eq!(remedy("internal", false), None);
        let r = remedy("throttled", true).unwrap();
        assert!(
            r.starts_with(Category::Expired.remedy()) && r.contains("(throttled)"),
            "{r}"
        );
        assert_eq!(
            remedy("expired", true).as_deref(),
            Some(Category::Expired.remedy())
        );
    }
}
