//! Invariant 5, secrets stay secret: a full session with known secrets (the device's AUTH
//! password, the app's client secret, the access tokens Entra issued) leaves them in no log
//! line (everything at TRACE, captured), no error text, no `Debug` output and no file except
//! the operator's own secret file; spool files are 0600 and spool directories 0700.
//! A wrong client secret defers mail (never bounces it) and the log names the cause.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use postern_testkit::fault::Fault;
use support::*;

const DEVICE_PASSWORD: &str = "Dev1ce-Pa55word-never-logged";
const WRONG_DEVICE_PASSWORD: &str = "Wr0ng-Dev1ce-Pa55word-never-logged";

/// Everything this test binary logs, at every level, from every thread.
fn logs() -> &'static LogBuffer {
    LogBuffer::global(tracing::Level::TRACE)
}

fn b64(raw: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.chunks(3) {
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

fn assert_absent(haystack: &str, secrets: &[String], what: &str) {
    for s in secrets {
        assert!(
            !haystack.contains(s.as_str()),
            "a secret ({}...) appears in {what}",
            &s[..6.min(s.len())]
        );
    }
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_leaks_no_secret() {
    let logs = logs();
    let cloud = Cloud::start().await;
    let dir = Dir::new();
    let hash = postern::inbound::hash_password(DEVICE_PASSWORD).unwrap();
    let text = dir.toml(
        "m365",
        "allow_plaintext_auth = true\nrequire_auth = true\n",
        &format!(
            "{}[[accounts]]\nusername = \"mfp\"\npassword_hash = \"{hash}\"\n",
            cloud.toml(&dir, "")
        ),
    );
    let cfg = dir.config(&text);
    let debug = format!("{cfg:?}");
    let relay = start(cfg).await;
    let addr = relay.local_addrs()[0];

    // The upstream refuses at first, so the message waits in the spool (modes checked there).
    cloud.exo.faults().set_sticky(Some(Fault::RefuseConnection));
    let mut c = Smtp::connect(addr).await;
    assert_eq!(c.cmd("EHLO mfp.lan").await.0, 250);
    let wrong = b64(format!("\0mfp\0{WRONG_DEVICE_PASSWORD}").as_bytes());
    assert_eq!(c.cmd(&format!("AUTH PLAIN {wrong}")).await.0, 535);
    assert_eq!(c.cmd("AUTH LOGIN").await.0, 334);
    assert_eq!(c.cmd(&b64(b"mfp")).await.0, 334);
    assert_eq!(c.cmd(&b64(DEVICE_PASSWORD.as_bytes())).await.0, 235);
    let r = transaction(
        &mut c,
        MAILBOX,
        &["reception@contoso.com"],
        &message(MAILBOX, "secret-session"),
    )
    .await
    .unwrap();
    assert_eq!(r.0, 250, "{r:?}");
    let _ = c.try_cmd("QUIT").await;

    tokio::time::sleep(Duration::from_millis(800)).await;
    let spool = dir.path().join("spool");
    assert_eq!(mode(&spool), 0o700, "spool directory");
    let mut checked = 0;
    for p in walk(&spool) {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        checked += 1;
    }
    let queue = spool.join("queue");
    assert_eq!(mode(&queue), 0o700, "{}", queue.display());
    assert_eq!(mode(&spool.join("slots")), 0o700, "slots directory");
    assert!(
        !postern::spool::inspect(&spool).unwrap().is_empty(),
        "the message waits in the spool"
    );
    assert!(checked > 0);

    cloud.exo.faults().clear();
    cloud
        .exo
        .recorder()
        .wait_for(1, Duration::from_secs(20))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.shutdown().await;

    let mut secrets = vec![
        DEVICE_PASSWORD.to_owned(),
        WRONG_DEVICE_PASSWORD.to_owned(),
        b64(DEVICE_PASSWORD.as_bytes()),
        wrong.clone(),
        CLIENT_SECRET.to_owned(),
    ];
    let tokens = cloud.seen_tokens.lock().unwrap().clone();
    assert!(!tokens.is_empty(), "XOAUTH2 was used");
    secrets.extend(tokens.iter().cloned());
    // The XOAUTH2 initial response carries the token base64-encoded.
    for t in &tokens {
        secrets.push(b64(
            format!("user={MAILBOX}\x01auth=Bearer {t}\x01\x01").as_bytes()
        ));
    }
    let log = logs.text();
    assert!(
        log.contains("authenticated"),
        "the capture works: {}",
        &log[..log.len().min(2000)]
    );
    assert!(
        log.contains("authentication failed"),
        "the failed AUTH was logged"
    );
    assert_absent(&log, &secrets, "the log");
    assert_absent(&debug, &secrets, "the configuration's Debug output");
    // No file holds a secret except the operator's own client-secret file.
    for p in walk(dir.path()) {
        if p.file_name().is_some_and(|n| n == "client-secret") {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        assert_absent(
            &String::from_utf8_lossy(&bytes),
            &secrets,
            &p.display().to_string(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_defers_and_names_the_cause() {
    let logs = logs();
    let cloud = Cloud::start().await;
    let dir = Dir::new();
    let text = dir.toml("m365", "", &cloud.toml(&dir, ""));
    let wrong_secret = "Kx8Q~this.is.the.wrong.secret";
    // Overwrite the secret file Cloud::toml wrote.
    dir.write("client-secret", wrong_secret);
    let relay = start(dir.config(&text)).await;
    let r = submit(
        relay.local_addrs()[0],
        MAILBOX,
        &["reception@contoso.com"],
        &message(MAILBOX, "wrong-secret"),
    )
    .await
    .unwrap();
    assert_eq!(r.0, 250);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = logs.text();
        if log.contains("AADSTS7000215") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cause (AADSTS7000215, invalid client secret) is not logged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cloud.exo.recorder().is_empty());
    assert!(
        dir.eml("bounces").is_empty(),
        "a credential problem bounced mail"
    );
    let log = logs.text();
    assert!(!log.contains(wrong_secret), "the wrong secret was logged");
    assert!(!log.contains(CLIENT_SECRET));
    // The operator fixes the secret file; the message goes (the file is re-read or the
    // relay restarted: restart, as an operator would after editing it).
    relay.shutdown().await;
    dir.write("client-secret", CLIENT_SECRET);
    let relay = start(dir.config(&text)).await;
    cloud
        .exo
        .recorder()
        .wait_for(1, Duration::from_secs(20))
        .await
        .unwrap();
    relay.shutdown().await;
}

/// Every long string in a JSON document (the refresh and access tokens of a token store).
fn long_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if s.len() >= 32 => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| long_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| long_strings(x, out)),
        _ => {}
    }
}

/// A delegated identity: the refresh-token store is 0600 and the only file holding the
/// refresh token; neither it nor the access tokens reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_token_store_is_private_and_the_only_place_tokens_live() {
    use std::sync::Arc;

    use postern_entra::{Authority, FileStore, OAuthClient, ReqwestClient, TokenCache};

    let logs = logs();
    let cloud = Cloud::start().await;
    let dir = Dir::new();
    let store = dir.path().join("tokens.json");
    let ca = dir.write("entra-ca-delegated.pem", &cloud.entra.ca_pem());
    // The administrator's one-off sign-in (device code), stored as `relay token` does.
    let scope = "https://outlook.office.com/SMTP.Send offline_access";
    let http = ReqwestClient::builder()
        .extra_ca_pem(cloud.entra.ca_pem())
        .no_proxy()
        .build()
        .unwrap();
    let client = OAuthClient::builder(
        Authority::microsoft(&cloud.entra.authority()).unwrap(),
        TENANT,
        PUBLIC_APP,
    )
    .http_client(Arc::new(http))
    .build()
    .unwrap();
    let device = client.request_device_code(scope).await.unwrap();
    assert!(cloud.entra.approve_device_code(&device.user_code, MAILBOX));
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
    let mut secrets = Vec::new();
    let read = |secrets: &mut Vec<String>| {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
        long_strings(&v, secrets);
    };
    read(&mut secrets);
    assert!(!secrets.is_empty(), "the store holds a refresh token");

    let route = cloud.toml(&dir, "");
    let route = route[..route.find("[identities.app]").unwrap()].to_owned();
    let identity = format!(
        "[identities.app]\nauthority = \"{}\"\ntenant = \"{TENANT}\"\nclient_id = \"{PUBLIC_APP}\"\n\
         refresh_token_store = \"{}\"\nca_file = \"{}\"\n",
        cloud.entra.authority(),
        store.display(),
        ca.display()
    );
    let text = dir.toml("m365", "", &format!("{route}{identity}"));
    let relay = start(dir.config(&text)).await;
    let r = submit(
        relay.local_addrs()[0],
        MAILBOX,
        &["reception@contoso.com"],
        &message(MAILBOX, "delegated"),
    )
    .await
    .unwrap();
    assert_eq!(r.0, 250);
    cloud
        .exo
        .recorder()
        .wait_for(1, Duration::from_secs(20))
        .await
        .unwrap();
    relay.shutdown().await;

    assert_eq!(mode(&store), 0o600, "token store");
    read(&mut secrets); // the rotated refresh token too
    secrets.extend(cloud.seen_tokens.lock().unwrap().iter().cloned());
    assert_absent(&logs.text(), &secrets, "the log");
    for p in walk(dir.path()) {
        if p == store {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        assert_absent(
            &String::from_utf8_lossy(&bytes),
            &secrets,
            &p.display().to_string(),
        );
    }
}
