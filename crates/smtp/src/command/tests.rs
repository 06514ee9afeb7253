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
    assert_eq!(params.envid(), Some("QQ314159"));
    assert_eq!(params.auth(), Some("<>"));
    assert!(params.smtputf8);
    assert_eq!(
        params.other(),
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
        .prop_map(|(size, body, smtputf8, ret, envid, auth, other)| {
            let mut p = MailParams {
                size,
                body,
                smtputf8,
                ret,
                ..MailParams::default()
            };
            p.set_envid(envid.map(Cow::Owned));
            p.set_auth(auth.map(Cow::Owned));
            for (k, v) in other {
                p.push_other(Param::new(k, v.map(Cow::Owned)));
            }
            p
        })
}

fn rcpt_params() -> impl Strategy<Value = RcptParams<'static>> {
    (
        prop::option::of((any::<bool>(), any::<bool>(), any::<bool>())),
        prop::option::of(("rfc822|utf-8", xtext_s())),
        prop::collection::vec(("X-[A-Z0-9]{1,6}", prop::option::of("[!-<>-~]{1,8}")), 0..3),
    )
        .prop_map(|(notify, orcpt, other)| {
            let mut p = RcptParams {
                notify: notify.map(|(success, failure, delay)| Notify {
                    success,
                    failure,
                    delay,
                }),
                orcpt: orcpt.map(|(t, a)| Orcpt {
                    addr_type: Cow::Owned(t),
                    addr: Cow::Owned(a),
                }),
                ..RcptParams::default()
            };
            for (k, v) in other {
                p.push_other(Param::new(k, v.map(Cow::Owned)));
            }
            p
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

// ---------------------------------------------------------------------------------------------
// The fast path (`fast.rs`) against the reference decoder: the same answer on every input.

/// The fast path alone: `None` where it hands the input to the general grammar.
fn fast_only<'a>(
    input: &'a [u8],
    opts: &ParseOptions,
) -> Option<Result<(Command<'a>, usize), DecodeError>> {
    const MARK: DecodeError = DecodeError::TooLong { max: usize::MAX };
    let r = fast::decode_with(input, opts, |_, _| Err(MARK));
    (r != Err(MARK)).then_some(r)
}

/// `decode` (fast path and framing included) answers exactly as `decode_reference`, and the
/// fast path never answers anything but `Ok`.
fn same_as_reference(input: &[u8], opts: &ParseOptions) -> Result<(), TestCaseError> {
    let reference = Command::decode_reference(input, opts);
    let shown = String::from_utf8_lossy(input);
    prop_assert_eq!(
        &Command::decode(input, opts),
        &reference,
        "{:?} {:?}",
        shown,
        opts
    );
    if let Some(fast) = fast_only(input, opts) {
        prop_assert!(
            fast.is_ok(),
            "{:?}: the fast path answered {:?}",
            shown,
            fast
        );
        prop_assert_eq!(&fast, &reference, "{:?} {:?}", shown, opts);
    }
    Ok(())
}

#[test]
fn fast_path_takes_the_everyday_shapes() {
    let lenient = lenient();
    for (line, opts) in [
        (&b"MAIL FROM:<scanner@contoso.com> SIZE=52311\r\n"[..], &strict()),
        (b"MAIL FROM:<scanner@contoso.com>\r\n", &strict()),
        (b"mail from:<Scan.To-Mail+x@mail.contoso.com> size=1 body=8bitmime smtputf8\r\n", &strict()),
        (b"MAIL FROM:<> SIZE=0 RET=HDRS ENVID=QQ314159 AUTH=<>\r\n", &strict()),
        (b"MAIL FROM:<a@b> AUTH=e+40x.example BODY=BINARYMIME\r\nRCPT TO:<c@d>\r\n", &strict()),
        (b"RCPT TO:<reception@contoso.com>\r\n", &strict()),
        (
            b"RCPT TO:<reception@contoso.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;reception@contoso.com\r\n",
            &strict(),
        ),
        (b"RCPT TO:<a@b> NOTIFY=never\r\n", &strict()),
        // What devices send, in lenient mode.
        (b"MAIL FROM: scanner@contoso.com  \n", &lenient),
        (b"MAIL  FROM:  <scanner@contoso.com>   SIZE=1 \t\r\n", &lenient),
        (b"RCPT TO:someone@contoso.com\r\n", &lenient),
    ] {
        let fast = fast_only(line, opts);
        assert!(matches!(fast, Some(Ok(_))), "{:?}: {fast:?}", String::from_utf8_lossy(line));
        assert_eq!(fast.unwrap(), Command::decode_reference(line, opts));
    }
}

#[test]
fn fast_path_declines_the_rest() {
    let lenient = lenient();
    for (line, opts) in [
        // Not MAIL or RCPT, or not complete.
        (&b"DATA\r\n"[..], &strict()),
        (b"MAIL FROM:<a@b>", &strict()),
        (b"MAIL FROM:<a@b>\r", &strict()),
        // Shapes the general grammar takes.
        (b"MAIL FROM:<\"scan to\"@contoso.com>\r\n", &strict()),
        (b"MAIL FROM:<a@[192.0.2.1]>\r\n", &strict()),
        (b"MAIL FROM:<j\xc3\xb6ran@b\xc3\xbccher.de>\r\n", &strict()),
        (b"RCPT TO:<@relay.example:a@b>\r\n", &strict()),
        (b"RCPT TO:<Postmaster>\r\n", &strict()),
        (b"MAIL FROM:<a@b> X-UNKNOWN=1\r\n", &strict()),
        (b"MAIL FROM:<a..b@c>\r\n", &lenient),
        (b"MAIL FROM:<a@printer_01>\r\n", &lenient),
        // Errors, all of them the general grammar's to word.
        (b"MAIL FROM:<a@b> SIZE=1 SIZE=2\r\n", &strict()),
        (b"MAIL FROM:<a@b> SIZE=99999999999999999999\r\n", &strict()),
        (b"MAIL FROM:<a@b>\n", &strict()),
        (b"MAIL FROM:<a@b> \r\n", &strict()),
        (b"MAIL FROM: <a@b>\r\n", &strict()),
        (b"MAIL FROM:<a@b>\r\n", &strict().max_line(16)),
        (b"RCPT TO:<>\r\n", &strict()),
    ] {
        assert_eq!(
            fast_only(line, opts),
            None,
            "{:?}",
            String::from_utf8_lossy(line)
        );
        // And `decode` still gives the reference's answer.
        assert_eq!(
            Command::decode(line, opts),
            Command::decode_reference(line, opts),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// Each limit the fast path checks, just inside and just outside it: the same answer as the
/// reference, taken by the fast path only when inside.
#[test]
fn fast_path_agrees_at_the_limits() {
    let label63 = "a".repeat(63);
    // A domain name of `n` octets: labels of 62 letters, then a shorter one.
    let domain = |n: usize| {
        let mut d = String::new();
        while n - d.len() > 63 {
            d.push_str(&"d".repeat(62));
            d.push('.');
        }
        d.push_str(&"d".repeat(n - d.len()));
        d
    };
    // Each line, and whether the fast path takes it in strict and in lenient mode.
    let cases: Vec<(String, [bool; 2])> = vec![
        (format!("MAIL FROM:<{}@b>\r\n", "a".repeat(64)), [true; 2]),
        (format!("MAIL FROM:<{}@b>\r\n", "a".repeat(65)), [false; 2]),
        (format!("MAIL FROM:<a@{label63}.com>\r\n"), [true; 2]),
        (format!("MAIL FROM:<a@{label63}a.com>\r\n"), [false; 2]),
        // The path, brackets included, at 256 and 257 octets.
        (
            format!("MAIL FROM:<{}@{}>\r\n", "a".repeat(60), domain(193)),
            [true; 2],
        ),
        (
            format!("MAIL FROM:<{}@{}>\r\n", "a".repeat(60), domain(194)),
            [false; 2],
        ),
        (
            format!("MAIL FROM:{}@{}\r\n", "a".repeat(60), domain(255)),
            [false, true],
        ),
        (
            format!("MAIL FROM:{}@{}\r\n", "a".repeat(60), domain(256)),
            [false; 2],
        ),
        (format!("MAIL FROM:<a@b> SIZE={}\r\n", u64::MAX), [true; 2]),
        (
            format!("MAIL FROM:<a@b> SIZE={}\r\n", u128::from(u64::MAX) + 1),
            [false; 2],
        ),
        (
            format!("MAIL FROM:<a@b> SIZE=0{}\r\n", u64::MAX),
            [false; 2],
        ),
        (
            format!("MAIL FROM:<a@b> SIZE=00{}\r\n", "1".repeat(18)),
            [true; 2],
        ),
        (
            format!("MAIL FROM:<a@b> ENVID={}\r\n", "e".repeat(100)),
            [true; 2],
        ),
        (
            format!("MAIL FROM:<a@b> ENVID={}\r\n", "e".repeat(101)),
            [false; 2],
        ),
        (
            format!("RCPT TO:<a@b> ORCPT=rfc822;{}\r\n", "o".repeat(493)),
            [true; 2],
        ),
        (
            format!("RCPT TO:<a@b> ORCPT=rfc822;{}\r\n", "o".repeat(494)),
            [false; 2],
        ),
    ];
    for (line, takes) in &cases {
        let input = line.as_bytes();
        for lenient in [false, true] {
            let opts = ParseOptions::default().max_line(4096).lenient(lenient);
            let fast = fast_only(input, &opts);
            assert_eq!(
                fast.is_some(),
                takes[usize::from(lenient)],
                "{line:?} {opts:?}"
            );
            if let Some(fast) = fast {
                assert_eq!(fast, Command::decode_reference(input, &opts), "{line:?}");
            }
            assert_eq!(
                Command::decode(input, &opts),
                Command::decode_reference(input, &opts),
                "{line:?} {opts:?}"
            );
        }
        // The line limit: a line of exactly `max_line` octets is taken, one more is too long.
        let exact = ParseOptions::default().max_line(line.len()).lenient(true);
        let short = exact.clone().max_line(line.len() - 1);
        assert_eq!(fast_only(input, &exact).is_some(), takes[1], "{line:?}");
        assert_eq!(fast_only(input, &short), None, "{line:?}");
        assert!(matches!(
            Command::decode(input, &short),
            Err(DecodeError::TooLong { .. })
        ));
    }
}

/// Bytes from a past `smtp_command` fuzz crash (`fuzz/artifacts/smtp_command/crash-2c5de6a3...`,
/// a pipelined batch of a bad MAIL and four EHLOs with odd address literals). It no longer
/// crashes; decoded as the fuzz target does, both modes give these answers, and every decoded
/// command formats to a line that decodes back to it.
#[test]
fn fuzz_crash_2c5de6a3_regression() {
    const CRASH: &[u8] = b"MAIL FROM:Pv60:d:P [0]>\r\nEHLO [1!v60:d:0:@]>\r\nEHLO \t0]>]>\r\n\
        EHLO [1!v60]\r\nEHLO [1.1]\r\n";
    let bad = |consumed, kind| Err::<Command<'_>, _>(DecodeError::Invalid { consumed, kind });
    let ehlo = |name: &'static str| {
        Ok(Command::Ehlo {
            domain: Domain::Name(Cow::Borrowed(name)),
        })
    };
    let strict_answers = [
        bad(
            25,
            InvalidKind::BadReversePath("path must be in angle brackets"),
        ),
        bad(21, InvalidKind::BadArgument("bad address literal")),
        bad(13, InvalidKind::Syntax("control character in command")),
        bad(14, InvalidKind::BadArgument("bad address literal")),
        bad(12, InvalidKind::BadArgument("bad address literal")),
    ];
    let lenient_answers = [
        bad(25, InvalidKind::BadReversePath("unexpected character")),
        ehlo("[1!v60:d:0:@]>"),
        ehlo("0]>]>"),
        ehlo("[1!v60]"),
        ehlo("[1.1]"),
    ];
    for (opts, expected) in [(strict(), strict_answers), (lenient(), lenient_answers)] {
        let mut at = 0;
        let mut answers = Vec::new();
        while at < CRASH.len() {
            let (answer, used) = match Command::decode(&CRASH[at..], &opts) {
                Ok((cmd, used)) => {
                    let wire = cmd.to_string();
                    let (back, n) = Command::decode(wire.as_bytes(), &opts).unwrap();
                    assert_eq!((&back, n), (&cmd, wire.len()), "{wire:?}");
                    (Ok(cmd), used)
                }
                Err(DecodeError::Invalid { consumed, kind }) => (bad(consumed, kind), consumed),
                Err(e) => panic!("at {at}: {e:?}"),
            };
            answers.push(answer);
            at += used;
        }
        assert_eq!(answers, expected, "lenient: {}", opts.lenient);
    }
}

/// Pieces of MAIL and RCPT lines. Each is well-formed about nine times in ten, and otherwise
/// wrong in one way, often just past a limit, so that many lines hold exactly one fault.
fn any_verb_s(verb: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        12 => any_case(verb),
        1 => prop::sample::select(vec![
            "MAIL  FROM:", "MAIL FROM: ", "RCPT TO:  ", "MAIL FROM", "MAIL TO:", "RCPT FROM:",
            "MAIL", "MAILFROM:", "NOOP ", "DATA", " MAIL FROM:", "MAIL\tFROM:",
        ])
        .prop_map(str::to_owned),
    ]
}

/// `s` with the case of each letter chosen at random.
fn any_case(s: &'static str) -> impl Strategy<Value = String> {
    any::<u64>().prop_map(move |bits| {
        s.chars()
            .enumerate()
            .map(|(i, c)| {
                if bits >> (i % 64) & 1 == 1 {
                    c.to_ascii_lowercase()
                } else {
                    c
                }
            })
            .collect()
    })
}

fn any_local_s() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => prop::collection::vec("[a-zA-Z0-9]{1,8}|[!#$%&'*+/=?^_`{|}~-]{1,3}", 1..4)
            .prop_map(|v| v.join(".")),
        2 => "[a-z]{62,64}",
        1 => "[a-z]{65,66}",
        1 => "([a-z]{30}\\.){2}[a-z]{1,4}",
        1 => "[a-z.]{0,6}",
        1 => "\"[a-z @]{0,5}\"",
        1 => "[a-zé]{1,4}",
    ]
}

fn any_label_s() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => "[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?",
        2 => "[a-z]{62,63}",
        1 => "[a-z0-9-]{1,5}",
        1 => "[a-z0-9_]{1,5}",
        1 => "[a-z]{64,65}",
        1 => "[a-zü]{1,4}",
    ]
}

fn any_domain_s() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::collection::vec(any_label_s(), 1..4).prop_map(|v| v.join(".")),
        // Near the 255-octet limit of a domain, and the 256-octet limit of a path.
        2 => (prop::collection::vec("[a-z]{61,63}", 3..5), "(\\.[a-z]{1,3})?")
            .prop_map(|(v, tail)| v.join(".") + &tail),
        1 => prop::sample::select(vec!["[192.0.2.1]", "a..b", "a.b.", ".a", "a.-b", "a-.b"])
            .prop_map(str::to_owned),
    ]
}

fn any_path_s() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => (any_local_s(), any_domain_s()).prop_map(|(l, d)| format!("<{l}@{d}>")),
        2 => (any_local_s(), any_domain_s()).prop_map(|(l, d)| format!("{l}@{d}")),
        1 => Just("<>".to_owned()),
        1 => prop::sample::select(vec!["<Postmaster>", "<postmaster@a.b>", "<a@b", "a@b>", "<@b>"])
            .prop_map(str::to_owned),
        1 => (any_local_s(), any_domain_s()).prop_map(|(l, d)| format!("<@relay.example:{l}@{d}>")),
    ]
}

/// A `keyword[=value]` word: each known parameter with good and bad values, unknown and
/// malformed ones; mostly MAIL's or mostly RCPT's.
fn any_param_s(mail: bool) -> impl Strategy<Value = String> {
    let (m, r) = if mail { (4, 1) } else { (1, 4) };
    fn kv(k: &'static str, v: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        (any_case(k), prop::option::weighted(0.95, v)).prop_map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k,
        })
    }
    let pick = |v: Vec<&'static str>| prop::sample::select(v).prop_map(str::to_owned);
    let xtext = "([!-*,-<>-~]|\\+[0-9A-F]{2}){1,10}";
    prop_oneof![
        3 * m => kv("SIZE", prop_oneof![
            8 => "[0-9]{1,6}",
            1 => "[0-9]{19,21}",
            1 => pick(vec!["18446744073709551615", "18446744073709551616", "1a", "+1"]),
        ]),
        2 * m => kv("BODY", pick(vec!["7BIT", "8bitmime", "BinaryMime", "8BitMime", "9BIT"])),
        2 * m => prop_oneof![9 => any_case("SMTPUTF8"), 1 => Just("SMTPUTF8=x".to_owned())],
        m => kv("RET", pick(vec!["FULL", "hdrs", "Full", "NONE"])),
        m => kv("ENVID", prop_oneof![9 => xtext, 1 => "[a-z]{100,101}|a\\+2b"]),
        m => kv("AUTH", prop_oneof![
            4 => Just("<>".to_owned()),
            4 => xtext,
            1 => pick(vec!["<x>", "a+4", "a+4g"]),
        ]),
        4 * r => kv("NOTIFY", prop_oneof![
            4 => prop::sample::subsequence(vec!["SUCCESS", "failure", "Delay"], 1..=3)
                .prop_map(|v| v.join(",")),
            2 => any_case("NEVER"),
            1 => prop::collection::vec(
                    pick(vec!["SUCCESS", "FAILURE", "DELAY", "NEVER", "", "SUCCES"]), 1..4)
                .prop_map(|v| v.join(",")),
            1 => pick(vec!["SUCCESS,SUCCESS", "failure,Delay,FAILURE", "DELAY,delay"]),
        ]),
        4 * r => kv("ORCPT", prop_oneof![
            8 => (pick(vec!["rfc822", "UTF-8", "x1"]), xtext).prop_map(|(t, a)| format!("{t};{a}")),
            2 => "rfc822;[a-z]{492,494}",
            1 => pick(vec!["rfc822;", ";a@b", "-x;a", "x_y;a", "rfc822", "rfc822;a+4"]),
        ]),
        1 => kv("X-FOO", "[!-<>-~]{1,5}"),
        1 => pick(vec!["-X", "", "SIZ", "a.b", "SIZE==1", "=1", "SIZE=", "BODY=8BITMIME="]),
    ]
}

fn mail_rcpt_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => line_s("MAIL FROM:", true),
        2 => line_s("RCPT TO:", false),
        1 => bare_verb_line(),
    ]
}

/// The verbs `bare_verb` reads, and their near misses.
fn bare_verb_line() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![
            "DATA",
            "RSET",
            "QUIT",
            "NOOP",
            "HELP",
            "STARTTLS",
            "EHLO",
            "MAIL",
            "DAT",
            "DATAX",
            "STARTTL",
            "STARTTLSX",
            "BDAT",
        ])
        .prop_flat_map(any_case),
        prop::sample::select(vec!["", "", " ", "  ", " x", "\t", " \t"]),
        prop::sample::select(vec!["\r\n", "\r\n", "\n", "", "\r\nQUIT\r\n"]),
    )
        .prop_map(|(verb, tail, end)| format!("{verb}{tail}{end}").into_bytes())
}

fn line_s(verb: &'static str, mail: bool) -> impl Strategy<Value = Vec<u8>> {
    (
        any_verb_s(verb),
        any_path_s(),
        prop::collection::vec(
            (
                prop_oneof![9 => Just(" "), 1 => Just("  ")],
                any_param_s(mail),
            ),
            0..4,
        ),
        prop_oneof![12 => Just(""), 1 => Just(" "), 1 => Just("\t"), 1 => Just(" \t ")],
        prop_oneof![
            12 => Just("\r\n"),
            2 => Just("\r\nRSET\r\n"),
            1 => Just("\n"),
            1 => Just("\r"),
            1 => Just(""),
            1 => Just("\r\r\n"),
            1 => Just("\r \n"),
        ],
    )
        .prop_map(|(verb, path, params, trailing, end)| {
            let mut line = format!("{verb}{path}");
            for (sep, p) in params {
                line.push_str(sep);
                line.push_str(&p);
            }
            line.push_str(trailing);
            line.push_str(end);
            line.into_bytes()
        })
}

/// A line, then up to three bytes replaced, inserted or removed.
fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        prop::sample::select(vec![
            b' ', b'\t', b'\r', b'\n', b'<', b'>', b'@', b'.', b'-', b'=', b',', b';', b'+', b'"',
            b'_', b':', b'[', b'A', b'a', b'0', 0, 0x7f, 0xc3, 0xbc, 0xff,
        ]),
        any::<u8>(),
    ];
    (
        mail_rcpt_line(),
        prop::collection::vec((0..3u8, any::<prop::sample::Index>(), byte), 0..4),
    )
        .prop_map(|(mut line, edits)| {
            for (op, at, b) in edits {
                let at = at.index(line.len() + 1);
                match op {
                    0 if at < line.len() => line[at] = b,
                    1 => line.insert(at, b),
                    _ if at < line.len() => {
                        line.remove(at);
                    }
                    _ => {}
                }
            }
            line
        })
}

fn options() -> impl Strategy<Value = ParseOptions> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![8 => Just(512usize), 2 => Just(4096), 1 => 0..80usize],
    )
        .prop_map(|(lenient, smtputf8, max_line)| {
            ParseOptions::default()
                .lenient(lenient)
                .smtputf8(smtputf8)
                .max_line(max_line)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn fast_path_agrees_on_generated_lines(line in mail_rcpt_line(), opts in options()) {
        same_as_reference(&line, &opts)?;
    }

    #[test]
    fn fast_path_agrees_on_mutated_lines(line in mutated_line(), opts in options()) {
        same_as_reference(&line, &opts)?;
    }

    #[test]
    fn fast_path_agrees_on_formatted_commands(cmd in command(), lenient in any::<bool>()) {
        let wire = cmd.to_string();
        let opts = ParseOptions::default().max_line(4096).lenient(lenient);
        same_as_reference(wire.as_bytes(), &opts)?;
    }

    #[test]
    fn decode_agrees_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..80), opts in options()) {
        same_as_reference(&bytes, &opts)?;
    }
}
