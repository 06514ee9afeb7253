//! Shared helpers for the inbound tests: a server on 127.0.0.1:0 with a real
//! spool in a temp dir, and a small SMTP client.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern::inbound::{
    AccountConfig, InboundContext, LimitsConfig, ListenerConfig, PasswordHash, RelayPolicy, Server,
    TlsFiles,
};
use postern::spool::{RecoveredMessage, Spool, SpoolConfig, SpooledMessage};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "correct horse battery staple";

/// A running inbound server over a fresh spool.
pub struct Harness {
    pub addrs: Vec<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub spool: Arc<Spool>,
    pub rx: UnboundedReceiver<SpooledMessage>,
    pub shutdown: CancellationToken,
    pub reloader: postern::inbound::TlsReloader,
    handle: tokio::task::JoinHandle<()>,
}

pub fn listener(name: &str) -> ListenerConfig {
    ListenerConfig::new(name, "127.0.0.1:0".parse().unwrap())
}

/// Limits for tests: quick auth failure delay, everything else default.
pub fn limits() -> LimitsConfig {
    let mut limits = LimitsConfig::default();
    limits.auth_failure_delay_ms = 10;
    limits
}

/// A policy allowing `networks` and one account `printer` (any sender) and
/// `scanner` (only `scan@example.com` and `@example.net`).
pub fn policy(networks: &[&str]) -> RelayPolicy {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH
        .get_or_init(|| postern::inbound::hash_password(PASSWORD).unwrap())
        .clone();
    let printer = AccountConfig::new("printer", PasswordHash::new(hash.clone()));
    let mut scanner = AccountConfig::new("scanner", PasswordHash::new(hash));
    scanner.allowed_senders = vec!["scan@example.com".into(), "example.net".into()];
    RelayPolicy::new(
        networks
            .iter()
            .map(|n| postern::inbound::parse_network(n).unwrap())
            .collect(),
        &[printer, scanner],
    )
    .unwrap()
}

impl Harness {
    pub async fn start(
        listeners: Vec<ListenerConfig>,
        policy: RelayPolicy,
        limits: LimitsConfig,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(&SpoolConfig::new(dir.path().join("spool")))
            .await
            .unwrap();
        let spool = Arc::new(spool);
        let rx = spool.subscribe();
        let ctx = InboundContext::new(Arc::clone(&spool), policy)
            .with_limits(limits)
            .with_hostname("relay.test");
        let server = Server::bind(&listeners, ctx).unwrap();
        let addrs = server.local_addrs();
        let reloader = server.tls_reloader();
        let shutdown = CancellationToken::new();
        let handle = server.run(shutdown.clone());
        Self {
            addrs,
            dir,
            spool,
            rx,
            shutdown,
            reloader,
            handle,
        }
    }

    /// Messages committed so far.
    pub fn messages(&mut self) -> Vec<SpooledMessage> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            out.push(m);
        }
        out
    }

    /// Stops the server, waits for every session, and returns what is on disk.
    pub async fn finish(self) -> Vec<RecoveredMessage> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("server stops")
            .unwrap();
        let path = self.spool.path().to_path_buf();
        drop(self.spool);
        let (_, recovered) = Spool::open(&SpoolConfig::new(path)).await.unwrap();
        drop(self.dir);
        recovered.messages
    }
}

/// A minimal SMTP client that shows exactly what the server said.
pub struct Client<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self::new(stream)
    }

    /// Connects and reads the banner, which must be 220.
    pub async fn greeted(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr).await;
        let (code, text) = c.reply().await;
        assert_eq!(code, 220, "{text}");
        c
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// One (possibly multi-line) reply: its code and all lines joined by `\n`.
    /// Code 0 means the connection closed.
    pub async fn reply(&mut self) -> (u16, String) {
        let mut lines = Vec::new();
        loop {
            let Some(line) = self.line().await else {
                return (0, lines.join("\n"));
            };
            let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                return (code, lines.join("\n"));
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                return Some(line);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk))
                .await
                .expect("server answers within 30 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one command line (CRLF added) and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends a command and asserts the reply code.
    pub async fn expect(&mut self, line: &str, code: u16) -> String {
        let (got, text) = self.cmd(line).await;
        assert_eq!(got, code, "{line:?} -> {text}");
        text
    }

    /// Whether the server closed the connection (after any pending replies).
    pub async fn closed(&mut self) -> bool {
        self.reply().await.0 == 0
    }
}

/// A self-signed certificate for `relay.test` written to `dir`.
pub struct TestCert {
    pub files: TlsFiles,
    pub der: Vec<u8>,
}

pub fn test_cert(dir: &std::path::Path, tag: &str) -> TestCert {
    let certified = rcgen::generate_simple_self_signed(vec!["relay.test".to_owned()]).unwrap();
    let cert = dir.join(format!("{tag}-cert.pem"));
    let key = dir.join(format!("{tag}-key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    TestCert {
        files: TlsFiles::new(cert, key),
        der: certified.cert.der().to_vec(),
    }
}

/// A TLS connector that trusts exactly `der`.
pub fn connector(der: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(der.to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub fn server_name() -> rustls_pki_types::ServerName<'static> {
    rustls_pki_types::ServerName::try_from("relay.test").unwrap()
}

/// A message with a Subject, CRLF line endings, dot-terminated.
pub fn message(subject: &str) -> String {
    format!(
        "From: dev@example.com\r\nTo: a@example.org\r\nSubject: {subject}\r\n\r\nHello.\r\n.\r\n"
    )
}

/// Runs MAIL/RCPT/DATA for one message and returns the final reply.
pub async fn send_mail<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Client<S>,
    from: &str,
    to: &str,
    subject: &str,
) -> (u16, String) {
    c.expect(&format!("MAIL FROM:<{from}>"), 250).await;
    c.expect(&format!("RCPT TO:<{to}>"), 250).await;
    c.expect("DATA", 354).await;
    c.send(message(subject).as_bytes()).await;
    c.reply().await
}
