use super::*;
use crate::line::ParseOptions;

fn caps() -> Capabilities {
    Capabilities {
        size: Some(1000),
        pipelining: true,
        starttls: true,
        auth: vec!["PLAIN".into(), "LOGIN".into()],
        chunking: true,
        binarymime: true,
        eightbitmime: true,
        smtputf8: true,
        dsn: true,
        enhancedstatuscodes: true,
        ..Capabilities::default()
    }
}

fn cmd(s: &str) -> Command<'_> {
    Command::decode(s.as_bytes(), &ParseOptions::default())
        .unwrap()
        .0
}

fn code(r: Result<Action<'_>, Reply<'static>>) -> u16 {
    match r {
        Ok(a) => panic!("expected a refusal, got {a:?}"),
        Err(reply) => reply.code().get(),
    }
}

fn session() -> ServerSession {
    ServerSession::new(ServerConfig::new(caps()))
}

fn ready() -> ServerSession {
    let mut s = session();
    s.handle(&cmd("EHLO client.example\r\n")).unwrap();
    s
}

#[test]
fn bad_sequences_get_503() {
    let mut s = session();
    for line in [
        "MAIL FROM:<a@b.c>\r\n",
        "RCPT TO:<a@b.c>\r\n",
        "DATA\r\n",
        "AUTH PLAIN\r\n",
        "STARTTLS\r\n",
    ] {
        let c = cmd(line);
        let reply = s.handle(&c).unwrap_err();
        assert_eq!(reply.code().get(), 503, "{line}");
        assert_eq!(reply.enhanced().unwrap().to_string(), "5.5.1");
    }
    // NOOP, RSET, HELP, VRFY and QUIT are fine before EHLO.
    assert_eq!(s.handle(&cmd("NOOP\r\n")), Ok(Action::Noop));
    assert_eq!(s.handle(&cmd("RSET\r\n")), Ok(Action::Rset));
    assert_eq!(s.state(), ServerState::Connected);
    let mut s = ready();
    assert_eq!(code(s.handle(&cmd("RCPT TO:<a@b.c>\r\n"))), 503);
    assert!(matches!(
        s.handle(&cmd("MAIL FROM:<a@b.c>\r\n")),
        Ok(Action::Mail { .. })
    ));
    s.mail_accepted();
    assert_eq!(code(s.handle(&cmd("MAIL FROM:<a@b.c>\r\n"))), 503);
}

#[test]
fn full_transaction() {
    let mut s = ready();
    assert!(matches!(
        s.handle(&cmd("MAIL FROM:<> SIZE=100\r\n")),
        Ok(Action::Mail {
            from: Path::Null,
            ..
        })
    ));
    s.mail_accepted();
    assert_eq!(s.state(), ServerState::Mail);
    assert!(matches!(
        s.handle(&cmd("RCPT TO:<x@y.z>\r\n")),
        Ok(Action::Rcpt { .. })
    ));
    s.rcpt_accepted();
    assert_eq!(s.handle(&cmd("DATA\r\n")), Ok(Action::Data));
    assert_eq!(s.state(), ServerState::Data);
    assert_eq!(code(s.handle(&cmd("NOOP\r\n"))), 503);
    let mut dec = s.data_decoder();
    let mut out = Vec::new();
    let p = dec.decode(&vec![b'x'; 2000], &mut out);
    assert!(!p.done);
    dec.decode(b"\r\n.\r\n", &mut out);
    assert_eq!(
        dec.finish(),
        Err(crate::DataError::LineTooLong { max: 1000 })
    );
    s.message_done();
    assert_eq!(s.state(), ServerState::Ready);
    assert_eq!(s.recipients(), 0);
}

#[test]
fn data_without_accepted_recipients() {
    let mut s = ready();
    s.handle(&cmd("MAIL FROM:<a@b.c>\r\n")).unwrap();
    s.mail_accepted();
    s.handle(&cmd("RCPT TO:<x@y.z>\r\n")).unwrap();
    // Policy refused it: no rcpt_accepted().
    let reply = s.handle(&cmd("DATA\r\n")).unwrap_err();
    assert_eq!(
        (reply.code().get(), reply.enhanced().unwrap().to_string()),
        (554, "5.5.1".into())
    );
}

#[test]
fn rset_and_ehlo_reset_the_transaction() {
    for reset in ["RSET\r\n", "EHLO again.example\r\n"] {
        let mut s = ready();
        s.handle(&cmd("MAIL FROM:<a@b.c>\r\n")).unwrap();
        s.mail_accepted();
        s.handle(&cmd(reset)).unwrap();
        assert_eq!(s.state(), ServerState::Ready);
        assert!(s.handle(&cmd("MAIL FROM:<a@b.c>\r\n")).is_ok());
    }
}

#[test]
fn parameters_checked_against_advertised() {
    let mut s = ready();
    let reply = s
        .handle(&cmd("MAIL FROM:<a@b.c> X-UNKNOWN=1\r\n"))
        .unwrap_err();
    assert_eq!(
        (reply.code().get(), reply.enhanced().unwrap().to_string()),
        (555, "5.5.4".into())
    );
    let reply = s
        .handle(&cmd("MAIL FROM:<a@b.c> SIZE=1001\r\n"))
        .unwrap_err();
    assert_eq!(
        (reply.code().get(), reply.enhanced().unwrap().to_string()),
        (552, "5.3.4".into())
    );
    assert!(s.handle(&cmd("MAIL FROM:<a@b.c> SIZE=1000\r\n")).is_ok());
    // UTF-8 sender without SMTPUTF8.
    assert_eq!(code(s.handle(&cmd("MAIL FROM:<jö@b.c>\r\n"))), 553);
    assert!(s.handle(&cmd("MAIL FROM:<jö@b.c> SMTPUTF8\r\n")).is_ok());

    let mut plain = ServerSession::new(ServerConfig::default());
    plain.handle(&cmd("EHLO x.example\r\n")).unwrap();
    for line in [
        "MAIL FROM:<a@b.c> SIZE=1\r\n",
        "MAIL FROM:<a@b.c> BODY=8BITMIME\r\n",
        "MAIL FROM:<a@b.c> SMTPUTF8\r\n",
        "MAIL FROM:<a@b.c> RET=FULL\r\n",
        "MAIL FROM:<a@b.c> AUTH=<>\r\n",
    ] {
        assert_eq!(code(plain.handle(&cmd(line))), 555, "{line}");
    }
    assert!(
        plain
            .handle(&cmd("MAIL FROM:<a@b.c> BODY=7BIT\r\n"))
            .is_ok()
    );
    plain.mail_accepted();
    assert_eq!(
        code(plain.handle(&cmd("RCPT TO:<x@y.z> NOTIFY=NEVER\r\n"))),
        555
    );
    assert_eq!(code(plain.handle(&cmd("RCPT TO:<jö@y.z>\r\n"))), 553);
}

#[test]
fn helo_session_has_no_esmtp() {
    let mut s = session();
    assert!(matches!(
        s.handle(&cmd("HELO old.device\r\n")),
        Ok(Action::Helo { .. })
    ));
    assert_eq!(code(s.handle(&cmd("MAIL FROM:<a@b.c> SIZE=10\r\n"))), 555);
    assert_eq!(code(s.handle(&cmd("STARTTLS\r\n"))), 502);
    assert_eq!(code(s.handle(&cmd("AUTH PLAIN\r\n"))), 503);
    assert!(s.handle(&cmd("MAIL FROM:<a@b.c>\r\n")).is_ok());
}

#[test]
fn starttls_rules() {
    let mut s = ready();
    assert!(
        s.ehlo_reply("relay", "hi")
            .lines()
            .iter()
            .any(|l| l == "STARTTLS")
    );
    assert!(
        !s.ehlo_reply("relay", "hi")
            .lines()
            .iter()
            .any(|l| l.starts_with("AUTH"))
    );
    // AUTH before TLS is refused (538), not advertised.
    assert_eq!(code(s.handle(&cmd("AUTH PLAIN\r\n"))), 538);
    assert_eq!(s.handle(&cmd("STARTTLS\r\n")), Ok(Action::StartTls));
    assert!(Action::StartTls.must_flush());
    assert_eq!(s.state(), ServerState::TlsHandshake);
    assert_eq!(code(s.handle(&cmd("MAIL FROM:<a@b.c>\r\n"))), 503);
    s.tls_established();
    assert!(s.is_tls());
    // Everything is forgotten: EHLO again.
    assert_eq!(code(s.handle(&cmd("MAIL FROM:<a@b.c>\r\n"))), 503);
    s.handle(&cmd("EHLO client.example\r\n")).unwrap();
    let ehlo = s.ehlo_reply("relay", "hi");
    assert!(!ehlo.lines().iter().any(|l| l == "STARTTLS"));
    assert!(ehlo.lines().iter().any(|l| l == "AUTH PLAIN LOGIN"));
    // No STARTTLS twice.
    assert_eq!(code(s.handle(&cmd("STARTTLS\r\n"))), 503);
}

#[test]
fn starttls_not_in_transaction() {
    let mut s = ready();
    s.handle(&cmd("MAIL FROM:<a@b.c>\r\n")).unwrap();
    s.mail_accepted();
    assert_eq!(code(s.handle(&cmd("STARTTLS\r\n"))), 503);
}

#[test]
fn auth_rules() {
    let mut config = ServerConfig::new(caps());
    config.tls_active = true;
    let mut s = ServerSession::new(config);
    s.handle(&cmd("EHLO c.example\r\n")).unwrap();
    assert_eq!(code(s.handle(&cmd("AUTH CRAM-MD5\r\n"))), 504);
    let c = cmd("AUTH PLAIN AGEAYg==\r\n");
    let action = s.handle(&c).unwrap();
    let Action::Auth { mechanism, initial } = action else {
        panic!()
    };
    assert_eq!(mechanism, "PLAIN");
    assert_eq!(initial.unwrap().expose(), "AGEAYg==");
    assert_eq!(s.state(), ServerState::Auth);
    s.auth_failed();
    assert!(!s.is_authenticated());
    assert!(s.handle(&cmd("AUTH login\r\n")).is_ok());
    s.auth_succeeded();
    assert!(s.is_authenticated());
    // No AUTH twice.
    assert_eq!(code(s.handle(&cmd("AUTH PLAIN\r\n"))), 503);
    assert!(s.advertised().auth.is_empty());
    // No AUTH in a transaction.
    let mut config = ServerConfig::new(caps());
    config.auth_requires_tls = false;
    let mut s = ServerSession::new(config);
    s.handle(&cmd("EHLO c.example\r\n")).unwrap();
    s.handle(&cmd("MAIL FROM:<a@b.c>\r\n")).unwrap();
    s.mail_accepted();
    assert_eq!(code(s.handle(&cmd("AUTH PLAIN\r\n"))), 503);
}

#[test]
fn bdat_rules() {
    let mut s = ready();
    // BDAT before a transaction: the chunk must still be drained.
    let c = cmd("BDAT 5\r\n");
    let a = s.handle(&c).unwrap();
    let Action::BdatDiscard { size: 5, reply } = a else {
        panic!("{a:?}")
    };
    assert_eq!(reply.code().get(), 503);
    s.handle(&cmd("MAIL FROM:<a@b.c> BODY=BINARYMIME\r\n"))
        .unwrap();
    s.mail_accepted();
    s.handle(&cmd("RCPT TO:<x@y.z>\r\n")).unwrap();
    s.rcpt_accepted();
    assert_eq!(
        code(s.handle(&cmd("DATA\r\n"))),
        503,
        "BINARYMIME needs BDAT"
    );
    assert_eq!(
        s.handle(&cmd("BDAT 600\r\n")),
        Ok(Action::Bdat {
            size: 600,
            last: false
        })
    );
    assert_eq!(code(s.handle(&cmd("MAIL FROM:<a@b.c>\r\n"))), 503);
    // Over the 1000-octet limit in total: drained and refused; the rest too.
    let Ok(Action::BdatDiscard { reply, .. }) = s.handle(&cmd("BDAT 500 LAST\r\n")) else {
        panic!()
    };
    assert_eq!(reply.code().get(), 552);
    let Ok(Action::BdatDiscard { reply, .. }) = s.handle(&cmd("BDAT 1 LAST\r\n")) else {
        panic!()
    };
    assert_eq!(reply.code().get(), 503);
    s.handle(&cmd("RSET\r\n")).unwrap();
    assert_eq!(s.state(), ServerState::Ready);
}

#[test]
fn too_many_recipients() {
    let mut config = ServerConfig::new(caps());
    config.max_recipients = 2;
    let mut s = ServerSession::new(config);
    s.handle(&cmd("EHLO c.example\r\n")).unwrap();
    s.handle(&cmd("MAIL FROM:<a@b.c>\r\n")).unwrap();
    s.mail_accepted();
    for _ in 0..2 {
        s.handle(&cmd("RCPT TO:<x@y.z>\r\n")).unwrap();
        s.rcpt_accepted();
    }
    let reply = s.handle(&cmd("RCPT TO:<x@y.z>\r\n")).unwrap_err();
    assert_eq!(
        (reply.code().get(), reply.enhanced().unwrap().to_string()),
        (452, "4.5.3".into())
    );
}

#[test]
fn quit_closes() {
    let mut s = ready();
    assert_eq!(s.handle(&cmd("QUIT\r\n")), Ok(Action::Quit));
    assert_eq!(s.state(), ServerState::Closed);
    assert_eq!(code(s.handle(&cmd("NOOP\r\n"))), 503);
}

#[test]
fn canonical_replies() {
    assert_eq!(replies::ok().to_string(), "250 2.0.0 OK\r\n");
    assert_eq!(replies::start_data().code(), ReplyCode::START_MAIL_INPUT);
    assert_eq!(
        replies::relay_denied().to_string(),
        "550 5.7.1 Relaying denied\r\n"
    );
    assert_eq!(
        replies::auth_required().to_string(),
        "530 5.7.0 Authentication required\r\n"
    );
}
