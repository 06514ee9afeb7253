//! EHLO replies into `postern_smtp::Capabilities` on arbitrary bytes: no panic, and the
//! capability set survives encode -> decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::{Capabilities, Reply};

fuzz_target!(|data: &[u8]| {
    let Ok((reply, _)) = Reply::decode(data) else {
        return;
    };
    let caps = Capabilities::from_ehlo(&reply);
    let again = caps.encode_ehlo("relay.example", "hello");
    let back = Capabilities::from_ehlo(&Reply::decode(&again.to_bytes()).expect("decodes").0);
    assert_eq!(back.size, caps.size);
    assert_eq!(back.auth, caps.auth);
    assert_eq!(
        (
            back.starttls,
            back.pipelining,
            back.chunking,
            back.smtputf8,
            back.dsn
        ),
        (
            caps.starttls,
            caps.pipelining,
            caps.chunking,
            caps.smtputf8,
            caps.dsn
        )
    );
});
