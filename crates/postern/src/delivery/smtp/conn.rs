//! One outbound SMTP connection on postern-smtp's [`ClientSession`]: TCP (each resolved
//! address in turn), greeting, EHLO (HELO fallback), STARTTLS or implicit TLS, re-EHLO,
//! AUTH; then commands and replies, each under its timeout.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use postern_sasl::{Client as SaslClient, Credentials, Mechanism, choose_mechanism_among};
use postern_smtp::{
    AuthResponse, Capabilities, ClientSession, Command, DecodeError, Domain, ParseOptions, Reply,
    ReplyCode, TlsPolicy,
};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use super::config::{Timeouts, TlsMode};
use super::transcript::{Transcript, TranscriptSide};
use crate::identity::TokenSource;

/// A plain or TLS stream.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Closed,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// Why a connection could not be used. Everything but [`ConnError::Reply`] is a
/// connection-level failure (transient).
#[derive(Debug)]
pub(crate) enum ConnError {
    /// No address could be reached.
    Connect(String),
    /// Reading or writing failed.
    Io(&'static str, io::Error),
    /// A step took longer than its timeout.
    Timeout(&'static str, Duration),
    /// The TLS handshake failed (certificate, protocol version).
    Tls(String),
    /// The server broke the protocol.
    Protocol(String),
    /// TLS is required and the server does not offer STARTTLS.
    NoStartTls(String),
    /// The server refused a session step (greeting, EHLO, STARTTLS, AUTH).
    Reply(&'static str, Reply<'static>),
    /// No AUTH mechanism fits, or the credential is unusable.
    Auth(String),
    /// No token could be obtained.
    Token(postern_entra::Error),
    /// Resolving where to connect failed.
    Resolve(String),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Io(stage, e) => write!(f, "connection lost during {stage}: {e}"),
            Self::Timeout(stage, d) => write!(f, "timed out after {d:?} waiting for {stage}"),
            Self::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::NoStartTls(host) => write!(
                f,
                "{host} does not offer STARTTLS and the route requires TLS"
            ),
            Self::Reply(stage, r) => write!(f, "{stage} refused: {}", reply_text(r)),
            Self::Auth(e) => write!(f, "cannot authenticate: {e}"),
            Self::Token(e) => write!(f, "no access token: {e}"),
            Self::Resolve(e) => write!(f, "cannot resolve the server: {e}"),
        }
    }
}

/// A reply on one line: `550 5.7.1 text text`.
pub(crate) fn reply_text(r: &Reply<'_>) -> String {
    let mut s = u16::from(r.code()).to_string();
    if let Some(e) = r.enhanced() {
        s.push(' ');
        s.push_str(&e.to_string());
    }
    for l in r.lines() {
        if !l.is_empty() {
            s.push(' ');
            s.push_str(l);
        }
    }
    s
}

/// What a route authenticates with.
#[derive(Clone)]
pub(crate) enum AuthPlan {
    None,
    Password {
        user: String,
        password: postern_sasl::Password,
        allowed: Vec<Mechanism>,
    },
    Token {
        user: String,
        source: TokenSource,
    },
}

/// Where and how to connect.
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) addr: SocketAddr,
    pub(crate) tls_name: String,
}

/// Session settings shared by every connection of a route.
pub(crate) struct SessionSettings {
    pub(crate) tls: TlsMode,
    pub(crate) tls_config: Arc<rustls::ClientConfig>,
    pub(crate) helo: String,
    pub(crate) timeouts: Timeouts,
    pub(crate) auth: AuthPlan,
    /// Sees every line of every session (redacted), when set.
    pub(crate) transcript: Option<Transcript>,
}

/// An open, greeted, (TLS'd, authenticated) connection.
pub(crate) struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pub(crate) session: ClientSession,
    pub(crate) host: String,
    pub(crate) addr: SocketAddr,
    pub(crate) last_used: Instant,
    /// Set when the connection must not be reused (421, I/O error, unknown state).
    pub(crate) broken: bool,
    timeouts: Timeouts,
    transcript: Option<Transcript>,
    /// While authenticating: client lines are redacted in the transcript.
    in_auth: bool,
    /// The dot-stuffed message data being sent, kept across the messages of this connection
    /// so that a delivery does not allocate (and zero) its buffers every time.
    pub(crate) data_buf: Vec<u8>,
    /// Replies read on this connection so far.
    replies: u64,
}

const READ_CHUNK: usize = 8192;

impl Conn {
    /// Connects to the first reachable target and runs the session up to AUTH.
    pub(crate) async fn open(targets: &[Target], s: &SessionSettings) -> Result<Self, ConnError> {
        let mut errors = Vec::new();
        for t in targets {
            match timeout(s.timeouts.connect, TcpStream::connect(t.addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    return Self::start(tcp, t, s).await;
                }
                Ok(Err(e)) => errors.push(format!("{} ({}): {e}", t.host, t.addr)),
                Err(_) => errors.push(format!(
                    "{} ({}): no answer within {:?}",
                    t.host, t.addr, s.timeouts.connect
                )),
            }
        }
        if errors.is_empty() {
            errors.push("no address to connect to".into());
        }
        Err(ConnError::Connect(errors.join("; ")))
    }

    async fn start(tcp: TcpStream, t: &Target, s: &SessionSettings) -> Result<Self, ConnError> {
        let policy = match s.tls {
            TlsMode::Required => TlsPolicy::Required,
            TlsMode::Opportunistic => TlsPolicy::Opportunistic,
            TlsMode::None => TlsPolicy::Disabled,
            TlsMode::Implicit => TlsPolicy::Implicit,
        };
        let mut conn = Self {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            data_buf: Vec::new(),
            replies: 0,
            session: ClientSession::new(policy),
            host: t.host.clone(),
            addr: t.addr,
            last_used: Instant::now(),
            broken: false,
            timeouts: s.timeouts,
            transcript: s
                .transcript
                .clone()
                .or_else(|| Transcript::tracing(&t.host)),
            in_auth: false,
        };
        conn.note(&format!("connected to {} ({})", t.host, t.addr));
        if s.tls == TlsMode::Implicit {
            conn.handshake(t, s).await?;
        }
        let greeting = conn.event(s.timeouts.greeting, "the greeting").await?;
        if greeting.code() != ReplyCode::SERVICE_READY {
            return Err(ConnError::Reply("greeting", greeting));
        }
        conn.ehlo(&s.helo).await?;
        if conn.session.must_starttls() {
            let r = conn.command(&Command::StartTls, "STARTTLS").await?;
            if conn.session.awaiting_tls_handshake() {
                conn.handshake(t, s).await?;
                conn.session.tls_established();
                conn.ehlo(&s.helo).await?;
            } else if s.tls == TlsMode::Required {
                return Err(ConnError::Reply("STARTTLS", r));
            }
        }
        if conn.session.tls_unavailable() {
            return Err(ConnError::NoStartTls(t.host.clone()));
        }
        conn.authenticate(&s.auth).await?;
        Ok(conn)
    }

    async fn handshake(&mut self, t: &Target, s: &SessionSettings) -> Result<(), ConnError> {
        let name = ServerName::try_from(t.tls_name.clone())
            .map_err(|e| ConnError::Tls(format!("invalid TLS name {:?}: {e}", t.tls_name)))?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(ConnError::Protocol("TLS already active".into()));
        };
        if !self.buf.is_empty() {
            // Bytes after the 220 to STARTTLS would be injected plaintext (CVE-2011-0411).
            return Err(ConnError::Protocol(
                "data received before the TLS handshake".into(),
            ));
        }
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&s.tls_config));
        match timeout(s.timeouts.greeting, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => {
                if self.transcript.is_some() {
                    let c = tls.get_ref().1;
                    let version = c
                        .protocol_version()
                        .and_then(|v| v.as_str())
                        .unwrap_or("TLS");
                    let suite = c
                        .negotiated_cipher_suite()
                        .and_then(|s| s.suite().as_str())
                        .unwrap_or("?");
                    self.note(&format!(
                        "TLS established: {version} {suite}, certificate verified for {}",
                        t.tls_name
                    ));
                }
                self.stream = Stream::Tls(Box::new(tls));
                Ok(())
            }
            Ok(Err(e)) => Err(ConnError::Tls(format!("{} ({}): {e}", t.host, t.addr))),
            Err(_) => Err(ConnError::Timeout("the TLS handshake", s.timeouts.greeting)),
        }
    }

    async fn ehlo(&mut self, helo: &str) -> Result<(), ConnError> {
        let opts = ParseOptions::default().lenient(true);
        let domain = Domain::parse(helo, &opts)
            .map_err(|e| ConnError::Protocol(format!("invalid EHLO name {helo:?}: {e}")))?;
        let r = self
            .command(
                &Command::Ehlo {
                    domain: domain.clone(),
                },
                "EHLO",
            )
            .await?;
        if r.is_positive_completion() {
            return Ok(());
        }
        if r.code() == ReplyCode::SERVICE_NOT_AVAILABLE {
            return Err(ConnError::Reply("EHLO", r));
        }
        let r = self.command(&Command::Helo { domain }, "HELO").await?;
        if r.is_positive_completion() {
            Ok(())
        } else {
            Err(ConnError::Reply("HELO", r))
        }
    }

    async fn authenticate(&mut self, plan: &AuthPlan) -> Result<(), ConnError> {
        let (creds, allowed): (Credentials, Vec<Mechanism>) = match plan {
            AuthPlan::None => return Ok(()),
            AuthPlan::Password {
                user,
                password,
                allowed,
            } => (
                Credentials::password(user.clone(), password.clone()),
                allowed.clone(),
            ),
            AuthPlan::Token { user, source } => {
                let token = source.token().await.map_err(ConnError::Token)?;
                (
                    Credentials::bearer(user.clone(), token.expose().to_owned()),
                    vec![Mechanism::Xoauth2],
                )
            }
        };
        let offered = self.caps().auth.clone();
        let mechanism = choose_mechanism_among(&offered, &creds, &allowed).map_err(|e| {
            ConnError::Auth(format!(
                "{e} (server {}{})",
                self.host,
                if self.session.is_tls() {
                    ""
                } else {
                    ", before TLS"
                }
            ))
        })?;
        let mut client =
            SaslClient::new(mechanism, &creds).map_err(|e| ConnError::Auth(e.to_string()))?;
        self.in_auth = true;
        let r = self.auth_exchange(mechanism, &mut client).await;
        self.in_auth = false;
        r
    }

    async fn auth_exchange(
        &mut self,
        mechanism: Mechanism,
        client: &mut SaslClient,
    ) -> Result<(), ConnError> {
        let initial = client.initial_response();
        let cmd = Command::Auth {
            mechanism: mechanism.name().into(),
            initial: initial.map(|s| AuthResponse::new(s.expose_secret().to_owned())),
        };
        let mut r = self.command(&cmd, "AUTH").await?;
        let mut rounds = 0;
        while r.code() == ReplyCode::AUTH_CONTINUE {
            rounds += 1;
            if rounds > 4 {
                return Err(ConnError::Protocol("too many AUTH challenges".into()));
            }
            let challenge = r.lines().first().map(|l| l.to_string()).unwrap_or_default();
            let step = client
                .step(challenge.as_bytes())
                .map_err(|e| ConnError::Protocol(format!("AUTH challenge: {e}")))?;
            let mut line = step.line().to_owned();
            line.push_str("\r\n");
            self.send(line.as_bytes(), self.timeouts.command, "AUTH")
                .await?;
            r = self.event(self.timeouts.command, "AUTH").await?;
        }
        if r.code() == ReplyCode::AUTH_SUCCESSFUL || r.is_positive_completion() {
            Ok(())
        } else {
            Err(ConnError::Reply("AUTH", r))
        }
    }

    /// A transcript note (no-op without a transcript).
    fn note(&self, text: &str) {
        if let Some(t) = &self.transcript {
            t.line(TranscriptSide::Note, text);
        }
    }

    /// The capabilities from the last EHLO.
    pub(crate) fn caps(&self) -> Capabilities {
        self.session.capabilities().cloned().unwrap_or_default()
    }

    /// Writes `bytes` (and flushes) within `limit`.
    pub(crate) async fn send(
        &mut self,
        bytes: &[u8],
        limit: Duration,
        stage: &'static str,
    ) -> Result<(), ConnError> {
        if let Some(t) = &self.transcript {
            if stage == "message data" {
                t.line(
                    TranscriptSide::Note,
                    &format!("message data: {} bytes (ends with CRLF.CRLF)", bytes.len()),
                );
            } else {
                t.client(bytes, self.in_auth);
            }
        }
        let r = timeout(limit, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.broken = true;
                Err(ConnError::Io(stage, e))
            }
            Err(_) => {
                self.broken = true;
                Err(ConnError::Timeout(stage, limit))
            }
        }
    }

    /// Writes `cmd` (recording it in the session) without waiting for the reply.
    pub(crate) async fn write_command(
        &mut self,
        cmd: &Command<'_>,
        stage: &'static str,
    ) -> Result<(), ConnError> {
        self.queue_command(cmd)?;
        self.send(cmd.to_string().as_bytes(), self.timeouts.command, stage)
            .await
    }

    /// Records `cmd` in the session (for a pipelined batch written later).
    pub(crate) fn queue_command(&mut self, cmd: &Command<'_>) -> Result<(), ConnError> {
        self.session.sent(cmd).map_err(|e| {
            self.broken = true;
            ConnError::Protocol(e.to_string())
        })
    }

    /// Sends `cmd` and reads its reply.
    pub(crate) async fn command(
        &mut self,
        cmd: &Command<'_>,
        stage: &'static str,
    ) -> Result<Reply<'static>, ConnError> {
        self.write_command(cmd, stage).await?;
        self.event(self.timeouts.command, stage).await
    }

    /// Reads the next reply (paired with its command by the session) within `limit`.
    pub(crate) async fn event(
        &mut self,
        limit: Duration,
        stage: &'static str,
    ) -> Result<Reply<'static>, ConnError> {
        let reply = self.read_reply(limit, stage).await?;
        if reply.code() == ReplyCode::SERVICE_NOT_AVAILABLE {
            self.broken = true;
        }
        self.last_used = Instant::now();
        match self.session.on_reply(reply) {
            Ok(ev) => Ok(ev.reply),
            Err(e) => {
                self.broken = true;
                Err(ConnError::Protocol(e.to_string()))
            }
        }
    }

    async fn read_reply(
        &mut self,
        limit: Duration,
        stage: &'static str,
    ) -> Result<Reply<'static>, ConnError> {
        let deadline = Instant::now() + limit;
        loop {
            let decoded = Reply::decode(&self.buf).map(|(r, n)| (r.into_owned(), n));
            match decoded {
                Ok((reply, n)) => {
                    if let Some(t) = &self.transcript {
                        t.server(&self.buf[..n]);
                    }
                    self.buf.drain(..n);
                    self.replies += 1;
                    return Ok(reply);
                }
                Err(DecodeError::Incomplete) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(ConnError::Protocol(format!("bad reply to {stage}: {e}")));
                }
            }
            let mut chunk = [0u8; READ_CHUNK];
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => {
                    self.broken = true;
                    return Err(ConnError::Io(
                        stage,
                        io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the server"),
                    ));
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    self.broken = true;
                    return Err(ConnError::Io(stage, e));
                }
                Err(_) => {
                    self.broken = true;
                    return Err(ConnError::Timeout(stage, limit));
                }
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Replies read on this connection so far: unchanged across a failed transaction means
    /// the server answered nothing in it.
    pub(crate) fn replies_read(&self) -> u64 {
        self.replies
    }

    /// Whether a pooled, idle connection is known to be unusable without a round trip: the
    /// server closed it or sent something unasked (an idle-timeout `421`, a TLS alert), which
    /// shows as the socket being readable. A close not seen yet shows as an I/O error before
    /// the first reply of the next transaction, which the caller retries on a new connection.
    pub(crate) fn looks_closed(&self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let tcp = match &self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
            Stream::Closed => return true,
        };
        // Consumes at most one byte, of a connection that is then dropped anyway.
        let mut probe = [0u8; 1];
        !matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// `RSET` after a transaction that did not end with a message; `false` if the connection
    /// is not usable.
    pub(crate) async fn reset(&mut self) -> bool {
        match self.command(&Command::Rset, "RSET").await {
            Ok(r) => r.is_positive_completion(),
            Err(_) => false,
        }
    }

    /// `QUIT` (best effort, short timeout) and close.
    pub(crate) async fn quit(mut self) {
        if !self.broken && self.session.is_idle() {
            let short = self.timeouts.command.min(Duration::from_secs(5));
            if self.session.sent(&Command::Quit).is_ok()
                && self.send(b"QUIT\r\n", short, "QUIT").await.is_ok()
            {
                let _ = self.read_reply(short, "QUIT").await;
            }
        }
        let _ = timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }

    /// Whether it can carry another message.
    pub(crate) fn reusable(&self) -> bool {
        !self.broken && self.session.is_idle()
    }
}
