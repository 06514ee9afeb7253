use super::*;
use crate::address::{Mailbox, Path};
use proptest::prelude::*;

fn strict() -> ParseOptions {
    ParseOptions::default()
}

fn lenient() -> ParseOptions {
    ParseOptions::default().lenient(true)
}

fn parse(s: &str) -> Result<Command<'_>, DecodeError> {
    Command::decode(s.as_bytes(), &strict()).map(|(c, n)| {
        assert_eq!(n, s.len());
        c
    })
}

fn kind_of(r: Result<Command<'_>, DecodeError>) -> InvalidKind {
    match r {
        Err(DecodeError::Invalid { kind, .. }) => kind,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn rfc5321_appendix_d_scenario() {
    // RFC 5321 Appendix D.1, client side.
    for line in [
        "EHLO bar.com\r\n",
        "MAIL FROM:<Smith@bar.com>\r\n",
        "RCPT TO:<Jones@foo.com>\r\n",
        "RCPT TO:<Green@foo.com>\r\n",
        "RCPT TO:<Brown@foo.com>\r\n",
        "DATA\r\n",
        "QUIT\r\n",
    ] {
        let cmd = parse(line).unwrap();
        assert_eq!(cmd.to_string(), line);
    }
    // D.3 relayed mail with a source route, dropped.
    let cmd = parse("RCPT TO:<@foo.com:Jones@XYZ.COM>\r\n").unwrap();
    assert_eq!(cmd.to_string(), "RCPT TO:<Jones@XYZ.COM>\r\n");
    // D.4 verifying and sending.
    assert_eq!(
        parse("VRFY Crispin\r\n").unwrap(),
        Command::Vrfy {
            target: "Crispin".into()
        }
    );
}

#[test]
fn verbs_are_case_insensitive() {
    assert!(matches!(
        parse("mail from:<a@b.c>\r\n"),
        Ok(Command::Mail { .. })
    ));
    assert!(matches!(
        parse("Rcpt To:<a@b.c>\r\n"),
        Ok(Command::Rcpt { .. })
    ));
    assert_eq!(parse("starttls\r\n"), Ok(Command::StartTls));
    assert_eq!(parse("QuIt\r\n"), Ok(Command::Quit));
    assert_eq!(parse("data\r\n"), Ok(Command::Data));
}

#[test]
fn every_command() {
    let cases: &[(&str, Command<'_>)] = &[
        (
            "HELO relay.example.org\r\n",
            Command::Helo {
                domain: Domain::Name("relay.example.org".into()),
            },
        ),
        (
            "EHLO [192.0.2.1]\r\n",
            Command::Ehlo {
                domain: Domain::Ipv4("192.0.2.1".parse().unwrap()),
            },
        ),
        (
            "EHLO [IPv6:2001:db8::5]\r\n",
            Command::Ehlo {
                domain: Domain::Ipv6("2001:db8::5".parse().unwrap()),
            },
        ),
        ("DATA\r\n", Command::Data),
        (
            "BDAT 86\r\n",
            Command::Bdat {
                size: 86,
                last: false,
            },
        ),
        (
            "BDAT 0 LAST\r\n",
            Command::Bdat {
                size: 0,
                last: true,
            },
        ),
        ("RSET\r\n", Command::Rset),
        (
            "EXPN staff\r\n",
            Command::Expn {
                list: "staff".into(),
            },
        ),
        ("HELP\r\n", Command::Help { topic: None }),
        (
            "HELP MAIL\r\n",
            Command::Help {
                topic: Some("MAIL".into()),
            },
        ),
        ("NOOP\r\n", Command::Noop { text: None }),
        (
            "NOOP hi there\r\n",
            Command::Noop {
                text: Some("hi there".into()),
            },
        ),
        ("QUIT\r\n", Command::Quit),
        ("STARTTLS\r\n", Command::StartTls),
        (
            "AUTH LOGIN\r\n",
            Command::Auth {
                mechanism: "LOGIN".into(),
                initial: None,
            },
        ),
        (
            "AUTH PLAIN AHRlc3QAdGVzdA==\r\n",
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some(AuthResponse::new("AHRlc3QAdGVzdA==")),
            },
        ),
        (
            "AUTH PLAIN =\r\n",
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some(AuthResponse::new("=")),
            },
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(&parse(line).unwrap(), expected, "{line:?}");
        assert_eq!(expected.to_string(), *line);
    }
    assert_eq!(
        parse("auth xoauth2\r\n").unwrap(),
        Command::Auth {
            mechanism: "XOAUTH2".into(),
            initial: None
        }
    );
}

#[test]
fn auth_response_is_redacted() {
    let cmd = parse("AUTH PLAIN AHVzZXIAc2VjcmV0\r\n").unwrap();
    let dbg = format!("{cmd:?}");
    assert!(!dbg.contains("AHVzZXIAc2VjcmV0"), "{dbg}");
    assert!(dbg.contains("redacted"));
}

#[test]
fn mail_parameters() {
    // RFC 1870, RFC 6152, RFC 3461, RFC 6531, RFC 4954 §5.
    let cmd = parse(
        "MAIL FROM:<ned@ymir.claremont.edu> SIZE=500000 BODY=8BITMIME RET=HDRS ENVID=QQ314159 AUTH=<> SMTPUTF8 X-FOO=bar X-FLAG\r\n",
    )
    .unwrap();
    let Command::Mail { from, params } = &cmd else {
        panic!()
    };
    assert_eq!(from.to_string(), "<ned@ymir.claremont.edu>");
    assert_eq!(params.size, Some(500_000));
    assert_eq!(params.body, Some(Body::EightBitMime));
    assert_eq!(params.ret, Some(Ret::Headers));
    assert_eq!(params.envid.as_deref(), Some("QQ314159"));
    assert_eq!(params.auth.as_deref(), Some("<>"));
    assert!(params.smtputf8);
    assert_eq!(
        params.other,
        [
            Param::new("X-FOO", Some("bar".into())),
            Param::new("X-FLAG", None)
        ]
    );
    let wire = cmd.to_string();
    assert_eq!(parse(&wire).unwrap(), cmd);

    let cmd = parse("MAIL FROM:<> BODY=binarymime\r\n").unwrap();
    assert!(matches!(
        cmd,
        Command::Mail {
            from: Path::Null,
            params: MailParams {
                body: Some(Body::BinaryMime),
                ..
            }
        }
    ));
}

#[test]
fn rcpt_parameters() {
    // RFC 3461 §4 examples.
    let cmd = parse("RCPT TO:<Dana@Ivory.example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Dana@Ivory.example.org\r\n").unwrap();
    let Command::Rcpt { params, .. } = &cmd else {
        panic!()
    };
    assert_eq!(
        params.notify,
        Some(Notify {
            success: true,
            failure: true,
            delay: false
        })
    );
    let orcpt = params.orcpt.as_ref().unwrap();
    assert_eq!(
        (orcpt.addr_type.as_ref(), orcpt.addr.as_ref()),
        ("rfc822", "Dana@Ivory.example.org")
    );
    let cmd = parse("RCPT TO:<a@b.c> NOTIFY=NEVER\r\n").unwrap();
    let Command::Rcpt { params, .. } = &cmd else {
        panic!()
    };
    assert!(params.notify.unwrap().is_never());
    assert_eq!(cmd.to_string(), "RCPT TO:<a@b.c> NOTIFY=NEVER\r\n");
    assert!(matches!(
        kind_of(parse("RCPT TO:<a@b.c> NOTIFY=NEVER,SUCCESS\r\n")),
        InvalidKind::BadParameter(_)
    ));
    assert!(matches!(
        kind_of(parse("RCPT TO:<a@b.c> NOTIFY=SUCCESS,SUCCESS\r\n")),
        InvalidKind::BadParameter(_)
    ));
    assert!(matches!(
        kind_of(parse("RCPT TO:<a@b.c> ORCPT=rfc822\r\n")),
        InvalidKind::BadParameter(_)
    ));
    assert_eq!(
        parse("RCPT TO:<Postmaster>\r\n").unwrap(),
        Command::Rcpt {
            to: Path::Postmaster,
            params: RcptParams::default()
        }
    );
}

#[test]
fn parameter_errors_map_to_replies() {
    let cases = [
        ("MAIL FROM:<a@b.c> SIZE=abc\r\n", 501, "5.5.4"),
        ("MAIL FROM:<a@b.c> SIZE=1 SIZE=2\r\n", 501, "5.5.4"),
        ("MAIL FROM:<a@b.c> BODY=9BIT\r\n", 501, "5.5.4"),
        ("MAIL FROM:<a@b.c> SMTPUTF8=yes\r\n", 501, "5.5.4"),
        ("MAIL FROM:<a@b.c> ENVID=a+b\r\n", 501, "5.5.4"),
        ("MAIL FROM:a@b.c\r\n", 501, "5.1.7"),
        ("MAIL FROM: <a@b.c>\r\n", 501, "5.1.7"),
        ("MAIL FROM:<a@b.c>  SIZE=1\r\n", 501, "5.5.4"),
        ("MAIL FROM:<a@b.c> \r\n", 501, "5.5.4"),
        ("RCPT TO:<>\r\n", 501, "5.1.3"),
        ("RCPT TO:<a@>\r\n", 501, "5.1.3"),
        ("MAIL TO:<a@b.c>\r\n", 501, "5.5.4"),
        ("FOO bar\r\n", 500, "5.5.2"),
        ("MAILFROM:<a@b.c>\r\n", 500, "5.5.2"),
        ("DATA now\r\n", 501, "5.5.4"),
        ("BDAT x\r\n", 501, "5.5.4"),
        ("BDAT 10 FIRST\r\n", 501, "5.5.4"),
        ("HELO\r\n", 501, "5.5.4"),
        ("EHLO printer_01\r\n", 501, "5.5.4"),
        ("AUTH\r\n", 501, "5.5.4"),
        ("AUTH PLAIN a b\r\n", 501, "5.5.4"),
        ("NOOP\0\r\n", 500, "5.5.2"),
    ];
    for (line, code, enhanced) in cases {
        let err = parse(line).unwrap_err();
        let reply = err.reply();
        assert_eq!(reply.code().get(), code, "{line:?}: {err}");
        assert_eq!(reply.enhanced().unwrap().to_string(), enhanced, "{line:?}");
        let DecodeError::Invalid { consumed, .. } = err else {
            panic!("{line:?}")
        };
        assert_eq!(consumed, line.len());
    }
    let long = format!("NOOP {}\r\n", "x".repeat(600));
    let err = parse(&long).unwrap_err();
    assert_eq!(err, DecodeError::TooLong { max: 512 });
    assert_eq!(err.reply().to_string(), "500 5.5.6 line too long\r\n");
    let opts = strict().max_line(1024);
    assert!(Command::decode(long.as_bytes(), &opts).is_ok());
}

#[test]
fn strict_versus_lenient_device_envelopes() {
    // Envelopes seen from real printers, scanners and monitoring tools.
    let device_lines = [
        (
            "MAIL FROM: <scanner@contoso.com>\r\n",
            "MAIL FROM:<scanner@contoso.com>\r\n",
        ),
        (
            "MAIL FROM:scanner@contoso.com\r\n",
            "MAIL FROM:<scanner@contoso.com>\r\n",
        ),
        (
            "MAIL FROM: scanner@contoso.com SIZE=1000\r\n",
            "MAIL FROM:<scanner@contoso.com> SIZE=1000\r\n",
        ),
        (
            "RCPT TO: <reception@contoso.com>  \r\n",
            "RCPT TO:<reception@contoso.com>\r\n",
        ),
        (
            "MAIL FROM:<mfp@contoso.com>   SIZE=52311  \r\n",
            "MAIL FROM:<mfp@contoso.com> SIZE=52311\r\n",
        ),
        ("HELO printer_01\r\n", "HELO printer_01\r\n"),
        ("EHLO [printer]\r\n", "EHLO [printer]\r\n"),
        ("HELO KM-C458 ready\r\n", "HELO KM-C458\r\n"),
        ("QUIT \r\n", "QUIT\r\n"),
        ("EHLO \tprinter\r\n", "EHLO printer\r\n"),
        (
            "RCPT TO:<a..b@docomo.ne.jp>\r\n",
            "RCPT TO:<a..b@docomo.ne.jp>\r\n",
        ),
        ("DATA\n", "DATA\r\n"),
    ];
    for (line, canonical) in device_lines {
        assert!(
            Command::decode(line.as_bytes(), &strict()).is_err(),
            "strict accepted {line:?}"
        );
        let (cmd, n) = Command::decode(line.as_bytes(), &lenient()).unwrap();
        assert_eq!(n, line.len());
        assert_eq!(cmd.to_string(), canonical);
    }
    // An unbracketed IP is a (numeric) domain name by RFC 5321's grammar.
    assert_eq!(
        parse("EHLO 192.168.1.20\r\n").unwrap().to_string(),
        "EHLO 192.168.1.20\r\n"
    );
    // Strict and well-formed lines parse the same either way.
    let line = b"MAIL FROM:<a@b.c> SIZE=1\r\n";
    assert_eq!(
        Command::decode(line, &strict()),
        Command::decode(line, &lenient())
    );
}

#[test]
fn smtputf8_addresses() {
    // RFC 6531 / RFC 6530 examples.
    let cmd = parse("MAIL FROM:<用户@例子.广告> SMTPUTF8\r\n").unwrap();
    let Command::Mail { from, params } = &cmd else {
        panic!()
    };
    assert!(!from.is_ascii() && params.smtputf8);
    assert!(parse("RCPT TO:<θσερ@εχαμπλε.ψομ>\r\n").is_ok());
    assert!(parse("RCPT TO:<\"ü x\"@example.com>\r\n").is_ok());
    let off = strict().smtputf8(false);
    let err = Command::decode("RCPT TO:<jöran@example.com>\r\n".as_bytes(), &off).unwrap_err();
    assert_eq!(err.reply().code().get(), 553);
    assert_eq!(err.reply().enhanced().unwrap().to_string(), "5.6.7");
}

#[test]
fn incomplete_and_pipelined() {
    let opts = strict();
    assert_eq!(
        Command::decode(b"MAIL FROM:<a@b", &opts),
        Err(DecodeError::Incomplete)
    );
    assert_eq!(Command::decode(b"", &opts), Err(DecodeError::Incomplete));
    let input = b"RSET\r\nNOOP\r\n";
    let (c, n) = Command::decode(input, &opts).unwrap();
    assert_eq!((c, n), (Command::Rset, 6));
    let (c, _) = Command::decode(&input[n..], &opts).unwrap();
    assert_eq!(c, Command::Noop { text: None });
}

#[test]
fn into_owned_outlives_buffer() {
    let owned = {
        let buf = b"MAIL FROM:<x@y.z> ENVID=abc X-A=1\r\n".to_vec();
        Command::decode(&buf, &strict()).unwrap().0.into_owned()
    };
    assert!(owned.to_string().starts_with("MAIL FROM:<x@y.z>"));
}

// ---------------------------------------------------------------------------------------------
// Property tests: format -> parse is the identity.

fn atom() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,8}"
}

fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(atom(), 1..3).prop_map(|v| v.join(".")),
        "[ a-zA-Z0-9@.,]{0,10}".prop_map(|s| format!("\"{s}\"")),
        "[a-zé]{1,5}ü".prop_map(|s| s),
    ]
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?"
}

fn domain_s() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(label(), 1..4).prop_map(|v| v.join(".")),
        any::<[u8; 4]>().prop_map(|a| format!("[{}]", std::net::Ipv4Addr::from(a))),
        any::<[u16; 8]>().prop_map(|a| format!("[IPv6:{}]", std::net::Ipv6Addr::from(a))),
        "[a-z]{1,4}:[!-Z^-~]{1,8}".prop_map(|s| format!("[x-{s}]")),
    ]
}

fn mailbox_s() -> impl Strategy<Value = String> {
    (local_part(), domain_s()).prop_map(|(l, d)| format!("{l}@{d}"))
}

fn xtext_s() -> impl Strategy<Value = String> {
    "[!-~]{1,12}".prop_map(|s| xtext::encode(&s).into_owned())
}

fn mail_params() -> impl Strategy<Value = MailParams<'static>> {
    (
        prop::option::of(any::<u64>()),
        prop::option::of(prop::sample::select(vec![
            Body::SevenBit,
            Body::EightBitMime,
            Body::BinaryMime,
        ])),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![Ret::Full, Ret::Headers])),
        prop::option::of(xtext_s()),
        prop::option::of(prop_oneof![Just("<>".to_owned()), xtext_s()]),
        prop::collection::vec(("X-[A-Z0-9]{1,6}", prop::option::of("[!-<>-~]{1,8}")), 0..3),
    )
        .prop_map(
            |(size, body, smtputf8, ret, envid, auth, other)| MailParams {
                size,
                body,
                smtputf8,
                ret,
                envid: envid.map(Cow::Owned),
                auth: auth.map(Cow::Owned),
                other: other
                    .into_iter()
                    .map(|(k, v)| Param::new(k, v.map(Cow::Owned)))
                    .collect(),
            },
        )
}

fn rcpt_params() -> impl Strategy<Value = RcptParams<'static>> {
    (
        prop::option::of((any::<bool>(), any::<bool>(), any::<bool>())),
        prop::option::of(("rfc822|utf-8", xtext_s())),
        prop::collection::vec(("X-[A-Z0-9]{1,6}", prop::option::of("[!-<>-~]{1,8}")), 0..3),
    )
        .prop_map(|(notify, orcpt, other)| RcptParams {
            notify: notify.map(|(success, failure, delay)| Notify {
                success,
                failure,
                delay,
            }),
            orcpt: orcpt.map(|(t, a)| Orcpt {
                addr_type: Cow::Owned(t),
                addr: Cow::Owned(a),
            }),
            other: other
                .into_iter()
                .map(|(k, v)| Param::new(k, v.map(Cow::Owned)))
                .collect(),
        })
}

fn owned_mailbox(s: &str) -> Mailbox<'static> {
    Mailbox::parse(s, &ParseOptions::default())
        .unwrap()
        .into_owned()
}

fn owned_domain(s: &str) -> Domain<'static> {
    Domain::parse(s, &ParseOptions::default())
        .unwrap()
        .into_owned()
}

fn command() -> impl Strategy<Value = Command<'static>> {
    let text = "[!-~]([ -~]{0,20}[!-~])?";
    prop_oneof![
        domain_s().prop_map(|d| Command::Helo {
            domain: owned_domain(&d)
        }),
        domain_s().prop_map(|d| Command::Ehlo {
            domain: owned_domain(&d)
        }),
        (prop::option::of(mailbox_s()), mail_params()).prop_map(|(m, params)| Command::Mail {
            from: m.map_or(Path::Null, |m| Path::Mailbox(owned_mailbox(&m))),
            params
        }),
        (prop::option::of(mailbox_s()), rcpt_params()).prop_map(|(m, params)| Command::Rcpt {
            to: m.map_or(Path::Postmaster, |m| Path::Mailbox(owned_mailbox(&m))),
            params
        }),
        Just(Command::Data),
        (any::<u64>(), any::<bool>()).prop_map(|(size, last)| Command::Bdat { size, last }),
        Just(Command::Rset),
        text.prop_map(|t| Command::Vrfy { target: t.into() }),
        text.prop_map(|t| Command::Expn { list: t.into() }),
        prop::option::of(text).prop_map(|t| Command::Help {
            topic: t.map(Cow::Owned)
        }),
        prop::option::of(text).prop_map(|t| Command::Noop {
            text: t.map(Cow::Owned)
        }),
        Just(Command::Quit),
        Just(Command::StartTls),
        (
            "[A-Z0-9_-]{1,20}",
            prop::option::of("=|[A-Za-z0-9+/]{1,40}={0,2}")
        )
            .prop_map(|(mechanism, initial)| Command::Auth {
                mechanism: mechanism.into(),
                initial: initial.map(AuthResponse::new)
            }),
    ]
}

proptest! {
    #[test]
    fn format_then_parse_is_identity(cmd in command()) {
        let wire = cmd.to_string();
        let mut encoded = Vec::new();
        cmd.encode(&mut encoded);
        prop_assert_eq!(wire.as_bytes(), &encoded[..]);
        let opts = ParseOptions::default().max_line(4096);
        let (back, n) = Command::decode(wire.as_bytes(), &opts)
            .map_err(|e| TestCaseError::fail(format!("{wire:?}: {e}")))?;
        prop_assert_eq!(n, wire.len());
        prop_assert_eq!(&back, &cmd);
        // Lenient mode reads canonical output the same way.
        let lenient = opts.lenient(true);
        let (back, _) = Command::decode(wire.as_bytes(), &lenient).unwrap();
        prop_assert_eq!(back, cmd);
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600), lenient in any::<bool>()) {
        let opts = ParseOptions::default().lenient(lenient);
        match Command::decode(&bytes, &opts) {
            Ok((_, n)) => prop_assert!(n <= bytes.len()),
            Err(DecodeError::Invalid { consumed, .. }) => prop_assert!(consumed <= bytes.len()),
            Err(_) => {}
        }
    }
}
