//! `relay doctor` against the simulated tenant: every check passes for a healthy setup (and
//! `--send-test` delivers), and the right line fails when the SMTP endpoint is down, the
//! identity's secret is wrong, or the spool cannot be written.

mod deliver_common;

use std::time::Duration;

use deliver_common::*;
use postern::config::Config;
use postern::ops::doctor::{DoctorOptions, DoctorReport, Status, doctor};

/// A client_submission route to `port` (the simulator's, or a closed one).
fn route(dir: &Dir, ca_pem: &str, port: u16) -> String {
    submission_route(dir, "m365", port, ca_pem, "connect_timeout = \"5s\"\n")
}

async fn run(cfg: Config, opts: &DoctorOptions) -> (DoctorReport, String) {
    let mut out = Vec::new();
    let report = doctor(Ok((cfg, "test.toml".into())), opts, &mut out)
        .await
        .unwrap();
    (report, String::from_utf8(out).unwrap())
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_tenant_passes_every_check_and_sends_a_test_message() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let cfg = m365_config(
        &dir,
        &sim,
        &exo,
        "connect_timeout = \"5s\"
",
    );
    let opts = DoctorOptions::default().send_test("bob@fabrikam.com");
    let (report, text) = run(cfg, &opts).await;
    assert!(report.passed(), "{text}");
    assert_eq!(report.count(Status::Fail), 0, "{text}");
    assert_eq!(report.count(Status::Warn), 0, "{text}");
    line(
        &text,
        "PASS config: test.toml is valid (2 routes, 1 identity)",
    );
    assert!(
        line(&text, "PASS identity app: token obtained").contains("valid until 20"),
        "{text}"
    );
    line(&text, "PASS route m365: resolve: 127.0.0.1 -> 127.0.0.1:");
    line(&text, "PASS route m365: connect: 127.0.0.1 (127.0.0.1:");
    line(
        &text,
        "PASS route m365: tls: TLS established, server certificate verified",
    );
    assert!(
        line(&text, "PASS route m365: auth: the server offers XOAUTH2").contains("XOAUTH2"),
        "{text}"
    );
    line(
        &text,
        &format!("PASS route m365: login: AUTH XOAUTH2 as {MAILBOX} accepted"),
    );
    line(&text, "PASS route bounces: local sink:");
    line(&text, "PASS spool: ");
    line(
        &text,
        "PASS send-test via route m365: bob@fabrikam.com: delivered: 250",
    );
    assert!(text.ends_with(&format!(
        "{} passed, 0 warnings, 0 failed\n",
        report.checks.len()
    )));
    let msgs = exo
        .recorder()
        .wait_for(1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(msgs[0].rcpt_to, ["bob@fabrikam.com"]);
    assert_eq!(msgs[0].mail_from, MAILBOX);
    // One token served the identity check, the login check and the test message.
    assert_eq!(sim.grant_count("client_credentials"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_endpoint_down_fails_the_connect_line() {
    let sim = entra().await;
    let dir = Dir::new();
    // A port nobody listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.config(
        "m365",
        &format!(
            "{}{}",
            route(&dir, &sim.ca_pem(), port),
            app_identity(&dir, &sim)
        ),
    );
    let (report, text) = run(cfg, &DoctorOptions::default()).await;
    assert!(!report.passed(), "{text}");
    assert_eq!(report.count(Status::Fail), 1, "{text}");
    let fail = line(&text, "FAIL route m365: connect: cannot connect: 127.0.0.1");
    assert!(
        fail.contains(&format!(
            "-- fix: check that outbound TCP port {port} is allowed"
        )),
        "{fail}"
    );
    // The token still came; no TLS or AUTH line after a failed connect.
    line(&text, "PASS identity app: token obtained");
    assert!(!text.contains("route m365: tls"), "{text}");
    assert!(!text.contains("route m365: login"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_secret_fails_the_identity_and_the_login() {
    let sim = entra().await;
    let exo = exo(&sim).await;
    let dir = Dir::new();
    let identity = app_identity(&dir, &sim);
    dir.write("client-secret", "not-the-secret");
    let cfg = dir.config(
        "m365",
        &format!(
            "{}{identity}",
            route(&dir, exo.ca_cert_pem(), exo.addr().port())
        ),
    );
    let (report, text) = run(cfg, &DoctorOptions::default()).await;
    assert!(!report.passed(), "{text}");
    let fail = line(
        &text,
        "FAIL identity app: no token for scope https://outlook.office365.com/.default",
    );
    assert!(
        fail.contains("invalid_client") || fail.contains("7000215"),
        "{fail}"
    );
    assert!(fail.contains(" -- fix: "), "{fail}");
    assert!(
        !fail.contains("not-the-secret"),
        "the secret is printed: {fail}"
    );
    // The route itself is reachable, speaks TLS and offers XOAUTH2; only the login fails.
    line(&text, "PASS route m365: tls:");
    line(&text, "PASS route m365: auth: the server offers XOAUTH2");
    line(&text, "FAIL route m365: login: no access token");
    assert!(!text.contains("not-the-secret"), "{text}");
    assert!(exo.recorder().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_spool_fails_the_spool_line() {
    let dir = Dir::new();
    // The spool path is a regular file: nothing can be written below it (even as root).
    dir.write("spool", "not a directory");
    let cfg = dir.config("bounces", "");
    let (report, text) = run(cfg, &DoctorOptions::default()).await;
    assert!(!report.passed(), "{text}");
    assert_eq!(report.count(Status::Fail), 1, "{text}");
    let fail = line(&text, "FAIL spool: ");
    assert!(fail.contains("exists but is not a directory"), "{fail}");
    assert!(fail.contains("-- fix: make "), "{fail}");
}

#[tokio::test]
async fn invalid_configuration_is_one_failed_line() {
    let err = Config::from_toml("[spool]\npath = 5\n", "bad.toml").unwrap_err();
    let mut out = Vec::new();
    let report = doctor(Err(err), &DoctorOptions::default(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!report.passed());
    assert!(text.starts_with("FAIL config: bad.toml:"), "{text}");
    assert!(text.ends_with("0 passed, 0 warnings, 1 failed\n"), "{text}");
}
