//! The inbound listener over real sockets: relay policy, limits, framing,
//! pipelining, BDAT. Every test runs its own server on 127.0.0.1:0 with a
//! real spool in a temp dir.

mod inbound_common;

use inbound_common::*;
use postern::inbound::BareLineEndings;

fn b64(s: &[u8]) -> String {
    // Small base64 encoder for AUTH lines (keeps the test free of extra crates).
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn allowed_network_relays_and_message_lands_in_spool() {
    let mut h = Harness::start(vec![listener("lan")], policy(&["127.0.0.0/8"]), limits()).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    let ehlo = c.expect("EHLO printer.lan", 250).await;
    for ext in [
        "PIPELINING",
        "SIZE 36700160",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
        "DSN",
    ] {
        assert!(ehlo.contains(ext), "{ext} missing in {ehlo}");
    }
    assert!(
        !ehlo.contains("STARTTLS"),
        "no certificate, no STARTTLS: {ehlo}"
    );
    assert!(!ehlo.contains("AUTH"), "no AUTH over plaintext: {ehlo}");
    c.expect("MAIL FROM:<dev@example.com> SIZE=100 BODY=8BITMIME", 250)
        .await;
    c.expect(
        "RCPT TO:<a@example.org> NOTIFY=FAILURE ORCPT=rfc822;a@example.org",
        250,
    )
    .await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send(b"Subject: dots\r\n\r\n..leading dot\r\n.\r\n").await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 250, "{text}");
    assert!(text.starts_with("250 2.0.0 Ok: queued as "), "{text}");
    let id = text.rsplit(' ').next().unwrap().to_owned();
    c.expect("QUIT", 221).await;

    let msgs = h.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.id().to_string(), id);
    let env = m.envelope();
    assert_eq!(env.mail_from.as_deref(), Some("dev@example.com"));
    assert_eq!(env.recipients.len(), 2);
    assert_eq!(
        env.recipients[0].orcpt.as_deref(),
        Some("rfc822;a@example.org")
    );
    assert_eq!(env.client.helo, "printer.lan");
    assert_eq!(env.client.listener, "lan");
    let body = String::from_utf8(m.read_body().await.unwrap()).unwrap();
    assert!(
        body.starts_with(
            "Received: from printer.lan ([127.0.0.1])\r\n\tby relay.test (Postern) with ESMTP id "
        ),
        "{body}"
    );
    assert!(body.contains(&id));
    assert!(
        body.ends_with("\r\nSubject: dots\r\n\r\n.leading dot\r\n"),
        "{body:?}"
    );
    assert_eq!(h.finish().await.len(), 1);
}

#[tokio::test]
async fn open_relay_tricks_are_refused_and_nothing_is_spooled() {
    // 127.0.0.1 is not allowed, and the client does not authenticate.
    let mut h = Harness::start(vec![listener("lan")], policy(&["10.0.0.0/8"]), limits()).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO attacker", 250).await;
    // AUTH= on MAIL must not stand in for authentication.
    c.expect("MAIL FROM:<boss@example.com> AUTH=printer", 250)
        .await;
    for rcpt in [
        "<victim@example.org>",
        "<@relay.test,@mx.example.org:victim@example.org>",
        "<victim%example.org@relay.test>",
        "<\"victim@example.org\"@relay.test>",
        "<victim@[192.0.2.1]>",
        "<victim@EXAMPLE.ORG>",
        "<postmaster>",
        "<\"victim@example.org\">",
    ] {
        let (code, text) = c.cmd(&format!("RCPT TO:{rcpt}")).await;
        assert!(
            code == 550 || code == 501 || code == 553,
            "{rcpt}: {code} {text}"
        );
        if code == 550 {
            assert_eq!(
                text,
                "550 5.7.1 Relaying denied: 127.0.0.1 is not in an allowed network and did not authenticate"
            );
        }
        if code == 0 {
            break;
        }
    }
    let (code, _) = c.cmd("DATA").await;
    assert!(
        code == 554 || code == 421 || code == 0,
        "DATA after refused recipients: {code}"
    );
    // BDAT with no recipients is refused too, after the chunk is read.
    assert!(h.messages().is_empty());
    assert!(h.finish().await.is_empty(), "nothing may be spooled");
}

#[tokio::test]
async fn bdat_without_recipients_is_refused() {
    let mut h = Harness::start(vec![listener("lan")], policy(&[]), limits()).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO attacker", 250).await;
    c.expect("MAIL FROM:<a@example.com>", 250).await;
    c.expect("RCPT TO:<v@example.org>", 550).await;
    c.send(b"BDAT 12 LAST\r\nSubject: x\r\n").await;
    assert_eq!(c.reply().await.0, 554);
    c.expect("NOOP", 250).await;
    assert!(h.messages().is_empty());
    assert!(h.finish().await.is_empty());
}

#[tokio::test]
async fn require_auth_and_require_helo() {
    let mut l = listener("auth-only");
    l.require_auth = true;
    let h = Harness::start(vec![l, listener("lan")], policy(&["127.0.0.1"]), limits()).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    let text = c.expect("MAIL FROM:<a@example.com>", 530).await;
    assert_eq!(text, "530 5.7.0 Authentication required");

    let mut c = Client::greeted(h.addrs[1]).await;
    let text = c.expect("MAIL FROM:<a@example.com>", 503).await;
    assert!(text.starts_with("503 5.5.1"), "{text}");
    c.expect("HELO x", 250).await;
    c.expect("MAIL FROM:<a@example.com>", 250).await;
    assert!(h.finish().await.is_empty());
}

#[tokio::test]
async fn auth_refused_over_plaintext() {
    let h = Harness::start(vec![listener("lan")], policy(&[]), limits()).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    let text = c
        .expect(
            &format!(
                "AUTH PLAIN {}",
                b64(format!("\0printer\0{PASSWORD}").as_bytes())
            ),
            538,
        )
        .await;
    assert_eq!(
        text,
        "538 5.7.11 Encryption required for requested authentication mechanism"
    );
    h.finish().await;
}

#[tokio::test]
async fn auth_plain_and_login_over_plaintext_when_allowed() {
    let mut l = listener("legacy");
    l.allow_plaintext_auth = true;
    let mut h = Harness::start(vec![l], policy(&[]), limits()).await;

    // PLAIN with an initial response.
    let mut c = Client::greeted(h.addrs[0]).await;
    let ehlo = c.expect("EHLO x", 250).await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    c.expect(
        &format!(
            "AUTH PLAIN {}",
            b64(format!("\0printer\0{PASSWORD}").as_bytes())
        ),
        235,
    )
    .await;
    let (code, text) = send_mail(&mut c, "dev@example.com", "x@example.org", "plain").await;
    assert_eq!(code, 250, "{text}");

    // LOGIN, step by step.
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    let text = c.expect("AUTH LOGIN", 334).await;
    assert_eq!(text, "334 VXNlcm5hbWU6");
    c.expect(&b64(b"printer"), 334).await;
    c.expect(&b64(PASSWORD.as_bytes()), 235).await;
    c.expect("AUTH LOGIN", 503).await;
    let (code, text) = send_mail(&mut c, "dev@example.com", "x@example.org", "login").await;
    assert_eq!(code, 250, "{text}");

    // PLAIN without an initial response, then a wrong password.
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    c.expect("AUTH PLAIN", 334).await;
    let text = c.expect(&b64(b"\0printer\0wrong"), 535).await;
    assert_eq!(text, "535 5.7.8 Authentication credentials invalid");
    // Unknown user, cancelled exchange, unknown mechanism.
    c.expect(
        &format!(
            "AUTH PLAIN {}",
            b64(format!("\0nobody\0{PASSWORD}").as_bytes())
        ),
        535,
    )
    .await;
    c.expect("AUTH LOGIN", 334).await;
    c.expect("*", 501).await;
    c.expect("AUTH CRAM-MD5", 504).await;
    // Still not authenticated: relaying is refused.
    c.expect("MAIL FROM:<a@example.com>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 550).await;
    c.expect("RSET", 250).await;
    // Third failure closes the connection.
    let text = c
        .expect(&format!("AUTH PLAIN {}", b64(b"\0printer\0nope")), 535)
        .await;
    assert!(text.contains("5.7.8"));
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.7.0"), "{text}");
    assert!(c.closed().await);

    assert_eq!(h.messages().len(), 2);
    assert_eq!(h.finish().await.len(), 2);
}

#[tokio::test]
async fn account_sender_restrictions() {
    let mut l = listener("legacy");
    l.allow_plaintext_auth = true;
    let h = Harness::start(vec![l], policy(&[]), limits()).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    c.expect(
        &format!(
            "AUTH PLAIN {}",
            b64(format!("\0scanner\0{PASSWORD}").as_bytes())
        ),
        235,
    )
    .await;
    let text = c.expect("MAIL FROM:<boss@example.com>", 553).await;
    assert_eq!(
        text,
        "553 5.7.1 Sender address not allowed for this account"
    );
    c.expect("MAIL FROM:<>", 553).await;
    c.expect("MAIL FROM:<scan@example.com>", 250).await;
    c.expect("RSET", 250).await;
    c.expect("MAIL FROM:<anyone@example.net>", 250).await;
    h.finish().await;
}

#[tokio::test]
async fn size_limits() {
    let mut lim = limits();
    lim.max_message_size = 1000;
    let mut h = Harness::start(vec![listener("lan")], policy(&["127.0.0.1"]), lim).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    let ehlo = c.expect("EHLO x", 250).await;
    assert!(ehlo.contains("SIZE 1000"), "{ehlo}");
    let text = c.expect("MAIL FROM:<a@example.com> SIZE=1001", 552).await;
    assert!(text.starts_with("552 5.3.4"), "{text}");
    c.expect("MAIL FROM:<a@example.com> SIZE=900", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    c.expect("DATA", 354).await;
    let mut big = Vec::new();
    for _ in 0..100 {
        big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    big.extend_from_slice(b".\r\n");
    c.send(&big).await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 552, "{text}");
    assert!(text.starts_with("552 5.3.4"), "{text}");
    // The session is still in sync: the whole body was drained.
    c.expect("NOOP", 250).await;
    // BDAT over the limit.
    c.expect("MAIL FROM:<a@example.com>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    c.send(format!("BDAT {} LAST\r\n", big.len()).as_bytes())
        .await;
    c.send(&big).await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 552, "{text}");
    c.expect("NOOP", 250).await;
    assert!(h.messages().is_empty());
    assert!(h.finish().await.is_empty());
}

#[tokio::test]
async fn too_many_recipients() {
    let mut lim = limits();
    lim.max_recipients = 2;
    let mut h = Harness::start(vec![listener("lan")], policy(&["127.0.0.1"]), lim).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    c.expect("MAIL FROM:<a@example.com>", 250).await;
    c.expect("RCPT TO:<1@example.org>", 250).await;
    c.expect("RCPT TO:<2@example.org>", 250).await;
    let text = c.expect("RCPT TO:<3@example.org>", 452).await;
    assert_eq!(text, "452 4.5.3 Too many recipients");
    c.expect("DATA", 354).await;
    c.send(message("two").as_bytes()).await;
    assert_eq!(c.reply().await.0, 250);
    let msgs = h.messages();
    assert_eq!(msgs[0].envelope().recipients.len(), 2);
    h.finish().await;
}

#[tokio::test]
async fn connection_limits_per_ip_and_total() {
    let mut lim = limits();
    lim.max_connections_per_ip = 2;
    let h = Harness::start(vec![listener("lan")], policy(&["127.0.0.1"]), lim).await;
    let _a = Client::greeted(h.addrs[0]).await;
    let _b = Client::greeted(h.addrs[0]).await;
    let mut c = Client::connect(h.addrs[0]).await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.7.0"), "{text}");
    assert!(c.closed().await);
    drop(_a);
    // A slot frees once the server notices the close; retry until then.
    let mut ok = false;
    for _ in 0..100 {
        let mut d = Client::connect(h.addrs[0]).await;
        if d.reply().await.0 == 220 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "slot released after close");
    h.finish().await;

    let mut lim = limits();
    lim.max_connections = 1;
    let h = Harness::start(vec![listener("lan")], policy(&["127.0.0.1"]), lim).await;
    let _a = Client::greeted(h.addrs[0]).await;
    let mut c = Client::connect(h.addrs[0]).await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    h.finish().await;
}

#[tokio::test]
async fn command_timeout_closes_with_421() {
    let mut lim = limits();
    lim.command_timeout_secs = 1;
    let h = Harness::start(vec![listener("lan")], policy(&["127.0.0.1"]), lim).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.4.2"), "{text}");
    assert!(c.closed().await);
    h.finish().await;
}

#[tokio::test]
async fn data_timeout_discards_the_message() {
    let mut lim = limits();
    lim.data_block_timeout_secs = 1;
    let mut h = Harness::start(vec![listener("lan")], policy(&["127.0.0.1"]), lim).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    c.expect("MAIL FROM:<a@example.com>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send(b"Subject: slow\r\n\r\nhalf a mess").await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(h.messages().is_empty());
    assert!(h.finish().await.is_empty());
}

#[tokio::test]
async fn long_lines_and_bad_commands() {
    let mut lim = limits();
    lim.max_bad_commands = 4;
    let h = Harness::start(vec![listener("lan")], policy(&["127.0.0.1"]), lim).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    let long = format!("NOOP {}", "x".repeat(5000));
    let text = c.expect(&long, 500).await;
    assert!(text.starts_with("500 5.5.6"), "{text}");
    c.expect("NOOP", 250).await;
    c.expect("FROB", 500).await;
    c.expect("MAIL FROM:<no-helo@example.com>", 503).await;
    let (code, text) = c.cmd("XYZZY").await;
    assert_eq!(code, 500, "{text}");
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.7.0"), "{text}");
    assert!(c.closed().await);
    h.finish().await;
}

#[tokio::test]
async fn bare_line_feeds_rejected_by_default() {
    let mut h = Harness::start(vec![listener("lan")], policy(&["127.0.0.1"]), limits()).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    c.expect("MAIL FROM:<a@example.com>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send(b"Subject: bare\n\nline\r\n.\r\n").await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("550 5.6.11"), "{text}");
    // BDAT too.
    c.expect("MAIL FROM:<a@example.com>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    c.send(b"BDAT 13 LAST\r\nSubject: x\n\r\n").await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 550, "{text}");
    c.expect("NOOP", 250).await;
    assert!(h.messages().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn bare_line_feeds_normalised_when_configured() {
    let mut l = listener("legacy");
    l.bare_line_endings = BareLineEndings::Normalize;
    let mut h = Harness::start(vec![l], policy(&["127.0.0.1"]), limits()).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    c.expect("MAIL FROM:<a@example.com>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send(b"Subject: bare\n\nline one\rline two\r\n.\r\n")
        .await;
    assert_eq!(c.reply().await.0, 250);
    c.expect("MAIL FROM:<a@example.com>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    c.send(b"BDAT 7\r\nSubj: x").await;
    assert_eq!(c.reply().await.0, 250);
    c.send(b"BDAT 6 LAST\r\n\n\nbody").await;
    assert_eq!(c.reply().await.0, 250);
    let msgs = h.messages();
    assert_eq!(msgs.len(), 2);
    let body = msgs[0].read_body().await.unwrap();
    assert!(
        body.ends_with(b"Subject: bare\r\n\r\nline one\r\nline two\r\n"),
        "{:?}",
        String::from_utf8_lossy(&body)
    );
    let body = msgs[1].read_body().await.unwrap();
    assert!(
        body.ends_with(b"Subj: x\r\n\r\nbody"),
        "{:?}",
        String::from_utf8_lossy(&body)
    );
    for m in &msgs {
        let body = m.read_body().await.unwrap();
        for (i, &b) in body.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(body[i - 1], b'\r', "bare LF stored");
            }
        }
    }
    h.finish().await;
}

/// Published SMTP smuggling end-of-data variants: none may end the data, so
/// the "smuggled" second transaction never becomes a second message.
#[tokio::test]
async fn smuggling_never_splits_a_message() {
    let variants: [&[u8]; 6] = [
        b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r",
    ];
    for policy_kind in [BareLineEndings::Reject, BareLineEndings::Normalize] {
        let mut l = listener("lan");
        l.bare_line_endings = policy_kind;
        let mut h = Harness::start(vec![l], policy(&["127.0.0.1"]), limits()).await;
        for v in variants {
            let mut c = Client::greeted(h.addrs[0]).await;
            c.expect("EHLO x", 250).await;
            c.expect("MAIL FROM:<a@example.com>", 250).await;
            c.expect("RCPT TO:<b@example.org>", 250).await;
            c.expect("DATA", 354).await;
            let mut payload = b"Subject: first\r\n\r\nbody".to_vec();
            payload.extend_from_slice(v);
            payload.extend_from_slice(b"MAIL FROM:<smuggled@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n");
            c.send(&payload).await;
            let (code, text) = c.reply().await;
            match policy_kind {
                BareLineEndings::Reject => assert_eq!(code, 550, "{v:?}: {text}"),
                _ => assert_eq!(code, 250, "{v:?}: {text}"),
            }
            // Exactly one reply for the whole payload: the next one answers NOOP.
            c.expect("NOOP", 250).await;
        }
        let msgs = h.messages();
        let expected = if policy_kind == BareLineEndings::Reject {
            0
        } else {
            variants.len()
        };
        assert_eq!(msgs.len(), expected);
        for m in msgs {
            assert_eq!(m.envelope().mail_from.as_deref(), Some("a@example.com"));
            let body = String::from_utf8(m.read_body().await.unwrap()).unwrap();
            assert!(body.contains("Subject: first") && body.contains("Subject: smuggled"));
        }
        h.finish().await;
    }
}

#[tokio::test]
async fn pipelined_transactions_in_one_write() {
    let mut h = Harness::start(vec![listener("lan")], policy(&["127.0.0.1"]), limits()).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    let mut batch = Vec::new();
    for i in 0..3 {
        batch.extend_from_slice(format!("MAIL FROM:<a{i}@example.com>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n").as_bytes());
        batch.extend_from_slice(message(&format!("pipelined {i}")).as_bytes());
    }
    batch.extend_from_slice(b"MAIL FROM:<x@example.com>\r\nBDAT 9\r\nSubject: RCPT TO:<b@example.org>\r\nBDAT 9\r\nSubject: BDAT 4 LAST\r\nhey!QUIT\r\n");
    c.send(&batch).await;
    for _ in 0..3 {
        for code in [250, 250, 250, 354, 250] {
            let (got, text) = c.reply().await;
            assert_eq!(got, code, "{text}");
        }
    }
    for code in [250, 554, 250, 250, 250, 221] {
        let (got, text) = c.reply().await;
        assert_eq!(got, code, "{text}");
    }
    let msgs = h.messages();
    assert_eq!(msgs.len(), 4);
    let body = String::from_utf8(msgs[3].read_body().await.unwrap()).unwrap();
    assert!(body.ends_with("Subject: hey!"), "{body:?}");
    h.finish().await;
}

#[tokio::test]
async fn commands_after_starttls_are_not_offered_without_certificate() {
    let h = Harness::start(vec![listener("lan")], policy(&["127.0.0.1"]), limits()).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    c.expect("STARTTLS", 502).await;
    c.expect("VRFY root", 252).await;
    c.expect("EXPN list", 502).await;
    c.expect("HELP", 214).await;
    c.expect("QUIT", 221).await;
    h.finish().await;
}

#[tokio::test]
async fn shutdown_says_421_to_idle_sessions() {
    let h = Harness::start(vec![listener("lan")], policy(&["127.0.0.1"]), limits()).await;
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    h.shutdown.cancel();
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.3.2"), "{text}");
    h.finish().await;
}
