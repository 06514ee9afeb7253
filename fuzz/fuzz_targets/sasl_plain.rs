//! `postern_sasl::plain::decode` and the Plain server exchange on arbitrary bytes: no panic, and
//! whatever decodes survives client encoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_sasl::{Mechanism, plain};

#[path = "sasl_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(creds) = plain::decode(data) {
        common::round_trip(Mechanism::Plain, creds);
    }
    common::drive_server(Mechanism::Plain, data);
});
