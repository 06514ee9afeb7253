//! DSN parsing on bounces shaped like Exchange Online's, Postfix's and Gmail's, and the
//! builder's output.

use postern_ndr::{
    Action, BuiltDsn, Category, Class, DeliveryReport, NdrError, RecipientStatus, Return,
};

const EXCHANGE: &[u8] = include_bytes!("data/exchange_online.eml");
const POSTFIX: &[u8] = include_bytes!("data/postfix.eml");
const GMAIL: &[u8] = include_bytes!("data/gmail.eml");

fn lf(input: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(input)
        .replace("\r\n", "\n")
        .into_bytes()
}

fn crlf(input: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(&lf(input))
        .replace('\n', "\r\n")
        .into_bytes()
}

#[test]
fn exchange_online_ndr() {
    let r = DeliveryReport::parse(EXCHANGE).unwrap();
    let mta = r.per_message.reporting_mta.as_ref().unwrap();
    assert_eq!(
        (mta.kind.as_str(), mta.value.as_str()),
        ("dns", "BN8PR12MB3587.namprd12.prod.outlook.com")
    );
    assert_eq!(
        r.per_message.arrival_date.as_deref(),
        Some("Mon, 23 Nov 2026 09:12:03 +0000")
    );
    assert!(r.per_message.received_from_mta.is_some());
    assert_eq!(r.recipients.len(), 1);
    let rcpt = &r.recipients[0];
    assert_eq!(rcpt.recipient(), "nobody@fabrikam.com");
    assert_eq!(rcpt.action, Action::Failed);
    assert_eq!(rcpt.status.to_string(), "5.1.10");
    assert_eq!(
        rcpt.extensions,
        vec![(
            "X-Display-Name".to_owned(),
            "nobody@fabrikam.com".to_owned()
        )]
    );
    let reply = rcpt.smtp_reply().unwrap();
    assert_eq!(reply.code.get(), 550);
    assert!(reply.text.starts_with("RESOLVER.ADR.RecipientNotFound"));
    let c = rcpt.classify();
    assert_eq!(
        (c.class, c.category),
        (Class::Permanent, Category::RecipientUnknown)
    );
    // The first text/plain part (inside multipart/alternative), quoted-printable decoded.
    let human = r.human_readable.as_deref().unwrap();
    assert!(
        human.contains("Try one or more of the following:"),
        "{human}"
    );
    assert!(
        r.original_headers
            .as_deref()
            .unwrap()
            .contains("Subject: Scanned document")
    );
}

#[test]
fn postfix_bounce_with_two_recipients() {
    let r = DeliveryReport::parse(POSTFIX).unwrap();
    assert_eq!(
        r.per_message.reporting_mta.as_ref().unwrap().value,
        "mail.contoso.com"
    );
    assert_eq!(
        r.per_message.extensions.len(),
        2,
        "X-Postfix-* kept as extensions"
    );
    assert_eq!(r.recipients.len(), 2);
    let first = &r.recipients[0];
    assert_eq!(
        first.original_recipient.as_ref().unwrap().value,
        "someone@example.org"
    );
    assert_eq!(first.remote_mta.as_ref().unwrap().value, "mx.example.org");
    // Folded Diagnostic-Code, unfolded.
    let reply = first.smtp_reply().unwrap();
    assert_eq!(
        reply.text,
        "<someone@example.org>: Recipient address    rejected: User unknown in virtual mailbox table"
    );
    assert_eq!(first.classify().category, Category::RecipientUnknown);
    let second = &r.recipients[1];
    assert_eq!(second.action, Action::Delayed);
    assert_eq!(
        second.will_retry_until.as_deref(),
        Some("Sun, 27 Nov 2026 14:00:00 +0000 (UTC)")
    );
    assert!(
        second.smtp_reply().is_none(),
        "X-Postfix diagnostic is not an SMTP reply"
    );
    let c = second.classify();
    assert_eq!(
        (c.class, c.category, c.retry),
        (Class::Transient, Category::Network, true)
    );
    assert!(
        r.original_headers
            .as_deref()
            .unwrap()
            .starts_with("Return-Path: <scanner@contoso.com>")
    );
    assert!(
        r.human_readable
            .as_deref()
            .unwrap()
            .contains("The mail system")
    );
}

#[test]
fn gmail_bounce_nested_related_alternative() {
    let r = DeliveryReport::parse(GMAIL).unwrap();
    assert_eq!(r.recipients.len(), 1);
    let rcpt = &r.recipients[0];
    assert_eq!(rcpt.recipient(), "doesnotexist@gmail.com");
    assert_eq!(
        rcpt.remote_mta.as_ref().unwrap().value,
        "gmail-smtp-in.l.google.com. (142.250.102.26, the server for the domain gmail.com.)"
    );
    assert_eq!(
        rcpt.last_attempt_date.as_deref(),
        Some("Sun, 22 Nov 2026 06:00:02 -0800 (PST)")
    );
    let reply = rcpt.smtp_reply().unwrap();
    assert_eq!(reply.enhanced.unwrap().to_string(), "5.1.1");
    assert!(
        reply.text.starts_with(
            "The email account that you tried to reach does not exist. Please try double-checking"
        ),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains("550-5.1.1"));
    assert_eq!(rcpt.classify().category, Category::RecipientUnknown);
    assert!(
        r.human_readable
            .as_deref()
            .unwrap()
            .contains("Address not found")
    );
    assert!(
        r.original_headers
            .as_deref()
            .unwrap()
            .contains("Message-ID: <scan.20261122140000.9@scanner.contoso.com>")
    );
}

#[test]
fn line_endings_do_not_matter() {
    for sample in [EXCHANGE, POSTFIX, GMAIL] {
        let a = DeliveryReport::parse(&lf(sample)).unwrap();
        let b = DeliveryReport::parse(&crlf(sample)).unwrap();
        assert_eq!(a.per_message, b.per_message);
        assert_eq!(a.recipients, b.recipients);
    }
}

#[test]
fn base64_status_part_and_bare_status_body() {
    let msg = "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
               --b\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n\
               UmVwb3J0aW5nLU1UQTogZG5zOyBhCgpGaW5hbC1SZWNpcGllbnQ6IHJmYzgyMjsgYkBjCkFjdGlvbjog\r\n\
               ZmFpbGVkClN0YXR1czogNS4yLjIK\r\n--b--\r\n";
    let r = DeliveryReport::parse(msg.as_bytes()).unwrap();
    assert_eq!(r.recipients[0].recipient(), "b@c");
    assert_eq!(r.recipients[0].classify().category, Category::MailboxFull);

    let bare = b"Reporting-MTA: dns; x\n\nFinal-Recipient: rfc822; y@z\nAction: failed\nStatus: 5.0.0 (permanent failure)\n";
    let r = DeliveryReport::parse(bare).unwrap();
    assert_eq!(r.recipients[0].status.to_string(), "5.0.0");
}

#[test]
fn parse_errors_are_specific() {
    assert_eq!(
        DeliveryReport::parse(b"Subject: hi\r\n\r\nhello\r\n"),
        Err(NdrError::NotADsn)
    );
    let missing = b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\nFinal-Recipient: rfc822; a@b\nAction: failed\n";
    assert_eq!(
        DeliveryReport::parse(missing),
        Err(NdrError::MissingField { field: "Status" })
    );
    let bad = b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\nFinal-Recipient: rfc822; a@b\nAction: exploded\nStatus: 5.0.0\n";
    assert!(matches!(
        DeliveryReport::parse(bad),
        Err(NdrError::InvalidField {
            field: "Action",
            ..
        })
    ));
    let none = b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; x\n";
    assert_eq!(
        DeliveryReport::parse(none),
        Err(NdrError::MissingField {
            field: "Final-Recipient"
        })
    );
}

fn sample_build(ret: Return, original: &[u8]) -> BuiltDsn {
    let rcpt = RecipientStatus::new("ceo@contoso.com", Action::Failed, "5.2.252".parse().unwrap())
        .with_smtp_diagnostic("554 5.2.252 SendAsDenied; scanner@contoso.com not allowed to send as ceo@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.")
        .with_remote_mta("smtp.office365.com");
    let delayed =
        RecipientStatus::new("ops@contoso.com", Action::Delayed, "4.3.2".parse().unwrap())
            .with_smtp_diagnostic("432 4.3.2 Concurrent connections limit exceeded.");
    DeliveryReport::builder("relay.contoso.com")
        .to("scanner@contoso.com")
        .date("Sun, 22 Nov 2026 14:00:00 +0000")
        .message_id("dsn.7f3a9c.1", "relay.contoso.com")
        .boundary("=_postern_7f3a9c")
        .envelope_id("QQ314159")
        .arrival_date("Sun, 22 Nov 2026 13:59:58 +0000")
        .recipient(rcpt)
        .recipient(delayed)
        .original(original)
        .ret(ret)
        .build()
        .unwrap()
}

const ORIGINAL: &[u8] = b"From: CEO <ceo@contoso.com>\nTo: ceo@contoso.com\nSubject: Scanned document\nMessage-ID: <scan.1@scanner.contoso.com>\n\nline one\nline two\n";

#[test]
fn built_dsn_shape() {
    let dsn = sample_build(Return::Headers, ORIGINAL);
    assert_eq!(dsn.rcpt_to, "scanner@contoso.com");
    assert_eq!(BuiltDsn::MAIL_FROM, "");
    let text = String::from_utf8(dsn.message.clone()).unwrap();
    // CRLF everywhere, no bare LF, no line over 998 octets.
    assert!(!text.replace("\r\n", "").contains('\n'), "bare LF");
    assert!(text.split("\r\n").all(|l| l.len() <= 998));
    assert!(text.starts_with("From: Mail Delivery System <MAILER-DAEMON@relay.contoso.com>\r\nTo: <scanner@contoso.com>\r\nSubject: Undeliverable: Scanned document\r\n"));
    for h in [
        "Date: Sun, 22 Nov 2026 14:00:00 +0000\r\n",
        "Message-ID: <dsn.7f3a9c.1@relay.contoso.com>\r\n",
        "In-Reply-To: <scan.1@scanner.contoso.com>\r\n",
        "Auto-Submitted: auto-replied\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: multipart/report; report-type=delivery-status;",
    ] {
        assert!(text.contains(h), "missing {h:?}");
    }
    // Part order: explanation, report, original headers.
    let plain = text.find("Content-Type: text/plain").unwrap();
    let status = text.find("Content-Type: message/delivery-status").unwrap();
    let headers = text.find("Content-Type: text/rfc822-headers").unwrap();
    assert!(plain < status && status < headers);
    assert!(text.contains("What to do: Grant the authenticated mailbox Send As"));
    assert!(!text.contains("line one"), "RET=HDRS returns headers only");

    let r = DeliveryReport::parse(&dsn.message).unwrap();
    assert_eq!(
        r.per_message.reporting_mta.as_ref().unwrap().value,
        "relay.contoso.com"
    );
    assert_eq!(
        r.per_message.original_envelope_id.as_deref(),
        Some("QQ314159")
    );
    assert_eq!(r.recipients.len(), 2);
    assert_eq!(r.recipients[0].classify().category, Category::SendAsDenied);
    assert_eq!(r.recipients[1].action, Action::Delayed);
    assert_eq!(
        r.original_headers.as_deref(),
        Some(
            "From: CEO <ceo@contoso.com>\r\nTo: ceo@contoso.com\r\nSubject: Scanned document\r\nMessage-ID: <scan.1@scanner.contoso.com>\r\n"
        )
    );
}

#[test]
fn ret_full_and_its_cap() {
    let dsn = sample_build(Return::Full, ORIGINAL);
    let text = String::from_utf8(dsn.message).unwrap();
    assert!(text.contains("Content-Type: message/rfc822\r\n"));
    assert!(text.contains("line one\r\nline two\r\n"));

    let rcpt = RecipientStatus::new("a@b.c", Action::Failed, "5.3.4".parse().unwrap());
    let capped = DeliveryReport::builder("relay.example")
        .to("s@example.com")
        .date("Sun, 22 Nov 2026 14:00:00 +0000")
        .message_id("x", "relay.example")
        .boundary("bnd")
        .recipient(rcpt)
        .original(ORIGINAL)
        .ret(Return::Full)
        .full_return_cap(10)
        .build()
        .unwrap();
    let text = String::from_utf8(capped.message).unwrap();
    assert!(text.contains("text/rfc822-headers") && !text.contains("line one"));
}

#[test]
fn builder_refuses_bad_inputs() {
    let rcpt = || RecipientStatus::new("a@b.c", Action::Failed, "5.1.1".parse().unwrap());
    let base = || {
        DeliveryReport::builder("relay.example")
            .date("Sun, 22 Nov 2026 14:00:00 +0000")
            .message_id("x", "relay.example")
            .boundary("bnd")
    };
    assert_eq!(
        base().recipient(rcpt()).build(),
        Err(NdrError::MissingInput("the original sender (to)"))
    );
    assert!(matches!(
        base().to("").recipient(rcpt()).build(),
        Err(NdrError::InvalidInput { field: "to", .. })
    ));
    assert!(matches!(
        base().to("a@b\r\nBcc: x").recipient(rcpt()).build(),
        Err(NdrError::InvalidInput { .. })
    ));
    assert_eq!(
        base().to("s@x.y").build(),
        Err(NdrError::MissingInput("at least one recipient"))
    );
    // The boundary appears in the original: refused rather than producing a broken message.
    let collide = base()
        .to("s@x.y")
        .recipient(rcpt())
        .original(b"Subject: x\r\n\r\n--bnd\r\n")
        .ret(Return::Full)
        .build();
    assert!(matches!(
        collide,
        Err(NdrError::InvalidInput {
            field: "boundary",
            ..
        })
    ));
}
