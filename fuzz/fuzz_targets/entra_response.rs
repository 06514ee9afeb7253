//! Fuzz the token, device-code and error response parsers of postern-entra (bodies come from
//! the network, possibly through a proxy): they must never panic, and what they accept must
//! be coherent. Input: two bytes of HTTP status (big-endian, folded into 100..=599), then
//! the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_entra::response::{parse_device_code_response, parse_error, parse_token_response};

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, rest @ ..] => (100 + u16::from_be_bytes([*a, *b]) % 500, rest),
        _ => return,
    };
    let Ok(response) = http::Response::builder()
        .status(status)
        .header("retry-after", "5")
        .body(body.to_vec())
    else {
        return;
    };
    match parse_token_response(&response) {
        Ok(t) => {
            assert!((200..300).contains(&status));
            assert!(!t.access_token.expose().is_empty());
            assert_eq!(format!("{:?}", t.access_token), "Secret(<redacted>)");
        }
        Err(e) => {
            let _ = (e.to_string(), e.is_transient(), e.remedy());
        }
    }
    if let Ok(d) = parse_device_code_response(&response) {
        assert!((1..=300).contains(&d.interval));
        let _ = d.display_message();
    }
    if let Some(e) = parse_error(status, None, body) {
        assert!(!e.error.is_empty());
        assert!(!e.remedy().is_empty());
        let _ = e.to_string();
    }
});
