//! Delivery status notifications (RFC 3464) for failed recipients.
//!
//! Note: `postern-ndr` carries the reference DSN builder (`DeliveryReport::builder`); this
//! module builds the same multipart/report shape locally until the engine depends on it, and
//! is the single place to switch over.

use std::fmt::Write as _;
use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::spool::{Envelope, QueueId};

/// One failed recipient to report.
#[derive(Clone, Debug)]
pub(crate) struct Failed<'a> {
    pub(crate) rcpt: usize,
    pub(crate) reason: &'a str,
    pub(crate) expired: bool,
}

/// Builds a `multipart/report; report-type=delivery-status` message to the original sender
/// for the given failed recipients. `returned` is the original header block (or the whole
/// message for `RET=FULL`).
///
/// The caller guarantees the original sender is not null: a bounce is never sent to `<>`.
pub fn build_bounce(
    id: &QueueId,
    envelope: &Envelope,
    failed: &[(usize, &str, bool)],
    returned: &[u8],
    reporting_mta: &str,
    now: SystemTime,
) -> Vec<u8> {
    let failed: Vec<Failed<'_>> = failed
        .iter()
        .map(|&(rcpt, reason, expired)| Failed {
            rcpt,
            reason,
            expired,
        })
        .collect();
    build(id, envelope, &failed, returned, reporting_mta, now)
}

fn rfc2822(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into())
}

/// The first `x.y.z` enhanced status code in `reason`, if any.
fn enhanced_code(reason: &str) -> Option<&str> {
    reason.split_ascii_whitespace().find(|w| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

fn build(
    id: &QueueId,
    envelope: &Envelope,
    failed: &[Failed<'_>],
    returned: &[u8],
    reporting_mta: &str,
    now: SystemTime,
) -> Vec<u8> {
    let sender = envelope.mail_from.as_deref().unwrap_or("");
    let boundary = format!("{id}/{reporting_mta}");
    let mut out = String::new();
    let _ = write!(
        out,
        "From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n\
         To: <{sender}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.dsn@{reporting_mta}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Your message (queue id {id}) could not be delivered to the following recipients:\r\n\r\n",
        date = rfc2822(now),
    );
    for f in failed {
        let rcpt = &envelope.recipients[f.rcpt].address;
        let why = if f.expired {
            "delivery kept failing until the retry period ran out; last error"
        } else {
            "the receiving system refused it"
        };
        let _ = write!(out, "  <{rcpt}>: {why}:\r\n    {}\r\n", one_line(f.reason));
    }
    let _ = write!(
        out,
        "\r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {reporting_mta}\r\n\
         X-Postern-Queue-ID: {id}\r\n"
    );
    if let Some(envid) = &envelope.envid {
        let _ = write!(out, "Original-Envelope-Id: {}\r\n", one_line(envid));
    }
    let _ = write!(out, "Arrival-Date: {}\r\n", rfc2822(envelope.received_at));
    for f in failed {
        let r = &envelope.recipients[f.rcpt];
        let status = if f.expired {
            "4.4.7"
        } else {
            enhanced_code(f.reason)
                .filter(|c| c.starts_with('5'))
                .unwrap_or("5.0.0")
        };
        out.push_str("\r\n");
        if let Some(orcpt) = &r.orcpt {
            let _ = write!(out, "Original-Recipient: {}\r\n", one_line(orcpt));
        }
        let _ = write!(
            out,
            "Final-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {status}\r\n",
            r.address
        );
        let reason = one_line(f.reason);
        if reason.len() >= 3 && reason.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
            let _ = write!(out, "Diagnostic-Code: smtp; {reason}\r\n");
        } else {
            let _ = write!(out, "Diagnostic-Code: x-postern; {reason}\r\n");
        }
    }
    let _ = write!(
        out,
        "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    );
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(returned);
    if !returned.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{ClientInfo, Recipient};

    #[test]
    fn report_names_each_failed_recipient_with_status() {
        let env = Envelope::new(
            Some("scanner@contoso.com".into()),
            vec![
                Recipient::new("gone@fabrikam.com"),
                Recipient::new("slow@fabrikam.com"),
            ],
            ClientInfo::new("127.0.0.1:1".parse().unwrap(), "h", "l"),
        );
        let id = QueueId::generate();
        let dsn = build_bounce(
            &id,
            &env,
            &[
                (0, "550 5.1.10 RESOLVER.ADR.RecipientNotFound", false),
                (1, "451 4.7.500 Server busy", true),
            ],
            b"Subject: scan\r\n",
            "relay.contoso.com",
            SystemTime::UNIX_EPOCH,
        );
        let s = String::from_utf8(dsn).unwrap();
        assert!(s.contains("To: <scanner@contoso.com>\r\n"));
        assert!(s.contains(
            "Final-Recipient: rfc822; gone@fabrikam.com\r\nAction: failed\r\nStatus: 5.1.10\r\n"
        ));
        assert!(s.contains(
            "Final-Recipient: rfc822; slow@fabrikam.com\r\nAction: failed\r\nStatus: 4.4.7\r\n"
        ));
        assert!(s.contains("Diagnostic-Code: smtp; 451 4.7.500 Server busy"));
        assert!(s.contains("Subject: scan\r\n"));
        assert!(s.ends_with("--\r\n"));
    }
}
