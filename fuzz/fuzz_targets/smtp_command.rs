//! `postern_smtp::Command::decode` on arbitrary bytes, strict and lenient: no panic, the
//! consumed count stays in bounds, the answer is exactly the reference decoder's (no fast
//! path, `postern_smtp::__fuzz`), and every decoded command formats to a line that decodes
//! back to the same command (format -> parse identity).
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::__fuzz::decode_command_reference;
use postern_smtp::{Command, DecodeError, ParseOptions};

fuzz_target!(|data: &[u8]| {
    for lenient in [false, true] {
        let opts = ParseOptions::default().lenient(lenient);
        let mut at = 0;
        // Decode a whole pipelined batch, as a server would.
        while at < data.len() {
            let decoded = Command::decode(&data[at..], &opts);
            let reference = decode_command_reference(&data[at..], &opts);
            assert_eq!(
                decoded,
                reference,
                "{:?}",
                String::from_utf8_lossy(&data[at..])
            );
            match decoded {
                Ok((cmd, used)) => {
                    assert!(used > 0 && used <= data.len() - at);
                    let wire = cmd.to_string();
                    let big = opts.clone().max_line(wire.len().max(512));
                    let (back, n) = Command::decode(wire.as_bytes(), &big)
                        .unwrap_or_else(|e| panic!("{wire:?} does not decode: {e}"));
                    assert_eq!(n, wire.len());
                    assert_eq!(back, cmd, "{wire:?}");
                    at += used;
                }
                Err(DecodeError::Invalid { consumed, kind }) => {
                    assert!(consumed > 0 && consumed <= data.len() - at);
                    let _ = kind.reply();
                    at += consumed;
                }
                Err(DecodeError::TooLong { .. }) => match postern_smtp::skip_line(&data[at..]) {
                    Some(n) => at += n,
                    None => break,
                },
                Err(_) => break,
            }
        }
    }
});
