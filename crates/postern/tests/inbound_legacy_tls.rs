//! The legacy-TLS listener (feature `legacy-tls`): TLS 1.0/1.1 clients over
//! STARTTLS and implicit TLS through OpenSSL, TLS 1.2/1.3 clients on the same
//! listener, TLS 1.0 refused by the normal (rustls) listeners, certificate
//! reload, and the configuration checks.
//!
//! `cargo test -p postern --features legacy-tls --test inbound_legacy_tls`
#![cfg(feature = "legacy-tls")]

mod inbound_common;

use std::pin::Pin;
use std::process::Stdio;

use inbound_common::*;
use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use openssl::x509::X509;
use postern::inbound::{InboundContext, ListenerConfig, ListenerMode, Server, TlsVersion};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// An OpenSSL client that speaks exactly `min..=max` and trusts exactly `der`.
/// Security level 0: OpenSSL 3 refuses TLS 1.0/1.1 on the client side too otherwise.
fn openssl_client(der: &[u8], min: SslVersion, max: SslVersion) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_min_proto_version(Some(min)).unwrap();
    b.set_max_proto_version(Some(max)).unwrap();
    b.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
    b.cert_store_mut()
        .add_cert(X509::from_der(der).unwrap())
        .unwrap();
    b.build()
}

/// TLS 1.0 only, like an old printer.
fn tls10_client(der: &[u8]) -> SslConnector {
    openssl_client(der, SslVersion::TLS1, SslVersion::TLS1)
}

async fn handshake(
    connector: &SslConnector,
    tcp: TcpStream,
) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
    let ssl = connector
        .configure()
        .unwrap()
        .into_ssl("relay.test")
        .unwrap();
    let mut stream = SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut stream).connect().await?;
    Ok(stream)
}

/// EHLO, STARTTLS, then the handshake with `connector`.
async fn starttls(
    addr: std::net::SocketAddr,
    connector: &SslConnector,
) -> Result<Client<SslStream<TcpStream>>, openssl::ssl::Error> {
    let mut c = Client::greeted(addr).await;
    let ehlo = c.expect("EHLO printer.lan", 250).await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    c.expect("STARTTLS", 220).await;
    handshake(connector, c.stream).await.map(Client::new)
}

fn legacy_listener(
    name: &str,
    files: &postern::inbound::TlsFiles,
    min: TlsVersion,
) -> ListenerConfig {
    let mut l = listener(name);
    l.mode = ListenerMode::StarttlsRequired;
    l.tls = Some(files.clone());
    l.tls_min_version = min;
    l
}

#[tokio::test]
async fn tls10_starttls_message_lands_in_the_spool() {
    let certs = tempfile::tempdir().unwrap();
    let cert = test_cert(certs.path(), "legacy");
    let l = legacy_listener("printers", &cert.files, TlsVersion::Tls10);
    let mut h = Harness::start(vec![l], policy(&["127.0.0.1"]), limits()).await;

    let mut c = starttls(h.addrs[0], &tls10_client(&cert.der))
        .await
        .expect("TLS 1.0 handshake on the legacy listener");
    assert_eq!(c.stream.ssl().version_str(), "TLSv1");
    let ehlo = c.expect("EHLO printer.lan", 250).await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    let (code, text) = send_mail(&mut c, "mfp@example.com", "x@example.org", "tls1.0").await;
    assert_eq!(code, 250, "{text}");
    assert!(text.contains("queued as"), "{text}");
    c.expect("QUIT", 221).await;

    let msgs = h.messages();
    assert_eq!(msgs.len(), 1);
    let tls = msgs[0].envelope().client.tls.clone().unwrap();
    assert!(
        tls.starts_with("TLSv1.0 TLS_ECDHE_ECDSA_WITH_AES_"),
        "{tls}"
    );
    let body = String::from_utf8(msgs[0].read_body().await.unwrap()).unwrap();
    assert!(body.contains("(using TLSv1.0 "), "{body}");
    assert!(body.contains("Subject: tls1.0"), "{body}");
    assert_eq!(h.finish().await.len(), 1, "the message is on disk");
}

#[tokio::test]
async fn tls10_client_is_refused_by_a_normal_listener() {
    let certs = tempfile::tempdir().unwrap();
    let cert = test_cert(certs.path(), "modern");
    let mut starttls_listener = listener("submission");
    starttls_listener.mode = ListenerMode::StarttlsRequired;
    starttls_listener.tls = Some(cert.files.clone());
    let mut implicit = listener("smtps");
    implicit.mode = ListenerMode::ImplicitTls;
    implicit.tls = Some(cert.files.clone());
    let mut h = Harness::start(
        vec![starttls_listener, implicit],
        policy(&["127.0.0.1"]),
        limits(),
    )
    .await;

    let old = tls10_client(&cert.der);
    assert!(
        starttls(h.addrs[0], &old).await.is_err(),
        "rustls has no TLS 1.0"
    );
    let tcp = TcpStream::connect(h.addrs[1]).await.unwrap();
    assert!(handshake(&old, tcp).await.is_err());
    // The same OpenSSL client allowed TLS 1.2 gets through: only the version failed.
    let modern = openssl_client(&cert.der, SslVersion::TLS1, SslVersion::TLS1_2);
    let mut c = starttls(h.addrs[0], &modern).await.unwrap();
    assert_eq!(c.stream.ssl().version_str(), "TLSv1.2");
    c.expect("EHLO printer.lan", 250).await;
    let (code, text) = send_mail(&mut c, "mfp@example.com", "x@example.org", "tls1.2").await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(h.messages().len(), 1);
    h.finish().await;
}

#[tokio::test]
async fn tls12_and_tls13_clients_still_work_on_the_legacy_listener() {
    let certs = tempfile::tempdir().unwrap();
    let cert = test_cert(certs.path(), "both");
    let l = legacy_listener("printers", &cert.files, TlsVersion::Tls10);
    let mut h = Harness::start(vec![l], policy(&["127.0.0.1"]), limits()).await;

    let tls12 = openssl_client(&cert.der, SslVersion::TLS1_2, SslVersion::TLS1_2);
    let mut c = starttls(h.addrs[0], &tls12).await.unwrap();
    c.expect("EHLO x", 250).await;
    let (code, text) = send_mail(&mut c, "a@example.com", "b@example.org", "tls1.2").await;
    assert_eq!(code, 250, "{text}");

    // rustls as the client (TLS 1.3 by preference), the way a modern device connects.
    let mut c = Client::greeted(h.addrs[0]).await;
    c.expect("EHLO x", 250).await;
    c.expect("STARTTLS", 220).await;
    let tls = connector(&cert.der)
        .connect(server_name(), c.stream)
        .await
        .unwrap();
    let mut c = Client::new(tls);
    c.expect("EHLO x", 250).await;
    let (code, text) = send_mail(&mut c, "a@example.com", "b@example.org", "tls1.3").await;
    assert_eq!(code, 250, "{text}");

    let msgs = h.messages();
    assert_eq!(msgs.len(), 2);
    let described: Vec<String> = msgs
        .iter()
        .map(|m| m.envelope().client.tls.clone().unwrap())
        .collect();
    assert!(
        described[0].starts_with("TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_"),
        "{described:?}"
    );
    assert!(described[1].starts_with("TLSv1.3 TLS_"), "{described:?}");
    h.finish().await;
}

#[tokio::test]
async fn implicit_tls11_floor_and_certificate_reload() {
    let certs = tempfile::tempdir().unwrap();
    let first = test_cert(certs.path(), "first");
    let mut l = legacy_listener("printers-465", &first.files, TlsVersion::Tls11);
    l.mode = ListenerMode::ImplicitTls;
    let mut h = Harness::start(vec![l], policy(&["127.0.0.1"]), limits()).await;
    let tls11 = |der: &[u8]| openssl_client(der, SslVersion::TLS1_1, SslVersion::TLS1_1);

    let tcp = TcpStream::connect(h.addrs[0]).await.unwrap();
    let mut c = Client::new(handshake(&tls11(&first.der), tcp).await.unwrap());
    assert_eq!(c.reply().await.0, 220);
    c.expect("EHLO x", 250).await;
    let (code, text) = send_mail(&mut c, "a@example.com", "b@example.org", "tls1.1").await;
    assert_eq!(code, 250, "{text}");
    let tls = h.messages()[0].envelope().client.tls.clone().unwrap();
    assert!(tls.starts_with("TLSv1.1 "), "{tls}");

    // "1.1" is the floor: TLS 1.0 is refused.
    let tcp = TcpStream::connect(h.addrs[0]).await.unwrap();
    assert!(handshake(&tls10_client(&first.der), tcp).await.is_err());

    // SIGHUP: new handshakes on the OpenSSL listener see the new certificate.
    let second = test_cert(certs.path(), "second");
    std::fs::copy(&second.files.cert, &first.files.cert).unwrap();
    std::fs::copy(&second.files.key, &first.files.key).unwrap();
    h.reloader.reload().unwrap();
    let tcp = TcpStream::connect(h.addrs[0]).await.unwrap();
    assert!(
        handshake(&tls11(&first.der), tcp).await.is_err(),
        "old certificate no longer served"
    );
    let tcp = TcpStream::connect(h.addrs[0]).await.unwrap();
    let mut c = Client::new(handshake(&tls11(&second.der), tcp).await.unwrap());
    assert_eq!(c.reply().await.0, 220);

    // A broken key keeps the old acceptor and names the listener.
    std::fs::write(&first.files.key, "not a key").unwrap();
    let err = h.reloader.reload().unwrap_err().to_string();
    assert!(err.contains("printers-465"), "{err}");
    let tcp = TcpStream::connect(h.addrs[0]).await.unwrap();
    assert!(handshake(&tls11(&second.der), tcp).await.is_ok());
    h.finish().await;
}

const PYTHON: &str = r#"
import smtplib, ssl, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.minimum_version = ssl.TLSVersion.TLSv1
ctx.maximum_version = ssl.TLSVersion.TLSv1
ctx.set_ciphers("DEFAULT@SECLEVEL=0")
ctx.check_hostname = False  # the test certificate names relay.test, we dial 127.0.0.1
ctx.load_verify_locations(cafile)
with smtplib.SMTP("127.0.0.1", port) as s:
    s.ehlo("mfp.lan")
    s.starttls(context=ctx)
    print("version", s.sock.version())
    s.ehlo("mfp.lan")
    refused = s.sendmail("scan@example.com", ["someone@example.org"],
                         "Subject: scan over TLS 1.0\r\n\r\npage 1\r\n")
    assert not refused, refused
print("OK")
"#;

#[tokio::test]
async fn python_smtplib_over_tls10() {
    let certs = tempfile::tempdir().unwrap();
    let cert = test_cert(certs.path(), "py");
    let l = legacy_listener("printers", &cert.files, TlsVersion::Tls10);
    let mut h = Harness::start(vec![l], policy(&["127.0.0.1"]), limits()).await;
    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            PYTHON,
            &h.addrs[0].port().to_string(),
            cert.files.cert.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("version TLSv1\n"), "{text}");
    let msgs = h.messages();
    assert_eq!(msgs.len(), 1, "{text}");
    assert!(
        msgs[0]
            .envelope()
            .client
            .tls
            .as_deref()
            .unwrap()
            .starts_with("TLSv1.0 ")
    );
    h.finish().await;
}

async fn bind_error(listeners: &[ListenerConfig]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = postern::spool::Spool::open(&postern::spool::SpoolConfig::new(dir.path()))
        .await
        .unwrap();
    let ctx = InboundContext::new(std::sync::Arc::new(spool), policy(&[]));
    Server::bind(listeners, ctx).unwrap_err().to_string()
}

#[tokio::test]
async fn legacy_listener_refuses_public_addresses_unless_allowed() {
    let certs = tempfile::tempdir().unwrap();
    let cert = test_cert(certs.path(), "cfg");
    let mut wildcard = legacy_listener("printers", &cert.files, TlsVersion::Tls10);
    wildcard.bind = "0.0.0.0:0".parse().unwrap();
    let err = bind_error(&[wildcard]).await;
    assert!(
        err.contains("\"printers\"")
            && err.contains("LAN port only")
            && err.contains("allow_legacy_tls_on_public_address"),
        "{err}"
    );
    let mut public = legacy_listener("printers", &cert.files, TlsVersion::Tls11);
    public.bind = "198.51.100.7:25".parse().unwrap();
    let err = bind_error(&[public]).await;
    assert!(err.contains("198.51.100.7"), "{err}");
    let no_cert = {
        let mut l = listener("printers");
        l.tls_min_version = TlsVersion::Tls10;
        l
    };
    let err = bind_error(&[no_cert]).await;
    assert!(
        err.contains("tls_min_version") && err.contains("tls.cert"),
        "{err}"
    );
}

fn config(listener_toml: &str) -> Result<postern::config::Config, String> {
    let text = format!(
        "default_routes = [\"out\"]\n[routes.out]\ntype = \"local\"\ndir = \"/tmp/x\"\n\
         [[listeners]]\nname = \"printers\"\n{listener_toml}"
    );
    postern::config::Config::from_toml(&text, "relay.toml").map_err(|e| e.to_string())
}

#[test]
fn config_file_checks_name_key_and_line() {
    let tls = "tls = { cert = \"c.pem\", key = \"k.pem\" }\n";
    let ok = config(&format!(
        "bind = \"192.168.1.10:25\"\n{tls}tls_min_version = \"1.0\"\n"
    ))
    .unwrap();
    assert_eq!(ok.listeners[0].tls_min_version, TlsVersion::Tls10);
    let ok = config(&format!(
        "bind = \"[fd00::25]:25\"\n{tls}tls_min_version = 1.1\n"
    ))
    .unwrap();
    assert_eq!(ok.listeners[0].tls_min_version, TlsVersion::Tls11);

    let err = config(&format!(
        "bind = \"0.0.0.0:25\"\n{tls}tls_min_version = \"1.0\"\n"
    ))
    .unwrap_err();
    assert!(
        err.starts_with("relay.toml:7: listeners[0].bind: "),
        "{err}"
    );
    assert!(err.contains("LAN port only"), "{err}");

    let allowed = config(&format!(
        "bind = \"0.0.0.0:25\"\n{tls}tls_min_version = \"1.0\"\nallow_legacy_tls_on_public_address = true\n"
    ));
    assert!(allowed.is_ok(), "{allowed:?}");

    let err = config("bind = \"127.0.0.1:25\"\ntls_min_version = \"1.0\"\n").unwrap_err();
    assert!(
        err.starts_with("relay.toml:8: listeners[0].tls_min_version: "),
        "{err}"
    );

    let err = config(&format!(
        "bind = \"127.0.0.1:25\"\n{tls}tls_min_version = \"SSLv3\"\n"
    ))
    .unwrap_err();
    assert!(
        err.starts_with("relay.toml:9: listeners[0].tls_min_version: "),
        "{err}"
    );
}
