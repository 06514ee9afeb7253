//! `postern_smtp::Reply::decode` on arbitrary bytes: no panic, and a decoded reply encodes to
//! bytes that decode to the same code, enhanced code and line count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::{ParseOptions, Reply};

fuzz_target!(|data: &[u8]| {
    for lenient in [false, true] {
        let opts = ParseOptions::default().lenient(lenient);
        let Ok((reply, used)) = Reply::decode_with(data, &opts) else {
            continue;
        };
        assert!(used <= data.len());
        let wire = reply.to_bytes();
        let (back, n) = Reply::decode(&wire).expect("encoded reply decodes");
        assert_eq!(n, wire.len());
        assert_eq!(back.code(), reply.code());
        assert_eq!(back.enhanced(), reply.enhanced());
        assert_eq!(back.lines().len(), reply.lines().len());
        let _ = reply.text();
    }
});
