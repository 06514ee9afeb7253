//! Property tests: whatever the client encodes, the server decodes to the same credentials, for
//! every mechanism and both forms (initial response or after a `334`); and no input makes a
//! decoder panic.

use postern_sasl::{
    Client, Credentials, Mechanism, OAuthBearerFailure, ServerExchange, ServerStep, Step,
    Xoauth2Failure, login, oauthbearer, plain, xoauth2,
};
use proptest::prelude::*;

/// Drives a full exchange between our client and our server; returns what the server decoded.
fn exchange(mechanism: Mechanism, creds: &Credentials, use_ir: bool) -> Credentials {
    let mut client = Client::new(mechanism, creds).expect("strategy makes valid credentials");
    let mut server = ServerExchange::new(mechanism);
    let ir = if use_ir {
        client.initial_response()
    } else {
        None
    };
    let mut step = server
        .start(ir.as_ref().map(|l| l.expose_secret().as_bytes()))
        .expect("start");
    for _ in 0..4 {
        match step {
            ServerStep::Challenge(challenge) => {
                let answer = client.step(&challenge).expect("client step");
                assert!(matches!(answer, Step::Respond(_)));
                step = server.step(answer.line().as_bytes()).expect("server step");
            }
            ServerStep::Done(got) => return got,
            _ => unreachable!(),
        }
    }
    panic!("exchange did not finish")
}

fn no_nul(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[^\\x00]{{1,{max}}}")).unwrap()
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~+/-]{1,300}={0,2}"
}

fn password_creds() -> impl Strategy<Value = Credentials> {
    (proptest::option::of(no_nul(30)), no_nul(60), no_nul(60)).prop_map(|(authzid, user, pw)| {
        Credentials::Password {
            authzid,
            user,
            password: pw.into(),
        }
    })
}

proptest! {
    #[test]
    fn plain_round_trip(creds in password_creds(), use_ir: bool) {
        prop_assert_eq!(exchange(Mechanism::Plain, &creds, use_ir), creds);
    }

    #[test]
    fn login_round_trip(user in ".{1,60}", pw in ".{1,60}") {
        let creds = Credentials::password(user, pw);
        prop_assert_eq!(&exchange(Mechanism::Login, &creds, false), &creds);

        // The device quirk: the username on the AUTH LOGIN line.
        let mut client = Client::new(Mechanism::Login, &creds).unwrap();
        let user_line = client.step(login::USERNAME_PROMPT).unwrap();
        let mut server = ServerExchange::new(Mechanism::Login);
        prop_assert_eq!(
            server.start(Some(user_line.line().as_bytes())).unwrap(),
            ServerStep::Challenge(login::PASSWORD_PROMPT.to_owned())
        );
        let pw_line = client.step(login::PASSWORD_PROMPT).unwrap();
        prop_assert_eq!(server.step(pw_line.line().as_bytes()).unwrap(), ServerStep::Done(creds));
    }

    #[test]
    fn xoauth2_round_trip(user in "[^\\x01]{1,60}", token in token(), use_ir: bool) {
        let creds = Credentials::bearer(user, token);
        prop_assert_eq!(exchange(Mechanism::Xoauth2, &creds, use_ir), creds);
    }

    #[test]
    fn oauthbearer_round_trip(
        user in "[^\\x00]{0,60}",
        token in token(),
        host in proptest::option::of("[!-~]{1,40}"),
        port: Option<u16>,
        use_ir: bool,
    ) {
        let creds = Credentials::Bearer { user, token: token.into(), host, port };
        prop_assert_eq!(exchange(Mechanism::OAuthBearer, &creds, use_ir), creds);
    }

    #[test]
    fn xoauth2_failure_round_trip(
        status in proptest::option::of(".{0,20}"),
        schemes in proptest::option::of(".{0,20}"),
        scope in proptest::option::of(".{0,40}"),
    ) {
        let mut failure = Xoauth2Failure::default();
        failure.status = status;
        failure.schemes = schemes;
        failure.scope = scope;
        let mut client = Client::new(Mechanism::Xoauth2, &Credentials::bearer("u", "t")).unwrap();
        client.initial_response().unwrap();
        prop_assert_eq!(client.step(failure.to_challenge()).unwrap(), Step::Xoauth2Failure(failure));
    }

    #[test]
    fn oauthbearer_failure_round_trip(
        status in proptest::option::of(".{0,20}"),
        scope in proptest::option::of(".{0,40}"),
        openid in proptest::option::of(".{0,40}"),
    ) {
        let mut failure = OAuthBearerFailure::default();
        failure.status = status;
        failure.scope = scope;
        failure.openid_configuration = openid;
        let mut client =
            Client::new(Mechanism::OAuthBearer, &Credentials::bearer("u", "t")).unwrap();
        client.initial_response().unwrap();
        prop_assert_eq!(
            client.step(failure.to_challenge()).unwrap(),
            Step::OAuthBearerFailure(failure)
        );
    }

    /// Decoding arbitrary bytes never panics, and whatever decodes re-encodes to the same
    /// credentials (decode ∘ encode ∘ decode = decode).
    #[test]
    fn decoders_are_total(message in proptest::collection::vec(any::<u8>(), 0..300)) {
        for (mechanism, decoded) in [
            (Mechanism::Plain, plain::decode(&message)),
            (Mechanism::Xoauth2, xoauth2::decode(&message)),
            (Mechanism::OAuthBearer, oauthbearer::decode(&message)),
        ] {
            if let Ok(creds) = decoded
                && let Ok(mut client) = Client::new(mechanism, &creds)
            {
                let line = client.initial_response().unwrap();
                let again =
                    ServerExchange::new(mechanism).start(Some(line.expose_secret().as_bytes()));
                prop_assert_eq!(again, Ok(ServerStep::Done(creds)));
            }
        }
        let _ = login::decode_username(&message);
        let _ = login::decode_password(&message);
    }

    /// Arbitrary lines at every point of every exchange, on both sides: errors, never panics.
    #[test]
    fn exchanges_are_total(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 1..4),
        ir: bool,
    ) {
        for mechanism in Mechanism::ALL {
            let mut server = ServerExchange::new(mechanism);
            let (first, rest) = match lines.split_first() {
                Some((first, rest)) if ir => (Some(first.as_slice()), rest),
                _ => (None, lines.as_slice()),
            };
            if server.start(first).is_ok() {
                for line in rest {
                    if server.step(line).is_err() {
                        break;
                    }
                }
            }
            let creds = match mechanism {
                Mechanism::Plain | Mechanism::Login => Credentials::password("u", "p"),
                _ => Credentials::bearer("u", "t"),
            };
            let mut client = Client::new(mechanism, &creds).unwrap();
            for line in &lines {
                let _ = client.step(line);
            }
        }
    }
}
