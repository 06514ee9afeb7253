//! `postern_sasl::xoauth2::decode` and the Xoauth2 server exchange on arbitrary bytes: no panic, and
//! whatever decodes survives client encoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_sasl::{Mechanism, xoauth2};

#[path = "sasl_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(creds) = xoauth2::decode(data) {
        common::round_trip(Mechanism::Xoauth2, creds);
    }
    common::drive_server(Mechanism::Xoauth2, data);
});
