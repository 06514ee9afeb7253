//! Invariant 3, never an open relay: a client outside the allowed networks and not
//! authenticated tries every addressing trick; each is refused with the right code and
//! nothing is spooled or delivered. A positive control (the same client after AUTH) shows the
//! listener does relay when it should, so the refusals are not an accident of the setup.

mod support;

use std::time::Duration;

use support::*;

const PASSWORD: &str = "device-pw-Op3nRelay";

/// A relay whose allowed network excludes 127.0.0.1 (the test client), with one device
/// account and AUTH offered without TLS (so `AUTH=` spoofing has something to spoof).
async fn relay(dir: &Dir) -> postern::RelayHandle {
    let hash = postern::inbound::hash_password(PASSWORD).unwrap();
    let text = dir.toml_with_policy(
        "outbox",
        "allow_plaintext_auth = true\n",
        "allowed_networks = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n",
        &format!("[[accounts]]\nusername = \"printer\"\npassword_hash = \"{hash}\"\n"),
    );
    start(dir.config(&text)).await
}

/// Each trick: the commands (after EHLO), one per line, and the reply code expected for the
/// last one; every earlier command must not be refused with 4xx/5xx unless listed.
const TRICKS: &[(&str, &[&str], u16, &str)] = &[
    (
        "plain external",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<user@evil.example>",
        ],
        550,
        "5.7.1",
    ),
    (
        "internal domain",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<reception@contoso.com>",
        ],
        550,
        "5.7.1",
    ),
    (
        "source route",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<@a.example,@b.example:user@evil.example>",
        ],
        550,
        "5.7.1",
    ),
    (
        "source route to own domain",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<@relay.test:user@evil.example>",
        ],
        550,
        "5.7.1",
    ),
    (
        "percent hack",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<user%evil.example@contoso.com>",
        ],
        550,
        "5.7.1",
    ),
    (
        "bang path",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<evil.example!user@contoso.com>",
        ],
        550,
        "5.7.1",
    ),
    (
        "quoted local part with @",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<\"user@evil.example\"@contoso.com>",
        ],
        550,
        "5.7.1",
    ),
    (
        "address literal",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<user@[192.0.2.1]>",
        ],
        550,
        "5.7.1",
    ),
    (
        "address literal ipv6",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<user@[IPv6:2001:db8::1]>",
        ],
        550,
        "5.7.1",
    ),
    (
        "mixed-case domain",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<User@EvIl.ExAmPlE>",
        ],
        550,
        "5.7.1",
    ),
    (
        "relay's own name",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<user@RELAY.TEST>",
        ],
        550,
        "5.7.1",
    ),
    (
        "postmaster of another domain",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<postmaster@evil.example>",
        ],
        550,
        "5.7.1",
    ),
    (
        "AUTH= parameter spoofing",
        &[
            "MAIL FROM:<scanner@contoso.com> AUTH=<printer>",
            "RCPT TO:<user@evil.example>",
        ],
        550,
        "5.7.1",
    ),
    (
        "AUTH= xtext spoofing",
        &[
            "MAIL FROM:<scanner@contoso.com> AUTH=printer+40contoso.com",
            "RCPT TO:<user@evil.example>",
        ],
        550,
        "5.7.1",
    ),
    (
        "null sender",
        &["MAIL FROM:<>", "RCPT TO:<user@evil.example>"],
        550,
        "5.7.1",
    ),
    (
        "RCPT before MAIL",
        &["RCPT TO:<user@evil.example>"],
        503,
        "5.5.1",
    ),
    (
        "failed AUTH then RCPT",
        &[
            "AUTH PLAIN AHByaW50ZXIAd3Jvbmc=",
            "MAIL FROM:<scanner@contoso.com>",
            "RCPT TO:<user@evil.example>",
        ],
        550,
        "5.7.1",
    ),
    (
        "RSET keeps nothing",
        &[
            "MAIL FROM:<scanner@contoso.com>",
            "RSET",
            "RCPT TO:<user@evil.example>",
        ],
        503,
        "5.5.1",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trick_is_refused_and_nothing_leaves() {
    let dir = Dir::new();
    let relay = relay(&dir).await;
    let addr = relay.local_addrs()[0];
    for (name, commands, code, enhanced) in TRICKS {
        let mut c = Smtp::connect(addr).await;
        assert_eq!(c.cmd("EHLO mallory.example").await.0, 250, "{name}");
        let mut last = (0, String::new());
        for (i, line) in commands.iter().enumerate() {
            last = c.cmd(line).await;
            let is_last = i + 1 == commands.len();
            if !is_last && !line.starts_with("AUTH") {
                assert_eq!(last.0, 250, "{name}: {line} -> {last:?}");
            }
        }
        assert_eq!(last.0, *code, "{name}: {last:?}");
        assert!(last.1.starts_with(enhanced), "{name}: {last:?}");
        // DATA after a refused RCPT: no valid recipients.
        let data = c.cmd("DATA").await;
        assert!(data.0 >= 500, "{name}: DATA -> {data:?}");
        let _ = c.try_cmd("QUIT").await;
    }

    // Pipelined: the whole transaction and a message in one write (RFC 2920 style), with a
    // second transaction smuggled behind the first.
    let mut c = Smtp::connect(addr).await;
    c.send(
        b"EHLO mallory.example\r\nMAIL FROM:<scanner@contoso.com>\r\nRCPT TO:<a@evil.example>\r\n\
          RCPT TO:<b@contoso.com>\r\nDATA\r\nSubject: pipelined\r\n\r\nbody\r\n.\r\n\
          MAIL FROM:<x@contoso.com>\r\nRCPT TO:<c@evil.example>\r\nBDAT 5 LAST\r\nhello\
          QUIT\r\n",
    )
    .await
    .unwrap();
    let mut replies = Vec::new();
    while let Some(Ok(r)) = c.reply_within(Duration::from_secs(5)).await {
        let done = r.0 == 221 || r.0 == 421;
        replies.push(r);
        if done {
            break;
        }
    }
    assert!(
        !replies.iter().any(|(code, _)| *code == 354),
        "DATA was started: {replies:?}"
    );
    let rcpt_replies: Vec<_> = replies
        .iter()
        .filter(|r| r.1.contains("Relaying denied"))
        .collect();
    assert!(rcpt_replies.len() >= 2, "{replies:?}");
    assert!(
        rcpt_replies
            .iter()
            .all(|r| r.0 == 550 && r.1.starts_with("5.7.1")),
        "{replies:?}"
    );
    assert!(
        !replies.iter().any(|r| r.1.contains("queued")),
        "a message was accepted: {replies:?}"
    );

    // Nothing spooled, nothing delivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(dir.eml("outbox").is_empty(), "a message left the relay");
    let spooled: Vec<_> = dir
        .spool_files()
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(spooled.is_empty(), "spooled: {spooled:?}");

    // Positive control: the same client, authenticated, does relay.
    let mut c = Smtp::connect(addr).await;
    assert_eq!(c.cmd("EHLO printer.lan").await.0, 250);
    let plain = base64_plain("printer", PASSWORD);
    let auth = c.cmd(&format!("AUTH PLAIN {plain}")).await;
    assert_eq!(auth.0, 235, "{auth:?}");
    let r = transaction(
        &mut c,
        "scanner@contoso.com",
        &["user@evil.example"],
        &message("scanner@contoso.com", "control"),
    )
    .await
    .unwrap();
    assert_eq!(r.0, 250, "{r:?}");
    assert_eq!(
        dir.wait_eml("outbox", 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    relay.shutdown().await;
}

/// An unauthenticated client on a listener that requires AUTH gets `530 5.7.0` at MAIL,
/// even from an allowed network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_auth_listener_refuses_mail_without_auth() {
    let dir = Dir::new();
    let text = dir.toml("outbox", "require_auth = true\n", "");
    let relay = start(dir.config(&text)).await;
    let mut c = Smtp::connect(relay.local_addrs()[0]).await;
    assert_eq!(c.cmd("EHLO printer.lan").await.0, 250);
    let r = c
        .cmd("MAIL FROM:<scanner@contoso.com> AUTH=<scanner@contoso.com>")
        .await;
    assert_eq!(r.0, 530, "{r:?}");
    assert!(r.1.starts_with("5.7.0"), "{r:?}");
    let r = c.cmd("RCPT TO:<user@evil.example>").await;
    assert_eq!(r.0, 503, "{r:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(dir.eml("outbox").is_empty());
    relay.shutdown().await;
}

fn base64_plain(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("\0{user}\0{password}");
    let bytes = raw.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
