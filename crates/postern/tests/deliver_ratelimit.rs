//! Rate limits per sending identity, end to end: device → listener → spool → queue (limiter)
//! → `client_submission` → the Exchange Online simulator, with short windows.
//!
//! Over a limit mail is queued, never failed; Exchange's throttling replies (`432 4.3.2`,
//! `554 5.2.0 ...SubmissionQuotaExceededException`) defer it and pause the mailbox; the
//! recipient budget survives a restart.

mod deliver_common;

use std::path::Path;
use std::time::Duration;

use deliver_common::*;
use postern::spool::InspectedMessage;
use postern_testkit::exo::{Profile, SubmissionServer};
use postern_testkit::fault::Fault;
use postern_testkit::org::{Mailbox, Organization, ServicePrincipal};

const WAIT: Duration = Duration::from_secs(30);

fn all_pending_with(msgs: &[InspectedMessage], category: &str) -> bool {
    msgs.iter().all(|m| {
        m.state
            .recipients
            .iter()
            .all(|r| r.outcome.is_none() && r.last_category.as_deref() == Some(category))
    })
}

fn state_file(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("spool").join("ratelimits.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_five_messages_to_a_thirty_a_minute_route_are_all_delivered_unthrottled() {
    let sim = entra().await;
    // Exchange's 30 messages a minute, on a 4 s window; the relay keeps 30 per 6 s (a margin
    // for the time between the relay's dispatch and the server's clock).
    let exo = exo_builder(&sim)
        .rate_window(Duration::from_secs(4))
        .start()
        .await
        .unwrap();
    let dir = Dir::new();
    let cfg = m365_config(
        &dir,
        &sim,
        &exo,
        "max_messages_per_minute = 30\nmessage_window = \"6s\"\n",
    );
    let relay = std::sync::Arc::new(start(cfg).await);
    // 35 devices at once: all spooled well within one window.
    let mut devices = tokio::task::JoinSet::new();
    for i in 0..35 {
        let relay = std::sync::Arc::clone(&relay);
        devices.spawn(async move {
            let m = message(MAILBOX, &format!("burst-{i}"));
            send(&relay, MAILBOX, &["bob@fabrikam.com"], &m).await
        });
    }
    while let Some(sent) = devices.join_next().await {
        assert_eq!(sent.unwrap().data.unwrap().0, 250);
    }
    let Ok(relay) = std::sync::Arc::try_unwrap(relay) else {
        panic!("relay still shared")
    };
    let msgs = exo.recorder().wait_for(35, WAIT).await.unwrap();
    assert_eq!(msgs.len(), 35);
    // The server never had to hold a message back: the relay stayed under its limit.
    let held: Vec<_> = msgs
        .iter()
        .filter(|m| !m.throttled_for.is_zero())
        .map(|m| (m.message_id.clone(), m.throttled_for))
        .collect();
    assert!(held.is_empty(), "throttled by the server: {held:?}");
    assert!(exo.recorder().refusals().is_empty());
    // The five over the limit were queued by the limiter, not failed.
    let metrics = relay.spool().metrics().render();
    let limited = metrics
        .lines()
        .find(|l| l.contains("rate_limited") && l.contains("m365") && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("no rate_limited deferral in\n{metrics}"));
    let n: f64 = limited.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 5.0, "{limited}");
    let left = spool_until(&dir, WAIT, |m| m.is_empty()).await;
    assert!(left.is_empty(), "still queued: {}", left.len());
    assert!(dir.bounces(0, Duration::ZERO).await.is_empty());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_budget_defers_and_survives_a_restart() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let config = |budget: u32| {
        let limits = format!("max_recipients_per_day = {budget}\nrecipient_window = \"1h\"\n");
        m365_config(&dir, &sim, &exo, &limits)
    };
    let relay = start(config(3)).await;
    for i in 0..5 {
        send_accepted(&relay, &format!("budget-{i}")).await;
    }
    exo.recorder().wait_for(3, WAIT).await.unwrap();
    let queued = spool_until(&dir, WAIT, |m| {
        m.len() == 2 && all_pending_with(m, "rate_limited")
    })
    .await;
    assert_eq!(queued.len(), 2);
    for m in &queued {
        let r = &m.state.recipients[0];
        assert!(r.outcome.is_none(), "{r:?}");
        assert_eq!(r.attempts, 0, "a queued recipient is not an attempt: {r:?}");
        assert!(
            r.last_reply.as_deref().unwrap().contains("3 recipients"),
            "{r:?}"
        );
    }
    relay.shutdown().await;
    assert_eq!(exo.recorder().len(), 3);
    assert!(dir.bounces(0, Duration::ZERO).await.is_empty());
    let saved = state_file(dir.path());
    let used: u64 = saved["identities"]["mailbox:scanner@contoso.com"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[1].as_u64().unwrap())
        .sum();
    assert_eq!(used, 3, "{saved}");

    // Restart with one more recipient allowed: the 3 already used still count, so exactly
    // one of the two queued messages goes.
    let relay = start(config(4)).await;
    relay.queue_control().retry(None).await.unwrap();
    exo.recorder().wait_for(4, WAIT).await.unwrap();
    let queued = spool_until(&dir, WAIT, |m| {
        m.len() == 1 && all_pending_with(m, "rate_limited")
    })
    .await;
    assert_eq!(queued.len(), 1);
    // Give the last one every chance to (wrongly) go.
    relay.queue_control().retry(None).await.unwrap();
    let queued = spool_until(&dir, WAIT, |m| {
        m.len() == 1 && all_pending_with(m, "rate_limited")
    })
    .await;
    assert_eq!(queued.len(), 1);
    assert_eq!(exo.recorder().len(), 4);
    relay.shutdown().await;
    assert!(dir.bounces(0, Duration::ZERO).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_quota_exceeded_defers_and_pauses_the_mailbox() {
    let sim = entra().await;
    // The mailbox's recipient budget at Exchange is 2; the relay does not know it.
    let org = Organization::builder(TENANT, "contoso.com")
        .mailbox(Mailbox::new(MAILBOX).recipient_budget(2))
        .service_principal(ServicePrincipal::new(APP).full_access(MAILBOX))
        .build();
    let exo = SubmissionServer::builder(Profile::ClientSubmission)
        .organization(org)
        .tokens(sim.clone())
        .start()
        .await
        .unwrap();
    let dir = Dir::new();
    let cfg = m365_config(
        &dir,
        &sim,
        &exo,
        "max_recipients_per_day = 0\nrecipient_window = \"1h\"\n",
    );
    let relay = start(cfg).await;
    for i in 0..3 {
        send_accepted(&relay, &format!("quota-{i}")).await;
        // One at a time, so the third is the one over the budget.
        let _ = spool_until(&dir, WAIT, |m| {
            m.iter()
                .all(|m| m.state.recipients.iter().all(|r| r.attempts > 0))
        })
        .await;
    }
    exo.recorder().wait_for(2, WAIT).await.unwrap();
    let queued = spool_until(&dir, WAIT, |m| {
        m.len() == 1 && all_pending_with(m, "daily_limit")
    })
    .await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    let r = &queued[0].state.recipients[0];
    assert!(
        r.last_reply.as_deref().unwrap().contains("554 5.2.0"),
        "{r:?}"
    );
    assert_eq!(r.attempts, 1);
    // Deferred for the window (an hour), not retried in a loop and not bounced.
    let next = r.next_attempt.unwrap();
    assert!(
        next > std::time::SystemTime::now() + Duration::from_secs(30 * 60),
        "{r:?}"
    );
    assert!(
        exo.recorder()
            .refusals()
            .iter()
            .filter(|f| f.code == 554)
            .count()
            == 1
    );
    assert!(dir.bounces(0, Duration::ZERO).await.is_empty());
    relay.shutdown().await;
    // The pause is durable.
    let saved = state_file(dir.path());
    assert!(
        saved["identities"]["mailbox:scanner@contoso.com"]["paused_until"].is_u64(),
        "{saved}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_limit_defers_then_delivers() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    exo.faults().inject(Fault::ReplyAfterData(
        "432 4.3.2 Concurrent connections limit exceeded.".into(),
    ));
    let dir = Dir::new();
    let cfg = m365_config(&dir, &sim, &exo, "throttle_pause = \"300ms\"\n");
    let relay = start(cfg).await;
    send_accepted(&relay, "busy").await;
    let msgs = exo.recorder().wait_for(1, WAIT).await.unwrap();
    assert_eq!(msgs[0].rcpt_to, ["bob@fabrikam.com"]);
    let refusals = exo.recorder().refusals();
    assert!(
        refusals.iter().any(|r| r.code == 432),
        "no 432 recorded: {refusals:?}"
    );
    let left = spool_until(&dir, WAIT, |m| m.is_empty()).await;
    assert!(left.is_empty());
    assert!(dir.bounces(0, Duration::ZERO).await.is_empty());
    // The deferral was counted under the throttling category.
    let metrics = relay.spool().metrics().render();
    assert!(metrics.contains("throttled"), "{metrics}");
    relay.shutdown().await;
}
