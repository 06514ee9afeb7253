//! With the `serde` feature, classifications serialize with the stable snake_case names.
#![cfg(feature = "serde")]

use postern_ndr::{ReplyView, classify_view};

#[test]
fn classification_serializes_with_stable_names() {
    let c = classify_view(
        &ReplyView::parse("432 4.3.2 Concurrent connections limit exceeded.").unwrap(),
    );
    let v = serde_json::to_value(c).unwrap();
    assert_eq!(v["class"], "transient");
    assert_eq!(v["category"], "throttled");
    assert_eq!(v["scope"], "sender");
    assert_eq!(v["retry"], true);
    assert_eq!(v["meaning"], "System not accepting network messages");
}
