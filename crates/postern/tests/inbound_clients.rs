//! Real third-party clients against the listener: Python's smtplib and swaks.
//! The swaks test prints a notice and passes only if swaks is not installed
//! (CI installs it).

mod inbound_common;

use std::process::Stdio;

use inbound_common::*;
use postern::inbound::ListenerMode;
use tokio::process::Command;

async fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("client runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const PYTHON: &str = r#"
import smtplib, ssl, sys
from email.message import EmailMessage
port, cafile, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
msg = EmailMessage()
msg["From"] = "scanner@example.com"
msg["To"] = "someone@example.org"
msg["Subject"] = "scan from smtplib"
msg.set_content("line one\n.line with a dot\nlast line\n")
ctx = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP("127.0.0.1", port) as s:
    s.ehlo("mfp.lan")
    s.starttls(context=ctx)
    s.ehlo("mfp.lan")
    s.login("printer", password)
    refused = s.send_message(msg)
    assert not refused, refused
# wrong password
with smtplib.SMTP("127.0.0.1", port) as s:
    s.starttls(context=ctx)
    try:
        s.login("printer", "wrong")
        print("LOGIN-ACCEPTED"); sys.exit(1)
    except smtplib.SMTPAuthenticationError as e:
        print("refused", e.smtp_code)
    # unauthenticated relay is refused
    try:
        s.sendmail("a@example.com", ["b@example.org"], "Subject: x\r\n\r\nx\r\n")
        print("RELAYED"); sys.exit(1)
    except smtplib.SMTPRecipientsRefused as e:
        print("relay refused", e.recipients)
print("OK")
"#;

#[tokio::test]
async fn python_smtplib_starttls_login_and_refusals() {
    let certs = tempfile::tempdir().unwrap();
    let cert = test_cert(certs.path(), "py");
    // smtplib checks the host name against 127.0.0.1: add it to a fresh cert.
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(&cert.files.cert, certified.cert.pem()).unwrap();
    std::fs::write(&cert.files.key, certified.signing_key.serialize_pem()).unwrap();
    let mut l = listener("submission");
    l.mode = ListenerMode::StarttlsRequired;
    l.tls = Some(cert.files.clone());
    let mut h = Harness::start(vec![l], policy(&[]), limits()).await;
    let (ok, out) = run(Command::new("python3").args([
        "-c",
        PYTHON,
        &h.addrs[0].port().to_string(),
        cert.files.cert.to_str().unwrap(),
        PASSWORD,
    ]))
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("refused 535"), "{out}");
    assert!(out.contains("relay refused"), "{out}");
    let msgs = h.messages();
    assert_eq!(msgs.len(), 1, "{out}");
    let body = String::from_utf8(msgs[0].read_body().await.unwrap()).unwrap();
    assert!(body.contains("\r\n.line with a dot\r\n"), "{body}");
    assert!(!out.contains(PASSWORD));
    h.finish().await;
}

#[tokio::test]
async fn swaks_pipelining_and_auth() {
    if std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("NOTICE: swaks is not installed; skipping the swaks test (CI installs it)");
        return;
    }
    let mut l = listener("legacy");
    l.allow_plaintext_auth = true;
    let mut h = Harness::start(vec![l], policy(&["127.0.0.1"]), limits()).await;
    let server = h.addrs[0].to_string();
    // Allowed network, pipelining.
    let (ok, out) = run(Command::new("swaks").args([
        "--server",
        &server,
        "--from",
        "dev@example.com",
        "--to",
        "a@example.org,b@example.org",
        "--pipeline",
        "--header",
        "Subject: swaks pipelined",
    ]))
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("queued as"), "{out}");
    // AUTH LOGIN over plaintext (allowed on this listener).
    let (ok, out) = run(Command::new("swaks").args([
        "--server",
        &server,
        "--from",
        "dev@example.com",
        "--to",
        "c@example.org",
        "--auth",
        "LOGIN",
        "--auth-user",
        "printer",
        "--auth-password",
        PASSWORD,
    ]))
    .await;
    assert!(ok, "{out}");
    // Wrong password.
    let (ok, out) = run(Command::new("swaks").args([
        "--server",
        &server,
        "--from",
        "dev@example.com",
        "--to",
        "c@example.org",
        "--auth",
        "PLAIN",
        "--auth-user",
        "printer",
        "--auth-password",
        "wrong",
    ]))
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("535 5.7.8"), "{out}");
    // (Raw smuggling vectors are sent by our own client in inbound_smtp.rs:
    // swaks normalises and dot-stuffs whatever --data holds.)
    let msgs = h.messages();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0].envelope().recipients.len(), 2);
    assert_eq!(
        msgs[1].envelope().client.auth_user.as_deref(),
        Some("printer")
    );
    h.finish().await;
}
