//! `relay send` through a client_submission route against the simulated tenant: the
//! message arrives, the transcript shows the whole conversation, and neither the access
//! token nor the AUTH payload appears in it.

mod deliver_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deliver_common::*;
use postern::ops::OpsError;
use postern::ops::send::{SendOptions, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_shows_the_session_and_never_the_token() {
    let sim = entra().await;
    // Remember every token presented to the simulated Exchange, then validate as usual.
    let presented = Arc::new(Mutex::new(Vec::<String>::new()));
    let (p, s) = (presented.clone(), sim.clone());
    let exo = exo_builder(&sim)
        .tokens(move |t: &str| {
            p.lock().unwrap().push(t.to_owned());
            s.validate_access_token(t)
        })
        .start()
        .await
        .unwrap();
    let dir = Dir::new();
    let cfg = m365_config(&dir, &sim, &exo, "");
    let opts = SendOptions::new("m365", MAILBOX, vec!["bob@fabrikam.com".into()])
        .subject("Scanner check")
        .body("Page 1\n.dot line\n")
        .transcript(true);
    let mut out = Vec::new();
    let ok = send(&cfg, &opts, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(ok, "{text}");

    let msgs = exo
        .recorder()
        .wait_for(1, Duration::from_secs(10))
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&msgs[0].data);
    assert!(body.contains("Subject: Scanner check\r\n"), "{body}");
    assert!(body.contains("\r\n.dot line\r\n"), "{body}");

    // The conversation, in order.
    let order = [
        "  * connected to 127.0.0.1 (127.0.0.1:",
        "  S: 220 ",
        "  C: EHLO relay.test",
        "  C: STARTTLS",
        "  * TLS established: TLSv1_",
        "  C: AUTH XOAUTH2 [redacted]",
        "  S: 235 2.7.0 Authentication successful",
        &format!("  C: MAIL FROM:<{MAILBOX}>"),
        "  C: RCPT TO:<bob@fabrikam.com>",
        "  * message data: ",
        "  S: 250 2.0.0 OK",
        "  C: QUIT",
        "bob@fabrikam.com: delivered: 250 2.0.0 OK",
    ];
    let mut at = 0;
    for want in order {
        let found = text[at..]
            .find(want)
            .unwrap_or_else(|| panic!("{want:?} missing after byte {at}:\n{text}"));
        at += found + want.len();
    }
    // Secrets: the token the server saw, and the base64 AUTH payload, never appear.
    let tokens = presented.lock().unwrap().clone();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].len() > 20);
    assert!(!text.contains(&tokens[0]), "the token leaked:\n{text}");
    assert!(!text.contains("auth=Bearer"), "{text}");
    assert!(
        !text.contains("dXNlcj1"),
        "an XOAUTH2 payload leaked:\n{text}"
    ); // base64 "user="
    assert!(!text.contains(SECRET), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sender_is_reported_with_its_category_and_exit_status() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let cfg = m365_config(&dir, &sim, &exo, "");
    // The mailbox has no Send As right on this address.
    let opts = SendOptions::new(
        "m365",
        "printer@contoso.com",
        vec!["bob@fabrikam.com".into()],
    );
    let mut out = Vec::new();
    let ok = send(&cfg, &opts, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!ok, "{text}");
    let l = text
        .lines()
        .find(|l| l.starts_with("bob@fabrikam.com: refused (send_as_denied): "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(l.contains("5.2.252"), "{l}");
    assert!(l.contains("; fix: "), "{l}");
    assert!(
        !text.contains("  C: "),
        "no transcript unless asked:\n{text}"
    );
    assert!(exo.recorder().is_empty());

    let err = send(
        &cfg,
        &SendOptions::new("nope", MAILBOX, vec!["bob@fabrikam.com".into()]),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OpsError::Refused(_)), "{err}");
    assert!(err.to_string().contains("routes: bounces, m365"), "{err}");
}
