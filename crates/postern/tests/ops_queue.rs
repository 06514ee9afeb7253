//! `relay queue` and the admin API against a running relay on real sockets: metrics after a
//! delivered message, retry / delete / bounce while the relay runs, and the same on the spool
//! directly once it stopped.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use postern::Relay;
use postern::config::Config;
use postern::ops::OpsError;
use postern::ops::client::call;
use postern::ops::queue::{self, QueueEntry, QueueTarget};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn config(dir: &Path, outbox: &Path, admin: bool) -> Config {
    let d = dir.display();
    let admin = if admin {
        "[admin]\nbind = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    let text = format!(
        "hostname = \"relay.test\"\ndefault_routes = [\"outbox\"]\n\
         [[listeners]]\nname = \"lan\"\nbind = \"127.0.0.1:0\"\n\
         [policy]\nallowed_networks = [\"127.0.0.1/32\"]\n\
         [spool]\npath = \"{d}/spool\"\n\
         [queue]\nretry_initial = \"1h\"\nretry_max = \"2h\"\n\
         [routes.outbox]\ntype = \"local\"\ndir = \"{}\"\n{admin}",
        outbox.display()
    );
    Config::from_toml(&text, "test.toml").unwrap()
}

/// Sends one message as a printer would (plain SMTP); returns the queue id.
async fn send(addr: SocketAddr, from: &str, to: &str) -> String {
    let s = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let mut expect = async |r: &mut BufReader<_>, code: &str| -> String {
        let mut last;
        loop {
            line.clear();
            r.read_line(&mut line).await.unwrap();
            last = line.clone();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                break;
            }
        }
        assert!(last.starts_with(code), "expected {code}, got {last:?}");
        last
    };
    expect(&mut r, "220").await;
    for (cmd, code) in [
        ("EHLO printer\r\n".to_owned(), "250"),
        (format!("MAIL FROM:<{from}>\r\n"), "250"),
        (format!("RCPT TO:<{to}>\r\n"), "250"),
        ("DATA\r\n".to_owned(), "354"),
    ] {
        w.write_all(cmd.as_bytes()).await.unwrap();
        expect(&mut r, code).await;
    }
    w.write_all(
        format!("From: {from}\r\nTo: {to}\r\nSubject: scan\r\n\r\nhello\r\n.\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let reply = expect(&mut r, "250").await;
    w.write_all(b"QUIT\r\n").await.unwrap();
    reply.trim_end().rsplit(' ').next().unwrap().to_owned()
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn entry(target: &QueueTarget, id: &str) -> Option<QueueEntry> {
    queue::entries(target)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.id == id)
}

fn sink_files(outbox: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(outbox)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_after_a_delivered_message() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let relay = Relay::start(config(dir.path(), &outbox, true))
        .await
        .unwrap();
    let admin = relay.admin_addr().unwrap();
    send(
        relay.local_addrs()[0],
        "scanner@contoso.com",
        "reception@contoso.com",
    )
    .await;
    wait_for("delivery", async || !sink_files(&outbox, "eml").is_empty()).await;
    wait_for("finished", async || relay.spool().metrics().depth().0 == 0).await;

    let (status, body) = call(admin, Method::GET, "/metrics").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    for want in [
        "postern_messages_accepted_total{listener=\"lan\"} 1\n",
        "postern_recipients_delivered_total{route=\"outbox\"} 1\n",
        "postern_spool_commits_total 1\n",
        "postern_queue_messages 0\n",
        "postern_queue_oldest_age_seconds 0.0\n",
        "postern_upstream_duration_seconds_count{route=\"outbox\"} 1\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(
        call(admin, Method::GET, "/healthz").await.unwrap().0,
        StatusCode::OK
    );
    let (status, body) = call(admin, Method::GET, "/readyz").await.unwrap();
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ready\n"[..]));
    assert_eq!(
        call(admin, Method::GET, "/nope").await.unwrap().0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(admin, Method::DELETE, "/metrics").await.unwrap().0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // A second relay on the same spool is refused.
    let err = Relay::start(config(dir.path(), &outbox, false))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_delete_and_bounce_while_running() {
    let dir = tempfile::tempdir().unwrap();
    // The sink's directory cannot be created (a file is in the way): every attempt defers.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let outbox = blocker.join("outbox");
    let relay = Relay::start(config(dir.path(), &outbox, true))
        .await
        .unwrap();
    let smtp = relay.local_addrs()[0];
    let target = QueueTarget::new(dir.path().join("spool"), relay.admin_addr());
    let a = send(smtp, "scanner@contoso.com", "alice@contoso.com").await;
    let b = send(smtp, "scanner@contoso.com", "bob@contoso.com").await;
    let c = send(smtp, "copier@contoso.com", "carol@contoso.com").await;
    for id in [&a, &b, &c] {
        wait_for("a first attempt", async || {
            entry(&target, id)
                .await
                .is_some_and(|e| e.attempts() == 1 && !e.in_flight)
        })
        .await;
    }
    let now = SystemTime::now();
    let mut out = Vec::new();
    queue::list(&target, now, &mut out).await.unwrap();
    let table = String::from_utf8(out).unwrap();
    assert!(table.starts_with("ID "), "{table}");
    for (id, rcpt) in [
        (&a, "alice@contoso.com"),
        (&b, "bob@contoso.com"),
        (&c, "carol@contoso.com"),
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .expect(id);
        assert!(row.contains(rcpt), "{row}");
        assert!(row.contains("  in "), "{row}");
        assert!(row.ends_with("local_io"), "{row}");
    }
    assert!(
        table.ends_with("3 message(s), 3 recipient(s) pending\n"),
        "{table}"
    );
    let mut out = Vec::new();
    queue::show(&target, &a, now, &mut out).await.unwrap();
    let detail = String::from_utf8(out).unwrap();
    assert!(
        detail.contains("pending   alice@contoso.com  (attempts 1, next in"),
        "{detail}"
    );
    assert!(detail.contains("last: [local_io] local sink"), "{detail}");

    // Unblock the sink; retry one message now (the others keep their 1h backoff).
    std::fs::remove_file(&blocker).unwrap();
    let mut out = Vec::new();
    queue::retry(&target, Some(&a), &mut out).await.unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{a}: will be retried now\n")
    );
    wait_for("retried message delivered", async || {
        entry(&target, &a).await.is_none()
    })
    .await;
    assert_eq!(sink_files(&outbox, "eml").len(), 1);
    assert_eq!(entry(&target, &b).await.unwrap().attempts(), 1);

    // Delete: gone, nobody notified.
    let mut out = Vec::new();
    queue::delete(&target, &b, &mut out).await.unwrap();
    assert!(entry(&target, &b).await.is_none());
    assert!(
        postern::spool::inspect(&dir.path().join("spool"))
            .unwrap()
            .iter()
            .all(|m| m.message.id().as_str() != b)
    );

    // Bounce: carol fails, the sender gets a notice (delivered through the sink).
    let mut out = Vec::new();
    queue::bounce(&target, &c, &mut out).await.unwrap();
    wait_for("bounced message gone", async || {
        entry(&target, &c).await.is_none()
    })
    .await;
    wait_for("notice delivered", async || {
        sink_files(&outbox, "json").len() == 2
    })
    .await;
    let notice = sink_files(&outbox, "json")
        .into_iter()
        .map(|p| serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap())
        .find(|v| v["delivered_to"][0] == "copier@contoso.com")
        .expect("a failure notice to the sender");
    assert!(notice["envelope"]["mail_from"].is_null(), "{notice}");

    // Unknown ids.
    let err = queue::delete(&target, "0000000000000000", &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, OpsError::NotFound(_)), "{err}");
    let err = queue::show(&target, "not an id", now, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a queue id"), "{err}");

    let text = relay.spool().metrics().render();
    assert!(
        text.contains("postern_admin_actions_total{action=\"delete\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "postern_recipients_deferred_total{route=\"outbox\",category=\"local_io\"} 3"
        ),
        "{text}"
    );
    assert!(text.contains("postern_recipients_failed_total{route=\"-\",category=\"admin_bounce\",expired=\"false\"} 1"), "{text}");
    assert!(text.contains("postern_bounces_queued_total 1"), "{text}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_spool_directly_when_no_relay_runs() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let outbox = blocker.join("outbox");
    // A relay without an admin API: changes are refused while it runs, reads work.
    let relay = Relay::start(config(dir.path(), &outbox, false))
        .await
        .unwrap();
    let a = send(
        relay.local_addrs()[0],
        "scanner@contoso.com",
        "alice@contoso.com",
    )
    .await;
    let b = send(
        relay.local_addrs()[0],
        "scanner@contoso.com",
        "bob@contoso.com",
    )
    .await;
    let target = QueueTarget::new(dir.path().join("spool"), None);
    for id in [&a, &b] {
        wait_for("a first attempt", async || {
            entry(&target, id)
                .await
                .is_some_and(|e| e.attempts() == 1 && !e.in_flight)
        })
        .await;
    }
    let err = queue::retry(&target, None, &mut Vec::new())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("a relay is running on the spool"), "{msg}");
    assert!(msg.contains("[admin]"), "{msg}");
    relay.shutdown().await;

    // Stopped: the commands take the lock and edit the spool.
    let target = QueueTarget::new(
        dir.path().join("spool"),
        Some("127.0.0.1:9".parse().unwrap()),
    );
    let mut out = Vec::new();
    queue::retry(&target, None, &mut out).await.unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "2 message(s) will be retried now\n"
    );
    let e = entry(&target, &a).await.unwrap();
    assert_eq!(e.next_try(), None, "{e:?}");
    queue::delete(&target, &b, &mut Vec::new()).await.unwrap();
    assert!(entry(&target, &b).await.is_none());
    queue::bounce(&target, &a, &mut Vec::new()).await.unwrap();
    let e = entry(&target, &a).await.unwrap();
    assert_eq!(e.recipients[0].status, "failed");

    // The next start sends the notice and finishes the message.
    std::fs::remove_file(&blocker).unwrap();
    let relay = Relay::start(config(dir.path(), &outbox, false))
        .await
        .unwrap();
    wait_for("notice delivered", async || {
        sink_files(&outbox, "json").len() == 1
    })
    .await;
    wait_for("queue empty", async || {
        relay.spool().metrics().depth().0 == 0
    })
    .await;
    relay.shutdown().await;
    let mut out = Vec::new();
    queue::list(&target, SystemTime::now(), &mut out)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "the queue is empty\n");
}
