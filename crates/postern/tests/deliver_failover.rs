//! Failover between the routes of a rule, end to end: a transient failure moves the
//! recipient to the next route at once; a permanent one does not; the route reached is
//! kept in the spool across a restart.

mod deliver_common;

use std::time::Duration;

use deliver_common::*;
use postern_testkit::fault::Fault;

const WAIT: Duration = Duration::from_secs(30);

/// [`submission_route`] with a 2 s connect timeout, so a down route fails over quickly.
fn route(dir: &Dir, name: &str, port: u16, ca: &str, extra: &str) -> String {
    submission_route(
        dir,
        name,
        port,
        ca,
        &format!("connect_timeout = \"2s\"\n{extra}"),
    )
}

/// A loopback port nothing listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_client_submission_route_fails_over_to_the_next() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let down = closed_port().await;
    let extra = format!(
        "{}{}{}[[rules]]\nsender = [\"contoso.com\"]\nroutes = [\"primary\", \"backup\"]\n",
        route(&dir, "primary", down, exo.ca_cert_pem(), ""),
        route(&dir, "backup", exo.addr().port(), exo.ca_cert_pem(), ""),
        app_identity(&dir, &sim)
    );
    // The queue's backoff is 200 ms; the relay's default route list is only a fallback.
    let relay = start(dir.config("primary", &extra)).await;
    let sent = send(
        &relay,
        MAILBOX,
        &["bob@fabrikam.com", "carol@fabrikam.com"],
        &message(MAILBOX, "failover"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let msgs = exo.recorder().wait_for(1, WAIT).await.unwrap();
    assert_eq!(msgs.len(), 1, "one transaction for both recipients");
    assert_eq!(msgs[0].rcpt_to, ["bob@fabrikam.com", "carol@fabrikam.com"]);
    let left = spool_until(&dir, WAIT, <[_]>::is_empty).await;
    assert!(left.is_empty());
    let metrics = relay.spool().metrics().render();
    assert!(
        metrics.contains("postern_recipients_delivered_total{route=\"backup\"} 2"),
        "{metrics}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_do_not_fail_over() {
    let sim = entra().await;
    let first = exo(&sim).await;
    let second = exo(&sim).await;
    let dir = Dir::new();
    let extra = format!(
        "{}{}{}[[rules]]\nsender = [\"contoso.com\"]\nroutes = [\"first\", \"second\"]\n",
        route(&dir, "first", first.addr().port(), first.ca_cert_pem(), ""),
        route(
            &dir,
            "second",
            second.addr().port(),
            second.ca_cert_pem(),
            ""
        ),
        app_identity(&dir, &sim)
    );
    let relay = start(dir.config("first", &extra)).await;
    // SendAsDenied: the mailbox may not send as boss@contoso.com.
    let sent = send(
        &relay,
        "boss@contoso.com",
        &["bob@fabrikam.com"],
        &message("boss@contoso.com", "denied"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let bounces = dir.bounces(1, WAIT).await;
    assert_eq!(bounces.len(), 1);
    assert!(bounces[0].contains("5.2.252"), "{}", bounces[0]);
    assert!(second.recorder().is_empty());
    assert!(second.recorder().refusals().is_empty(), "failed over");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_reached_is_kept_across_a_restart() {
    let sim = entra().await;
    // "first" answers every message with a transient error; "second" works but its
    // mailbox has a budget of one recipient an hour, which the first message uses up.
    let first = exo(&sim).await;
    first.faults().set_sticky(Some(Fault::ReplyAfterData(
        "452 4.3.1 Insufficient system resources".into(),
    )));
    let second = exo(&sim).await;
    let dir = Dir::new();
    let config = |budget: u32| {
        let extra = format!(
            "{}{}{}[[rules]]\nsender = [\"contoso.com\"]\nroutes = [\"first\", \"second\"]\n",
            // A generic smtp route with XOAUTH2: a sending identity of its own.
            route(&dir, "first", first.addr().port(), first.ca_cert_pem(), "")
                .replace("client_submission", "smtp")
                .replace(
                    "identity = ",
                    "tls = \"required\"\nauth = \"xoauth2\"\nidentity = "
                ),
            route(
                &dir,
                "second",
                second.addr().port(),
                second.ca_cert_pem(),
                &format!("max_recipients_per_day = {budget}\nrecipient_window = \"1h\"\n"),
            ),
            app_identity(&dir, &sim)
        );
        dir.config("first", &extra)
    };
    let relay = start(config(1)).await;
    for i in 0..2 {
        send_accepted(&relay, &format!("resume-{i}")).await;
        if i == 0 {
            second.recorder().wait_for(1, WAIT).await.unwrap();
        }
    }
    // The second message: refused by "first", moved on to "second", queued by its limiter.
    let queued = spool_until(&dir, WAIT, |m| {
        m.len() == 1 && m[0].state.recipients[0].last_category.as_deref() == Some("rate_limited")
    })
    .await;
    assert_eq!(queued.len(), 1);
    let r = &queued[0].state.recipients[0];
    assert_eq!(r.route_index, 1, "{r:?}");
    assert_eq!(r.last_route.as_deref(), Some("first"));
    assert_eq!(r.attempts, 1);
    let refused_by_first = first.recorder().refusals().len();
    assert_eq!(refused_by_first, 2);
    relay.shutdown().await;

    // After a restart (with budget to spare) it resumes on "second", without going back
    // to "first".
    let relay = start(config(5)).await;
    relay.queue_control().retry(None).await.unwrap();
    second.recorder().wait_for(2, WAIT).await.unwrap();
    let left = spool_until(&dir, WAIT, <[_]>::is_empty).await;
    assert!(left.is_empty());
    assert_eq!(first.recorder().refusals().len(), refused_by_first);
    assert!(dir.bounces(0, Duration::ZERO).await.is_empty());
    relay.shutdown().await;
}
