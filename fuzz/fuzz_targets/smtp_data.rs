//! The DATA decoder on arbitrary bytes, split at a fuzzer-chosen point: no panic, the same
//! result whatever the split, the end of data only right after a real `CRLF.CRLF`, and
//! encode -> decode is the identity on normalised text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp::{BareLineEnding, DataDecoder, DataEncoder, DataOptions};

fn run(chunks: &[&[u8]], opts: &DataOptions) -> (Vec<u8>, usize, bool, bool) {
    let mut dec = DataDecoder::new(opts.clone());
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut done = false;
    for c in chunks {
        let p = dec.decode(c, &mut out);
        consumed += p.consumed;
        if p.done {
            done = true;
            break;
        }
    }
    let ok = dec.finish().is_ok();
    (if ok { out } else { Vec::new() }, consumed, done, ok)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut) % (input.len() + 1);
    for policy in [BareLineEnding::Reject, BareLineEnding::Normalize] {
        let opts = DataOptions::default()
            .bare_line_ending(policy)
            .max_line(200);
        let whole = run(&[input], &opts);
        let split = run(&[&input[..cut], &input[cut..]], &opts);
        assert_eq!(whole, split);
        let (_, consumed, done, _) = whole;
        if done {
            // Only a real CRLF.CRLF (or `.CRLF` at the very start) ends the data.
            let framed: Vec<u8> = [b"\r\n".as_slice(), &input[..consumed]].concat();
            assert!(framed.ends_with(b"\r\n.\r\n"));
        }
    }
    // Encoding anything and decoding it gives the normalised text back.
    let wire = DataEncoder::encode_all(input);
    let opts = DataOptions::default().max_line(usize::MAX);
    let (out, consumed, done, ok) = run(&[&wire], &opts);
    assert!(done && ok && consumed == wire.len());
    assert!(!out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
});
