//! `postern_ndr::ReplyView::parse` and the classifier on arbitrary text: no panic, and every
//! classification keeps its invariants (a permanent never retries, a success needs nothing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_ndr::{Class, ReplyView, classify_view};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reply) = ReplyView::parse(text) else {
        return;
    };
    let c = classify_view(&reply);
    match c.class {
        Class::Permanent => assert!(!c.retry),
        Class::Success => assert!(!c.retry && !c.operator_action),
        _ => {}
    }
    assert!(!c.remedy.is_empty());
});
