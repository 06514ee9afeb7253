//! End to end through HVE, ACS, a LOGIN smart host, and a small in-test server for SIZE.

mod deliver_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deliver_common::*;
use postern_testkit::exo::{Profile, SubmissionServer};
use postern_testkit::org::{AcsResource, Mailbox, Organization};
use postern_testkit::record::AuthMethod;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(20);

fn tls_route(dir: &Dir, name: &str, kind: &str, server: &SubmissionServer, extra: &str) -> String {
    let ca = dir.write(&format!("{name}-ca.pem"), server.ca_cert_pem());
    format!(
        "[routes.{name}]\ntype = \"{kind}\"\nhost = \"127.0.0.1\"\nport = {}\n\
         tls_name = \"{}\"\nca_file = \"{}\"\ncommand_timeout = \"5s\"\n{extra}",
        server.addr().port(),
        server.tls_server_name(),
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hve_account_with_login() {
    let org = Organization::builder(TENANT, "contoso.com")
        .mailbox(Mailbox::hve_account("hve-scanner@contoso.com", "Hve-pw-1"))
        .build();
    let hve = SubmissionServer::builder(Profile::Hve)
        .organization(org)
        .start()
        .await
        .unwrap();
    let dir = Dir::new();
    let pw = dir.write("hve-pw", "Hve-pw-1\n");
    let extra = tls_route(
        &dir,
        "hve",
        "hve",
        &hve,
        &format!(
            "username = \"hve-scanner@contoso.com\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
    );
    let relay = start(dir.config("hve", &extra)).await;
    let sent = send(
        &relay,
        "hve-scanner@contoso.com",
        &["alice@contoso.com"],
        &message("hve-scanner@contoso.com", "h1"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let msgs = hve.recorder().wait_for(1, WAIT).await.unwrap();
    let id = msgs[0].identity.as_ref().unwrap();
    assert_eq!(id.method, AuthMethod::Login);
    assert_eq!(id.mailbox, "hve-scanner@contoso.com");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acs_username_is_resource_app_tenant() {
    let org = Organization::builder(TENANT, "contoso.com")
        .acs_resource(AcsResource::new("contoso-acs").app(APP, SECRET))
        .build();
    let acs = SubmissionServer::builder(Profile::Acs)
        .organization(org)
        .start()
        .await
        .unwrap();
    let sim = entra().await;
    let dir = Dir::new();
    // The password is the identity's client secret (no password_file on the route).
    let extra = format!(
        "{}{}",
        tls_route(
            &dir,
            "acs",
            "acs",
            &acs,
            "resource = \"contoso-acs\"\nidentity = \"app\"\n"
        ),
        app_identity(&dir, &sim)
    );
    let relay = start(dir.config("acs", &extra)).await;
    let sent = send(
        &relay,
        "donotreply@contoso.com",
        &["customer@fabrikam.com"],
        &message("donotreply@contoso.com", "a1"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let msgs = acs.recorder().wait_for(1, WAIT).await.unwrap();
    let id = msgs[0].identity.as_ref().unwrap();
    assert_eq!(id.mailbox, format!("contoso-acs|{APP}|{TENANT}"));
    assert_eq!(
        id.method,
        AuthMethod::AcsLogin {
            client_id: APP.into()
        }
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_host_with_login_and_basic_auth_refusal_defers() {
    let exo = SubmissionServer::builder(Profile::ClientSubmission)
        .organization(org())
        .start()
        .await
        .unwrap();
    let dir = Dir::new();
    let pw = dir.write("smarthost-pw", "Scan-2026!\n");
    let extra = tls_route(
        &dir,
        "smarthost",
        "smtp",
        &exo,
        &format!(
            "pool_size = 0\ntls = \"required\"\nauth = \"login\"\nusername = \"scanner@contoso.com\"\n\
             password_file = \"{}\"\n",
            pw.display()
        ),
    );
    let relay = start(dir.config("smarthost", &extra)).await;
    let sent = send(
        &relay,
        MAILBOX,
        &["bob@fabrikam.com"],
        &message(MAILBOX, "s1"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let msgs = exo.recorder().wait_for(1, WAIT).await.unwrap();
    assert_eq!(msgs[0].identity.as_ref().unwrap().method, AuthMethod::Login);
    // Basic auth switched off: 535 5.7.139 is the operator's problem, the mail waits.
    exo.organization()
        .set_basic_auth(postern_testkit::org::BasicAuth::Disabled);
    let sent = send(
        &relay,
        MAILBOX,
        &["bob@fabrikam.com"],
        &message(MAILBOX, "s2"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(exo.recorder().len(), 1);
    assert!(
        dir.bounces(1, Duration::ZERO).await.is_empty(),
        "deferred, not bounced"
    );
    exo.organization()
        .set_basic_auth(postern_testkit::org::BasicAuth::Allowed);
    exo.recorder().wait_for(2, WAIT).await.unwrap();
    relay.shutdown().await;
}

/// A tiny SMTP server advertising `SIZE 100` and no STARTTLS; records the commands.
async fn tiny_server(ehlo: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                r.get_mut().write_all(b"220 tiny ESMTP\r\n").await.unwrap();
                let mut line = String::new();
                while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                    let cmd = line.trim_end().to_owned();
                    line.clear();
                    log.lock().unwrap().push(cmd.clone());
                    let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
                    let reply = match verb.as_str() {
                        "EHLO" => ehlo.to_owned(),
                        "QUIT" => {
                            let _ = r.get_mut().write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => "250 2.0.0 ok\r\n".to_owned(),
                    };
                    if r.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_too_big_fails_permanently_before_mail() {
    let (port, seen) = tiny_server("250-tiny\r\n250-PIPELINING\r\n250 SIZE 100\r\n").await;
    let dir = Dir::new();
    let extra = format!(
        "[routes.tiny]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n"
    );
    let relay = start(dir.config("tiny", &extra)).await;
    let sent = send(
        &relay,
        MAILBOX,
        &["bob@fabrikam.com"],
        &message(MAILBOX, "big"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let bounces = dir.bounces(1, WAIT).await;
    assert_eq!(bounces.len(), 1);
    assert!(bounces[0].contains("5.3.4"), "{}", bounces[0]);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|c| c.starts_with("EHLO ")), "{seen:?}");
    assert!(!seen.iter().any(|c| c.starts_with("MAIL")), "{seen:?}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtputf8_needed_but_not_offered_fails_permanently() {
    let (port, seen) = tiny_server("250-tiny\r\n250 8BITMIME\r\n").await;
    let dir = Dir::new();
    let extra = format!(
        "[routes.tiny]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n"
    );
    let relay = start(dir.config("tiny", &extra)).await;
    let sent = send_params(
        &relay,
        MAILBOX,
        " SMTPUTF8",
        &["jörg@fabrikam.com"],
        &message(MAILBOX, "utf8"),
    )
    .await;
    assert_eq!(sent.rcpt[0].0, 250, "{:?}", sent.rcpt);
    assert_eq!(sent.data.unwrap().0, 250);
    let bounces = dir.bounces(1, WAIT).await;
    assert_eq!(bounces.len(), 1);
    assert!(bounces[0].contains("5.6.7"), "{}", bounces[0]);
    assert!(!seen.lock().unwrap().iter().any(|c| c.starts_with("MAIL")));
    relay.shutdown().await;
}

/// How [`closing_server`] ends its first connection after the first message.
#[derive(Clone, Copy)]
enum FirstClose {
    /// Silently, when the next command arrives: the close cannot be seen before reuse.
    AtNextCommand,
    /// At once, with an idle-timeout `421`: the pooled connection is visibly closed.
    Announced,
}

/// A plain SMTP server (PIPELINING) that takes one message on its first connection and then
/// ends that connection as `close` says; later connections take every message. Records each
/// message as (connection number, Subject line), and the commands that reached the first
/// connection after its message.
async fn closing_server(
    close: FirstClose,
) -> (
    u16,
    Arc<Mutex<Vec<(usize, String)>>>,
    Arc<Mutex<Vec<String>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let late = Arc::new(Mutex::new(Vec::new()));
    let (m, l) = (Arc::clone(&messages), Arc::clone(&late));
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((s, _)) = listener.accept().await {
            let (messages, late) = (Arc::clone(&m), Arc::clone(&l));
            let conn_no = n;
            n += 1;
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                let mut out = b"220 closing ESMTP\r\n".to_vec();
                let mut done_one = false;
                let mut line = String::new();
                loop {
                    if !out.is_empty() {
                        if r.get_mut().write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim_end().to_owned();
                    if done_one && conn_no == 0 {
                        // The close: no reply to whatever came.
                        late.lock().unwrap().push(cmd);
                        return;
                    }
                    let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
                    match verb.as_str() {
                        "EHLO" => out.extend_from_slice(b"250-closing\r\n250 PIPELINING\r\n"),
                        "QUIT" => {
                            let _ = r.get_mut().write_all(b"221 bye\r\n").await;
                            return;
                        }
                        "DATA" => {
                            r.get_mut().write_all(b"354 go on\r\n").await.unwrap();
                            let mut subject = String::new();
                            loop {
                                line.clear();
                                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                                if line.starts_with("Subject:") && subject.is_empty() {
                                    subject = line.trim_end().to_owned();
                                }
                            }
                            messages.lock().unwrap().push((conn_no, subject));
                            out.extend_from_slice(b"250 2.0.0 queued\r\n");
                            if conn_no == 0 {
                                done_one = true;
                                if matches!(close, FirstClose::Announced) {
                                    out.extend_from_slice(b"421 4.4.2 closing: idle timeout\r\n");
                                    let _ = r.get_mut().write_all(&out).await;
                                    return;
                                }
                            }
                        }
                        _ => out.extend_from_slice(b"250 2.0.0 ok\r\n"),
                    }
                }
            });
        }
    });
    (port, messages, late)
}

/// A pooled connection is reused without a `RSET` round trip, and when the server turns out
/// to have closed it, the message goes out on a new connection in the same attempt: no
/// deferral, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_by_the_server_costs_no_deferral() {
    for close in [FirstClose::AtNextCommand, FirstClose::Announced] {
        let (port, messages, late) = closing_server(close).await;
        let dir = Dir::new();
        let extra = format!(
            "[routes.closing]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             tls = \"none\"\npool_size = 2\n"
        );
        let relay = start(dir.config("closing", &extra)).await;
        let to = ["bob@fabrikam.com"];
        let sent = send(&relay, MAILBOX, &to, &message(MAILBOX, "first")).await;
        assert_eq!(sent.data.unwrap().0, 250);
        // The first delivery finished (its recipient counted) and its connection is pooled.
        let deadline = tokio::time::Instant::now() + WAIT;
        while !relay
            .spool()
            .metrics()
            .render()
            .contains("postern_recipients_delivered_total{route=\"closing\"} 1")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "first message not delivered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = send(&relay, MAILBOX, &to, &message(MAILBOX, "second")).await;
        assert_eq!(sent.data.unwrap().0, 250);
        let deadline = tokio::time::Instant::now() + WAIT;
        while messages.lock().unwrap().len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "second message not delivered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            *messages.lock().unwrap(),
            vec![
                (0, "Subject: first".to_owned()),
                (1, "Subject: second".to_owned())
            ]
        );
        let late = late.lock().unwrap().clone();
        match close {
            // Reused at once, MAIL first (no RSET), and retried on a new connection.
            FirstClose::AtNextCommand => {
                assert_eq!(late.len(), 1, "{late:?}");
                assert!(late[0].starts_with("MAIL FROM:"), "{late:?}");
            }
            // Seen closed in the pool: never written to again.
            FirstClose::Announced => assert!(late.is_empty(), "{late:?}"),
        }
        let metrics = relay.spool().metrics().render();
        assert!(
            !metrics.contains("postern_recipients_deferred_total{route=\"closing\""),
            "{metrics}"
        );
        relay.shutdown().await;
    }
}
