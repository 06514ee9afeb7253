//! Property tests: DSN build -> parse is the identity on the report's fields, and the DSN
//! parser never panics.

use postern_ndr::{Action, DeliveryReport, RecipientStatus, Return, TypedValue};
use postern_smtp::{EnhancedCode, StatusClass};
use proptest::prelude::*;

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(vec![
        Action::Failed,
        Action::Delayed,
        Action::Delivered,
        Action::Relayed,
        Action::Expanded,
    ])
}

fn status() -> impl Strategy<Value = EnhancedCode> {
    (
        prop::sample::select(vec![2u8, 4, 5]),
        0u16..1000,
        0u16..1000,
    )
        .prop_map(|(c, s, d)| {
            let class = match c {
                2 => StatusClass::Success,
                4 => StatusClass::PersistentTransient,
                _ => StatusClass::Permanent,
            };
            EnhancedCode::new(class, s, d).unwrap()
        })
}

/// Printable ASCII words separated by single spaces (header values survive folding exactly).
fn words() -> impl Strategy<Value = String> {
    prop::collection::vec("[!-~]{1,30}", 1..12).prop_map(|w| w.join(" "))
}

fn address() -> impl Strategy<Value = String> {
    "[a-z0-9._+-]{1,20}@[a-z0-9-]{1,20}\\.[a-z]{2,6}"
}

fn recipient() -> impl Strategy<Value = RecipientStatus> {
    (
        address(),
        action(),
        status(),
        prop::option::of(address()),
        prop::option::of("[a-z0-9.-]{1,40}"),
        prop::option::of(words()),
        prop::option::of(words()),
    )
        .prop_map(|(addr, action, status, orig, mta, diag, last)| {
            let mut r = RecipientStatus::new(addr, action, status);
            r.original_recipient = orig.map(|o| TypedValue::new("rfc822", o));
            r.remote_mta = mta.map(|m| TypedValue::new("dns", m));
            r.diagnostic_code = diag.map(|d| TypedValue::new("smtp", d));
            r.last_attempt_date = last;
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn build_then_parse_round_trips(
        recipients in prop::collection::vec(recipient(), 1..5),
        envid in prop::option::of("[!-~]{1,40}"),
        arrival in prop::option::of(words()),
        subject in words(),
        body in "[ -~\n]{0,200}",
        full in any::<bool>(),
    ) {
        let original = format!("From: a@b.c\r\nSubject: {subject}\r\n\r\n{body}");
        let mut b = DeliveryReport::builder("relay.example.com")
            .to("sender@example.com")
            .date("Sun, 22 Nov 2026 14:00:00 +0000")
            .message_id("id.1", "relay.example.com")
            .boundary("=_postern_prop")
            .original(original.as_bytes())
            .ret(if full { Return::Full } else { Return::Headers });
        if let Some(e) = &envid { b = b.envelope_id(e); }
        if let Some(a) = &arrival { b = b.arrival_date(a); }
        for r in &recipients { b = b.recipient(r.clone()); }
        let built = b.build().unwrap();
        let parsed = DeliveryReport::parse(&built.message).unwrap();
        prop_assert_eq!(&parsed.recipients, &recipients);
        prop_assert_eq!(parsed.per_message.reporting_mta, Some(TypedValue::new("dns", "relay.example.com")));
        prop_assert_eq!(parsed.per_message.original_envelope_id, envid);
        prop_assert_eq!(parsed.per_message.arrival_date, arrival);
        let headers = parsed.original_headers.unwrap();
        let expected_subject = format!("Subject: {subject}\r\n");
        prop_assert!(headers.contains(&expected_subject));
        prop_assert!(parsed.human_readable.is_some());
    }

    #[test]
    fn dsn_parser_never_panics(input in prop::collection::vec(any::<u8>(), 0..2000)) {
        let _ = DeliveryReport::parse(&input);
    }

    #[test]
    fn dsn_parser_never_panics_on_dsn_like_text(
        lines in prop::collection::vec(prop::sample::select(vec![
            "Content-Type: multipart/report; boundary=b", "Content-Type: message/delivery-status",
            "--b", "--b--", "", "Final-Recipient: rfc822; a@b", "Action: failed", "Status: 5.1.1",
            "Diagnostic-Code: smtp; 550 5.1.1 x", " folded", "Reporting-MTA: dns; x",
            "Content-Transfer-Encoding: base64", "Content-Transfer-Encoding: quoted-printable", "=4", "QUJD",
        ]), 0..40),
    ) {
        let input = lines.join("\r\n");
        if let Ok(r) = DeliveryReport::parse(input.as_bytes()) {
            for rcpt in &r.recipients { let _ = rcpt.classify(); }
        }
    }
}
