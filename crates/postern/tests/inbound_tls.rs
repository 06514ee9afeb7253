//! STARTTLS, implicit TLS and certificate reload, with certificates made by rcgen.

mod inbound_common;

use inbound_common::*;
use postern::inbound::ListenerMode;
use tokio::net::TcpStream;

#[tokio::test]
async fn starttls_then_auth_then_mail() {
    let certs = tempfile::tempdir().unwrap();
    let cert = test_cert(certs.path(), "a");
    let mut l = listener("submission");
    l.mode = ListenerMode::StarttlsRequired;
    l.tls = Some(cert.files.clone());
    let mut h = Harness::start(vec![l], policy(&[]), limits()).await;

    let mut c = Client::greeted(h.addrs[0]).await;
    let ehlo = c.expect("EHLO x", 250).await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let text = c.expect("MAIL FROM:<a@example.com>", 530).await;
    assert_eq!(text, "530 5.7.0 Must issue a STARTTLS command first");
    // A command pipelined after STARTTLS must be dropped (CVE-2011-0411).
    c.send(b"STARTTLS\r\nRSET\r\n").await;
    assert_eq!(c.reply().await.0, 220);
    let tls = connector(&cert.der)
        .connect(server_name(), c.stream)
        .await
        .unwrap();
    let mut c = Client::new(tls);
    let ehlo = c.expect("EHLO x", 250).await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    c.expect("STARTTLS", 503).await;
    c.expect("AUTH LOGIN", 334).await;
    c.expect("cHJpbnRlcg==", 334).await; // printer
    c.expect(
        "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ==", // correct horse battery staple
        235,
    )
    .await;
    let (code, text) = send_mail(&mut c, "dev@example.com", "x@example.org", "tls").await;
    assert_eq!(code, 250, "{text}");
    let msgs = h.messages();
    assert_eq!(msgs.len(), 1);
    let env = msgs[0].envelope();
    assert_eq!(env.client.auth_user.as_deref(), Some("printer"));
    assert!(env.client.tls.as_deref().unwrap().starts_with("TLSv1.3"));
    let body = String::from_utf8(msgs[0].read_body().await.unwrap()).unwrap();
    assert!(body.contains("with ESMTPSA id"), "{body}");
    h.finish().await;
}

#[tokio::test]
async fn implicit_tls_and_reload() {
    let certs = tempfile::tempdir().unwrap();
    let first = test_cert(certs.path(), "first");
    let mut l = listener("smtps");
    l.mode = ListenerMode::ImplicitTls;
    l.tls = Some(first.files.clone());
    let mut h = Harness::start(vec![l], policy(&["127.0.0.1"]), limits()).await;

    let tcp = TcpStream::connect(h.addrs[0]).await.unwrap();
    let tls = connector(&first.der)
        .connect(server_name(), tcp)
        .await
        .unwrap();
    let mut c = Client::new(tls);
    assert_eq!(c.reply().await.0, 220);
    let ehlo = c.expect("EHLO x", 250).await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    let (code, text) = send_mail(&mut c, "dev@example.com", "x@example.org", "smtps").await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(h.messages().len(), 1);

    // Replace the files and reload: new handshakes see the new certificate.
    let second = test_cert(certs.path(), "second");
    std::fs::copy(&second.files.cert, &first.files.cert).unwrap();
    std::fs::copy(&second.files.key, &first.files.key).unwrap();
    h.reloader.reload().unwrap();
    let tcp = TcpStream::connect(h.addrs[0]).await.unwrap();
    assert!(
        connector(&first.der)
            .connect(server_name(), tcp)
            .await
            .is_err(),
        "old certificate no longer served"
    );
    let tcp = TcpStream::connect(h.addrs[0]).await.unwrap();
    let tls = connector(&second.der)
        .connect(server_name(), tcp)
        .await
        .unwrap();
    let mut c = Client::new(tls);
    assert_eq!(c.reply().await.0, 220);

    // A broken file keeps the old configuration and names the listener.
    std::fs::write(&first.files.key, "not a key").unwrap();
    let err = h.reloader.reload().unwrap_err().to_string();
    assert!(err.contains("smtps"), "{err}");
    let tcp = TcpStream::connect(h.addrs[0]).await.unwrap();
    assert!(
        connector(&second.der)
            .connect(server_name(), tcp)
            .await
            .is_ok()
    );
    h.finish().await;
}

#[tokio::test]
async fn bind_refuses_tls_modes_without_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = postern::spool::Spool::open(&postern::spool::SpoolConfig::new(dir.path()))
        .await
        .unwrap();
    let ctx = postern::inbound::InboundContext::new(std::sync::Arc::new(spool), policy(&[]));
    let mut l = listener("smtps");
    l.mode = ListenerMode::ImplicitTls;
    let err = postern::inbound::Server::bind(&[l], ctx.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("smtps") && err.contains("tls"), "{err}");
    let mut l = listener("lb");
    l.proxy_protocol = true;
    let err = postern::inbound::Server::bind(&[l], ctx)
        .unwrap_err()
        .to_string();
    assert!(err.contains("trusted_proxies"), "{err}");
}

/// Without the `legacy-tls` feature, asking for TLS below 1.2 is a
/// configuration error that names the key and says how to get it.
#[cfg(not(feature = "legacy-tls"))]
#[tokio::test]
async fn legacy_tls_needs_the_cargo_feature() {
    let certs = tempfile::tempdir().unwrap();
    let cert = test_cert(certs.path(), "legacy");
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = postern::spool::Spool::open(&postern::spool::SpoolConfig::new(dir.path()))
        .await
        .unwrap();
    let ctx = postern::inbound::InboundContext::new(std::sync::Arc::new(spool), policy(&[]));
    let mut l = listener("printers");
    l.mode = ListenerMode::StarttlsRequired;
    l.tls = Some(cert.files.clone());
    l.tls_min_version = postern::inbound::TlsVersion::Tls10;
    let err = postern::inbound::Server::bind(&[l], ctx)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"printers\"")
            && err.contains("tls_min_version")
            && err.contains("--features legacy-tls"),
        "{err}"
    );

    let text = "default_routes = [\"out\"]\n[routes.out]\ntype = \"local\"\ndir = \"/tmp/x\"\n\
                [[listeners]]\nname = \"printers\"\nbind = \"192.168.1.10:25\"\n\
                tls = { cert = \"c.pem\", key = \"k.pem\" }\ntls_min_version = \"1.1\"\n";
    let err = postern::config::Config::from_toml(text, "relay.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("relay.toml:9: listeners[0].tls_min_version: ")
            && err.contains("--features legacy-tls"),
        "{err}"
    );
}
