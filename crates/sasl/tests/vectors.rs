//! Published vectors, byte for byte: Microsoft's and Google's XOAUTH2 examples, RFC 4616's
//! PLAIN examples and RFC 7628 §4's OAUTHBEARER exchanges, each through both sides.

use postern_sasl::{
    AuthError, Client, Credentials, Mechanism, OAuthBearerFailure, Reply, ServerExchange,
    ServerStep, Step, Xoauth2Failure,
};

/// Client side: the initial response for `creds` with `mechanism`.
fn initial_response(mechanism: Mechanism, creds: &Credentials) -> String {
    let mut client = Client::new(mechanism, creds).expect("valid credentials");
    client
        .initial_response()
        .expect("mechanism has an initial response")
        .expose_secret()
        .to_owned()
}

/// Server side: the credentials decoded from `AUTH <mechanism> <line>`.
fn server_decode(mechanism: Mechanism, line: &str) -> Credentials {
    match ServerExchange::new(mechanism).start(Some(line.as_bytes())) {
        Ok(ServerStep::Done(creds)) => creds,
        other => panic!("{other:?}"),
    }
}

/// Microsoft Learn, "Authenticate an IMAP, POP or SMTP connection using OAuth" (spec B.1).
#[test]
fn microsoft_xoauth2_example() {
    const LINE: &str = "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==";
    let creds = Credentials::bearer(
        "test@contoso.onmicrosoft.com",
        "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA",
    );
    assert_eq!(initial_response(Mechanism::Xoauth2, &creds), LINE);
    assert_eq!(server_decode(Mechanism::Xoauth2, LINE), creds);
}

/// developers.google.com/gmail/imap/xoauth2-protocol, the SMTP example and its failure.
#[test]
fn google_xoauth2_example() {
    const LINE: &str = "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==";
    const FAILURE: &str = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIG1hYyIsInNjb3BlIjoiaHR0cHM6Ly9tYWlsLmdvb2dsZS5jb20vIn0K";
    let creds = Credentials::bearer(
        "someuser@example.com",
        "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
    );
    assert_eq!(initial_response(Mechanism::Xoauth2, &creds), LINE);
    assert_eq!(server_decode(Mechanism::Xoauth2, LINE), creds);

    // C: AUTH XOAUTH2 <LINE>   S: 334 <FAILURE>   C: (empty)   S: 535 ...
    let mut client = Client::new(Mechanism::Xoauth2, &creds).unwrap();
    client.initial_response().unwrap();
    let step = client.step(FAILURE).unwrap();
    let Step::Xoauth2Failure(failure) = &step else {
        panic!("{step:?}")
    };
    assert_eq!(failure.status.as_deref(), Some("401"));
    assert_eq!(failure.schemes.as_deref(), Some("bearer mac"));
    assert_eq!(failure.scope.as_deref(), Some("https://mail.google.com/"));
    assert_eq!(step.line(), "");
}

/// RFC 4616 §4: both examples, as `AUTH PLAIN` initial responses and after a `334 `.
#[test]
fn rfc4616_plain_examples() {
    for (message, creds) in [
        (
            &b"\0tim\0tanstaaftanstaaf"[..],
            Credentials::password("tim", "tanstaaftanstaaf"),
        ),
        (
            &b"Ursel\0Kurt\0xipj3plmq"[..],
            Credentials::password("Kurt", "xipj3plmq").with_authzid("Ursel"),
        ),
    ] {
        let line = initial_response(Mechanism::Plain, &creds);
        assert_eq!(postern_sasl::plain::decode(message).unwrap(), creds);
        assert_eq!(server_decode(Mechanism::Plain, &line), creds);
        let mut server = ServerExchange::new(Mechanism::Plain);
        assert_eq!(server.start(None), Ok(ServerStep::Challenge(String::new())));
        assert_eq!(
            server.step(line.as_bytes()),
            Ok(ServerStep::Done(creds.clone()))
        );
    }
    assert_eq!(
        initial_response(
            Mechanism::Plain,
            &Credentials::password("tim", "tanstaaftanstaaf")
        ),
        "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
    );
    assert_eq!(
        initial_response(
            Mechanism::Plain,
            &Credentials::password("Kurt", "xipj3plmq").with_authzid("Ursel")
        ),
        "VXJzZWwAS3VydAB4aXBqM3BsbXE="
    );
}

const RFC7628_TOKEN: &str = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==";

/// RFC 7628 §4.1: the successful IMAP exchange's initial response (port 143).
#[test]
fn rfc7628_success_example() {
    const LINE: &str = "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB";
    let creds = Credentials::bearer("user@example.com", RFC7628_TOKEN)
        .with_host_port("server.example.com", 143);
    assert_eq!(initial_response(Mechanism::OAuthBearer, &creds), LINE);
    assert_eq!(server_decode(Mechanism::OAuthBearer, LINE), creds);
}

/// RFC 7628 §4.3: the failed SMTP exchange (port 587), both sides, reply included.
#[test]
fn rfc7628_smtp_failure_example() {
    const LINE: &str = "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9NTg3AWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB";
    const CHALLENGE: &str = "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0=";
    let creds = Credentials::bearer("user@example.com", RFC7628_TOKEN)
        .with_host_port("server.example.com", 587);
    let failure = OAuthBearerFailure::new("invalid_token")
        .with_scope("example_scope")
        .with_openid_configuration("https://example.com/.well-known/openid-configuration");

    // C: AUTH OAUTHBEARER <LINE>
    let mut client = Client::new(Mechanism::OAuthBearer, &creds).unwrap();
    assert_eq!(client.initial_response().unwrap().expose_secret(), LINE);
    let mut server = ServerExchange::new(Mechanism::OAuthBearer);
    assert_eq!(
        server.start(Some(LINE.as_bytes())),
        Ok(ServerStep::Done(creds))
    );
    // S: 334 <CHALLENGE>
    assert_eq!(
        server.fail_oauthbearer(&failure),
        Ok(ServerStep::Challenge(CHALLENGE.to_owned()))
    );
    // C: AQ==
    let step = client.step(CHALLENGE).unwrap();
    assert_eq!(step, Step::OAuthBearerFailure(failure));
    assert_eq!(step.line(), "AQ==");
    // S: 535 5.7.8 Authentication credentials invalid
    let err = server.step(step.line().as_bytes()).unwrap_err();
    assert_eq!(err, AuthError::TokenRejected);
    assert_eq!(
        err.reply().to_string(),
        "535 5.7.8 Authentication credentials invalid"
    );
}

/// RFC 4954 reply table, as plain data.
#[test]
fn rfc4954_replies() {
    let rows = [
        (Reply::CANCELLED, 501, "5.7.0"),
        (Reply::BAD_BASE64, 501, "5.5.2"),
        (Reply::LINE_TOO_LONG, 500, "5.5.6"),
        (Reply::AUTH_SUCCEEDED, 235, "2.7.0"),
        (Reply::INVALID_CREDENTIALS, 535, "5.7.8"),
        (Reply::UNRECOGNIZED_MECHANISM, 504, "5.5.4"),
    ];
    for (reply, code, enhanced) in rows {
        assert_eq!((reply.code, reply.enhanced), (code, enhanced), "{reply}");
    }
}

/// The Gmail failure round, server side too.
#[test]
fn xoauth2_failure_round_trip() {
    let creds = Credentials::bearer("someuser@example.com", "ya29.abc");
    let mut client = Client::new(Mechanism::Xoauth2, &creds).unwrap();
    let mut server = ServerExchange::new(Mechanism::Xoauth2);
    // Two-step form: AUTH XOAUTH2, 334 (empty), then the message.
    let ServerStep::Challenge(empty) = server.start(None).unwrap() else {
        panic!()
    };
    assert_eq!(empty, "");
    let line = client.step(&empty).unwrap();
    assert_eq!(
        server.step(line.line().as_bytes()),
        Ok(ServerStep::Done(creds))
    );
    let failure = Xoauth2Failure::new("401").with_scope("https://outlook.office.com/SMTP.Send");
    let ServerStep::Challenge(challenge) = server.fail_xoauth2(&failure).unwrap() else {
        panic!()
    };
    let step = client.step(&challenge).unwrap();
    assert_eq!(step, Step::Xoauth2Failure(failure));
    assert_eq!(
        server.step(step.line().as_bytes()),
        Err(AuthError::TokenRejected)
    );
}
