//! `postern_ndr::DeliveryReport::parse` on arbitrary bytes (bounces come from anyone): no panic,
//! every recipient classifies, and a parsed report rebuilt by the builder parses back to the
//! same recipients.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_ndr::DeliveryReport;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = DeliveryReport::parse(data) else {
        return;
    };
    for rcpt in &report.recipients {
        let _ = rcpt.classify();
        let _ = rcpt.smtp_reply();
    }
    let mut builder = DeliveryReport::builder("relay.example.com")
        .to("sender@example.com")
        .date("Sun, 22 Nov 2026 14:00:00 +0000")
        .message_id("fuzz", "relay.example.com")
        .boundary("=_postern_fuzz_boundary");
    for rcpt in &report.recipients {
        builder = builder.recipient(rcpt.clone());
    }
    // Building may refuse (e.g. the boundary occurs in a field); it must not panic, and what it
    // builds must parse.
    if let Ok(built) = builder.build() {
        let again = DeliveryReport::parse(&built.message).expect("a built DSN parses");
        assert_eq!(again.recipients.len(), report.recipients.len());
    }
});
