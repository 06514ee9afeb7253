//! `C:`/`S:` transcripts played through a minimal sans-IO server built only from this crate's
//! public API, the way the engine uses it: decode every complete command in the buffer
//! (pipelining), ask [`ServerSession::handle`], apply a toy policy, and decode DATA with the
//! session's [`DataDecoder`]. Then the client side of the same conversations with
//! [`ClientSession`].

use postern_smtp::{
    Action, Capabilities, ClientSession, Command, CommandKind, DecodeError, ParseOptions, Path,
    Reply, ServerConfig, ServerSession, TlsPolicy, replies, skip_line,
};

fn caps() -> Capabilities {
    let mut caps = Capabilities::default();
    caps.size = Some(10_000);
    caps.pipelining = true;
    caps.eightbitmime = true;
    caps.enhancedstatuscodes = true;
    caps.smtputf8 = true;
    caps.chunking = true;
    caps.dsn = true;
    caps
}

/// A toy engine: recipients @contoso.com are accepted, others refused; messages are kept.
struct Engine {
    session: ServerSession,
    opts: ParseOptions,
    messages: Vec<Vec<u8>>,
}

impl Engine {
    fn new(opts: ParseOptions) -> Self {
        Self {
            session: ServerSession::new(ServerConfig::new(caps())),
            opts,
            messages: Vec::new(),
        }
    }

    /// Feeds all the client's bytes and returns everything the server wrote.
    fn run(&mut self, mut input: &[u8]) -> String {
        let mut out = Vec::new();
        replies_line(&mut out, "220 relay.test ESMTP");
        let mut skipping = false;
        while !input.is_empty() {
            if skipping {
                match skip_line(input) {
                    Some(n) => {
                        input = &input[n..];
                        skipping = false;
                        continue;
                    }
                    None => break,
                }
            }
            let (cmd, used) = match Command::decode(input, &self.opts) {
                Ok(ok) => ok,
                Err(DecodeError::Incomplete) => break,
                Err(e @ DecodeError::TooLong { .. }) => {
                    e.reply().encode(&mut out);
                    skipping = true;
                    continue;
                }
                Err(e @ DecodeError::Invalid { consumed, .. }) => {
                    e.reply().encode(&mut out);
                    input = &input[consumed..];
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            input = &input[used..];
            let reply = match self.session.handle(&cmd) {
                Err(reply) => reply,
                Ok(Action::Ehlo { .. }) => self.session.ehlo_reply("relay.test", "hello"),
                Ok(Action::Helo { .. }) => Reply::new(250.try_into().unwrap(), None, "relay.test"),
                Ok(Action::Mail { .. }) => {
                    self.session.mail_accepted();
                    replies::ok()
                }
                Ok(Action::Rcpt { to, .. }) => {
                    let local = match to {
                        Path::Mailbox(m) => m.domain().name() == Some("contoso.com"),
                        _ => true,
                    };
                    if local {
                        self.session.rcpt_accepted();
                        replies::ok()
                    } else {
                        replies::relay_denied()
                    }
                }
                Ok(Action::Data) => {
                    replies::start_data().encode(&mut out);
                    let mut dec = self.session.data_decoder();
                    let mut body = Vec::new();
                    let p = dec.decode(input, &mut body);
                    input = &input[p.consumed..];
                    if !p.done {
                        break;
                    }
                    self.session.message_done();
                    match dec.finish() {
                        Ok(_) => {
                            self.messages.push(body);
                            replies::message_accepted("1")
                        }
                        Err(e) => e.reply(),
                    }
                }
                Ok(Action::Bdat { size, last }) => {
                    let size = usize::try_from(size).unwrap();
                    self.messages.push(input[..size].to_vec());
                    input = &input[size..];
                    if last {
                        self.session.message_done();
                    }
                    replies::ok()
                }
                Ok(Action::BdatDiscard { size, reply }) => {
                    input = &input[usize::try_from(size).unwrap()..];
                    reply
                }
                Ok(Action::Rset) | Ok(Action::Noop) => replies::ok(),
                Ok(Action::Quit) => {
                    replies::closing("relay.test").encode(&mut out);
                    break;
                }
                Ok(other) => panic!("unexpected {other:?}"),
            };
            reply.encode(&mut out);
        }
        String::from_utf8(out).unwrap()
    }
}

fn replies_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Splits a transcript into the client's bytes and the expected server output.
fn transcript(t: &str) -> (Vec<u8>, String) {
    let mut client = Vec::new();
    let mut server = String::new();
    for line in t.lines().map(str::trim_start).filter(|l| !l.is_empty()) {
        if line == "C:" {
            client.extend_from_slice(b"\r\n");
        } else if let Some(c) = line.strip_prefix("C: ") {
            client.extend_from_slice(c.as_bytes());
            client.extend_from_slice(b"\r\n");
        } else if let Some(s) = line.strip_prefix("S: ") {
            server.push_str(s);
            server.push_str("\r\n");
        } else {
            panic!("bad transcript line {line:?}");
        }
    }
    (client, server)
}

fn play(t: &str, opts: ParseOptions) -> Engine {
    let (client, expected) = transcript(t);
    let mut engine = Engine::new(opts);
    let got = engine.run(&client);
    assert_eq!(
        got, expected,
        "\n--- got ---\n{got}\n--- expected ---\n{expected}"
    );
    engine
}

#[test]
fn pipelined_submission_from_a_scanner() {
    let engine = play(
        "S: 220 relay.test ESMTP
         C: EHLO scanner.lan
         S: 250-relay.test hello
         S: 250-PIPELINING
         S: 250-8BITMIME
         S: 250-ENHANCEDSTATUSCODES
         S: 250-DSN
         S: 250-SMTPUTF8
         S: 250-CHUNKING
         S: 250 SIZE 10000
         C: MAIL FROM:<scanner@contoso.com> SIZE=120 BODY=8BITMIME
         C: RCPT TO:<ann@contoso.com>
         C: RCPT TO:<bob@fabrikam.com>
         C: RCPT TO:<carl@contoso.com> NOTIFY=FAILURE
         C: DATA
         S: 250 2.0.0 OK
         S: 250 2.0.0 OK
         S: 550 5.7.1 Relaying denied
         S: 250 2.0.0 OK
         S: 354 Start mail input; end with <CRLF>.<CRLF>
         C: Subject: scan
         C:
         C: ..leading dot
         C: .
         S: 250 2.0.0 OK queued as 1
         C: QUIT
         S: 221 2.0.0 relay.test closing connection",
        ParseOptions::default(),
    );
    assert_eq!(
        engine.messages,
        [b"Subject: scan\r\n\r\n.leading dot\r\n".to_vec()]
    );
}

#[test]
fn errors_and_recovery() {
    play(
        "S: 220 relay.test ESMTP
         C: MAIL FROM:<a@contoso.com>
         S: 503 5.5.1 Bad sequence of commands: send HELO/EHLO first
         C: HELO old-printer
         S: 250 relay.test
         C: MAIL FROM:<a@contoso.com> SIZE=10
         S: 555 5.5.4 Unsupported parameter (ESMTP parameters need EHLO)
         C: MAIL FROM: <a@contoso.com>
         S: 501 5.1.7 bad sender address syntax: path must be in angle brackets
         C: FOO
         S: 500 5.5.2 command not recognized
         C: MAIL FROM:<a@contoso.com>
         S: 250 2.0.0 OK
         C: DATA
         S: 554 5.5.1 No valid recipients
         C: RCPT TO:<x@fabrikam.com>
         S: 550 5.7.1 Relaying denied
         C: DATA
         S: 554 5.5.1 No valid recipients
         C: RSET
         S: 250 2.0.0 OK
         C: QUIT
         S: 221 2.0.0 relay.test closing connection",
        ParseOptions::default(),
    );
}

#[test]
fn lenient_device_envelope() {
    let t = "S: 220 relay.test ESMTP
         C: HELO KM_C458
         S: 250 relay.test
         C: MAIL FROM: scanner@contoso.com
         S: 250 2.0.0 OK
         C: RCPT TO: <ann@contoso.com>  
         S: 250 2.0.0 OK
         C: DATA
         S: 354 Start mail input; end with <CRLF>.<CRLF>
         C: hi
         C: .
         S: 250 2.0.0 OK queued as 1";
    play(t, ParseOptions::default().lenient(true));
}

#[test]
fn size_limit_then_in_sync() {
    let body = "x".repeat(200);
    let mut t = String::from(
        "S: 220 relay.test ESMTP
         C: EHLO c.lan
         S: 250-relay.test hello
         S: 250-PIPELINING
         S: 250-8BITMIME
         S: 250-ENHANCEDSTATUSCODES
         S: 250-DSN
         S: 250-SMTPUTF8
         S: 250-CHUNKING
         S: 250 SIZE 10000
         C: MAIL FROM:<a@contoso.com> SIZE=20000
         S: 552 5.3.4 Message size exceeds fixed limit of 10000 octets
         C: MAIL FROM:<a@contoso.com>
         S: 250 2.0.0 OK
         C: RCPT TO:<b@contoso.com>
         S: 250 2.0.0 OK
         C: DATA
         S: 354 Start mail input; end with <CRLF>.<CRLF>
",
    );
    for _ in 0..60 {
        t.push_str(&format!("C: {body}\n"));
    }
    t.push_str(
        "C: .
         S: 552 5.3.4 message exceeds the maximum size of 10000 octets
         C: NOOP
         S: 250 2.0.0 OK",
    );
    let engine = play(&t, ParseOptions::default());
    assert!(engine.messages.is_empty());
}

#[test]
fn smuggling_attempt_is_one_message() {
    // `\n.\n` then a second envelope: all of it is one refused message, and the commands
    // inside it are never executed.
    let mut engine = Engine::new(ParseOptions::default());
    let input = b"EHLO x\r\nMAIL FROM:<a@contoso.com>\r\nRCPT TO:<b@contoso.com>\r\nDATA\r\n\
        hello\n.\nMAIL FROM:<ceo@contoso.com>\r\nRCPT TO:<b@contoso.com>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n";
    let out = engine.run(input);
    assert!(out.contains("550 5.6.11"), "{out}");
    assert_eq!(out.matches("354 ").count(), 1, "{out}");
    assert!(out.ends_with("221 2.0.0 relay.test closing connection\r\n"));
    assert!(engine.messages.is_empty());
}

#[test]
fn bdat_transfer() {
    let mut engine = Engine::new(ParseOptions::default());
    let input = b"EHLO x\r\nMAIL FROM:<a@contoso.com>\r\nRCPT TO:<b@contoso.com>\r\n\
        BDAT 5\r\nhel\r\nBDAT 4 LAST\r\nlo\r\nQUIT\r\n";
    let out = engine.run(input);
    assert!(
        out.ends_with(
            "250 2.0.0 OK\r\n250 2.0.0 OK\r\n221 2.0.0 relay.test closing connection\r\n"
        ),
        "{out}"
    );
    assert_eq!(engine.messages, [b"hel\r\n".to_vec(), b"lo\r\n".to_vec()]);
}

#[test]
fn line_too_long_resynchronises() {
    let mut engine = Engine::new(ParseOptions::default());
    let mut input = b"NOOP ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 700));
    input.extend_from_slice(b"\r\nNOOP\r\n");
    let out = engine.run(&input);
    assert_eq!(
        out,
        "220 relay.test ESMTP\r\n500 5.5.6 line too long\r\n250 2.0.0 OK\r\n"
    );
}

/// The client state machine against the server state machine, pipelined, no sockets.
#[test]
fn client_talks_to_server() {
    let mut engine = Engine::new(ParseOptions::default());
    let mut client = ClientSession::new(TlsPolicy::Opportunistic);
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    let mut send = |client: &mut ClientSession, cmd: Command<'static>, wire: &mut Vec<u8>| {
        client.sent(&cmd).unwrap();
        cmd.encode(wire);
        sent.push(cmd.kind());
    };
    // The greeting comes first; the toy engine writes it at the start of its output.
    let opts = ParseOptions::default();
    let cmd = |s: &str| Command::decode(s.as_bytes(), &opts).unwrap().0.into_owned();
    // Round 1: greeting, then EHLO.
    let greeting = Reply::decode(b"220 relay.test ESMTP\r\n").unwrap().0;
    assert_eq!(
        client.on_reply(greeting).unwrap().command,
        CommandKind::Greeting
    );
    send(&mut client, cmd("EHLO me.example\r\n"), &mut wire);
    let mut out = engine.run(&wire).into_bytes();
    let mut replies = Vec::new();
    let (_, mut at) = Reply::decode(&out).unwrap();
    while at < out.len() {
        let (r, n) = Reply::decode(&out[at..]).unwrap();
        replies.push(r.into_owned());
        at += n;
    }
    for r in replies.drain(..) {
        client.on_reply(r).unwrap();
    }
    assert!(client.can_pipeline());
    assert_eq!(client.capabilities().unwrap().size, Some(10_000));

    // Round 2: the envelope and DATA, pipelined; a fresh engine replays round 1 silently.
    wire.clear();
    send(&mut client, cmd("MAIL FROM:<a@contoso.com>\r\n"), &mut wire);
    send(&mut client, cmd("RCPT TO:<x@fabrikam.com>\r\n"), &mut wire);
    send(&mut client, cmd("RCPT TO:<y@contoso.com>\r\n"), &mut wire);
    send(&mut client, Command::Data, &mut wire);
    let mut full = b"EHLO me.example\r\n".to_vec();
    full.extend_from_slice(&wire);
    full.extend_from_slice(&postern_smtp::DataEncoder::encode_all(b"body"));
    out = Engine::new(ParseOptions::default()).run(&full).into_bytes();
    let mut at = 0;
    let mut events = Vec::new();
    let mut skip = 2; // greeting and EHLO, already handled
    while at < out.len() {
        let (r, n) = Reply::decode(&out[at..]).unwrap();
        at += n;
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let ev = client.on_reply(r.into_owned()).unwrap();
        events.push((ev.command, ev.recipient, ev.reply.code().get()));
    }
    assert_eq!(
        events,
        [
            (CommandKind::Mail, None, 250),
            (CommandKind::Rcpt, Some(0), 550),
            (CommandKind::Rcpt, Some(1), 250),
            (CommandKind::Data, None, 354),
            (CommandKind::Message, None, 250),
        ]
    );
    assert!(client.is_idle());
}
