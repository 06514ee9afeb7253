//! Invariants 1 and 2 under SIGKILL: the relay runs as a child process (this test binary
//! re-executed, see `support`), takes a steady load from several concurrent clients, and is
//! killed at random moments (during DATA, while the spool is committing, while deliveries to
//! the Exchange Online simulator are in progress), then restarted on the same spool. At the
//! end every message that got a `250` reached the upstream, and the duplicates stay within
//! what can have been in flight upstream at the kills.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;
use tokio::sync::watch;

/// The child relay (a no-op unless started by [`ChildRelay::spawn`]).
#[test]
fn child_relay() {
    child_entry();
}

/// Messages sent (override with `POSTERN_CRASH_MESSAGES`).
fn messages() -> usize {
    std::env::var("POSTERN_CRASH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}
const CLIENTS: usize = 8;
const KILLS: usize = 6;
/// The route's `max_connections`: at most this many messages are handed to the upstream at
/// once, so at most this many can be delivered without the spool knowing, per kill.
const UPSTREAM_CONNECTIONS: usize = 3;

fn subject_token(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .map(|s| s.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_message() {
    let cloud = Cloud::start().await;
    let dir = Dir::new();
    let text = dir.toml(
        "m365",
        "",
        &cloud.toml(
            &dir,
            &format!("max_connections = {UPSTREAM_CONNECTIONS}\npool_size = 3"),
        ),
    );
    dir.config(&text); // valid before the child tries it
    let cfg_path = dir.write("relay.toml", &text);
    let log = dir.path().join("relay.log");

    let child = ChildRelay::spawn("child_relay", &cfg_path, &log);
    let (addr_tx, addr_rx) = watch::channel(child.addr);
    let mut child = Some(child);

    // Acknowledged attempts: each attempt of message i has its own token `m<i>a<n>`, so a
    // client's own retry after a lost 250 is not counted as a relay duplicate.
    let acked: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let total = messages();
    let progress = {
        let (acked, recorder) = (Arc::clone(&acked), cloud.exo.recorder().clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let a = acked.lock().unwrap().len();
                eprintln!("crash test: {a} acknowledged, {} upstream", recorder.len());
            }
        })
    };
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (acked, next, addr_rx) = (Arc::clone(&acked), Arc::clone(&next), addr_rx.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                for attempt in 0.. {
                    let token = format!("m{i}a{attempt}");
                    let addr = *addr_rx.borrow();
                    let body = message(MAILBOX, &token);
                    let r = tokio::time::timeout(
                        Duration::from_secs(10),
                        submit(addr, MAILBOX, &["reception@contoso.com"], &body),
                    )
                    .await;
                    if let Ok(Ok((250, _))) = r {
                        acked.lock().unwrap().insert(token);
                        // A steady load that lasts through the kills, not one burst.
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        break;
                    }
                    // Refused, reset or timed out: a device tries again a little later.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    let recorder = cloud.exo.recorder().clone();
    let mut partial_tokens = Vec::new();
    let mut kills = Vec::new();
    for k in 0..KILLS {
        // Let the load run a little on this incarnation.
        let jitter = 300 + rand::random_range(0..900u64);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        let addr = *addr_rx.borrow();
        let phase = match k % 3 {
            0 => {
                // During DATA: a client is half-way through its message.
                let token = format!("partial{k}");
                let mut c = Smtp::connect(addr).await;
                assert_eq!(c.cmd("EHLO printer.lan").await.0, 250);
                assert_eq!(c.cmd(&format!("MAIL FROM:<{MAILBOX}>")).await.0, 250);
                assert_eq!(c.cmd("RCPT TO:<reception@contoso.com>").await.0, 250);
                assert_eq!(c.cmd("DATA").await.0, 354);
                let body = message(MAILBOX, &token);
                c.send(&body.as_bytes()[..body.len() / 2]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                partial_tokens.push(token);
                // Kept open until the kill.
                std::mem::forget(c);
                "during DATA"
            }
            1 => {
                // During upstream delivery: slow the upstream's replies so attempts are in
                // progress (and some upstream 250s are on their way) at the kill.
                cloud
                    .exo
                    .faults()
                    .set_reply_delay(Duration::from_millis(40));
                let before = recorder.len();
                let _ = recorder.wait_for(before + 2, Duration::from_secs(10)).await;
                tokio::time::sleep(Duration::from_millis(rand::random_range(0..40))).await;
                "during upstream delivery"
            }
            _ => {
                // While the spool commits: right after a new acknowledgement, with the
                // other clients mid-commit (group fsync).
                let before = acked.lock().unwrap().len();
                for _ in 0..200 {
                    if acked.lock().unwrap().len() > before {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                "during spool writes"
            }
        };
        let acked_now = acked.lock().unwrap().len();
        let upstream_now = recorder.len();
        if let Some(c) = child.take() {
            c.kill();
        }
        cloud.exo.faults().clear();
        kills.push((phase, acked_now, upstream_now));
        let c = ChildRelay::spawn("child_relay", &cfg_path, &log);
        addr_tx.send_replace(c.addr);
        child = Some(c);
    }

    for c in clients {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("clients finish")
            .unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), total, "every message acknowledged once");

    // Everything acknowledged reaches the upstream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (counts, missing) = loop {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for m in recorder.messages() {
            if let Some(t) = subject_token(&m.data) {
                *counts.entry(t).or_default() += 1;
            }
        }
        let missing: Vec<&String> = acked.iter().filter(|t| !counts.contains_key(*t)).collect();
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            let missing: Vec<String> = missing.into_iter().cloned().collect();
            break (counts, missing);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delivered_acked = acked.iter().filter(|t| counts.contains_key(*t)).count();
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    let unacked_delivered = counts
        .keys()
        .filter(|t| !acked.contains(*t) && t.starts_with('m'))
        .count();
    let partial_delivered: Vec<&String> = partial_tokens
        .iter()
        .filter(|t| counts.contains_key(*t))
        .collect();
    println!("crash test figures:");
    println!("  messages            {total} from {CLIENTS} concurrent clients");
    println!("  kills (SIGKILL)     {}", kills.len());
    for (i, (phase, a, u)) in kills.iter().enumerate() {
        println!("    kill {i}: {phase}, acknowledged so far {a}, upstream so far {u}");
    }
    println!("  acknowledged (250)  {}", acked.len());
    println!("  delivered upstream  {delivered_acked} of the acknowledged");
    println!("  missing             {}", missing.len());
    println!(
        "  duplicates          {duplicates} (bound: {} = {UPSTREAM_CONNECTIONS} in flight x {} kills)",
        UPSTREAM_CONNECTIONS * kills.len(),
        kills.len()
    );
    println!("  committed but 250 lost at a kill (delivered, client retried): {unacked_delivered}");
    println!("  upstream records    {}", recorder.len());
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}\nrelay log: {}",
        log.display()
    );
    assert!(
        partial_delivered.is_empty(),
        "a message cut off in DATA went upstream: {partial_delivered:?}"
    );
    assert!(
        duplicates <= UPSTREAM_CONNECTIONS * kills.len(),
        "{duplicates} duplicates for {} kills",
        kills.len()
    );
    // And the spool drains: every recovered message finished.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = dir.spooled();
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spool not drained: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dir.eml("bounces").is_empty(),
        "nothing may bounce in this test"
    );
    progress.abort();
    drop(child);
}
