//! `postern_sasl::oauthbearer::decode` and the OAuthBearer server exchange on arbitrary bytes: no panic, and
//! whatever decodes survives client encoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_sasl::{Mechanism, oauthbearer};

#[path = "sasl_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(creds) = oauthbearer::decode(data) {
        common::round_trip(Mechanism::OAuthBearer, creds);
    }
    common::drive_server(Mechanism::OAuthBearer, data);
});
