//! Fuzz the SPF record parser (TXT data from anyone's DNS): it must never panic, and whatever it
//! accepts must report the whole input as used.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((record, used)) = postern_mx::spf::SpfRecord::decode(data) {
        assert_eq!(used, data.len());
        let _ = record.has_all();
        let _ = record.includes().count();
    }
});
