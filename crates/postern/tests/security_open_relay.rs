//! Invariant 3, never an open relay: a client outside the allowed networks and not
//! authenticated tries every addressing trick; each is refused with the right code and
//! nothing is spooled or delivered. A positive control (the same client after AUTH) shows the
//! listener does relay when it should, so the refusals are not an accident of the setup.
//!
//! Every test client connects from 127.0.0.1, so the direct tests keep 127.0.0.1 out of the
//! allowed networks. The PROXY protocol tests present a real outside address instead: the
//! relay trusts the load balancer at 127.0.0.0/8, which is also in the allowed networks (a
//! load balancer on the LAN), and the PROXY header (v1 and v2) says the client is
//! 203.0.113.7; every trick must still be refused, naming 203.0.113.7, and nothing reaches the
//! upstream simulator. A PROXY header from a peer that is not a trusted load balancer, or on
//! a listener without `proxy_protocol`, or smuggled by the client behind the load balancer's
//! own, is never honoured.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use postern::inbound::proxy;
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

/// Runs every trick of [`TRICKS`], and a pipelined transaction with a second one smuggled
/// behind it, on connections from `connect` (greeting read); every relaying refusal must name
/// `client_ip`, the address the relay is meant to see.
async fn assert_every_trick_refused<F, Fut>(connect: F, client_ip: &str)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Smtp>,
{
    for (name, commands, code, enhanced) in TRICKS {
        let mut c = connect().await;
        let ehlo = c.cmd("EHLO mallory.example").await;
        assert_eq!(ehlo.0, 250, "{name}");
        assert!(
            ehlo.1.contains(&format!("Hello [{client_ip}]")),
            "{name}: {ehlo:?}"
        );
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
        if last.0 == 550 {
            assert!(last.1.contains(client_ip), "{name}: {last:?}");
        }
        // DATA after a refused RCPT: no valid recipients.
        let data = c.cmd("DATA").await;
        assert!(data.0 >= 500, "{name}: DATA -> {data:?}");
        let _ = c.try_cmd("QUIT").await;
    }

    // Pipelined: the whole transaction and a message in one write (RFC 2920 style), with a
    // second transaction smuggled behind the first.
    let mut c = connect().await;
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
        rcpt_replies.iter().all(|r| r.1.contains(client_ip)),
        "{replies:?}"
    );
    assert!(
        !replies.iter().any(|r| r.1.contains("queued")),
        "a message was accepted: {replies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trick_is_refused_and_nothing_leaves() {
    let dir = Dir::new();
    let relay = relay(&dir).await;
    let addr = relay.local_addrs()[0];
    assert_every_trick_refused(|| Smtp::connect(addr), "127.0.0.1").await;

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

/// The load balancer's front address, the destination in the PROXY headers.
const FRONT: &str = "198.51.100.25:25";
/// A client on the internet, behind the load balancer.
const OUTSIDE: &str = "203.0.113.7:40123";
/// A device in an allowed network, behind the load balancer.
const INSIDE: &str = "192.0.2.7:40124";

#[derive(Clone, Copy, Debug)]
enum Version {
    V1,
    V2,
}

fn proxy_header(version: Version, source: &str) -> Vec<u8> {
    let (source, front): (SocketAddr, SocketAddr) =
        (source.parse().unwrap(), FRONT.parse().unwrap());
    let mut header = Vec::new();
    match version {
        Version::V1 => proxy::encode_v1(source, front, &mut header),
        Version::V2 => proxy::encode_v2(source, front, &mut header),
    }
    header
}

/// Connects as the load balancer would: the PROXY header for `source`, then the greeting.
async fn via_proxy(addr: SocketAddr, version: Version, source: &str) -> Smtp {
    let mut c = Smtp::connect_raw(addr).await.expect("connect");
    c.send(&proxy_header(version, source)).await.unwrap();
    let greeting = c.reply().await.expect("greeting");
    assert_eq!(greeting.0, 220, "{version:?} {source}: {greeting:?}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trick_through_a_trusted_proxy_is_refused_and_nothing_leaves() {
    let cloud = Cloud::start().await;
    let dir = Dir::new();
    let hash = postern::inbound::hash_password(PASSWORD).unwrap();
    let lb =
        "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.0/8\"]\nallow_plaintext_auth = true\n";
    // The load balancer's own network is allowed; a second listener requires AUTH.
    let text = dir.toml_with_policy(
        "m365",
        lb,
        "allowed_networks = [\"127.0.0.0/8\", \"192.0.2.0/24\"]\n",
        &format!(
            "{}[[accounts]]\nusername = \"printer\"\npassword_hash = \"{hash}\"\n\
             [[listeners]]\nname = \"lb-auth\"\nbind = \"127.0.0.1:0\"\n{lb}require_auth = true\n",
            cloud.toml(&dir, "")
        ),
    );
    let relay = start(dir.config(&text)).await;
    let (addr, auth_addr) = (relay.local_addrs()[0], relay.local_addrs()[1]);

    for version in [Version::V1, Version::V2] {
        assert_every_trick_refused(|| via_proxy(addr, version, OUTSIDE), "203.0.113.7").await;

        // A PROXY header of the client's own, behind the load balancer's (one write, so it
        // arrives with the header): only the first header counts; the second is a bad command.
        let mut c = Smtp::connect_raw(addr).await.unwrap();
        let mut bytes = proxy_header(version, OUTSIDE);
        bytes.extend_from_slice(&proxy_header(Version::V1, INSIDE));
        c.send(&bytes).await.unwrap();
        assert_eq!(c.reply().await.unwrap().0, 220);
        let r = c.reply().await.unwrap();
        assert!(r.0 >= 500, "{version:?}: smuggled PROXY line -> {r:?}");
        let ehlo = c.cmd("EHLO mallory.example").await;
        assert!(ehlo.1.contains("Hello [203.0.113.7]"), "{ehlo:?}");
        assert_eq!(c.cmd("MAIL FROM:<scanner@contoso.com>").await.0, 250);
        let r = c.cmd("RCPT TO:<user@evil.example>").await;
        assert_eq!(r.0, 550, "{version:?}: {r:?}");
        assert!(
            r.1.starts_with("5.7.1") && r.1.contains("203.0.113.7"),
            "{r:?}"
        );

        // require_auth: even an allowed device gets 530 5.7.0, AUTH= or not.
        let mut c = via_proxy(auth_addr, version, INSIDE).await;
        assert_eq!(c.cmd("EHLO printer.lan").await.0, 250);
        for mail in [
            "MAIL FROM:<scanner@contoso.com>",
            "MAIL FROM:<scanner@contoso.com> AUTH=<printer>",
        ] {
            let r = c.cmd(mail).await;
            assert_eq!(r.0, 530, "{version:?} {mail}: {r:?}");
            assert!(r.1.starts_with("5.7.0"), "{r:?}");
        }
        assert_eq!(c.cmd("RCPT TO:<user@evil.example>").await.0, 503);
    }

    // Positive control: an allowed device behind the same load balancer does relay, so the
    // header is honoured and the refusals above are about the address it gave.
    for (version, token) in [(Version::V1, "proxied-v1"), (Version::V2, "proxied-v2")] {
        let mut c = via_proxy(addr, version, INSIDE).await;
        let ehlo = c.cmd("EHLO printer.lan").await;
        assert!(ehlo.1.contains("Hello [192.0.2.7]"), "{ehlo:?}");
        let r = transaction(
            &mut c,
            MAILBOX,
            &["user@evil.example"],
            &message(MAILBOX, token),
        )
        .await
        .unwrap();
        assert_eq!(r.0, 250, "{version:?}: {r:?}");
    }

    // Upstream got the two controls and nothing else.
    let rec = cloud.exo.recorder();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rec.messages().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let subjects: Vec<String> = rec
        .messages()
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.data).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
                .unwrap_or(text)
        })
        .collect();
    assert_eq!(subjects.len(), 2, "upstream got: {subjects:?}");
    assert!(
        subjects.iter().all(|s| s.starts_with("proxied-v")),
        "{subjects:?}"
    );
    assert!(dir.eml("bounces").is_empty());
    assert!(dir.eml("outbox").is_empty());
    relay.shutdown().await;
}

/// A PROXY header is honoured only from a trusted load balancer on a `proxy_protocol`
/// listener: from any other peer the connection is closed before the greeting, and on a
/// plain listener the header is just a bad command (the client stays 127.0.0.1, which is not
/// allowed). Either way nothing is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_from_an_untrusted_peer_is_not_honoured() {
    let dir = Dir::new();
    let text = dir.toml_with_policy(
        "outbox",
        "proxy_protocol = true\ntrusted_proxies = [\"192.0.2.99/32\"]\n",
        "allowed_networks = [\"192.0.2.0/24\"]\n",
        "[[listeners]]\nname = \"direct\"\nbind = \"127.0.0.1:0\"\n",
    );
    let relay = start(dir.config(&text)).await;
    let (behind_lb, direct) = (relay.local_addrs()[0], relay.local_addrs()[1]);

    for version in [Version::V1, Version::V2] {
        // 127.0.0.1 is not the trusted load balancer: closed, no greeting.
        let mut c = Smtp::connect_raw(behind_lb).await.unwrap();
        c.send(&proxy_header(version, INSIDE)).await.unwrap();
        let r = c.reply_within(Duration::from_secs(10)).await;
        assert!(
            matches!(r, Some(Err(_))),
            "{version:?}: untrusted peer got {r:?}"
        );
    }

    // A plain listener: the v1 line is a bad command and changes nothing.
    let mut c = Smtp::connect(direct).await;
    c.send(&proxy_header(Version::V1, INSIDE)).await.unwrap();
    let r = c.reply().await.unwrap();
    assert!(r.0 >= 500, "{r:?}");
    let ehlo = c.cmd("EHLO mallory.example").await;
    assert!(ehlo.1.contains("Hello [127.0.0.1]"), "{ehlo:?}");
    assert_eq!(c.cmd("MAIL FROM:<scanner@contoso.com>").await.0, 250);
    let r = c.cmd("RCPT TO:<user@evil.example>").await;
    assert_eq!(r.0, 550, "{r:?}");
    assert!(
        r.1.starts_with("5.7.1") && r.1.contains("127.0.0.1"),
        "{r:?}"
    );
    // The v2 header with a whole transaction behind it: never a recipient accepted.
    let mut c = Smtp::connect(direct).await;
    let mut bytes = proxy_header(Version::V2, INSIDE);
    bytes.extend_from_slice(
        b"EHLO mallory.example\r\nMAIL FROM:<scanner@contoso.com>\r\n\
          RCPT TO:<user@evil.example>\r\nDATA\r\nSubject: v2\r\n\r\nx\r\n.\r\n",
    );
    c.send(&bytes).await.unwrap();
    let mut replies = Vec::new();
    while let Some(Ok(r)) = c.reply_within(Duration::from_secs(5)).await {
        replies.push(r);
    }
    assert!(
        !replies
            .iter()
            .any(|r| r.1.starts_with("2.1.5") || r.0 == 354 || r.1.contains("queued")),
        "{replies:?}"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(dir.eml("outbox").is_empty(), "a message left the relay");
    let spooled = postern::spool::inspect(&dir.path().join("spool")).unwrap();
    assert!(spooled.is_empty(), "{} message(s) spooled", spooled.len());
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
