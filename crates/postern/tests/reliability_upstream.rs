//! Upstream faults and permanent failures (invariants 1, 2 and 6).
//!
//! Faults: Exchange Online (the simulator) down then back, hanging at the greeting, dropping
//! the connection mid-DATA, hanging after the final dot, `421` and `451` answers, and the
//! Entra token endpoint failing (5xx) or hanging. Nothing that should be retried is bounced,
//! and everything is delivered once the fault clears (retry intervals are 200-500 ms here).
//!
//! Permanent failures: exactly one DSN per failed message to a non-null sender, none to
//! `<>`, and no bounce loops (a DSN that itself fails is not bounced).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use postern_testkit::entra::{Endpoint as EntraEndpoint, EntraFault};
use postern_testkit::fault::Fault;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn subject(data: &[u8]) -> Option<String> {
    String::from_utf8_lossy(data)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(|s| s.trim().to_owned()))
}

async fn setup() -> (Cloud, Dir, postern::RelayHandle) {
    let cloud = Cloud::start().await;
    let dir = Dir::new();
    let text = dir.toml("m365", "", &cloud.toml(&dir, ""));
    let relay = start(dir.config(&text)).await;
    (cloud, dir, relay)
}

async fn send_n(relay: &postern::RelayHandle, prefix: &str, n: usize) -> Vec<String> {
    send_n_to(relay, prefix, n, "reception@contoso.com").await
}

async fn send_n_to(
    relay: &postern::RelayHandle,
    prefix: &str,
    n: usize,
    rcpt: &str,
) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..n {
        let token = format!("{prefix}{i}");
        let r = submit(
            relay.local_addrs()[0],
            MAILBOX,
            &[rcpt],
            &message(MAILBOX, &token),
        )
        .await
        .unwrap();
        assert_eq!(r.0, 250, "{r:?}");
        tokens.push(token);
    }
    tokens
}

/// Waits for every token upstream; asserts each arrived exactly once (`dup_ok`: at most
/// twice, for faults that leave the relay unsure whether the upstream took the message).
async fn all_delivered(cloud: &Cloud, dir: &Dir, tokens: &[String], dup_ok: bool) {
    all_delivered_within(cloud, dir, tokens, dup_ok, WAIT).await;
}

async fn all_delivered_within(
    cloud: &Cloud,
    dir: &Dir,
    tokens: &[String],
    dup_ok: bool,
    wait: Duration,
) {
    let rec = cloud.exo.recorder();
    let started = tokio::time::Instant::now();
    let deadline = started + wait;
    loop {
        let got: Vec<String> = rec
            .messages()
            .iter()
            .filter_map(|m| subject(&m.data))
            .collect();
        let missing: Vec<&String> = tokens.iter().filter(|t| !got.contains(t)).collect();
        if missing.is_empty() {
            for t in tokens {
                let n = got.iter().filter(|g| *g == t).count();
                assert!(n == 1 || (dup_ok && n == 2), "{t} delivered {n} times");
            }
            println!("all delivered {:?} after recovery", started.elapsed());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered after recovery: {missing:?}; refusals: {:?}",
            rec.refusals()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dir.eml("bounces").is_empty(),
        "a transient failure was bounced"
    );
}

/// Lets the relay retry a few times against the fault.
async fn retries_against_the_fault() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refusing_or_hanging_then_back() {
    let (cloud, dir, relay) = setup().await;
    let faults = cloud.exo.faults();
    // Down: every connection greeted with 421 and closed.
    faults.set_sticky(Some(Fault::RefuseConnection));
    let mut tokens = send_n(&relay, "down", 3).await;
    retries_against_the_fault().await;
    assert!(cloud.exo.recorder().is_empty());
    // Hanging: TCP accepted, never a greeting (the route's greeting timeout is 2 s).
    faults.set_sticky(Some(Fault::Hang));
    tokens.extend(send_n(&relay, "hang", 2).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(cloud.exo.recorder().is_empty());
    faults.clear();
    all_delivered(&cloud, &dir, &tokens, false).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dropping_or_hanging_mid_data_and_421_451() {
    let (cloud, dir, relay) = setup().await;
    let faults = cloud.exo.faults();
    faults.inject(Fault::DropMidData);
    faults.inject(Fault::ServiceUnavailable);
    faults.inject(Fault::Temporary);
    faults.inject(Fault::ReplyAfterData(
        "451 4.4.397 Error queuing message.".into(),
    ));
    faults.inject(Fault::HangAfterData(Duration::from_secs(4)));
    faults.inject(Fault::DropMidData);
    let tokens = send_n(&relay, "fault", 4).await;
    // Hanging after the final dot leaves the relay unsure; the simulator did not take the
    // message then, so even that is delivered once.
    all_delivered(&cloud, &dir, &tokens, false).await;
    let refusals = cloud.exo.recorder().refusals();
    let lines: Vec<String> = refusals.iter().map(|r| r.line()).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("421 4.3.2")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("451 4.7.0")),
        "{lines:?}"
    );
    relay.shutdown().await;
}

/// The token endpoint failing (503), then hanging, then back, with the identity's
/// `token_timeout` at 1 s: each hung request ends after it and the delivery is deferred
/// (category `token`, the reply naming the 1 s), never bounced; meanwhile a second route, with
/// its own identity and token endpoint, keeps delivering; after recovery everything goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_failing_then_hanging_then_back() {
    let cloud = Cloud::start().await;
    // A second tenant: its own Entra ID and Exchange Online, reached through route `other`
    // with identity `other` (mail to fabrikam.com).
    let other = Cloud::start().await;
    let (dir, other_dir) = (Dir::new(), Dir::new());
    let second = other
        .toml(&other_dir, "")
        .replace("[routes.m365]", "[routes.other]")
        .replace("identity = \"app\"", "identity = \"other\"")
        .replace("[identities.app]", "[identities.other]");
    let extra = format!(
        "{}token_timeout = \"1s\"\n{second}token_timeout = \"1s\"\n\
         [[rules]]\nrecipient_domain = [\"fabrikam.com\"]\nroutes = [\"other\"]\n",
        cloud.toml(&dir, "")
    );
    let relay = start(dir.config(&dir.toml("m365", "", &extra))).await;

    cloud.entra.set_sticky(
        EntraEndpoint::Token,
        Some(EntraFault::Status {
            status: 503,
            retry_after: None,
        }),
    );
    let mut tokens = send_n(&relay, "tok5xx", 2).await;
    retries_against_the_fault().await;
    assert!(cloud.exo.recorder().is_empty());

    cloud
        .entra
        .set_sticky(EntraEndpoint::Token, Some(EntraFault::Hang));
    let hung_before = cloud.entra.request_count(EntraEndpoint::Token);
    tokens.extend(send_n(&relay, "tokhang", 2).await);
    // The other route is not held up by the hung one.
    let elsewhere = send_n_to(&relay, "elsewhere", 2, "partner@fabrikam.com").await;
    all_delivered(&other, &dir, &elsewhere, false).await;
    // A hung request ends at the 1 s token_timeout (not the 30 s default): the queue retries
    // and asks again while the endpoint still hangs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cloud.entra.request_count(EntraEndpoint::Token) < hung_before + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a hung token request was not cut off by token_timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deferred with the cause, not bounced.
    let spool = postern::spool::inspect(&dir.path().join("spool")).unwrap();
    let hung: Vec<_> = spool
        .iter()
        .filter(|m| {
            m.message
                .envelope()
                .recipients
                .iter()
                .any(|r| r.address == "reception@contoso.com")
        })
        .collect();
    assert_eq!(hung.len(), 4, "all four wait in the spool");
    let timed_out = hung
        .iter()
        .flat_map(|m| &m.state.recipients)
        .filter(|r| {
            r.outcome.is_none()
                && r.last_category.as_deref() == Some("token")
                && r.last_reply
                    .as_deref()
                    .is_some_and(|t| t.contains("did not answer within 1s"))
        })
        .count();
    assert!(
        timed_out >= 1,
        "{:#?}",
        hung.iter().map(|m| &m.state).collect::<Vec<_>>()
    );
    assert!(cloud.exo.recorder().is_empty());
    assert!(dir.eml("bounces").is_empty(), "a token failure was bounced");

    cloud.entra.clear_faults();
    all_delivered(&cloud, &dir, &tokens, false).await;
    assert_eq!(other.exo.recorder().messages().len(), 2);
    relay.shutdown().await;
}

/// Exactly one DSN per failed message to a non-null sender, none to `<>`, no loops.
///
/// `denied@contoso.com` may not send as itself through the app's mailbox, so Exchange
/// answers `554 5.2.252 SendAsDenied` (permanent). DSNs to contoso.com go to the local
/// `bounces` route; a DSN to `loop@fabrikam.com` goes back through Exchange, where it fails
/// too, and must not be bounced again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_bounce_exactly_once_and_never_loop() {
    let cloud = Cloud::start().await;
    let dir = Dir::new();
    let text = dir
        .toml("m365", "", &cloud.toml(&dir, ""))
        .replace(
            "[[rules]]\nsender = [\"<>\"]\nroutes = [\"bounces\"]\n",
            "[[rules]]\nsender = [\"<>\"]\nrecipient_domain = [\"contoso.com\"]\nroutes = [\"bounces\"]\n",
        );
    let relay = start(dir.config(&text)).await;
    let addr = relay.local_addrs()[0];
    let mut failed = Vec::new();
    for i in 0..3 {
        let token = format!("denied{i}");
        let r = submit(
            addr,
            "denied@contoso.com",
            &["reception@contoso.com"],
            &message("denied@contoso.com", &token),
        )
        .await
        .unwrap();
        assert_eq!(r.0, 250, "{r:?}");
        failed.push(token);
    }
    // Null sender: fails the same way, no notice.
    let r = submit(
        addr,
        "",
        &["bob@fabrikam.com"],
        &message("denied@contoso.com", "nullsender"),
    )
    .await
    .unwrap();
    assert_eq!(r.0, 250, "{r:?}");
    // A sender whose DSN goes back upstream and fails again.
    let r = submit(
        addr,
        "loop@fabrikam.com",
        &["reception@contoso.com"],
        &message("loop@fabrikam.com", "looper"),
    )
    .await
    .unwrap();
    assert_eq!(r.0, 250, "{r:?}");

    let bounces = dir.wait_eml("bounces", 3, WAIT).await;
    // Let the queue settle: every message finished, and a loop would have shown by now.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !dir.spooled().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "spool not drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bounces = if bounces.len() == 3 {
        dir.eml("bounces")
    } else {
        bounces
    };
    assert_eq!(bounces.len(), 3, "one DSN per failed message: {bounces:#?}");
    let mut seen = HashSet::new();
    for b in &bounces {
        assert!(b.contains("multipart/report"), "{b}");
        assert!(b.contains("denied@contoso.com"), "{b}");
        assert!(b.contains("5.2.252"), "the cause is named: {b}");
        let which: Vec<&String> = failed
            .iter()
            .filter(|t| b.contains(&format!("<{t}@printer.lan>")))
            .collect();
        assert_eq!(which.len(), 1, "{b}");
        assert!(seen.insert(which[0].clone()), "two DSNs for {}", which[0]);
        assert!(!b.contains("nullsender"), "a DSN for the null sender: {b}");
    }
    // Upstream: nothing was accepted; the loop sender's DSN was tried once and not bounced.
    let rec = cloud.exo.recorder();
    assert!(rec.is_empty(), "{:?}", rec.messages());
    let dsn_attempts = rec
        .refusals()
        .iter()
        .filter(|r| r.mail_from.as_deref() == Some("") && r.code >= 500)
        .count();
    assert!(dsn_attempts <= 1, "{:?}", rec.refusals());
    let total_refusals = rec.refusals().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rec.refusals().len(),
        total_refusals,
        "still sending: a bounce loop"
    );
    relay.shutdown().await;
}
