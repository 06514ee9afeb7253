//! The client side on arbitrary server challenges, for every mechanism: no panic, and a token
//! failure always answers with the mechanism's fixed line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_sasl::{Client, Credentials, Mechanism, Step};

fuzz_target!(|data: &[u8]| {
    for mechanism in Mechanism::ALL {
        let creds = match mechanism {
            Mechanism::Plain | Mechanism::Login => Credentials::password("scanner", "hunter2"),
            _ => Credentials::bearer("scanner@contoso.com", "EwBAAl3BAAUFFpUAo7J3Ve0b")
                .with_host_port("smtp.office365.com", 587),
        };
        let mut client = Client::new(mechanism, &creds).expect("valid credentials");
        let _ = client.initial_response();
        for challenge in data.split(|&b| b == b'\n') {
            match client.step(challenge) {
                Ok(Step::Xoauth2Failure(_)) => assert_eq!(mechanism, Mechanism::Xoauth2),
                Ok(Step::OAuthBearerFailure(_)) => assert_eq!(mechanism, Mechanism::OAuthBearer),
                Ok(_) | Err(_) => {}
            }
        }
    }
});
