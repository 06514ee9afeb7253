//! Resource abuse: slow clients, many idle connections, endless RCPTs and bad commands,
//! oversized lines and messages, a billion-laughs style MIME bomb. Each is bounded (by a
//! timeout, a limit with its RFC reply, or memory), and another client is served meanwhile.
//! Timeouts are configured short (1-2 s); bounds checked here are generous (no speed is
//! asserted, only that a limit is enforced at all).

mod support;

use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;

async fn relay(dir: &Dir, limits: &str) -> postern::RelayHandle {
    let text = dir.toml(
        "outbox",
        "",
        &format!("[limits]\nauth_failure_delay_ms = 10\n{limits}"),
    );
    start(dir.config(&text)).await
}

/// A normal client completes a message while the abuse goes on.
async fn served(addr: std::net::SocketAddr, token: &str) {
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        submit(
            addr,
            "scanner@contoso.com",
            &["reception@contoso.com"],
            &message("scanner@contoso.com", token),
        ),
    )
    .await
    .expect("served while others abuse")
    .unwrap();
    assert_eq!(r.0, 250, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_a_second_is_cut_off_by_the_timeouts() {
    let dir = Dir::new();
    let relay = relay(
        &dir,
        "command_timeout_secs = 2\ndata_block_timeout_secs = 2\n",
    )
    .await;
    let addr = relay.local_addrs()[0];

    // Command phase: a line trickled one byte a second, never finished. A per-read timeout
    // alone would keep it forever; the command deadline closes it.
    let trickle = tokio::spawn(async move {
        let mut c = Smtp::connect(addr).await;
        let started = tokio::time::Instant::now();
        for b in b"EHLO a-very-slow-printer.example.com.and.more.bytes.to.come"
            .iter()
            .cycle()
        {
            if c.stream().write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if started.elapsed() > Duration::from_secs(40) {
                break;
            }
        }
        let closed = c.closed_within(Duration::from_secs(5)).await;
        (closed, started.elapsed())
    });

    // DATA phase: slower than the block timeout.
    let slow_data = tokio::spawn(async move {
        let mut c = Smtp::connect(addr).await;
        assert_eq!(c.cmd("EHLO printer.lan").await.0, 250);
        assert_eq!(c.cmd("MAIL FROM:<scanner@contoso.com>").await.0, 250);
        assert_eq!(c.cmd("RCPT TO:<reception@contoso.com>").await.0, 250);
        assert_eq!(c.cmd("DATA").await.0, 354);
        c.send(b"Subject: slow\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let _ = c.send(b"x").await;
        let r = c.reply_within(Duration::from_secs(5)).await;
        (
            r.map(|r| r.map(|r| r.0).ok()),
            c.closed_within(Duration::from_secs(5)).await,
        )
    });

    // Silent after the greeting.
    let silent = tokio::spawn(async move {
        let mut c = Smtp::connect(addr).await;
        let r = c.reply_within(Duration::from_secs(10)).await;
        r.and_then(Result::ok)
    });

    served(addr, "during-slow").await;
    let (reply, closed) = slow_data.await.unwrap();
    assert_eq!(reply, Some(Some(421)), "slow DATA: timeout reply");
    assert!(closed, "slow DATA: connection closed");
    let r = silent.await.unwrap().expect("silent client gets a reply");
    assert_eq!(r.0, 421, "{r:?}");
    assert!(r.1.starts_with("4.4.2"), "{r:?}");
    let (closed, after) = trickle.await.unwrap();
    assert!(
        closed && after < Duration::from_secs(40),
        "a one-byte-a-second client was not cut off ({after:?})"
    );
    // Nothing half-received was stored.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let emls = dir.eml("outbox");
    assert_eq!(emls.len(), 1, "only the normal client's message");
    assert!(emls[0].contains("during-slow"));
    relay.shutdown().await;
}

/// Everything this test binary logs at WARN and above, from every thread.
fn logs() -> &'static LogBuffer {
    LogBuffer::global(tracing::Level::WARN)
}

/// Sends `byte` once a second until the relay answers (or `give_up` runs out); then the
/// reply (`None` if there was none) and whether the connection was closed after it.
async fn dribble(c: &mut Smtp, give_up: Duration) -> (Option<(u16, String)>, bool) {
    let started = tokio::time::Instant::now();
    let mut peek = [0u8; 1];
    while started.elapsed() < give_up {
        if c.send(b"x").await.is_err() {
            break;
        }
        // `peek` is cancel-safe: nothing of the reply is lost when it times out.
        if tokio::time::timeout(Duration::from_secs(1), c.stream().peek(&mut peek))
            .await
            .is_ok()
        {
            break;
        }
    }
    let reply = c
        .reply_within(Duration::from_secs(5))
        .await
        .and_then(Result::ok);
    (reply, c.closed_within(Duration::from_secs(5)).await)
}

/// Slow DATA: every read arrives well within `data_block_timeout_secs`, but at one byte a
/// second. The per-message deadline (`data_total_timeout_secs` plus one second per
/// `data_min_rate` bytes) closes DATA, a dribbled BDAT chunk, and a message sent as endless
/// one-byte BDAT chunks with `421 4.4.2`; nothing is spooled or delivered, and the cause is
/// logged. Meanwhile a normal client is served, and a client above the minimum rate keeps
/// going past `data_total_timeout_secs` and is accepted (the rule is a rate, not a flat cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dribbled_a_byte_a_second_hits_the_message_deadline() {
    let logs = logs();
    let dir = Dir::new();
    let relay = relay(
        &dir,
        "command_timeout_secs = 60
data_block_timeout_secs = 60
\
         data_total_timeout_secs = 3
data_min_rate = 1000
",
    )
    .await;
    let addr = relay.local_addrs()[0];
    const GIVE_UP: Duration = Duration::from_secs(45);

    async fn open(addr: std::net::SocketAddr) -> Smtp {
        let mut c = Smtp::connect(addr).await;
        assert_eq!(c.cmd("EHLO printer.lan").await.0, 250);
        assert_eq!(c.cmd("MAIL FROM:<scanner@contoso.com>").await.0, 250);
        assert_eq!(c.cmd("RCPT TO:<reception@contoso.com>").await.0, 250);
        c
    }

    let slow_data = tokio::spawn(async move {
        let mut c = open(addr).await;
        assert_eq!(c.cmd("DATA").await.0, 354);
        c.send(b"Subject: dribbled DATA\r\n\r\n").await.unwrap();
        dribble(&mut c, GIVE_UP).await
    });
    let slow_chunk = tokio::spawn(async move {
        let mut c = open(addr).await;
        c.send(b"BDAT 100000 LAST\r\nSubject: dribbled BDAT\r\n\r\n")
            .await
            .unwrap();
        dribble(&mut c, GIVE_UP).await
    });
    // Each chunk is quick; the message is not.
    let endless_chunks = tokio::spawn(async move {
        let mut c = open(addr).await;
        let started = tokio::time::Instant::now();
        let mut accepted = 0;
        while started.elapsed() < GIVE_UP {
            if c.send(b"BDAT 1\r\nx").await.is_err() {
                break;
            }
            match c.reply().await {
                Ok((250, _)) => accepted += 1,
                Ok(other) => {
                    return (
                        Some(other),
                        c.closed_within(Duration::from_secs(5)).await,
                        accepted,
                    );
                }
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        (
            None,
            c.closed_within(Duration::from_secs(5)).await,
            accepted,
        )
    });
    // 16 kB/s for 4 s: sixteen times the minimum rate, longer than the 3 s base.
    let steady = tokio::spawn(async move {
        let mut c = open(addr).await;
        assert_eq!(c.cmd("DATA").await.0, 354);
        let mut body = message("scanner@contoso.com", "steady-above-the-rate");
        let line = format!("{}\r\n", "0123456789abcdef".repeat(4));
        while body.len() < 64_000 {
            body.push_str(&line);
        }
        let bytes = stuffed(&body);
        for chunk in bytes.chunks(4000) {
            c.send(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        c.reply().await.unwrap()
    });

    served(addr, "during-dribble").await;

    for (name, (reply, closed)) in [
        ("DATA", slow_data.await.unwrap()),
        ("one BDAT chunk", slow_chunk.await.unwrap()),
    ] {
        let r = reply.unwrap_or_else(|| panic!("{name}: no reply after {GIVE_UP:?} of dribbling"));
        assert_eq!(r.0, 421, "{name}: {r:?}");
        assert!(
            r.1.starts_with("4.4.2") && r.1.contains("too slow"),
            "{name}: {r:?}"
        );
        assert!(closed, "{name}: connection left open");
    }
    let (reply, closed, accepted) = endless_chunks.await.unwrap();
    let r = reply.unwrap_or_else(|| panic!("BDAT chunks: {accepted} accepted, never cut off"));
    assert_eq!(r.0, 421, "BDAT chunks: {r:?}");
    assert!(r.1.starts_with("4.4.2"), "BDAT chunks: {r:?}");
    assert!(closed, "BDAT chunks: connection left open");
    let r = steady.await.unwrap();
    assert_eq!(r.0, 250, "a client above data_min_rate: {r:?}");

    // Only the two complete messages went anywhere, and nothing is left in the spool.
    let emls = dir.wait_eml("outbox", 2, Duration::from_secs(20)).await;
    assert_eq!(emls.len(), 2, "{emls:?}");
    assert!(emls.iter().any(|m| m.contains("during-dribble")));
    assert!(emls.iter().any(|m| m.contains("steady-above-the-rate")));
    assert!(emls.iter().all(|m| !m.contains("dribbled")));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(dir.spool_files().is_empty() && dir.spooled().is_empty())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dir.spooled(), Vec::<String>::new());
    assert_eq!(dir.spool_files(), Vec::<std::path::PathBuf>::new());
    assert!(dir.eml("bounces").is_empty());
    let text = logs.text();
    assert!(
        text.matches("message data too slow").count() >= 3,
        "the cause is logged:\n{text}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_while_another_client_is_served() {
    const IDLE: usize = 2000;
    let dir = Dir::new();
    let relay = relay(
        &dir,
        "max_connections = 2500\nmax_connections_per_ip = 2500\n",
    )
    .await;
    let addr = relay.local_addrs()[0];
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    served(addr, "among-idle").await;
    // Past the limit: a clean 421, not a hang.
    let text = dir.toml(
        "outbox",
        "",
        "[limits]\nmax_connections = 5\nmax_connections_per_ip = 5\n",
    );
    let dir2 = Dir::new();
    let text = text.replace(
        &dir.path().display().to_string(),
        &dir2.path().display().to_string(),
    );
    let small = start(dir2.config(&text)).await;
    let a2 = small.local_addrs()[0];
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(Smtp::connect(a2).await);
    }
    let mut extra = Smtp::connect_raw(a2).await.unwrap();
    let r = extra
        .reply_within(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.0, 421, "{r:?}");
    assert!(r.1.starts_with("4.7.0"), "{r:?}");
    drop(held);
    drop(idle);
    small.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_rcpts_bad_commands_long_lines_and_big_messages_hit_their_limits() {
    let dir = Dir::new();
    let relay = relay(
        &dir,
        "max_recipients = 20\nmax_bad_commands = 5\nmax_line_length = 1000\nmax_message_size = 100000\n",
    )
    .await;
    let addr = relay.local_addrs()[0];

    // Endless RCPTs: 452 4.5.3 past the limit, and the message still goes to the first 20.
    let mut c = Smtp::connect(addr).await;
    assert_eq!(c.cmd("EHLO printer.lan").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<scanner@contoso.com>").await.0, 250);
    let mut over = Vec::new();
    for i in 0..200 {
        let r = c.cmd(&format!("RCPT TO:<user{i}@contoso.com>")).await;
        if i < 20 {
            assert_eq!(r.0, 250, "rcpt {i}: {r:?}");
        } else {
            over.push(r);
        }
    }
    assert!(
        over.iter().all(|r| r.0 == 452 && r.1.starts_with("4.5.3")),
        "{:?}",
        over[0]
    );
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(&stuffed(&message("scanner@contoso.com", "twenty")))
        .await
        .unwrap();
    assert_eq!(c.reply().await.unwrap().0, 250);

    // Oversized line: 500 5.5.6, and the session goes on.
    let long = format!("NOOP {}", "A".repeat(5000));
    let r = c.cmd(&long).await;
    assert_eq!(r.0, 500, "{r:?}");
    assert!(r.1.starts_with("5.5.6"), "{r:?}");
    // A line that never ends is discarded as it comes, not buffered.
    c.send(&vec![b'B'; 1 << 20]).await.unwrap();
    let r = c.cmd("").await;
    assert_eq!(r.0, 500, "{r:?}");
    assert!(r.1.starts_with("5.5.6"), "{r:?}");

    // Oversized message: SIZE= up front, and a message that grows past the limit.
    let r = c.cmd("MAIL FROM:<scanner@contoso.com> SIZE=200000").await;
    assert_eq!(r.0, 552, "{r:?}");
    assert!(r.1.starts_with("5.3.4"), "{r:?}");
    assert_eq!(c.cmd("MAIL FROM:<scanner@contoso.com>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<reception@contoso.com>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    let big = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789abcdef\r\n".repeat(12_000)
    );
    c.send(&stuffed(&big)).await.unwrap();
    let r = c.reply().await.unwrap();
    assert_eq!(r.0, 552, "{r:?}");
    assert!(r.1.starts_with("5.3.4"), "{r:?}");
    // BDAT past the limit too.
    assert_eq!(c.cmd("MAIL FROM:<scanner@contoso.com>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<reception@contoso.com>").await.0, 250);
    let chunk = vec![b'x'; 150_000];
    c.send(format!("BDAT {} LAST\r\n", chunk.len()).as_bytes())
        .await
        .unwrap();
    c.send(&chunk).await.unwrap();
    let r = c.reply().await.unwrap();
    assert_eq!(r.0, 552, "{r:?}");
    assert_eq!(
        c.cmd("NOOP").await.0,
        250,
        "in sync after the refused chunk"
    );
    let _ = c.try_cmd("QUIT").await;

    // Endless bad commands: 421 after max_bad_commands, and the connection closes.
    let mut c = Smtp::connect(addr).await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        match c.try_cmd("XYZZY plugh").await {
            Ok(r) => {
                codes.push(r.0);
                if r.0 == 421 {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // The 5th error is answered, then 421 follows on the same write.
    assert!(codes.len() <= 6, "{codes:?}");
    assert!(
        codes[..codes.len() - 1].iter().all(|c| *c >= 500),
        "{codes:?}"
    );
    let last = if codes.last() == Some(&421) {
        421
    } else {
        c.reply().await.unwrap().0
    };
    assert_eq!(last, 421, "{codes:?}");
    assert!(c.closed_within(Duration::from_secs(5)).await);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let emls = dir.eml("outbox");
    assert_eq!(emls.len(), 1, "only the 20-recipient message");
    relay.shutdown().await;
}

/// A MIME bomb: 2,000 nested multiparts and 20,000 tiny parts (what a parser that expands
/// nesting or keeps parts in memory would choke on). The relay streams bytes; it is accepted
/// and delivered with memory bounded (peak RSS checked only as a generous sanity bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_mime_bomb_is_streamed_with_bounded_memory() {
    let dir = Dir::new();
    let relay = relay(&dir, "").await;
    let addr = relay.local_addrs()[0];
    let mut body = String::from(
        "From: <scanner@contoso.com>\r\nSubject: laughs\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n",
    );
    for depth in 1..2000 {
        body.push_str(&format!(
            "--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{depth}\"\r\n\r\n",
            depth - 1
        ));
    }
    for _ in 0..20_000 {
        body.push_str("--b1999\r\nContent-Type: text/plain\r\n\r\nlol\r\n");
    }
    body.push_str("--b1999--\r\n");
    let size = body.len();
    let r = submit(
        addr,
        "scanner@contoso.com",
        &["reception@contoso.com"],
        &body,
    )
    .await
    .unwrap();
    assert!(r.0 == 250 || r.0 == 552, "{r:?}");
    if r.0 == 250 {
        let emls = dir.wait_eml("outbox", 1, Duration::from_secs(20)).await;
        assert_eq!(emls.len(), 1);
        assert!(emls[0].len() >= size);
    }
    if let Some(kib) = peak_rss_kib() {
        println!("peak RSS after a {size}-byte MIME bomb: {kib} KiB");
        assert!(kib < 1024 * 1024, "peak RSS {kib} KiB");
    }
    relay.shutdown().await;
}
