//! End to end through Exchange Online client submission: device → listener → spool → route
//! `client_submission` (STARTTLS + XOAUTH2 with tokens from the Entra ID simulator) →
//! the submission simulator.

mod deliver_common;

use std::sync::Arc;
use std::time::Duration;

use deliver_common::*;
use postern_entra::{Authority, FileStore, OAuthClient, ReqwestClient, TokenCache};
use postern_testkit::fault::Fault;
use postern_testkit::record::AuthMethod;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_only_token_delivers_and_reuses_the_connection() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let cfg = m365_config(&dir, &sim, &exo, "");
    let relay = start(cfg).await;
    for i in 0..2 {
        send_accepted(&relay, &format!("scan-{i}")).await;
        exo.recorder().wait_for(i + 1, WAIT).await.unwrap();
    }
    let msgs = exo.recorder().messages();
    assert_eq!(msgs.len(), 2);
    let m = &msgs[0];
    assert!(m.tls);
    assert_eq!(m.mail_from, MAILBOX);
    assert_eq!(m.rcpt_to, ["bob@fabrikam.com"]);
    let id = m.identity.as_ref().unwrap();
    assert_eq!(id.mailbox, MAILBOX);
    assert_eq!(
        id.method,
        AuthMethod::Xoauth2App {
            client_id: APP.into()
        }
    );
    let text = String::from_utf8_lossy(&m.data);
    assert!(
        text.contains("\r\n.dot line\r\n"),
        "dot-stuffing undone: {text}"
    );
    assert!(text.contains("From: Scanner 3F <scanner@contoso.com>"));
    // One token for both messages, and the second message reused the connection.
    assert_eq!(sim.grant_count("client_credentials"), 1);
    assert_eq!(msgs[0].client_addr, msgs[1].client_addr);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_token_from_the_refresh_token_store() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let store = dir.path().join("tokens.json");
    let ca = dir.write("entra-ca.pem", &sim.ca_pem());
    // The administrator's one-off sign-in (device code), stored as `relay token` does.
    let scope = "https://outlook.office.com/SMTP.Send offline_access";
    let http = ReqwestClient::builder()
        .extra_ca_pem(sim.ca_pem())
        .no_proxy()
        .build()
        .unwrap();
    let client = OAuthClient::builder(
        Authority::microsoft(&sim.authority()).unwrap(),
        TENANT,
        PUBLIC_APP,
    )
    .http_client(Arc::new(http))
    .build()
    .unwrap();
    let device = client.request_device_code(scope).await.unwrap();
    assert!(sim.approve_device_code(&device.user_code, MAILBOX));
    let resp = client.poll_device_code(&device).await.unwrap();
    TokenCache::new(Arc::new(FileStore::new(&store)))
        .seed(
            &client,
            scope,
            Some(MAILBOX),
            &resp,
            std::time::SystemTime::now(),
        )
        .unwrap();
    let identity = format!(
        "[identities.app]\nauthority = \"{}\"\ntenant = \"{TENANT}\"\nclient_id = \"{PUBLIC_APP}\"\n\
         refresh_token_store = \"{}\"\nca_file = \"{}\"\n",
        sim.authority(),
        store.display(),
        ca.display()
    );
    let relay =
        start(dir.config("m365", &format!("{}{identity}", m365_route(&dir, &exo, "")))).await;
    send_accepted(&relay, "d1").await;
    let msgs = exo.recorder().wait_for(1, WAIT).await.unwrap();
    assert_eq!(
        msgs[0].identity.as_ref().unwrap().method,
        AuthMethod::Xoauth2Delegated {
            client_id: PUBLIC_APP.into()
        }
    );
    assert_eq!(sim.grant_count("refresh_token"), 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_as_denied_bounces_without_rewriting_and_delivers_with_it() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let extra = format!(
        "{}{}{}[[rules]]\nsender = [\"*@rewrite.lan\"]\nroutes = [\"rewrite\"]\n",
        m365_route(&dir, &exo, ""),
        submission_route(
            &dir,
            "rewrite",
            exo.addr().port(),
            exo.ca_cert_pem(),
            "sender_rewrite = true\n"
        ),
        app_identity(&dir, &sim),
    );
    let relay = start(dir.config("m365", &extra)).await;
    // Without rewriting: the device's own address is not the mailbox and has no Send As.
    let sent = send(
        &relay,
        "printer@contoso.com",
        &["bob@fabrikam.com"],
        &message("printer@contoso.com", "denied"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let bounces = dir.bounces(1, WAIT).await;
    assert_eq!(bounces.len(), 1, "one notice to the sender");
    assert!(
        bounces[0].contains("To: printer@contoso.com")
            || bounces[0].contains("printer@contoso.com")
    );
    assert!(bounces[0].contains("5.2.252"), "{}", bounces[0]);
    assert!(exo.recorder().is_empty());
    // With rewriting: envelope and From become the mailbox, the original is kept.
    let sent = send(
        &relay,
        "copier@rewrite.lan",
        &["bob@fabrikam.com"],
        &message("copier@rewrite.lan", "rewritten"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let msgs = exo.recorder().wait_for(1, WAIT).await.unwrap();
    assert_eq!(msgs[0].mail_from, MAILBOX);
    let text = String::from_utf8_lossy(&msgs[0].data);
    assert!(
        text.contains("From: Scanner 3F <scanner@contoso.com>\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Reply-To: Scanner 3F <copier@rewrite.lan>\r\n"),
        "{text}"
    );
    assert!(
        text.contains("X-Original-From: Scanner 3F <copier@rewrite.lan>\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\nPage 1\r\n.dot line\r\n"),
        "body unchanged: {text}"
    );
    assert_eq!(
        dir.bounces(1, Duration::ZERO).await.len(),
        1,
        "no second notice"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refreshed_within_the_attempt() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let cfg = m365_config(&dir, &sim, &exo, "pool_size = 0\n");
    let relay = start(cfg).await;
    send_accepted(&relay, "t1").await;
    exo.recorder().wait_for(1, WAIT).await.unwrap();
    // The token dies at Microsoft while our cache still thinks it good: 535 5.7.3, then a
    // new token and success in the same attempt.
    sim.expire_access_tokens();
    send_accepted(&relay, "t2").await;
    exo.recorder().wait_for(2, WAIT).await.unwrap();
    assert_eq!(sim.grant_count("client_credentials"), 2);
    let refused: Vec<_> = exo
        .recorder()
        .refusals()
        .into_iter()
        .filter(|r| r.command == "AUTH")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].line().starts_with("535 5.7.3"));
    assert!(dir.bounces(1, Duration::ZERO).await.is_empty());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_then_up_and_token_outage_defer_not_bounce() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let cfg = m365_config(&dir, &sim, &exo, "");
    exo.faults().set_sticky(Some(Fault::RefuseConnection));
    sim.set_sticky(
        postern_testkit::entra::Endpoint::Token,
        Some(postern_testkit::entra::EntraFault::TemporarilyUnavailable),
    );
    let relay = start(cfg).await;
    send_accepted(&relay, "later").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(exo.recorder().is_empty());
    assert!(
        dir.bounces(1, Duration::ZERO).await.is_empty(),
        "deferred, not bounced"
    );
    exo.faults().set_sticky(None);
    sim.clear_faults();
    let msgs = exo.recorder().wait_for(1, WAIT).await.unwrap();
    assert_eq!(msgs.len(), 1);
    assert!(dir.bounces(1, Duration::ZERO).await.is_empty());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_and_is_retried() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let cfg = dir.config(
        "m365",
        &format!(
            "{}{}",
            m365_route(&dir, &exo, "connect_timeout = \"2s\"\n")
                .replace("greeting_timeout = \"5s\"", "greeting_timeout = \"300ms\""),
            app_identity(&dir, &sim)
        ),
    );
    exo.faults().inject(Fault::Hang);
    let relay = start(cfg).await;
    send_accepted(&relay, "slow").await;
    // First attempt: the greeting never comes (timeout, transient); the retry delivers.
    let msgs = exo.recorder().wait_for(1, WAIT).await.unwrap();
    assert_eq!(msgs.len(), 1);
    assert!(dir.bounces(1, Duration::ZERO).await.is_empty());
    relay.shutdown().await;
}

/// The body goes upstream byte for byte, dot-stuffed on the wire, whether the delivery
/// encodes it from memory (a small message) or streams it from its slot file (a message past
/// the spill threshold), with dot lines straddling the 64 KiB chunks the delivery sends in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_bodies_arrive_byte_for_byte() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let relay = start(m365_config(&dir, &sim, &exo, "")).await;
    let mut sent = Vec::new();
    for (i, lines) in [(0, 40), (1, 12_000)] {
        let mut body = message(MAILBOX, &format!("body-{i}"));
        for n in 0..lines {
            // Lines of 61 bytes with a CRLF: a leading dot lands on every chunk offset.
            body.push_str(&format!(".{n:059}\r\n"));
            if n % 997 == 0 {
                body.push_str(".\r\n..\r\n");
            }
        }
        let r = send(&relay, MAILBOX, &["bob@fabrikam.com"], &body).await;
        assert_eq!(r.data.as_ref().map(|d| d.0), Some(250), "{r:?}");
        sent.push(body);
    }
    assert!(sent[1].len() > 512 * 1024, "{}", sent[1].len());
    exo.recorder().wait_for(2, WAIT).await.unwrap();
    let mut got: Vec<Vec<u8>> = exo
        .recorder()
        .messages()
        .into_iter()
        .map(|m| m.data)
        .collect();
    got.sort_by_key(Vec::len);
    for (want, got) in sent.iter().zip(&got) {
        // The relay adds its trace header in front; everything else is what the device sent.
        let added = got
            .len()
            .checked_sub(want.len())
            .expect("bytes lost in transit");
        assert!(
            got.starts_with(b"Received: "),
            "{:?}",
            String::from_utf8_lossy(&got[..200])
        );
        assert!(
            !got[..added].windows(4).any(|w| w == b"\r\n\r\n"),
            "more than a header added"
        );
        assert!(got[added..] == *want.as_bytes(), "body changed in transit");
    }
    relay.shutdown().await;
}
