//! The Exchange Online client-submission simulator, driven by clients that are not ours
//! (Python's smtplib, curl, swaks) and, where they cannot express a case, a raw client.

mod common;

use std::time::{Duration, SystemTime};

use common::{Files, Raw, have_tool, python, run, text};
use postern_testkit::exo::{Profile, SubmissionServer};
use postern_testkit::fault::Fault;
use postern_testkit::org::{BasicAuth, Mailbox, Organization, ServicePrincipal};
use postern_testkit::record::{AuthMethod, Endpoint};
use postern_testkit::token::{AccessToken, SMTP_AUDIENCE, StaticTokens};

const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const APP: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";

fn org() -> Organization {
    Organization::builder(TENANT, "contoso.com")
        .mailbox(
            Mailbox::new("scanner@contoso.com")
                .password("Scan-2026!")
                .send_as("noreply@contoso.com"),
        )
        .mailbox(Mailbox::new("alice@contoso.com").password("Alice-pw"))
        .service_principal(ServicePrincipal::new(APP).full_access("scanner@contoso.com"))
        .build()
}

fn tokens() -> StaticTokens {
    let t = StaticTokens::new();
    let hour = SystemTime::now() + Duration::from_secs(3600);
    t.insert(
        "good-delegated",
        AccessToken::delegated(
            TENANT,
            APP,
            "scanner@contoso.com",
            "https://outlook.office.com",
            ["https://outlook.office.com/SMTP.Send", "offline_access"],
        )
        .expiring_at(hour),
    );
    t.insert(
        "good-app",
        AccessToken::app_only(TENANT, APP, SMTP_AUDIENCE, ["SMTP.SendAsApp"]).expiring_at(hour),
    );
    t.insert(
        "expired",
        AccessToken::delegated(
            TENANT,
            APP,
            "scanner@contoso.com",
            SMTP_AUDIENCE,
            ["SMTP.Send"],
        )
        .expiring_at(SystemTime::now() - Duration::from_secs(60)),
    );
    t.insert(
        "graph-audience",
        AccessToken::delegated(
            TENANT,
            APP,
            "scanner@contoso.com",
            "https://graph.microsoft.com",
            ["Mail.Send"],
        )
        .expiring_at(hour),
    );
    t.insert(
        "wrong-scope",
        AccessToken::delegated(
            TENANT,
            APP,
            "scanner@contoso.com",
            SMTP_AUDIENCE,
            ["IMAP.AccessAsUser.All"],
        )
        .expiring_at(hour),
    );
    t
}

async fn server() -> SubmissionServer {
    SubmissionServer::builder(Profile::ClientSubmission)
        .organization(org())
        .tokens(tokens())
        .start()
        .await
        .expect("start")
}

const SMTPLIB_SESSION: &str = r#"
import json, smtplib, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {}
s = smtplib.SMTP(timeout=30)
out["greeting"] = s.connect(host, port)[1].decode()
s._host = "smtp.office365.com"  # SNI and certificate check against the real name
code, msg = s.ehlo("printer.contoso.com")
out["ehlo_plain"] = [code, msg.decode()]
out["auth_plain"] = list(s.docmd("AUTH", "LOGIN"))
out["mail_plain"] = list(s.docmd("MAIL", "FROM:<scanner@contoso.com>"))
s.starttls(context=ssl.create_default_context(cafile=ca))
code, msg = s.ehlo("printer.contoso.com")
out["ehlo_tls"] = [code, msg.decode()]
out["mail_noauth"] = list(s.docmd("MAIL", "FROM:<scanner@contoso.com>"))
s.rset()
out["auth_plain_mech"] = list(s.docmd("AUTH", "PLAIN"))
s.login("scanner@contoso.com", "Scan-2026!")
body = ("From: Scanner <scanner@contoso.com>\r\nTo: bob@fabrikam.com\r\n"
        "Subject: scan\r\nMessage-ID: <scan-1@contoso.com>\r\n\r\n"
        ".leading dot\r\n..two dots\r\nbare\nLF inside\r\nend\r\n")
s.sendmail("scanner@contoso.com", ["bob@fabrikam.com", "carol@fabrikam.com"], body.encode())
s.sendmail("noreply@contoso.com", ["bob@fabrikam.com"], b"From: noreply@contoso.com\r\n\r\ngranted\r\n")
try:
    s.sendmail("scanner@contoso.com", ["bob@fabrikam.com"], b"From: CEO <ceo@contoso.com>\r\n\r\nhi\r\n")
except smtplib.SMTPDataError as e:
    out["sendas_header"] = [e.smtp_code, e.smtp_error.decode()]
try:
    s.sendmail("ceo@contoso.com", ["bob@fabrikam.com"], b"From: scanner@contoso.com\r\n\r\nhi\r\n")
except smtplib.SMTPDataError as e:
    out["sendas_envelope"] = [e.smtp_code, e.smtp_error.decode()]
out["quit"] = list(s.quit())
out["quit"][1] = out["quit"][1].decode()
for k in ("auth_plain", "mail_plain", "mail_noauth", "auth_plain_mech"):
    out[k][1] = out[k][1].decode()
print(json.dumps(out))
"#;

/// The reply text of `key` in the script's JSON: `[code, "text"]` becomes `"<code> <text>"`.
fn field(json: &serde_json::Value, key: &str) -> String {
    match &json[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => format!(
            "{} {}",
            a[0],
            a[1].as_str().unwrap_or_else(|| panic!("{key}: {json}"))
        ),
        other => panic!("{key} missing: {other} in {json}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_session_matches_exchange() {
    if !have_tool("python3", "--version") {
        return;
    }
    let server = server().await;
    let files = Files::new(server.ca_cert_pem());
    let out = python(
        SMTPLIB_SESSION,
        vec![
            "127.0.0.1".into(),
            server.addr().port().to_string(),
            files.ca().display().to_string(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");

    let greeting = field(&json, "greeting");
    let greeting = greeting.as_str();
    assert!(
        greeting.contains(".outlook.office365.com Microsoft ESMTP MAIL Service ready at "),
        "{greeting}"
    );
    assert!(greeting.contains(" +0000 ["), "{greeting}");
    let id = greeting
        .rsplit('[')
        .next()
        .expect("trailer")
        .trim_end_matches(']');
    assert_eq!(id.len(), 16, "{greeting}");
    assert!(
        id.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    );

    let ehlo_plain = field(&json, "ehlo_plain");
    assert!(ehlo_plain.contains("Hello [127.0.0.1]"), "{ehlo_plain}");
    assert!(
        ehlo_plain.ends_with(
            "\nSIZE 157286400\nPIPELINING\nDSN\nENHANCEDSTATUSCODES\nSTARTTLS\n8BITMIME\nBINARYMIME\nCHUNKING\nSMTPUTF8"
        ),
        "{ehlo_plain}"
    );
    let ehlo_tls = field(&json, "ehlo_tls");
    assert!(
        ehlo_tls.ends_with(
            "\nSIZE 157286400\nPIPELINING\nDSN\nENHANCEDSTATUSCODES\nAUTH LOGIN XOAUTH2\n8BITMIME\nBINARYMIME\nCHUNKING\nSMTPUTF8"
        ),
        "{ehlo_tls}"
    );
    assert!(
        field(&json, "auth_plain").starts_with("504 5.7.4 Unrecognized authentication type ["),
        "{json}"
    );
    assert!(
        field(&json, "mail_plain").starts_with("451 5.7.3 STARTTLS is required to send mail ["),
        "{json}"
    );
    assert!(
        field(&json, "mail_noauth")
            .starts_with("530 5.7.57 Client not authenticated to send mail. ["),
        "{json}"
    );
    assert!(
        field(&json, "auth_plain_mech").starts_with("504 5.7.4 Unrecognized authentication type"),
        "{json}"
    );
    assert!(
        field(&json, "sendas_header").starts_with(
            "554 5.2.252 SendAsDenied; scanner@contoso.com not allowed to send as ceo@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message."
        ),
        "{json}"
    );
    assert!(
        field(&json, "sendas_envelope").starts_with(
            "554 5.2.252 SendAsDenied; scanner@contoso.com not allowed to send as ceo@contoso.com;"
        ),
        "{json}"
    );
    assert_eq!(
        field(&json, "quit"),
        "221 2.0.0 Service closing transmission channel"
    );

    let got = server.recorder().messages();
    assert_eq!(got.len(), 2, "exactly the two permitted messages");
    let first = &got[0];
    assert_eq!(first.endpoint, Endpoint::ClientSubmission);
    assert_eq!(first.mail_from, "scanner@contoso.com");
    assert_eq!(first.rcpt_to, ["bob@fabrikam.com", "carol@fabrikam.com"]);
    assert_eq!(first.message_id, "<scan-1@contoso.com>");
    assert!(first.tls);
    assert_eq!(first.helo.as_deref(), Some("printer.contoso.com"));
    let identity = first.identity.as_ref().expect("authenticated");
    assert_eq!(identity.mailbox, "scanner@contoso.com");
    assert_eq!(identity.method, AuthMethod::Login);
    // smtplib dot-stuffs (bytes are sent as given otherwise, bare LF included); the record is
    // the message unstuffed, bare LF kept: it did not end a line or the data.
    assert_eq!(
        first.data,
        b"From: Scanner <scanner@contoso.com>\r\nTo: bob@fabrikam.com\r\nSubject: scan\r\nMessage-ID: <scan-1@contoso.com>\r\n\r\n.leading dot\r\n..two dots\r\nbare\nLF inside\r\nend\r\n"
    );
    assert_eq!(got[1].mail_from, "noreply@contoso.com");
    let refused: Vec<u16> = server
        .recorder()
        .refusals()
        .iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(refused, [504, 451, 530, 504, 554, 554]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_xoauth2_delegated_and_refusals() {
    if !have_tool("curl", "--version") {
        return;
    }
    let server = server().await;
    let files = Files::new(server.ca_cert_pem());
    let msg = files.write(
        "msg.eml",
        b"From: scanner@contoso.com\r\nTo: bob@fabrikam.com\r\nSubject: via curl\r\n\r\nhello from curl\r\n",
    );
    let port = server.addr().port();
    let curl = |token: &str, user: &str| {
        vec![
            "-sS".to_owned(),
            "-v".into(),
            "--max-time".into(),
            "30".into(),
            "--url".into(),
            format!("smtp://smtp.office365.com:{port}"),
            "--connect-to".into(),
            format!("smtp.office365.com:{port}:127.0.0.1:{port}"),
            "--ssl-reqd".into(),
            "--cacert".into(),
            files.ca().display().to_string(),
            "--mail-from".into(),
            "scanner@contoso.com".into(),
            "--mail-rcpt".into(),
            "bob@fabrikam.com".into(),
            "--upload-file".into(),
            msg.display().to_string(),
            "--user".into(),
            format!("{user}:"),
            "--oauth2-bearer".into(),
            token.to_owned(),
            "--login-options".into(),
            "AUTH=XOAUTH2".into(),
        ]
    };
    let ok = run("curl", curl("good-delegated", "scanner@contoso.com")).await;
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("< 235 2.7.0 Authentication successful"));
    let got = server.recorder().messages();
    assert_eq!(got.len(), 1);
    assert!(matches!(
        got[0].identity.as_ref().map(|i| &i.method),
        Some(AuthMethod::Xoauth2Delegated { client_id }) if client_id == APP
    ));
    assert_eq!(got[0].data, b"From: scanner@contoso.com\r\nTo: bob@fabrikam.com\r\nSubject: via curl\r\n\r\nhello from curl\r\n");

    let app = run("curl", curl("good-app", "scanner@contoso.com")).await;
    assert!(app.status.success(), "{}", text(&app));

    for (token, user) in [
        ("expired", "scanner@contoso.com"),
        ("graph-audience", "scanner@contoso.com"),
        ("wrong-scope", "scanner@contoso.com"),
        ("good-delegated", "alice@contoso.com"),
        ("good-app", "alice@contoso.com"),
        ("never-issued", "scanner@contoso.com"),
    ] {
        let out = run("curl", curl(token, user)).await;
        assert!(!out.status.success(), "{token} {user}: {}", text(&out));
        let t = text(&out);
        assert!(
            t.contains("< 535 5.7.3 Authentication unsuccessful ["),
            "{token} {user}: {t}"
        );
        assert!(
            !t.contains("< 334 ey"),
            "no Gmail-style failure challenge: {t}"
        );
    }
    assert_eq!(server.recorder().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_login_and_disabled_basic_auth() {
    if !have_tool("swaks", "--version") {
        return;
    }
    let server = server().await;
    let files = Files::new(server.ca_cert_pem());
    let port = server.addr().port().to_string();
    let swaks = |user: &str, pw: &str| {
        vec![
            "--server".to_owned(),
            "127.0.0.1".into(),
            "--port".into(),
            port.clone(),
            "--tls".into(),
            "--tls-verify".into(),
            "--tls-ca-path".into(),
            files.ca().display().to_string(),
            "--auth".into(),
            "LOGIN".into(),
            "--auth-user".into(),
            user.to_owned(),
            "--auth-password".into(),
            pw.to_owned(),
            "--from".into(),
            user.to_owned(),
            "--to".into(),
            "bob@fabrikam.com".into(),
            "--helo".into(),
            "mfp.contoso.com".into(),
            "--header".into(),
            "Subject: swaks test".into(),
        ]
    };
    let ok = run("swaks", swaks("scanner@contoso.com", "Scan-2026!")).await;
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("<~  250 2.0.0 OK <"), "{}", text(&ok));
    assert_eq!(server.recorder().len(), 1);
    assert!(
        server.recorder().messages()[0]
            .data
            .windows(19)
            .any(|w| w == b"Subject: swaks test")
    );

    let bad = run("swaks", swaks("scanner@contoso.com", "wrong")).await;
    assert!(
        text(&bad).contains("<~* 535 5.7.3 Authentication unsuccessful ["),
        "{}",
        text(&bad)
    );

    let org = server.organization();
    org.update_mailbox("alice@contoso.com", |m| m.smtp_auth_disabled = Some(true));
    let out = run("swaks", swaks("alice@contoso.com", "Alice-pw")).await;
    assert!(
        text(&out).contains("<~* 535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information. ["),
        "{}",
        text(&out)
    );
    org.set_smtp_auth_disabled(true);
    let out = run("swaks", swaks("scanner@contoso.com", "Scan-2026!")).await;
    assert!(
        text(&out).contains("<~* 535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. ["),
        "{}",
        text(&out)
    );
    org.set_smtp_auth_disabled(false);
    org.set_basic_auth(BasicAuth::Disabled);
    let out = run("swaks", swaks("scanner@contoso.com", "Scan-2026!")).await;
    assert!(
        text(&out).contains(
            "<~* 535 5.7.139 Authentication unsuccessful, basic authentication is disabled. ["
        ),
        "{}",
        text(&out)
    );
    org.set_basic_auth(BasicAuth::Retired);
    let out = run("swaks", swaks("scanner@contoso.com", "Scan-2026!")).await;
    assert!(
        text(&out).contains(
            "<~* 550 5.7.30 Basic authentication is not supported for Client Submission."
        ),
        "{}",
        text(&out)
    );
    assert_eq!(server.recorder().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_xoauth2_two_step_and_no_failure_challenge() {
    let server = server().await;
    let config = server.ca().client_config();
    let mut c = Raw::open_tls(server.addr(), config.clone(), "smtp.office365.com").await;
    // Two-step: empty challenge with its trailing space, then the credential line.
    let r = c.cmd("AUTH XOAUTH2").await;
    assert_eq!(r, "334 ");
    use base64::Engine as _;
    let line = base64::engine::general_purpose::STANDARD
        .encode("user=scanner@contoso.com\x01auth=Bearer expired\x01\x01");
    let r = c.cmd(&line).await;
    assert!(
        r.starts_with("535 5.7.3 Authentication unsuccessful ["),
        "{r}"
    );
    let r = c.xoauth2("scanner@contoso.com", "good-delegated").await;
    assert_eq!(r, "235 2.7.0 Authentication successful");
    let r = c
        .send_mail(
            "scanner@contoso.com",
            &["x@fabrikam.com"],
            b"Subject: t\r\n\r\n..stuffed\r\n.\r\n",
        )
        .await;
    assert!(r.starts_with("250 2.0.0 OK <"), "{r}");
    assert!(r.contains(".PROD.OUTLOOK.COM> [Hostname="), "{r}");
    assert_eq!(
        server.recorder().messages()[0].data,
        b"Subject: t\r\n\r\n.stuffed\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_concurrency_budget_size_and_throttle() {
    let org = org();
    org.update_mailbox("alice@contoso.com", |m| {
        m.recipient_budget = 3;
        m.messages_per_minute = 1;
        m.max_send_size = 100;
    });
    let server = SubmissionServer::builder(Profile::ClientSubmission)
        .organization(org)
        .rate_window(Duration::from_millis(300))
        .start()
        .await
        .expect("start");
    let config = server.ca().client_config();
    let name = "smtp.office365.com";

    // Three sessions per mailbox; the fourth is refused.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::open_tls(server.addr(), config.clone(), name).await;
        assert_eq!(
            c.login("scanner@contoso.com", "Scan-2026!").await,
            "235 2.7.0 Authentication successful"
        );
        held.push(c);
    }
    let mut fourth = Raw::open_tls(server.addr(), config.clone(), name).await;
    let r = fourth.login("scanner@contoso.com", "Scan-2026!").await;
    assert!(
        r.starts_with("432 4.3.2 Concurrent connections limit exceeded. ["),
        "{r}"
    );
    // Closing one frees a slot.
    let mut first = held.remove(0);
    assert!(first.cmd("QUIT").await.starts_with("221"));
    drop(first);
    let mut fifth = Raw::open_tls(server.addr(), config.clone(), name).await;
    let mut admitted = false;
    for _ in 0..50 {
        let r = fifth.login("scanner@contoso.com", "Scan-2026!").await;
        if r.starts_with("235") {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "a slot frees when a session ends");

    // Size: declared and actual, against MaxSendSize 100.
    let mut c = Raw::open_tls(server.addr(), config.clone(), name).await;
    assert!(
        c.login("alice@contoso.com", "Alice-pw")
            .await
            .starts_with("235")
    );
    let r = c.cmd("MAIL FROM:<alice@contoso.com> SIZE=101").await;
    assert_eq!(
        r,
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    let big = format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(200));
    let r = c
        .send_mail("alice@contoso.com", &["a@fabrikam.com"], big.as_bytes())
        .await;
    assert_eq!(
        r,
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );

    // Rate: the second message within the window is delayed, not refused.
    for i in 0..2 {
        let body = format!("Subject: {i}\r\n\r\nx\r\n.\r\n");
        let r = c
            .send_mail("alice@contoso.com", &["a@fabrikam.com"], body.as_bytes())
            .await;
        assert!(r.starts_with("250 2.0.0 OK"), "{r}");
    }
    let msgs = server.recorder().messages();
    assert_eq!(msgs[0].throttled_for, Duration::ZERO);
    assert!(
        msgs[1].throttled_for > Duration::ZERO,
        "second message held back"
    );

    // Budget of 3 recipients per window: 2 used, 2 more exceed it.
    let r = c
        .send_mail(
            "alice@contoso.com",
            &["a@fabrikam.com", "b@fabrikam.com"],
            b"Subject: q\r\n\r\nx\r\n.\r\n",
        )
        .await;
    assert!(
        r.starts_with("554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException ["),
        "{r}"
    );
    assert_eq!(server.recorder().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_faults() {
    let server = server().await;
    let config = server.ca().client_config();
    let name = "smtp.office365.com";
    let body = b"Subject: f\r\n\r\nbody\r\n.\r\n";

    server.faults().inject(Fault::RefuseConnection);
    let mut c = Raw::connect(server.addr()).await;
    assert_eq!(
        c.reply().await,
        "421 4.3.2 Service not available, closing transmission channel"
    );
    assert_eq!(c.reply().await, "", "closed");

    let mut c = Raw::open_tls(server.addr(), config.clone(), name).await;
    assert!(
        c.login("scanner@contoso.com", "Scan-2026!")
            .await
            .starts_with("235")
    );
    server.faults().inject(Fault::Temporary);
    let r = c
        .send_mail("scanner@contoso.com", &["a@fabrikam.com"], body)
        .await;
    assert!(
        r.starts_with("451 4.7.0 Temporary server error. Please try again later. PRX4 ["),
        "{r}"
    );
    server.faults().inject(Fault::ServiceUnavailable);
    let r = c
        .send_mail("scanner@contoso.com", &["a@fabrikam.com"], body)
        .await;
    assert_eq!(
        r,
        "421 4.3.2 Service not available, closing transmission channel"
    );
    assert_eq!(c.reply().await, "", "closed after 421");

    let mut c = Raw::open_tls(server.addr(), config.clone(), name).await;
    assert!(
        c.login("scanner@contoso.com", "Scan-2026!")
            .await
            .starts_with("235")
    );
    server.faults().inject(Fault::DropMidData);
    let r = c.cmd("MAIL FROM:<scanner@contoso.com>").await;
    assert!(r.starts_with("250"));
    assert!(c.cmd("RCPT TO:<a@fabrikam.com>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send_raw(b"Subject: partial\r\n").await;
    assert_eq!(c.reply().await, "", "dropped mid-DATA without a reply");

    // Slow replies still work; then a normal message goes through and is the only one.
    server.faults().set_reply_delay(Duration::from_millis(5));
    let mut c = Raw::open_tls(server.addr(), config.clone(), name).await;
    assert!(
        c.login("scanner@contoso.com", "Scan-2026!")
            .await
            .starts_with("235")
    );
    let r = c
        .send_mail("scanner@contoso.com", &["a@fabrikam.com"], body)
        .await;
    assert!(r.starts_with("250 2.0.0 OK"), "{r}");
    assert_eq!(server.recorder().len(), 1);

    // BDAT works and is recorded byte for byte (no dot-unstuffing for chunks).
    assert!(
        c.cmd("MAIL FROM:<scanner@contoso.com>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<a@fabrikam.com>").await.starts_with("250"));
    c.send_raw(b"BDAT 9\r\nSubject: ").await;
    assert!(c.reply().await.starts_with("250"));
    c.send_raw(b"BDAT 9 LAST\r\nb\r\n\r\n.x\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("250 2.0.0 OK"), "{r}");
    assert_eq!(
        server.recorder().messages()[1].data,
        b"Subject: b\r\n\r\n.x\r\n"
    );

    server.faults().inject(Fault::Hang);
    let mut hung = Raw::connect(server.addr()).await;
    let waited = tokio::time::timeout(Duration::from_millis(200), hung.reply()).await;
    assert!(waited.is_err(), "no greeting from a hung server");
    server.shutdown().await;
}
