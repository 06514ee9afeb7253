//! `postern_sasl::login` decoders and the LOGIN server exchange (with and without the username
//! on the `AUTH` line) on arbitrary bytes: no panic, and what decodes survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_sasl::{Credentials, Mechanism, login};

#[path = "sasl_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let (user, password) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    if let (Ok(user), Ok(password)) = (
        login::decode_username(user),
        login::decode_password(password),
    ) {
        common::round_trip(Mechanism::Login, Credentials::password(user, password));
    }
    common::drive_server(Mechanism::Login, data);
});
