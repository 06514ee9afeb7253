//! Invariant 4, no SMTP smuggling: the published bare-LF / bare-CR end-of-data variants
//! (SEC Consult 2023, and the CR variants of the follow-ups) sent by a client never end the
//! message. Under `bare_line_endings = "reject"` the one message is refused with
//! `550 5.6.11`; under `"normalize"` exactly one message is stored, CRLF-only, with the
//! would-be second transaction inside its body. Nothing is ever split in two, in the spool,
//! in the local sink, or upstream (Exchange Online simulator).

mod support;

use std::time::Duration;

use support::*;

/// The fake end-of-data sequences (each stands between the first message's text and the
/// smuggled transaction).
const VARIANTS: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r\n.\r\r\n",
    b"\r.\r\n",
    b"\r.\n",
    b"\n.\r",
    b"\r\n.\r\n\r", // a real end followed by junk is a real end: handled separately below
    b"\n\n.\n\n",
    b"\r\r.\r\r",
    b"\r\n\x00.\r\n",
    b"\r\n .\r\n",
];

const SMUGGLED: &[u8] = b"MAIL FROM:<ceo@contoso.com>\r\nRCPT TO:<victim@contoso.com>\r\n\
    DATA\r\nFrom: ceo@contoso.com\r\nSubject: smuggled\r\n\r\npay now\r\n";

fn payload(variant: &[u8]) -> Vec<u8> {
    let mut p = b"From: <printer@contoso.com>\r\nSubject: first\r\n\r\nfirst body".to_vec();
    p.extend_from_slice(variant);
    p.extend_from_slice(SMUGGLED);
    p.extend_from_slice(b".\r\n");
    p
}

/// One session: MAIL, RCPT, DATA, the payload, QUIT. Returns every reply after the `354`.
async fn smuggle(addr: std::net::SocketAddr, variant: &[u8]) -> Vec<(u16, String)> {
    let mut c = Smtp::connect(addr).await;
    assert_eq!(c.cmd("EHLO printer.lan").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<printer@contoso.com>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<reception@contoso.com>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(&payload(variant)).await.unwrap();
    c.send(b"QUIT\r\n").await.unwrap();
    let mut replies = Vec::new();
    while let Some(Ok(r)) = c.reply_within(Duration::from_secs(5)).await {
        let done = r.0 == 221 || r.0 == 421;
        replies.push(r);
        if done {
            break;
        }
    }
    replies
}

fn has_bare_cr_or_lf(data: &[u8]) -> bool {
    data.iter().enumerate().any(|(i, &b)| {
        (b == b'\n' && (i == 0 || data[i - 1] != b'\r'))
            || (b == b'\r' && data.get(i + 1) != Some(&b'\n'))
    })
}

fn variants() -> impl Iterator<Item = &'static [u8]> {
    // `\r\n.\r\n\r` contains a true CRLF.CRLF; it is not a smuggling variant.
    VARIANTS.iter().copied().filter(|v| *v != b"\r\n.\r\n\r")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_policy_refuses_and_never_splits() {
    let dir = Dir::new();
    let relay = start(dir.config(&dir.toml("outbox", "", ""))).await;
    let addr = relay.local_addrs()[0];
    for v in variants() {
        let replies = smuggle(addr, v).await;
        let codes: Vec<u16> = replies.iter().map(|r| r.0).collect();
        // One reply to the one message, then QUIT: no 250 for a smuggled MAIL/RCPT, no 354.
        assert_eq!(codes.len(), 2, "{v:?}: {replies:?}");
        assert_eq!(codes[1], 221, "{v:?}: {replies:?}");
        if has_bare_cr_or_lf(v) {
            assert_eq!(codes[0], 550, "{v:?}: {replies:?}");
            assert!(replies[0].1.starts_with("5.6.11"), "{v:?}: {replies:?}");
        } else {
            // NUL / space tricks: not an end of data; one message, accepted or refused.
            assert!(codes[0] == 250 || codes[0] >= 500, "{v:?}: {replies:?}");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for eml in dir.eml("outbox") {
        assert!(
            eml.contains("Subject: first"),
            "a second message was made: {eml}"
        );
        assert!(!has_bare_cr_or_lf(eml.as_bytes()), "{eml:?}");
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalize_policy_makes_exactly_one_message_per_session() {
    let dir = Dir::new();
    let relay =
        start(dir.config(&dir.toml("outbox", "bare_line_endings = \"normalize\"\n", ""))).await;
    let addr = relay.local_addrs()[0];
    let mut sessions = 0;
    for v in variants() {
        let replies = smuggle(addr, v).await;
        let codes: Vec<u16> = replies.iter().map(|r| r.0).collect();
        assert_eq!(codes.len(), 2, "{v:?}: {replies:?}");
        assert_eq!(codes[1], 221, "{v:?}: {replies:?}");
        if has_bare_cr_or_lf(v) {
            assert_eq!(codes[0], 250, "{v:?}: {replies:?}");
        }
        if codes[0] == 250 {
            sessions += 1;
        }
    }
    let emls = dir
        .wait_eml("outbox", sessions, Duration::from_secs(10))
        .await;
    assert_eq!(emls.len(), sessions, "one message per session");
    for eml in &emls {
        assert!(eml.contains("Subject: first"), "{eml}");
        assert!(
            eml.contains("MAIL FROM:<ceo@contoso.com>"),
            "the smuggled commands stay inside the one message: {eml:?}"
        );
        assert!(
            !has_bare_cr_or_lf(eml.as_bytes()),
            "not normalised: {eml:?}"
        );
        let sidecar_count = eml.matches("Subject: first").count();
        assert_eq!(sidecar_count, 1, "{eml:?}");
    }
    relay.shutdown().await;
}

/// The same through a real upstream: what Exchange Online (the simulator) receives is one
/// message per session, CRLF-only, and nothing for the smuggled recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_smuggled_upstream() {
    let cloud = Cloud::start().await;
    let dir = Dir::new();
    let relay = start(dir.config(&dir.toml(
        "m365",
        "bare_line_endings = \"normalize\"\n",
        &cloud.toml(&dir, ""),
    )))
    .await;
    let addr = relay.local_addrs()[0];
    let mut sessions = 0;
    for v in variants() {
        let mut c = Smtp::connect(addr).await;
        assert_eq!(c.cmd("EHLO printer.lan").await.0, 250);
        assert_eq!(c.cmd(&format!("MAIL FROM:<{MAILBOX}>")).await.0, 250);
        assert_eq!(c.cmd("RCPT TO:<reception@contoso.com>").await.0, 250);
        assert_eq!(c.cmd("DATA").await.0, 354);
        let p = payload(v);
        let p = String::from_utf8_lossy(&p).replace("printer@contoso.com", MAILBOX);
        c.send(p.as_bytes()).await.unwrap();
        let r = c.reply().await.unwrap();
        let q = c.cmd("QUIT").await;
        assert_eq!(
            q.0, 221,
            "{v:?}: the smuggled commands were answered: {q:?}"
        );
        if has_bare_cr_or_lf(v) {
            assert_eq!(r.0, 250, "{v:?}: {r:?}");
        }
        if r.0 == 250 {
            sessions += 1;
        }
    }
    let recorder = cloud.exo.recorder();
    recorder
        .wait_for(sessions, Duration::from_secs(20))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let msgs = recorder.messages();
    assert_eq!(msgs.len(), sessions, "one upstream message per session");
    for m in &msgs {
        assert_eq!(m.rcpt_to, ["reception@contoso.com"]);
        assert!(
            !has_bare_cr_or_lf(&m.data),
            "{:?}",
            String::from_utf8_lossy(&m.data)
        );
    }
    assert!(recorder.messages_to("victim@contoso.com").is_empty());
    relay.shutdown().await;
}
