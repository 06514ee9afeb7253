//! Secrets never show in `Debug` or `Display`, whatever holds them, at any point of an exchange.

use base64::Engine as _;
use postern_sasl::{
    Client, Credentials, Mechanism, Password, REDACTED, Secret, ServerExchange, ServerStep, Token,
};

const PASSWORD: &str = "Corr3ctHorseBatteryStaple";
const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJub25jZSI6IkFCQyJ9.c2VjcmV0LWNsYWltcw.U2lnbmF0dXJl";

/// Everything that would betray a secret: itself, and its base64 at the three alignments.
fn forbidden() -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out = vec![PASSWORD.to_owned(), TOKEN.to_owned()];
    for secret in [PASSWORD, TOKEN] {
        for skip in 0..3 {
            let encoded = b64(&format!("{}{secret}", "x".repeat(skip)));
            // Drop the bytes that depend on the neighbours.
            out.push(encoded[4..encoded.len() - 4].to_owned());
        }
    }
    out
}

fn assert_clean(label: &str, shown: &str) {
    for bad in forbidden() {
        assert!(!shown.contains(&bad), "{label} shows a secret: {shown}");
    }
}

fn all_credentials() -> Vec<(Mechanism, Credentials)> {
    vec![
        (
            Mechanism::Plain,
            Credentials::password("scanner", PASSWORD).with_authzid("reception"),
        ),
        (Mechanism::Login, Credentials::password("scanner", PASSWORD)),
        (
            Mechanism::Xoauth2,
            Credentials::bearer("scanner@contoso.com", TOKEN),
        ),
        (
            Mechanism::OAuthBearer,
            Credentials::bearer("scanner@contoso.com", TOKEN)
                .with_host_port("smtp.example.com", 587),
        ),
    ]
}

#[test]
fn newtypes_redact() {
    for shown in [
        format!("{:?} {}", Password::new(PASSWORD), Password::new(PASSWORD)),
        format!("{:?} {}", Token::new(TOKEN), Token::new(TOKEN)),
        format!("{:?} {}", Secret::new(PASSWORD), Secret::new(TOKEN)),
    ] {
        assert_clean("newtype", &shown);
        assert!(shown.contains(REDACTED));
    }
}

#[test]
fn exchanges_redact_at_every_step() {
    for (mechanism, creds) in all_credentials() {
        assert_clean("credentials", &format!("{creds:?} {creds:#?}"));
        let mut client = Client::new(mechanism, &creds).unwrap();
        let mut server = ServerExchange::new(mechanism);
        assert_clean("client", &format!("{client:?}"));
        let mut step = server.start(None).unwrap();
        for _ in 0..3 {
            assert_clean("server step", &format!("{step:?}"));
            assert_clean("server", &format!("{server:?}"));
            let ServerStep::Challenge(challenge) = &step else {
                break;
            };
            let answer = client.step(challenge).unwrap();
            assert_clean("client step", &format!("{answer:?} {answer:#?}"));
            assert_clean("client", &format!("{client:?}"));
            step = server.step(answer.line().as_bytes()).unwrap();
        }
        let ServerStep::Done(got) = &step else {
            panic!("{step:?}")
        };
        assert_eq!(got, &creds);
        let ir = Client::new(mechanism, &creds).unwrap().initial_response();
        assert_clean("initial response", &format!("{ir:?}"));
    }
}

#[test]
fn errors_redact() {
    // A LOGIN password with invalid UTF-8 after a valid username; a token with a bad character.
    let mut server = ServerExchange::new(Mechanism::Login);
    server.start(Some(b"c2Nhbm5lcg==")).unwrap();
    let err = server.step(b"/w==").unwrap_err();
    assert_clean("error", &format!("{err:?} {err}"));
    let bad = Credentials::bearer("u", format!("{TOKEN} {TOKEN}"));
    let err = Client::new(Mechanism::Xoauth2, &bad).unwrap_err();
    assert_clean("client error", &format!("{err:?} {err}"));
    let bad = Credentials::password("u\0", PASSWORD);
    let err = Client::new(Mechanism::Plain, &bad).unwrap_err();
    assert_clean("client error", &format!("{err:?} {err}"));
}

/// The checker itself catches the wire lines (so the tests above can fail).
#[test]
fn checker_catches_wire_lines() {
    for (mechanism, creds) in all_credentials() {
        let mut client = Client::new(mechanism, &creds).unwrap();
        let line = client.step("").unwrap().line().to_owned();
        let line = if mechanism == Mechanism::Login {
            client.step("").unwrap().line().to_owned()
        } else {
            line
        };
        let caught = std::panic::catch_unwind(|| assert_clean("wire", &line));
        assert!(caught.is_err(), "{mechanism}: checker missed {line}");
    }
}
