//! The Graph route end to end: device → listener → spool → route `graph` (app-only token
//! for `https://graph.microsoft.com/.default` from the Entra ID simulator) → the Graph
//! `sendMail` simulator.

mod deliver_common;

use std::time::Duration;

use deliver_common::*;
use postern_testkit::entra::{App, EntraSim, Tenant};
use postern_testkit::graph::GraphServer;
use postern_testkit::record::{AuthMethod, Endpoint};

const WAIT: Duration = Duration::from_secs(30);

/// Entra ID with the confidential app holding Graph's `Mail.Send` application permission.
async fn entra_graph() -> EntraSim {
    EntraSim::builder()
        .tenant(Tenant::new(TENANT).domain("contoso.onmicrosoft.com"))
        .app(
            App::new(APP, TENANT)
                .secret(SECRET)
                .app_role("https://graph.microsoft.com", "Mail.Send"),
        )
        .start()
        .await
        .unwrap()
}

async fn graph(sim: &EntraSim) -> GraphServer {
    GraphServer::builder()
        .organization(org())
        .tokens(sim.clone())
        .start()
        .await
        .unwrap()
}

/// The relay's metrics once they contain `needle` (or after `WAIT`): outcomes are recorded
/// just after the simulator answers.
async fn metrics_until(relay: &postern::RelayHandle, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = relay.spool().metrics().render();
        if text.contains(needle) || tokio::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn route(dir: &Dir, graph: &GraphServer, extra: &str) -> String {
    let ca = dir.write("graph-ca.pem", graph.ca_cert_pem());
    format!(
        "[routes.graph]\ntype = \"graph\"\nidentity = \"app\"\nmailbox = \"{MAILBOX}\"\n\
         graph_url = \"{}\"\nca_file = \"{}\"\n{extra}",
        graph.base_url(),
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_the_mime_message_with_envelope_recipients_as_bcc() {
    let sim = entra_graph().await;
    let graph = graph(&sim).await;
    let dir = Dir::new();
    let cfg = dir.config(
        "graph",
        &format!("{}{}", route(&dir, &graph, ""), app_identity(&dir, &sim)),
    );
    let relay = start(cfg).await;
    let body = "From: Scanner 3F <scanner@contoso.com>\r\nTo: Alice <alice@contoso.com>\r\n\
                Subject: scan\r\nMessage-ID: <g1@printer.lan>\r\n\r\nPage 1\r\n.dot line\r\n";
    // bob is in the envelope only (a Bcc-style send).
    let sent = send(
        &relay,
        MAILBOX,
        &["alice@contoso.com", "bob@fabrikam.com"],
        body,
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let msgs = graph.recorder().wait_for(1, WAIT).await.unwrap();
    let m = &msgs[0];
    assert_eq!(m.endpoint, Endpoint::Graph);
    assert_eq!(m.mail_from, MAILBOX);
    assert_eq!(m.rcpt_to, ["alice@contoso.com", "bob@fabrikam.com"]);
    assert_eq!(
        m.identity.as_ref().unwrap().method,
        AuthMethod::GraphBearer {
            client_id: APP.into(),
            app_only: true
        }
    );
    let text = String::from_utf8_lossy(&m.data);
    assert!(text.contains("Bcc: <bob@fabrikam.com>\r\n"), "{text}");
    assert!(text.contains("To: Alice <alice@contoso.com>\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nPage 1\r\n.dot line\r\n"), "{text}");
    assert!(text.starts_with("Received: "), "{text}");
    let metrics = metrics_until(
        &relay,
        "postern_recipients_delivered_total{route=\"graph\"} 2",
    )
    .await;
    assert!(
        metrics.contains("postern_recipients_delivered_total{route=\"graph\"} 2"),
        "{metrics}"
    );
    assert_eq!(sim.grant_count("client_credentials"), 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_with_retry_after_then_delivered() {
    let sim = entra_graph().await;
    let graph = graph(&sim).await;
    graph.throttle_next(1, 1);
    let dir = Dir::new();
    let cfg = dir.config(
        "graph",
        &format!("{}{}", route(&dir, &graph, ""), app_identity(&dir, &sim)),
    );
    let relay = start(cfg).await;
    let sent = send(
        &relay,
        MAILBOX,
        &["alice@contoso.com"],
        &message(MAILBOX, "throttled"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let msgs = graph.recorder().wait_for(1, WAIT).await.unwrap();
    assert_eq!(msgs[0].rcpt_to, ["alice@contoso.com"]);
    let refusals = graph.recorder().refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].code, 429);
    assert!(dir.bounces(0, Duration::ZERO).await.is_empty());
    let metrics = metrics_until(
        &relay,
        "postern_recipients_deferred_total{route=\"graph\",category=\"throttled\"} 1",
    )
    .await;
    assert!(
        metrics.contains(
            "postern_recipients_deferred_total{route=\"graph\",category=\"throttled\"} 1"
        ),
        "{metrics}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_as_denied_bounces_once_and_rewriting_fixes_it() {
    let sim = entra_graph().await;
    let graph = graph(&sim).await;
    let dir = Dir::new();
    let extra = format!(
        "{}{}{}[[rules]]\nsender = [\"printers.contoso.com\"]\nroutes = [\"graph-rewrite\"]\n",
        route(&dir, &graph, ""),
        route(&dir, &graph, "sender_rewrite = true\n")
            .replace("routes.graph]", "routes.graph-rewrite]"),
        app_identity(&dir, &sim)
    );
    let relay = start(dir.config("graph", &extra)).await;
    let sent = send(
        &relay,
        "boss@contoso.com",
        &["alice@contoso.com"],
        &message("boss@contoso.com", "denied"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let bounces = dir.bounces(1, WAIT).await;
    assert_eq!(bounces.len(), 1);
    assert!(bounces[0].contains("ErrorSendAsDenied"), "{}", bounces[0]);
    assert!(bounces[0].contains("alice@contoso.com"), "{}", bounces[0]);
    // Not retried: one refusal.
    let refusals = graph.recorder().refusals();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].code, 403);
    assert!(graph.recorder().is_empty());

    // The same device through the rewriting route: From: becomes the mailbox.
    let sent = send(
        &relay,
        "scan3f@printers.contoso.com",
        &["alice@contoso.com"],
        &message("scan3f@printers.contoso.com", "rewritten"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let msgs = graph.recorder().wait_for(1, WAIT).await.unwrap();
    let text = String::from_utf8_lossy(&msgs[0].data);
    assert!(
        text.contains("From: Scanner 3F <scanner@contoso.com>\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Reply-To: Scanner 3F <scan3f@printers.contoso.com>\r\n"),
        "{text}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_for_graph_bounces_with_a_remedy_before_sending() {
    let sim = entra_graph().await;
    let graph = graph(&sim).await;
    let dir = Dir::new();
    let cfg = dir.config(
        "graph",
        &format!(
            "{}{}",
            route(&dir, &graph, "max_request_bytes = 2000\n"),
            app_identity(&dir, &sim)
        ),
    );
    let relay = start(cfg).await;
    let big = format!("{}{}\r\n", message(MAILBOX, "big"), "x".repeat(3000));
    let sent = send(&relay, MAILBOX, &["alice@contoso.com"], &big).await;
    assert_eq!(sent.data.unwrap().0, 250);
    let bounces = dir.bounces(1, WAIT).await;
    assert_eq!(bounces.len(), 1);
    assert!(bounces[0].contains("too large for Graph"), "{}", bounces[0]);
    assert!(graph.recorder().is_empty());
    assert!(graph.recorder().refusals().is_empty(), "nothing was sent");
    assert_eq!(sim.grant_count("client_credentials"), 0);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_naming_others_fail_over_to_an_smtp_route() {
    let sim = entra_graph().await;
    let graph = graph(&sim).await;
    let dir = Dir::new();
    let extra = format!(
        "{}{}[routes.outbox]\ntype = \"local\"\ndir = \"{}/outbox\"\n\
         [[rules]]\nsender = [\"contoso.com\"]\nroutes = [\"graph\", \"outbox\"]\n",
        route(&dir, &graph, ""),
        app_identity(&dir, &sim),
        dir.path().display()
    );
    let relay = start(dir.config("graph", &extra)).await;
    // The headers name carol, the envelope does not: Graph would send her a copy.
    let body = "From: scanner@contoso.com\r\nTo: alice@contoso.com, carol@contoso.com\r\n\
                Subject: x\r\n\r\nbody\r\n";
    let sent = send(&relay, MAILBOX, &["alice@contoso.com"], body).await;
    assert_eq!(sent.data.unwrap().0, 250);
    let outbox = dir.path().join("outbox");
    let deadline = tokio::time::Instant::now() + WAIT;
    let found = loop {
        let n = std::fs::read_dir(&outbox)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .count()
            })
            .unwrap_or(0);
        if n > 0 || tokio::time::Instant::now() >= deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(found, 1);
    assert!(graph.recorder().is_empty());
    assert!(
        graph.recorder().refusals().is_empty(),
        "nothing sent to Graph"
    );
    relay.shutdown().await;
}
