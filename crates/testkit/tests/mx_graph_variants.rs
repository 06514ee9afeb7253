//! The tenant MX (swaks, Python smtplib with a client certificate), Graph sendMail (curl) and
//! the HVE and ACS submission variants (Python smtplib).

mod common;

use std::time::{Duration, SystemTime};

use common::{Files, have_tool, python, run, text};
use postern_testkit::exo::{Profile, SubmissionServer};
use postern_testkit::graph::GraphServer;
use postern_testkit::org::{AcsResource, InboundConnector, Mailbox, Organization};
use postern_testkit::record::{AuthMethod, Endpoint};
use postern_testkit::tenant_mx::TenantMx;
use postern_testkit::tls::TestCa;
use postern_testkit::token::{AccessToken, GRAPH_AUDIENCE, StaticTokens};

const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const APP: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";

fn org() -> Organization {
    Organization::builder(TENANT, "contoso.com")
        .mailbox(Mailbox::new("alice@contoso.com").send_as("sales@contoso.com"))
        .mailbox(Mailbox::hve_account("hve1@contoso.com", "Hve-pw"))
        .acs_resource(AcsResource::new("contoso-acs").app(APP, "acs-secret"))
        .connector(InboundConnector::certificate(
            "partner",
            "relay.contoso.com",
        ))
        .build()
}

fn swaks_args(port: u16, from: &str, to: &str) -> Vec<String> {
    [
        "--server",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--from",
        from,
        "--to",
        to,
        "--helo",
        "mfp.contoso.com",
        "--header",
        "Subject: direct send",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_direct_send_rules() {
    if !have_tool("swaks", "--version") {
        return;
    }
    let mx = TenantMx::builder()
        .organization(org())
        .wrong_region_domain("contoso.eu")
        .start()
        .await
        .expect("start");
    let port = mx.addr().port();
    let ok = run(
        "swaks",
        swaks_args(port, "scanner@contoso.com", "alice@contoso.com"),
    )
    .await;
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        text(&ok).contains("<~  250 2.6.0 <") || text(&ok).contains("<-  250 2.6.0 <"),
        "{}",
        text(&ok)
    );
    let m = mx.recorder().messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].endpoint, Endpoint::DirectSend);
    assert!(!m[0].tls);
    assert_eq!(m[0].identity, None);

    let ext = run(
        "swaks",
        swaks_args(port, "scanner@contoso.com", "bob@fabrikam.com"),
    )
    .await;
    assert!(
        text(&ext).contains("550 5.7.64 TenantAttribution; Relay Access Denied ["),
        "{}",
        text(&ext)
    );

    let wr = run(
        "swaks",
        swaks_args(port, "scanner@contoso.com", "x@contoso.eu"),
    )
    .await;
    assert!(
        text(&wr).contains("451 4.4.62 Mail sent to the wrong Office 365 region. ATTR35. ["),
        "{}",
        text(&wr)
    );

    mx.organization().set_reject_direct_send(true);
    let rds = run(
        "swaks",
        swaks_args(port, "scanner@contoso.com", "alice@contoso.com"),
    )
    .await;
    assert!(
        text(&rds).contains("550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this organization from unauthorized sources ["),
        "{}",
        text(&rds)
    );
    // P1 MAIL FROM outside the accepted domains is still Direct Send.
    let other = run(
        "swaks",
        swaks_args(port, "alerts@fabrikam.com", "alice@contoso.com"),
    )
    .await;
    assert!(other.status.success(), "{}", text(&other));

    mx.set_blocked_ip("127.0.0.1".parse().expect("ip"), true);
    let blocked = run(
        "swaks",
        swaks_args(port, "alerts@fabrikam.com", "alice@contoso.com"),
    )
    .await;
    assert!(
        text(&blocked).contains("550 5.7.1 Service unavailable, Client host [127.0.0.1] blocked using Spamhaus. To request removal from this list see https://www.spamhaus.org/query/ip/127.0.0.1 AS(1450) ["),
        "{}",
        text(&blocked)
    );
    assert_eq!(mx.recorder().len(), 2);
    let codes: Vec<u16> = mx.recorder().refusals().iter().map(|r| r.code).collect();
    assert_eq!(codes, [550, 451, 550, 550]);
}

const CONNECTOR_SCRIPT: &str = r#"
import json, smtplib, ssl, sys
port, ca, name, chain = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if chain != "-":
    ctx.load_cert_chain(chain)
s = smtplib.SMTP(timeout=30)
s.connect("127.0.0.1", port)
s._host = name
s.ehlo("relay.contoso.com")
s.starttls(context=ctx)
s.ehlo("relay.contoso.com")
out = {}
try:
    s.sendmail("app@contoso.com", ["bob@fabrikam.com"], b"From: app@contoso.com\r\nSubject: relayed\r\n\r\nvia connector\r\n")
    out["result"] = "ok"
except smtplib.SMTPRecipientsRefused as e:
    code, msg = e.recipients["bob@fabrikam.com"]
    out["result"] = "%d %s" % (code, msg.decode())
s.quit()
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_connector_with_client_certificate() {
    if !have_tool("python3", "--version") {
        return;
    }
    let ca = TestCa::new();
    let mx = TenantMx::builder()
        .organization(org())
        .ca(ca.clone())
        .start()
        .await
        .expect("start");
    let files = Files::new(mx.ca_cert_pem());
    let good = files.write(
        "good.pem",
        ca.client_cert("relay.contoso.com", &["relay.contoso.com"])
            .chain_and_key_pem()
            .as_bytes(),
    );
    let wrong = files.write(
        "wrong.pem",
        ca.client_cert("mail.fabrikam.com", &["mail.fabrikam.com"])
            .chain_and_key_pem()
            .as_bytes(),
    );
    let outsider = TestCa::new();
    let untrusted = files.write(
        "untrusted.pem",
        outsider
            .client_cert("relay.contoso.com", &["relay.contoso.com"])
            .chain_and_key_pem()
            .as_bytes(),
    );
    let go = |chain: String| {
        python(
            CONNECTOR_SCRIPT,
            vec![
                mx.addr().port().to_string(),
                files.ca().display().to_string(),
                mx.tls_server_name().to_owned(),
                chain,
            ],
        )
    };
    let out = go(good.display().to_string()).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"result\": \"ok\""),
        "{}",
        text(&out)
    );
    let m = mx.recorder().messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].endpoint, Endpoint::Connector);
    assert!(m[0].tls);
    assert_eq!(
        m[0].client_cert_subject.as_deref(),
        Some("CN=relay.contoso.com")
    );
    assert_eq!(
        m[0].data,
        b"From: app@contoso.com\r\nSubject: relayed\r\n\r\nvia connector\r\n"
    );

    for chain in [wrong.display().to_string(), "-".to_owned()] {
        let out = go(chain).await;
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains("550 5.7.64 TenantAttribution; Relay Access Denied ["),
            "{}",
            text(&out)
        );
    }
    // A certificate from an unknown CA fails the handshake.
    let out = go(untrusted.display().to_string()).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(mx.recorder().len(), 1);

    // An IP connector that requires TLS: plain MAIL is refused, TLS relays.
    mx.organization().add_connector(
        InboundConnector::ips("office", ["127.0.0.1".parse().expect("ip")]).require_tls(true),
    );
    let out = go("-".to_owned()).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"result\": \"ok\""),
        "{}",
        text(&out)
    );
    assert_eq!(mx.recorder().messages()[1].endpoint, Endpoint::Connector);
}

const LOGIN_SCRIPT: &str = r#"
import json, smtplib, ssl, sys
port, ca, name, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
rcpts = sys.argv[6].split(",")
s = smtplib.SMTP(timeout=30)
s.connect("127.0.0.1", port)
s._host = name
s.starttls(context=ssl.create_default_context(cafile=ca))
out = {}
try:
    s.login(user, pw)
    refused = s.sendmail(sys.argv[7], rcpts, b"From: " + sys.argv[7].encode() + b"\r\nSubject: v\r\n\r\nbody\r\n")
    out["refused"] = {k: "%d %s" % (v[0], v[1].decode()) for k, v in refused.items()}
except smtplib.SMTPAuthenticationError as e:
    out["auth"] = "%d %s" % (e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPRecipientsRefused as e:
    out["refused"] = {k: "%d %s" % (v[0], v[1].decode()) for k, v in e.recipients.items()}
print(json.dumps(out))
"#;

async fn login_script(
    server: &SubmissionServer,
    files: &Files,
    user: &str,
    pw: &str,
    rcpts: &str,
    from: &str,
) -> serde_json::Value {
    let out = python(
        LOGIN_SCRIPT,
        vec![
            server.addr().port().to_string(),
            files.ca().display().to_string(),
            server.tls_server_name().to_owned(),
            user.to_owned(),
            pw.to_owned(),
            rcpts.to_owned(),
            from.to_owned(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_hve_and_acs_profiles() {
    if !have_tool("python3", "--version") {
        return;
    }
    let org = org();
    org.set_smtp_auth_disabled(true); // HVE works even so.
    let hve = SubmissionServer::builder(Profile::Hve)
        .organization(org.clone())
        .start()
        .await
        .expect("hve");
    assert_eq!(hve.tls_server_name(), "smtp.hve.mx.microsoft");
    let files = Files::new(hve.ca_cert_pem());
    let many: Vec<String> = (0..51).map(|i| format!("u{i}@contoso.com")).collect();
    let out = login_script(
        &hve,
        &files,
        "hve1@contoso.com",
        "Hve-pw",
        &many.join(","),
        "hve1@contoso.com",
    )
    .await;
    assert_eq!(
        out["refused"]["u50@contoso.com"],
        "452 4.5.3 Too many recipients"
    );
    assert_eq!(hve.recorder().messages()[0].rcpt_to.len(), 50);
    assert_eq!(hve.recorder().messages()[0].endpoint, Endpoint::Hve);
    let out = login_script(
        &hve,
        &files,
        "hve1@contoso.com",
        "Hve-pw",
        "bob@fabrikam.com",
        "hve1@contoso.com",
    )
    .await;
    assert!(
        out["refused"]["bob@fabrikam.com"]
            .as_str()
            .expect("refused")
            .starts_with("550 5.7.1 Unable to relay ["),
        "{out}"
    );
    let out = login_script(
        &hve,
        &files,
        "alice@contoso.com",
        "x",
        "a@contoso.com",
        "alice@contoso.com",
    )
    .await;
    assert!(
        out["auth"]
            .as_str()
            .expect("auth")
            .starts_with("535 5.7.3 Authentication unsuccessful"),
        "{out}"
    );

    let acs = SubmissionServer::builder(Profile::Acs)
        .organization(org)
        .start()
        .await
        .expect("acs");
    let files = Files::new(acs.ca_cert_pem());
    for user in [
        format!("contoso-acs|{APP}|{TENANT}"),
        format!("contoso-acs.{APP}.{TENANT}"),
    ] {
        let out = login_script(
            &acs,
            &files,
            &user,
            "acs-secret",
            "bob@fabrikam.com",
            "donotreply@contoso.com",
        )
        .await;
        assert_eq!(out["refused"], serde_json::json!({}), "{out}");
    }
    let out = login_script(
        &acs,
        &files,
        &format!("contoso-acs|{APP}|{TENANT}"),
        "secret-id-not-value",
        "bob@fabrikam.com",
        "x@contoso.com",
    )
    .await;
    assert!(
        out["auth"].as_str().expect("auth").starts_with("535 5.7.3"),
        "{out}"
    );
    let msgs = acs.recorder().messages();
    assert_eq!(msgs.len(), 2);
    assert!(
        matches!(&msgs[0].identity.as_ref().expect("id").method, AuthMethod::AcsLogin { client_id } if client_id == APP)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_graph_sendmail() {
    if !have_tool("curl", "--version") {
        return;
    }
    let tokens = StaticTokens::new();
    let hour = SystemTime::now() + Duration::from_secs(3600);
    tokens.insert(
        "app",
        AccessToken::app_only(TENANT, APP, GRAPH_AUDIENCE, ["Mail.Send"]).expiring_at(hour),
    );
    tokens.insert(
        "old",
        AccessToken::app_only(TENANT, APP, GRAPH_AUDIENCE, ["Mail.Send"])
            .expiring_at(SystemTime::now() - Duration::from_secs(5)),
    );
    let graph = GraphServer::builder()
        .organization(org())
        .tokens(tokens)
        .max_body(64 * 1024)
        .start()
        .await
        .expect("start");
    let files = Files::new(graph.ca_cert_pem());
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mime = b"From: Sales <sales@contoso.com>\r\nTo: bob@fabrikam.com\r\nCc: carol@fabrikam.com\r\nSubject: g\r\nMessage-ID: <g-1@contoso.com>\r\n\r\nhello graph\r\n";
    let wrapped: String = b64
        .encode(mime)
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
        .collect();
    let good = files.write("good.b64", wrapped.as_bytes());
    let bad = files.write("bad.b64", b"this is not base64!!");
    let denied = files.write(
        "denied.b64",
        b64.encode(b"From: ceo@contoso.com\r\nTo: bob@fabrikam.com\r\n\r\nx\r\n")
            .as_bytes(),
    );
    let big = files.write("big.b64", vec![b'A'; 64 * 1024 + 4].as_slice());
    let port = graph.addr().port();
    let post = |token: &str, body: &std::path::Path| {
        vec![
            "-sS".to_owned(),
            "-D".into(),
            "-".into(),
            "--max-time".into(),
            "30".into(),
            "--cacert".into(),
            files.ca().display().to_string(),
            "--resolve".into(),
            format!("graph.microsoft.com:{port}:127.0.0.1"),
            "-H".into(),
            format!("Authorization: Bearer {token}"),
            "-H".into(),
            "Content-Type: text/plain".into(),
            "--data-binary".into(),
            format!("@{}", body.display()),
            format!("https://graph.microsoft.com:{port}/v1.0/users/alice%40contoso.com/sendMail"),
        ]
    };
    let ok = run("curl", post("app", &good)).await;
    assert!(text(&ok).starts_with("HTTP/1.1 202"), "{}", text(&ok));
    let m = graph.recorder().messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].data, mime);
    assert_eq!(m[0].mail_from, "alice@contoso.com");
    assert_eq!(m[0].rcpt_to, ["bob@fabrikam.com", "carol@fabrikam.com"]);

    let r = text(&run("curl", post("app", &bad)).await);
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains(r#"{"error":{"code":"ErrorMimeContentInvalidBase64String","message":"Invalid base64 string for MIME content."}}"#), "{r}");
    let r = text(&run("curl", post("app", &denied)).await);
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("ErrorSendAsDenied"),
        "{r}"
    );
    let r = text(&run("curl", post("app", &big)).await);
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    let r = text(&run("curl", post("old", &good)).await);
    assert!(
        r.starts_with("HTTP/1.1 401") && r.contains("InvalidAuthenticationToken"),
        "{r}"
    );
    graph.throttle_next(1, 7);
    let r = text(&run("curl", post("app", &good)).await);
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: 7"), "{r}");
    assert!(
        r.contains("\"message\":\"Please retry again later.\""),
        "{r}"
    );
    assert_eq!(graph.recorder().len(), 1);
    let codes: Vec<u16> = graph.recorder().refusals().iter().map(|r| r.code).collect();
    assert_eq!(codes, [400, 403, 413, 401, 429]);
}
