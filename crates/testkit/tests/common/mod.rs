//! Helpers shared by the simulator tests: external tools and a tiny raw SMTP client.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Whether `tool` can run; when it cannot, fails if POSTERN_REQUIRE_EXTERNAL_TOOLS=1, else
/// prints a notice and returns false (the caller returns early).
pub fn have_tool(tool: &str, version_arg: &str) -> bool {
    let ok = Command::new(tool)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty());
    if !ok {
        if std::env::var("POSTERN_REQUIRE_EXTERNAL_TOOLS").as_deref() == Ok("1") {
            panic!("required external tool {tool} is missing");
        }
        eprintln!("notice: {tool} not found, skipping this test");
    }
    ok
}

/// A temp dir holding `ca.pem`.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new(ca_pem: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca_pem).expect("write ca");
        Self { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write file");
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs `python3 -c script args...` off the async runtime and returns its output.
pub async fn python(script: &str, args: Vec<String>) -> Output {
    let script = script.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .expect("run python3")
    })
    .await
    .expect("join")
}

/// Runs a command off the async runtime.
pub async fn run(program: &str, args: Vec<String>) -> Output {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(program)
            .args(args)
            .output()
            .expect("run external tool")
    })
    .await
    .expect("join")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A raw SMTP client for the cases outside tools cannot express.
pub struct Raw {
    stream: Option<Stream>,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        Self {
            stream: Some(Stream::Plain(s)),
            buf: Vec::new(),
        }
    }

    /// Reads one whole reply (all its lines), joined with "\n"; empty string at EOF.
    pub async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let Some(line) = self.line().await else {
                return lines.join("\n");
            };
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Some(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            let mut chunk = [0u8; 8192];
            let n = match self.stream.as_mut()? {
                Stream::Plain(s) => s.read(&mut chunk).await.ok()?,
                Stream::Tls(s) => s.read(&mut chunk).await.ok()?,
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        match self.stream.as_mut().expect("open") {
            Stream::Plain(s) => s.write_all(bytes).await.expect("write"),
            Stream::Tls(s) => {
                s.write_all(bytes).await.expect("write");
                s.flush().await.expect("flush");
            }
        }
    }

    /// Sends `line` + CRLF and reads the reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    pub async fn starttls(&mut self, config: Arc<rustls::ClientConfig>, name: &str) {
        let r = self.cmd("STARTTLS").await;
        assert!(r.starts_with("220 "), "{r}");
        let Some(Stream::Plain(s)) = self.stream.take() else {
            panic!("not plain")
        };
        let name = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("name");
        let tls = TlsConnector::from(config)
            .connect(name, s)
            .await
            .expect("tls handshake");
        self.stream = Some(Stream::Tls(Box::new(tls)));
    }

    /// Greeting, EHLO, STARTTLS, EHLO.
    pub async fn open_tls(
        addr: std::net::SocketAddr,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Self {
        let mut c = Self::connect(addr).await;
        let g = c.reply().await;
        assert!(g.starts_with("220 "), "{g}");
        let e = c.cmd("EHLO client.test").await;
        assert!(e.starts_with("250-"), "{e}");
        c.starttls(config, name).await;
        let e = c.cmd("EHLO client.test").await;
        assert!(e.starts_with("250-"), "{e}");
        c
    }

    /// AUTH LOGIN user/password; returns the final reply.
    pub async fn login(&mut self, user: &str, password: &str) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let r = self.cmd("AUTH LOGIN").await;
        assert_eq!(r, "334 VXNlcm5hbWU6");
        let r = self.cmd(&b64.encode(user)).await;
        assert_eq!(r, "334 UGFzc3dvcmQ6");
        self.cmd(&b64.encode(password)).await
    }

    /// AUTH XOAUTH2 with an initial response; returns the reply.
    pub async fn xoauth2(&mut self, user: &str, token: &str) -> String {
        use base64::Engine as _;
        let ir = base64::engine::general_purpose::STANDARD
            .encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"));
        self.cmd(&format!("AUTH XOAUTH2 {ir}")).await
    }

    /// MAIL, RCPTs, DATA and the (already dot-stuffed, CRLF.CRLF-terminated) body; returns
    /// the final reply.
    pub async fn send_mail(&mut self, from: &str, rcpts: &[&str], wire_body: &[u8]) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        if !r.starts_with("250") {
            return r;
        }
        for rc in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{rc}>")).await;
            if !r.starts_with("250") {
                return r;
            }
        }
        let r = self.cmd("DATA").await;
        if !r.starts_with("354") {
            return r;
        }
        self.send_raw(wire_body).await;
        self.reply().await
    }
}
