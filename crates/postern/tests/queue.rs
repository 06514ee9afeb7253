//! Queue: retry with backoff, expiry, bounces, no re-delivery after restart, local sink.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern::delivery::{
    DeliveryFuture, DeliveryReport, LocalFormat, LocalSink, RcptOutcome, Transport,
};
use postern::queue::{self, QueueConfig, QueueHandle, Transports};
use postern::router::{Router, RuleConfig};
use postern::spool::{ClientInfo, Envelope, Notify, QueueId, Recipient, Ret, Spool, SpoolConfig};
use postern_ndr::{Action, DeliveryReport as Dsn};

/// Answers from a script: the n-th call to deliver a recipient gets `script(address, n)`.
type Script = dyn Fn(&str, u32) -> RcptOutcome + Send + Sync;

struct Scripted {
    script: Box<Script>,
    calls: Mutex<Vec<(String, u32)>>,
}

impl Scripted {
    fn new(f: impl Fn(&str, u32) -> RcptOutcome + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            script: Box::new(f),
            calls: Mutex::new(Vec::new()),
        })
    }
    fn calls_for(&self, addr: &str) -> u32 {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == addr)
            .count() as u32
    }
}

impl Transport for Scripted {
    fn deliver<'a>(
        &'a self,
        msg: &'a postern::spool::SpooledMessage,
        rcpts: &'a [usize],
    ) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let body = msg.read_body().await.unwrap();
            assert!(body.starts_with(b"Subject:"));
            let mut report = DeliveryReport::new();
            for &i in rcpts {
                let addr = msg.envelope().recipients[i].address.clone();
                let n = self.calls_for(&addr);
                self.calls.lock().unwrap().push((addr.clone(), n));
                report.push(i, (self.script)(&addr, n));
            }
            report
        })
    }
}

fn fast() -> QueueConfig {
    let mut cfg = QueueConfig::default();
    cfg.retry_initial = Duration::from_millis(10);
    cfg.retry_max = Duration::from_millis(40);
    cfg.concurrency = 4;
    cfg.hostname = "relay.test".into();
    cfg
}

/// Recipients at fabrikam.com go to "upstream" (the scripted transport); everything else
/// (notably bounces to the contoso.com sender) to the local sink "outbox".
async fn start(dir: &Path, upstream: Arc<Scripted>, cfg: QueueConfig) -> (Arc<Spool>, QueueHandle) {
    let (spool, rec) = Spool::open(&SpoolConfig::new(dir.join("spool")))
        .await
        .unwrap();
    let spool = Arc::new(spool);
    let mut rule = RuleConfig::default();
    rule.recipient_domain = vec!["fabrikam.com".into()];
    rule.routes = vec!["upstream".into()];
    let router = Router::new(&[rule], &["outbox".into()]).unwrap();
    let mut transports: Transports = BTreeMap::new();
    transports.insert("upstream".into(), upstream);
    transports.insert(
        "outbox".into(),
        Arc::new(LocalSink::new(dir.join("outbox"), LocalFormat::Eml)),
    );
    let q = queue::start(
        spool.clone(),
        rec.messages,
        Arc::new(router),
        transports,
        cfg,
    );
    (spool, q)
}

fn envelope(from: Option<&str>, to: &[&str]) -> Envelope {
    Envelope::new(
        from.map(Into::into),
        to.iter().map(|r| Recipient::new(*r)).collect(),
        ClientInfo::new("127.0.0.1:1234".parse().unwrap(), "printer", "lan"),
    )
}

async fn submit(spool: &Spool, from: Option<&str>, to: &[&str]) -> QueueId {
    submit_env(spool, envelope(from, to)).await
}

async fn submit_env(spool: &Spool, env: Envelope) -> QueueId {
    let mut inc = spool.receive(env).await.unwrap();
    inc.write(b"Subject: scan\r\nFrom: scanner@contoso.com\r\n\r\nbody\r\n")
        .await
        .unwrap();
    inc.commit().await.unwrap()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// No message left in the spool, and no state file either.
fn spool_empty(dir: &Path) -> bool {
    queue_files(dir).is_empty()
        && postern::spool::inspect(&dir.join("spool"))
            .unwrap()
            .is_empty()
}

fn queue_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("spool/queue"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn outbox(dir: &Path, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("outbox"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .map(|p| std::fs::read_to_string(p).unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let t = Scripted::new(|_, n| {
        if n < 3 {
            RcptOutcome::Transient {
                reason: "451 4.7.500 Server busy".into(),
                category: "throttled".into(),
                retry_after: None,
            }
        } else {
            RcptOutcome::delivered("250 2.0.0 OK")
        }
    });
    let (spool, q) = start(dir.path(), t.clone(), fast()).await;
    submit(&spool, Some("scanner@contoso.com"), &["a@fabrikam.com"]).await;
    eventually("delivered and removed", || {
        t.calls_for("a@fabrikam.com") == 4 && spool_empty(dir.path())
    })
    .await;
    q.shutdown().await;
    assert_eq!(t.calls_for("a@fabrikam.com"), 4);
    assert!(
        outbox(dir.path(), "eml").is_empty(),
        "no bounce for a delivered message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_fails_and_bounces_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = Scripted::new(|_, _| RcptOutcome::transient("421 4.3.2 down", "unavailable"));
    let mut cfg = fast();
    cfg.lifetime = Duration::from_millis(300);
    let (spool, q) = start(dir.path(), t.clone(), cfg).await;
    let id = submit(&spool, Some("scanner@contoso.com"), &["a@fabrikam.com"]).await;
    eventually("bounce delivered to the sender", || {
        outbox(dir.path(), "eml").len() == 1
    })
    .await;
    eventually("spool empty", || spool_empty(dir.path())).await;
    q.shutdown().await;
    assert!(
        t.calls_for("a@fabrikam.com") >= 2,
        "retried before expiring"
    );
    let dsn = &outbox(dir.path(), "eml")[0];
    assert!(dsn.contains("To: <scanner@contoso.com>\r\n"));
    assert!(dsn.contains(&format!("Message-ID: <{}@relay.test>", id.bounce(0))));
    let report = Dsn::parse(dsn.as_bytes()).unwrap();
    let reporting = report.per_message.reporting_mta.as_ref().unwrap();
    assert_eq!(reporting.to_string(), "dns; relay.test");
    assert!(report.per_message.arrival_date.is_some());
    assert_eq!(report.recipients.len(), 1);
    let r = &report.recipients[0];
    assert_eq!(r.recipient(), "a@fabrikam.com");
    assert_eq!(r.action, Action::Failed);
    assert_eq!(r.status.to_string(), "4.4.7");
    assert_eq!(
        r.diagnostic_code.as_ref().unwrap().to_string(),
        "smtp; 421 4.3.2 down"
    );
    assert!(r.last_attempt_date.is_some());
    assert_eq!(r.final_log_id.as_deref(), Some(id.as_str()));
    let human = report.human_readable.as_deref().unwrap();
    assert!(
        human.contains("retry window ran out"),
        "the explanation says why: {human}"
    );
    assert!(
        dsn.find("Content-Type: text/plain") < dsn.find("Content-Type: message/delivery-status"),
        "human text first"
    );
    assert_eq!(
        report.original_headers.as_deref(),
        Some("Subject: scan\r\nFrom: scanner@contoso.com\r\n")
    );
    assert!(!dsn.contains("\r\nbody\r\n"), "RET unset: headers only");
    let json = &outbox(dir.path(), "json")[0];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        v["envelope"]["mail_from"],
        serde_json::Value::Null,
        "bounces come from <>"
    );
    assert_eq!(v["delivered_to"][0], "scanner@contoso.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_get_exactly_one_bounce_and_none_to_null_sender() {
    let dir = tempfile::tempdir().unwrap();
    let t = Scripted::new(|addr, _| {
        if addr.starts_with("ok") {
            RcptOutcome::delivered("250 2.0.0 OK")
        } else {
            RcptOutcome::Permanent {
                reason: "550 5.1.10 RESOLVER.ADR.RecipientNotFound".into(),
                category: "recipient_unknown".into(),
                remedy: None,
            }
        }
    });
    let (spool, q) = start(dir.path(), t.clone(), fast()).await;
    submit(
        &spool,
        Some("scanner@contoso.com"),
        &[
            "gone1@fabrikam.com",
            "ok@fabrikam.com",
            "gone2@fabrikam.com",
        ],
    )
    .await;
    // A bounce itself failing: from <>, so no notice (no bounce of a bounce).
    submit(&spool, None, &["gone3@fabrikam.com"]).await;
    eventually("one bounce", || outbox(dir.path(), "eml").len() == 1).await;
    eventually("spool empty", || spool_empty(dir.path())).await;
    q.shutdown().await;
    let dsns = outbox(dir.path(), "eml");
    assert_eq!(dsns.len(), 1);
    assert!(dsns[0].contains("Final-Recipient: rfc822; gone1@fabrikam.com"));
    assert!(dsns[0].contains("Final-Recipient: rfc822; gone2@fabrikam.com"));
    assert!(!dsns[0].contains("Final-Recipient: rfc822; ok@fabrikam.com"));
    let report = Dsn::parse(dsns[0].as_bytes()).unwrap();
    let rcpts: Vec<_> = report.recipients.iter().map(|r| r.recipient()).collect();
    assert_eq!(rcpts, ["gone1@fabrikam.com", "gone2@fabrikam.com"]);
    for r in &report.recipients {
        assert_eq!(
            (r.action, r.status.to_string()),
            (Action::Failed, "5.1.10".into())
        );
        assert_eq!(
            r.diagnostic_code.as_ref().unwrap().to_string(),
            "smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound"
        );
    }
    let human = report.human_readable.unwrap();
    assert!(
        human.contains("<gone1@fabrikam.com>: delivery failed.")
            && human.contains("What to do: Check the recipient address for typos"),
        "{human}"
    );
    // No retry of permanent failures.
    assert_eq!(t.calls_for("gone1@fabrikam.com"), 1);
    assert_eq!(t.calls_for("gone3@fabrikam.com"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_never_redelivers_a_delivered_recipient() {
    let dir = tempfile::tempdir().unwrap();
    // First run: a is delivered, b keeps failing for a long while.
    let t1 = Scripted::new(|addr, _| {
        if addr.starts_with('a') {
            RcptOutcome::delivered("250 OK")
        } else {
            RcptOutcome::transient("451 4.4.1 later", "unavailable")
        }
    });
    let mut cfg = fast();
    cfg.retry_initial = Duration::from_secs(3600);
    cfg.retry_max = Duration::from_secs(3600);
    let (spool, q) = start(dir.path(), t1.clone(), cfg).await;
    submit(
        &spool,
        Some("scanner@contoso.com"),
        &["a@fabrikam.com", "b@fabrikam.com"],
    )
    .await;
    eventually("first attempt recorded", || {
        queue_files(dir.path())
            .iter()
            .any(|f| f.ends_with(".state"))
    })
    .await;
    q.shutdown().await;
    drop(spool);

    // Second run, with the next attempt due now: only b is attempted again.
    let state_file = queue_files(dir.path())
        .into_iter()
        .find(|f| f.ends_with(".state"))
        .unwrap();
    let path = dir.path().join("spool/queue").join(state_file);
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    state["recipients"][1]["next_attempt"] = serde_json::Value::Null;
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

    let t2 = Scripted::new(|_, _| RcptOutcome::delivered("250 OK"));
    let (_spool, q) = start(dir.path(), t2.clone(), fast()).await;
    eventually("b delivered", || spool_empty(dir.path())).await;
    q.shutdown().await;
    assert_eq!(
        t2.calls_for("a@fabrikam.com"),
        0,
        "a was delivered before the restart"
    );
    assert_eq!(t2.calls_for("b@fabrikam.com"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sink_writes_eml_and_json_and_maildir() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, q) = start(
        dir.path(),
        Scripted::new(|_, _| RcptOutcome::delivered("250")),
        fast(),
    )
    .await;
    let id = submit(
        &spool,
        Some("scanner@contoso.com"),
        &["reception@contoso.com"],
    )
    .await;
    eventually("delivered", || spool_empty(dir.path())).await;
    q.shutdown().await;
    let eml = std::fs::read(dir.path().join(format!("outbox/{id}.eml"))).unwrap();
    assert_eq!(
        eml,
        b"Subject: scan\r\nFrom: scanner@contoso.com\r\n\r\nbody\r\n"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(format!("outbox/{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(json["queue_id"], id.as_str());
    assert_eq!(json["envelope"]["mail_from"], "scanner@contoso.com");
    assert_eq!(json["delivered_to"][0], "reception@contoso.com");
    assert_eq!(json["outcome"], "delivered");

    // Maildir: tmp/ then new/, with a Return-Path.
    let (spool, _) = Spool::open(&SpoolConfig::new(dir.path().join("spool2")))
        .await
        .unwrap();
    let id = submit(&spool, Some("s@contoso.com"), &["r@contoso.com"]).await;
    let (_, rec) = Spool::open(&SpoolConfig::new(dir.path().join("spool2")))
        .await
        .unwrap();
    let msg = rec.messages.iter().find(|m| m.message.id() == &id).unwrap();
    let sink = LocalSink::new(dir.path().join("maildir"), LocalFormat::Maildir);
    let report = sink.deliver(&msg.message, &[0]).await;
    assert!(matches!(report.get(0), Some(RcptOutcome::Delivered { .. })));
    let new: Vec<_> = std::fs::read_dir(dir.path().join("maildir/new"))
        .unwrap()
        .collect();
    assert_eq!(new.len(), 1);
    let text = std::fs::read_to_string(new[0].as_ref().unwrap().path()).unwrap();
    assert!(text.starts_with("Return-Path: <s@contoso.com>\r\nSubject: scan\r\n"));
    assert_eq!(
        std::fs::read_dir(dir.path().join("maildir/tmp"))
            .unwrap()
            .count(),
        0
    );
}

fn refuse_all() -> Arc<Scripted> {
    Scripted::new(|_, _| RcptOutcome::Permanent {
        reason: "550 5.7.60 SMTP; Client does not have permissions to send as this sender".into(),
        category: "send_as_denied".into(),
        remedy: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ret_full_returns_the_message_with_orcpt_and_envid() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, q) = start(dir.path(), refuse_all(), fast()).await;
    let mut env = envelope(Some("scanner@contoso.com"), &["ceo@fabrikam.com"]);
    env.ret = Some(Ret::Full);
    env.envid = Some("scan-0042".into());
    env.recipients[0].orcpt = Some("rfc822;CEO@fabrikam.com".into());
    submit_env(&spool, env).await;
    eventually("one bounce", || outbox(dir.path(), "eml").len() == 1).await;
    eventually("spool empty", || spool_empty(dir.path())).await;
    q.shutdown().await;
    let dsn = &outbox(dir.path(), "eml")[0];
    assert!(dsn.contains("Content-Type: message/rfc822\r\n"), "{dsn}");
    assert!(
        dsn.contains("Subject: scan\r\nFrom: scanner@contoso.com\r\n\r\nbody\r\n"),
        "RET=FULL returns the body: {dsn}"
    );
    let report = Dsn::parse(dsn.as_bytes()).unwrap();
    assert_eq!(
        report.per_message.original_envelope_id.as_deref(),
        Some("scan-0042")
    );
    let r = &report.recipients[0];
    assert_eq!(r.status.to_string(), "5.7.60");
    assert_eq!(
        r.original_recipient.as_ref().unwrap().to_string(),
        "rfc822; CEO@fabrikam.com"
    );
    let human = report.human_readable.unwrap();
    assert!(
        human.contains("Send As permission"),
        "remedy of send_as_denied: {human}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_never_or_without_failure_suppresses_the_notice() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, q) = start(dir.path(), refuse_all(), fast()).await;
    // All recipients NEVER or without FAILURE: no notice at all.
    let mut env = envelope(
        Some("scanner@contoso.com"),
        &["never@fabrikam.com", "delay@fabrikam.com"],
    );
    env.recipients[0].notify = Some(Notify::NEVER);
    env.recipients[1].notify = Some(Notify::new(true, false, true));
    submit_env(&spool, env).await;
    eventually("spool empty", || spool_empty(dir.path())).await;
    assert!(
        outbox(dir.path(), "eml").is_empty(),
        "no notice was asked for"
    );

    // Mixed: only the recipient that wants one is reported.
    let mut env = envelope(
        Some("scanner@contoso.com"),
        &["never@fabrikam.com", "failure@fabrikam.com"],
    );
    env.recipients[0].notify = Some(Notify::NEVER);
    env.recipients[1].notify = Some(Notify::new(false, true, false));
    submit_env(&spool, env).await;
    eventually("one bounce", || outbox(dir.path(), "eml").len() == 1).await;
    eventually("spool empty", || spool_empty(dir.path())).await;
    q.shutdown().await;
    let dsns = outbox(dir.path(), "eml");
    assert_eq!(dsns.len(), 1);
    let report = Dsn::parse(dsns[0].as_bytes()).unwrap();
    let rcpts: Vec<_> = report.recipients.iter().map(|r| r.recipient()).collect();
    assert_eq!(rcpts, ["failure@fabrikam.com"]);
    assert!(!dsns[0].contains("never@fabrikam.com"));
}
