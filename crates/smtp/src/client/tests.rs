use super::*;
use crate::command::CommandKind as K;

fn reply(s: &str) -> Reply<'static> {
    Reply::decode(s.as_bytes()).unwrap().0.into_owned()
}

fn greeted(ehlo: &str, policy: TlsPolicy) -> ClientSession {
    let mut c = ClientSession::new(policy);
    assert_eq!(
        c.on_reply(reply("220 mx ready\r\n")).unwrap().command,
        K::Greeting
    );
    c.expect(K::Ehlo).unwrap();
    c.on_reply(reply(ehlo)).unwrap();
    c
}

const PIPELINING: &str = "250-mx.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n";

#[test]
fn nothing_before_the_greeting() {
    let mut c = ClientSession::new(TlsPolicy::Opportunistic);
    assert_eq!(c.expect(K::Ehlo), Err(ClientError::CannotPipeline("EHLO")));
    assert_eq!(
        c.expect(K::Message),
        Err(ClientError::OutOfSequence("message data"))
    );
}

#[test]
fn pipelined_envelope_attribution() {
    let mut c = greeted(PIPELINING, TlsPolicy::Opportunistic);
    assert!(c.can_pipeline());
    c.expect(K::Mail).unwrap();
    c.expect(K::Rcpt).unwrap();
    c.expect(K::Rcpt).unwrap();
    c.expect(K::Rcpt).unwrap();
    c.expect(K::Data).unwrap();
    // DATA ends the group.
    assert!(c.expect(K::Noop).is_err());
    let ev = c.on_reply(reply("250 2.1.0 Sender OK\r\n")).unwrap();
    assert_eq!((ev.command, ev.recipient), (K::Mail, None));
    let ev = c.on_reply(reply("250 2.1.5 OK\r\n")).unwrap();
    assert_eq!((ev.command, ev.recipient), (K::Rcpt, Some(0)));
    let ev = c.on_reply(reply("550 5.1.1 User unknown\r\n")).unwrap();
    assert_eq!(
        (ev.command, ev.recipient, ev.is_positive()),
        (K::Rcpt, Some(1), false)
    );
    let ev = c.on_reply(reply("250 2.1.5 OK\r\n")).unwrap();
    assert_eq!(ev.recipient, Some(2));
    assert_eq!(c.accepted_recipients(), [0, 2]);
    let ev = c.on_reply(reply("354 go ahead\r\n")).unwrap();
    assert_eq!(ev.command, K::Data);
    assert!(!c.should_abort_data());
    assert_eq!(c.pending().collect::<Vec<_>>(), [K::Message]);
    // QUIT may follow the message in the same group.
    c.expect(K::Quit).unwrap();
    let ev = c.on_reply(reply("250 2.0.0 queued\r\n")).unwrap();
    assert_eq!(ev.command, K::Message);
    assert!(c.accepted_recipients().is_empty());
    assert_eq!(c.on_reply(reply("221 bye\r\n")).unwrap().command, K::Quit);
    assert!(c.is_idle());
    assert_eq!(
        c.on_reply(reply("250 extra\r\n")),
        Err(ClientError::UnexpectedReply(ReplyCode::OK))
    );
}

#[test]
fn all_recipients_refused_then_354() {
    let mut c = greeted(PIPELINING, TlsPolicy::Opportunistic);
    for k in [K::Mail, K::Rcpt, K::Data] {
        c.expect(k).unwrap();
    }
    c.on_reply(reply("250 OK\r\n")).unwrap();
    c.on_reply(reply("550 no\r\n")).unwrap();
    c.on_reply(reply("354 go\r\n")).unwrap();
    assert!(c.should_abort_data());
}

#[test]
fn no_pipelining_without_the_extension() {
    let mut c = greeted("250-mx\r\n250 8BITMIME\r\n", TlsPolicy::Disabled);
    c.expect(K::Mail).unwrap();
    assert_eq!(c.expect(K::Rcpt), Err(ClientError::CannotPipeline("RCPT")));
    c.on_reply(reply("250 OK\r\n")).unwrap();
    c.expect(K::Rcpt).unwrap();
}

#[test]
fn starttls_required() {
    let mut c = greeted(PIPELINING, TlsPolicy::Required);
    assert!(c.must_starttls());
    assert!(c.expect(K::Mail).is_err(), "no MAIL in the clear");
    c.expect(K::StartTls).unwrap();
    assert!(c.expect(K::Ehlo).is_err(), "STARTTLS ends the group");
    c.on_reply(reply("220 2.0.0 ready\r\n")).unwrap();
    assert!(c.awaiting_tls_handshake());
    assert!(c.expect(K::Ehlo).is_err());
    c.tls_established();
    assert!(c.is_tls() && !c.must_starttls() && c.capabilities().is_none());
    c.expect(K::Ehlo).unwrap();
    c.on_reply(reply(
        "250-mx\r\n250-AUTH LOGIN XOAUTH2\r\n250 PIPELINING\r\n",
    ))
    .unwrap();
    assert!(c.capabilities().unwrap().supports_auth("XOAUTH2"));
    c.expect(K::Auth).unwrap();
    let ev = c.on_reply(reply("334 \r\n")).unwrap();
    assert_eq!(ev.command, K::Auth);
    assert!(ev.reply.is_intermediate());
    let ev = c
        .on_reply(reply("235 2.7.0 Authentication successful\r\n"))
        .unwrap();
    assert_eq!(ev.command, K::Auth);
    assert!(c.is_authenticated());
    c.expect(K::Mail).unwrap();
}

#[test]
fn tls_unavailable() {
    let c = greeted("250-mx\r\n250 PIPELINING\r\n", TlsPolicy::Required);
    assert!(c.tls_unavailable());
    let c = greeted("250-mx\r\n250 PIPELINING\r\n", TlsPolicy::Opportunistic);
    assert!(!c.tls_unavailable() && !c.must_starttls());
}

#[test]
fn bdat_chunks() {
    let mut c = greeted(
        "250-mx\r\n250-CHUNKING\r\n250 PIPELINING\r\n",
        TlsPolicy::Disabled,
    );
    c.sent(&Command::Mail {
        from: crate::Path::Null,
        params: Default::default(),
    })
    .unwrap();
    c.expect(K::Rcpt).unwrap();
    c.expect(K::Bdat { last: false }).unwrap();
    c.expect(K::Bdat { last: true }).unwrap();
    for _ in 0..3 {
        c.on_reply(reply("250 OK\r\n")).unwrap();
    }
    assert_eq!(c.accepted_recipients(), [0]);
    let ev = c.on_reply(reply("250 2.0.0 queued\r\n")).unwrap();
    assert_eq!(ev.command, K::Bdat { last: true });
    assert!(c.accepted_recipients().is_empty());
}
