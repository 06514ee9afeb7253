//! The SMTP server session driver: bytes from a client in, replies out,
//! message data streamed into the spool.
//!
//! Generic over `S: AsyncRead + AsyncWrite + Unpin`, so tests can drive it
//! over `tokio::io::duplex`. Every read is under a timeout. Pipelined commands
//! are answered in order and the replies flushed when the input is drained.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use postern_sasl::{Credentials, Mechanism, ServerExchange, ServerStep};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::{BareLineEndings, LimitsConfig, ListenerMode};
use super::listener::{ListenerRuntime, Shared};
use crate::spool::{BodyType, ClientInfo, Envelope, Incoming, Recipient, SpoolError};
use postern_smtp::{
    BareLineEnding, Body, Command, DataDecoder, DataOptions, ParseOptions, Path, Reply,
    Ret as SmtpRet,
};

/// Bytes read per `read` call at most; the buffer grows only as needed.
const READ_CHUNK: usize = 4096;
/// Bytes read per `read` call at most while message data streams in: a 100 KB message in a
/// few reads (each a timer, a decode and a spool write) rather than about 30. Only the bytes a
/// client actually sends are touched, so a slow client costs no more than before.
const DATA_READ_CHUNK: usize = 64 * 1024;
/// Longest AUTH continuation line (RFC 4954 asks for 12288 octets of base64).
const MAX_AUTH_LINE: usize = postern_sasl::MAX_LINE_LEN + 2;

/// What the accept side hands to a session.
#[derive(Debug)]
pub(crate) struct SessionParams {
    pub(crate) shared: Arc<Shared>,
    pub(crate) listener: Arc<ListenerRuntime>,
    pub(crate) client: SocketAddr,
    pub(crate) shutdown: CancellationToken,
}

/// A short random id that ties a session's log lines together.
pub(crate) fn new_session_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Runs a whole session on `stream` (already past PROXY and implicit TLS).
/// `early` holds bytes read before the session started; `tls` describes an
/// implicit TLS session.
pub(crate) async fn run<S>(params: SessionParams, stream: S, early: Vec<u8>, tls: Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut state = State::new(tls);
    let mut conn = Conn::new(stream, early);
    let flow = serve(&params, &mut conn, &mut state, true).await;
    if flow != Flow::StartTls {
        return;
    }
    let Some(tls) = &params.listener.tls else {
        return;
    };
    // Whatever the client pipelined after STARTTLS is dropped here (RFC 3207
    // section 4.2; the CVE-2011-0411 command injection).
    let Conn { stream, .. } = conn;
    let handshake = tokio::time::timeout(
        params.shared.ctx.limits.tls_handshake_timeout(),
        tls.acceptor().accept(stream),
    )
    .await;
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            info!(error = %e, "starttls handshake failed");
            return;
        }
        Err(_) => {
            info!("starttls handshake timed out");
            return;
        }
    };
    let description = stream.describe();
    info!(tls = %description, "starttls established");
    state.after_starttls(description);
    let mut conn = Conn::new(stream, Vec::new());
    serve(&params, &mut conn, &mut state, false).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    StartTls,
    Close,
}

/// Why reading stopped.
#[derive(Debug)]
enum ReadEnd {
    Eof,
    Timeout,
    Shutdown,
    Io(std::io::Error),
}

/// The deadline for one message's content: the DATA, or every BDAT chunk of
/// one message together (with the commands between them).
///
/// It is `data_total_timeout` after the start, plus one second per
/// `data_min_rate` bytes received, so a client must keep an average rate of
/// at least `data_min_rate` once the first `data_total_timeout` has passed.
/// The per-read `data_block_timeout` alone would let a client that sends one
/// byte a second hold the session forever.
#[derive(Debug, Clone, Copy)]
struct DataDeadline {
    start: tokio::time::Instant,
    base: Duration,
    min_rate: u64,
    received: u64,
}

impl DataDeadline {
    /// The longest a message may take, whatever its size: keeps `Instant`
    /// arithmetic far from overflow.
    const CAP: Duration = Duration::from_secs(365 * 24 * 3600);

    fn new(limits: &LimitsConfig) -> Self {
        Self::starting(
            tokio::time::Instant::now(),
            limits.data_total_timeout(),
            limits.data_min_rate,
        )
    }

    fn starting(start: tokio::time::Instant, base: Duration, min_rate: u64) -> Self {
        Self {
            start,
            base,
            min_rate,
            received: 0,
        }
    }

    /// Counts `n` more bytes of message content received.
    fn add(&mut self, n: usize) {
        self.received = self.received.saturating_add(n as u64);
    }

    /// The time allowed so far: the base plus `received / min_rate` seconds.
    fn allowance(&self) -> Duration {
        let extra = if self.min_rate == 0 {
            Duration::ZERO
        } else {
            let nanos = u128::from(self.received) * 1_000_000_000 / u128::from(self.min_rate);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        };
        self.base.saturating_add(extra).min(Self::CAP)
    }

    fn at(&self) -> tokio::time::Instant {
        self.start + self.allowance()
    }

    /// How long the next read may wait: at most `per_read`, and `None` once
    /// the deadline has passed.
    fn wait(&self, per_read: Duration) -> Option<Duration> {
        let left = self
            .at()
            .saturating_duration_since(tokio::time::Instant::now());
        (!left.is_zero()).then(|| left.min(per_read))
    }

    fn expired(&self) -> bool {
        tokio::time::Instant::now() >= self.at()
    }

    /// Logs why the client is cut off and queues the `421` (the caller closes
    /// and discards what was received).
    fn refuse<S>(&self, conn: &mut Conn<S>) {
        warn!(
            received = self.received,
            elapsed_secs = self.start.elapsed().as_secs(),
            allowed_secs = self.allowance().as_secs(),
            "message data too slow (limits.data_total_timeout_secs, limits.data_min_rate): \
             closing the connection, message discarded"
        );
        conn.reply(421, "4.4.2", "Message data too slow, closing connection");
    }
}

/// The stream with its input and output buffers.
struct Conn<S> {
    stream: S,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl<S> Conn<S> {
    /// Drops `n` bytes of input and gives back memory an idle session does not need.
    fn consume(&mut self, n: usize) {
        self.input.drain(..n);
        self.shrink_if_idle();
    }

    /// Drops `n` bytes of message data, keeping the buffer for the next read (the data
    /// phase ends with [`Conn::shrink_if_idle`]).
    fn consume_data(&mut self, n: usize) {
        self.input.drain(..n);
    }

    /// Frees a large input buffer that holds nothing, so an idle session stays small.
    fn shrink_if_idle(&mut self) {
        if self.input.is_empty() && self.input.capacity() > 4 * READ_CHUNK {
            self.input = Vec::new();
        }
    }

    fn reply(&mut self, code: u16, enhanced: &str, text: &str) {
        let _ = write!(self.output, "{code} {enhanced} {text}\r\n");
    }

    fn reply_lines(&mut self, code: u16, lines: &[String]) {
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let _ = write!(self.output, "{code}{sep}{line}\r\n");
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S, input: Vec<u8>) -> Self {
        Self {
            stream,
            input,
            output: Vec::new(),
        }
    }

    /// Reads more input, waiting at most `timeout` (and stopping early on
    /// `shutdown`, if given).
    async fn fill(
        &mut self,
        timeout: Duration,
        shutdown: Option<&CancellationToken>,
    ) -> Result<usize, ReadEnd> {
        self.fill_up_to(READ_CHUNK, timeout, shutdown).await
    }

    /// [`Conn::fill`], reading up to about `chunk` bytes at once.
    async fn fill_up_to(
        &mut self,
        chunk: usize,
        timeout: Duration,
        shutdown: Option<&CancellationToken>,
    ) -> Result<usize, ReadEnd> {
        if self.input.capacity() - self.input.len() < chunk / 4 {
            self.input.reserve(chunk);
        }
        let read = tokio::time::timeout(timeout, self.stream.read_buf(&mut self.input));
        let result = match shutdown {
            Some(token) => tokio::select! {
                () = token.cancelled() => return Err(ReadEnd::Shutdown),
                r = read => r,
            },
            None => read.await,
        };
        match result {
            Err(_) => Err(ReadEnd::Timeout),
            Ok(Err(e)) => Err(ReadEnd::Io(e)),
            Ok(Ok(0)) => Err(ReadEnd::Eof),
            Ok(Ok(n)) => Ok(n),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
            if self.output.capacity() > 4 * READ_CHUNK {
                self.output = Vec::new();
            }
        }
        self.stream.flush().await
    }

    /// Sends what is queued (and `421`-style last words) and closes.
    async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// A mail transaction in progress.
#[derive(Debug, Default)]
struct Transaction {
    mail_from: Option<String>,
    body: BodyType,
    smtputf8: bool,
    ret: Option<crate::spool::Ret>,
    envid: Option<String>,
    recipients: Vec<Recipient>,
    /// An open BDAT message.
    bdat: Option<BdatState>,
}

#[derive(Debug)]
struct BdatState {
    incoming: Incoming,
    size: u64,
    endings: LineEndings,
    failed: Option<(u16, &'static str, String)>,
    /// Runs from the first chunk to the last.
    deadline: DataDeadline,
}

/// Session state that outlives single commands.
#[derive(Debug)]
struct State {
    helo: Option<String>,
    esmtp: bool,
    tls: Option<String>,
    auth_user: Option<String>,
    transaction: Option<Transaction>,
    bad_commands: u32,
    auth_failures: u32,
}

impl State {
    fn new(tls: Option<String>) -> Self {
        Self {
            helo: None,
            esmtp: false,
            tls,
            auth_user: None,
            transaction: None,
            bad_commands: 0,
            auth_failures: 0,
        }
    }

    /// The deadline of the BDAT message in progress, if any.
    fn bdat_deadline(&self) -> Option<DataDeadline> {
        self.transaction
            .as_ref()
            .and_then(|tx| tx.bdat.as_ref())
            .map(|b| b.deadline)
    }

    /// RFC 3207 section 4.2: forget everything learnt before TLS.
    fn after_starttls(&mut self, description: String) {
        self.helo = None;
        self.esmtp = false;
        self.tls = Some(description);
        self.auth_user = None;
        self.transaction = None;
    }
}

async fn serve<S>(
    params: &SessionParams,
    conn: &mut Conn<S>,
    state: &mut State,
    greet: bool,
) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let listener = &params.listener;
    let limits = &params.shared.ctx.limits;
    if greet {
        let banner = listener.config.banner.as_deref().unwrap_or("ESMTP Postern");
        let _ = write!(conn.output, "220 {} {banner}\r\n", listener.hostname);
        info!(tls = ?state.tls, "session started");
    }
    let max_line = limits.max_line_length.max(512);
    let mut discarding = false;
    // The command timeout is a deadline for the whole line, not for each read: a client
    // trickling one byte at a time must not hold the session forever (slowloris).
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        // Answer every complete command in the buffer (pipelining).
        let newline = conn.input.iter().position(|&b| b == b'\n');
        if newline.is_some() {
            deadline = None;
        }
        match newline {
            Some(end) if discarding => {
                conn.consume(end + 1);
                discarding = false;
                conn.reply(500, "5.5.6", "Line too long");
                if too_many_errors(conn, state, limits.max_bad_commands) {
                    break;
                }
                continue;
            }
            Some(end) if end + 1 > max_line => {
                conn.consume(end + 1);
                conn.reply(500, "5.5.6", "Line too long");
                if too_many_errors(conn, state, limits.max_bad_commands) {
                    break;
                }
                continue;
            }
            Some(end) => {
                let line = conn.input[..=end].to_vec();
                conn.consume(end + 1);
                let flow = command(params, conn, state, &line).await;
                match flow {
                    Flow::Continue => continue,
                    Flow::Close => break,
                    Flow::StartTls => {
                        if conn.flush().await.is_err() {
                            return Flow::Close;
                        }
                        return Flow::StartTls;
                    }
                }
            }
            None => {
                if conn.input.len() >= max_line {
                    conn.input = Vec::new();
                    discarding = true;
                }
            }
        }
        if conn.flush().await.is_err() {
            return Flow::Close;
        }
        let until =
            *deadline.get_or_insert_with(|| tokio::time::Instant::now() + limits.command_timeout());
        // Between the chunks of a BDAT message its data deadline runs on.
        let data = state.bdat_deadline();
        if let Some(data) = data.filter(DataDeadline::expired) {
            data.refuse(conn);
            break;
        }
        let until = data.map_or(until, |d| d.at().min(until));
        let wait = until.saturating_duration_since(tokio::time::Instant::now());
        match conn.fill(wait, Some(&params.shutdown)).await {
            Ok(_) => {}
            Err(ReadEnd::Timeout) => {
                if let Some(data) = data.filter(DataDeadline::expired) {
                    data.refuse(conn);
                    break;
                }
                info!("command timeout");
                conn.reply(
                    421,
                    "4.4.2",
                    "Timeout waiting for a command, closing connection",
                );
                break;
            }
            Err(ReadEnd::Shutdown) => {
                info!("closing for shutdown");
                conn.reply(421, "4.3.2", "Service shutting down, try again later");
                break;
            }
            Err(ReadEnd::Eof) => {
                debug!("client closed the connection");
                abort_transaction(state).await;
                return Flow::Close;
            }
            Err(ReadEnd::Io(e)) => {
                debug!(error = %e, "read error");
                abort_transaction(state).await;
                return Flow::Close;
            }
        }
    }
    abort_transaction(state).await;
    conn.close().await;
    info!("session ended");
    Flow::Close
}

async fn abort_transaction(state: &mut State) {
    if let Some(tx) = state.transaction.take()
        && let Some(bdat) = tx.bdat
    {
        bdat.incoming.abort().await;
    }
}

/// Counts a bad command; after too many, queues `421` and says to close.
fn too_many_errors<S>(conn: &mut Conn<S>, state: &mut State, max: u32) -> bool {
    state.bad_commands += 1;
    if state.bad_commands >= max.max(1) {
        warn!(
            bad_commands = state.bad_commands,
            "too many bad commands, closing"
        );
        conn.reply(421, "4.7.0", "Too many errors, closing connection");
        return true;
    }
    false
}

/// Runs one AUTH exchange after the `AUTH` command passed the checks.
async fn auth<S>(
    params: &SessionParams,
    conn: &mut Conn<S>,
    state: &mut State,
    mechanism: Mechanism,
    initial: Option<&[u8]>,
) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = &params.shared.ctx.limits;
    let mut exchange = ServerExchange::new(mechanism);
    let mut step = exchange.start(initial);
    let credentials = loop {
        match step {
            Ok(ServerStep::Done(credentials)) => break credentials,
            Ok(ServerStep::Challenge(challenge)) => {
                let _ = write!(conn.output, "334 {challenge}\r\n");
                if conn.flush().await.is_err() {
                    return Flow::Close;
                }
                let line = match read_auth_line(params, conn).await {
                    Ok(line) => line,
                    Err(flow) => return flow,
                };
                step = match line {
                    Some(line) => exchange.step(&line),
                    None => Err(postern_sasl::AuthError::Decode(
                        postern_sasl::DecodeError::TooLong {
                            len: MAX_AUTH_LINE,
                            max: postern_sasl::MAX_LINE_LEN,
                        },
                    )),
                };
            }
            Ok(_) => {
                conn.reply(535, "5.7.8", "Authentication credentials invalid");
                return Flow::Continue;
            }
            Err(e) => {
                let reply = e.reply();
                info!(mechanism = %mechanism, error = %e, "auth exchange failed");
                conn.reply(reply.code, reply.enhanced, reply.text);
                return if too_many_errors(conn, state, limits.max_bad_commands) {
                    Flow::Close
                } else {
                    Flow::Continue
                };
            }
        }
    };
    let Credentials::Password { user, password, .. } = credentials else {
        conn.reply(504, "5.5.4", "Unrecognized authentication type");
        return Flow::Continue;
    };
    let ok = params
        .shared
        .ctx
        .policy
        .verify(&user, password.expose_secret().as_bytes())
        .await;
    if ok {
        info!(user = %user, mechanism = %mechanism, "authenticated");
        state.auth_user = Some(user);
        conn.reply(235, "2.7.0", "Authentication successful");
        return Flow::Continue;
    }
    state.auth_failures += 1;
    warn!(user = %user, mechanism = %mechanism, failures = state.auth_failures, "authentication failed");
    tokio::time::sleep(limits.auth_failure_delay()).await;
    conn.reply(535, "5.7.8", "Authentication credentials invalid");
    if state.auth_failures >= limits.max_auth_failures.max(1) {
        conn.reply(
            421,
            "4.7.0",
            "Too many authentication failures, closing connection",
        );
        return Flow::Close;
    }
    Flow::Continue
}

/// Reads one AUTH continuation line: `Ok(None)` if it was too long (and was skipped).
async fn read_auth_line<S>(
    params: &SessionParams,
    conn: &mut Conn<S>,
) -> Result<Option<Vec<u8>>, Flow>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = &params.shared.ctx.limits;
    let mut too_long = false;
    loop {
        if let Some(end) = conn.input.iter().position(|&b| b == b'\n') {
            let line = conn.input[..end].to_vec();
            conn.consume(end + 1);
            if too_long || end + 1 > MAX_AUTH_LINE {
                return Ok(None);
            }
            let line = line.strip_suffix(b"\r").map(<[u8]>::to_vec).unwrap_or(line);
            return Ok(Some(line));
        }
        if conn.input.len() > MAX_AUTH_LINE {
            conn.input = Vec::new();
            too_long = true;
        }
        match conn.fill(limits.command_timeout(), None).await {
            Ok(_) => {}
            Err(ReadEnd::Timeout) => {
                conn.reply(421, "4.4.2", "Timeout waiting for authentication data");
                return Err(Flow::Close);
            }
            Err(_) => return Err(Flow::Close),
        }
    }
}

/// Streaming bare CR / bare LF handling for BDAT chunks (DATA uses the
/// decoder of `postern-smtp`). BDAT has no end-of-data ambiguity, but what
/// goes upstream must still be CRLF-only (invariant 4).
#[derive(Debug)]
struct LineEndings {
    policy: BareLineEndings,
    /// The previous chunk ended with CR.
    pending_cr: bool,
    /// A bare CR or LF was seen (Reject policy).
    bare_seen: bool,
}

impl LineEndings {
    fn new(policy: BareLineEndings) -> Self {
        Self {
            policy,
            pending_cr: false,
            bare_seen: false,
        }
    }

    /// Appends `input` to `out`, normalised under the Normalize policy.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            match (self.pending_cr, b) {
                (true, b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    self.pending_cr = false;
                }
                (true, _) => {
                    self.bare(out);
                    self.pending_cr = b == b'\r';
                    if b != b'\r' {
                        out.push(b);
                    }
                }
                (false, b'\r') => self.pending_cr = true,
                (false, b'\n') => self.bare(out),
                (false, _) => out.push(b),
            }
        }
    }

    /// Ends the message: a trailing lone CR is bare too.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.bare(out);
        }
    }

    fn bare(&mut self, out: &mut Vec<u8>) {
        self.bare_seen = true;
        match self.policy {
            BareLineEndings::Normalize => out.extend_from_slice(b"\r\n"),
            // Keep a CRLF so the spooled bytes stay CRLF-only; the message is refused anyway.
            _ => out.extend_from_slice(b"\r\n"),
        }
    }

    fn rejected(&self) -> bool {
        self.bare_seen && self.policy == BareLineEndings::Reject
    }
}

/// The `Received:` trace header (RFC 5321 section 4.4), CRLF-terminated.
fn received_header(
    params: &SessionParams,
    state: &State,
    id: &str,
    single_rcpt: Option<&str>,
    smtputf8: bool,
) -> String {
    let helo = state.helo.as_deref().unwrap_or("unknown");
    let helo: String = helo
        .chars()
        .filter(|c| !c.is_control() && *c != '(' && *c != ')')
        .take(255)
        .collect();
    let mut protocol = String::from(if smtputf8 {
        "UTF8SMTP"
    } else if state.esmtp {
        "ESMTP"
    } else {
        "SMTP"
    });
    if state.tls.is_some() {
        protocol.push('S');
    }
    if state.auth_user.is_some() {
        protocol.push('A');
    }
    let ip = super::policy::canonical(params.client.ip());
    let mut header = format!(
        "Received: from {helo} ([{ip}])\r\n\tby {} (Postern) with {protocol} id {id}",
        params.listener.hostname
    );
    if let Some(tls) = &state.tls {
        let _ = write!(header, "\r\n\t(using {tls})");
    }
    if let Some(rcpt) = single_rcpt
        && !rcpt.bytes().any(|b| b.is_ascii_control())
    {
        let _ = write!(header, "\r\n\tfor <{rcpt}>");
    }
    let _ = write!(header, ";\r\n\t{}\r\n", rfc5322_date(SystemTime::now()));
    header
}

fn rfc5322_date(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    at.format(&format)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
}

/// Refuses the connection's relay attempt: the one line the operator looks for.
fn relay_denied<S>(conn: &mut Conn<S>, params: &SessionParams, rcpt: &str) {
    let ip = super::policy::canonical(params.client.ip());
    warn!(client_ip = %ip, recipient = %printable(rcpt), "relaying denied: client not in an allowed network and not authenticated");
    conn.reply(
        550,
        "5.7.1",
        &format!("Relaying denied: {ip} is not in an allowed network and did not authenticate"),
    );
}

/// Client text for log lines: control characters escaped, bounded length.
fn printable(s: &str) -> String {
    s.chars().take(320).flat_map(char::escape_debug).collect()
}

fn envelope_for(params: &SessionParams, state: &State, tx: &Transaction) -> Envelope {
    let mut client = ClientInfo::new(
        params.client,
        state.helo.clone().unwrap_or_default(),
        params.listener.config.name.clone(),
    );
    client.tls.clone_from(&state.tls);
    client.auth_user.clone_from(&state.auth_user);
    let mut envelope = Envelope::new(tx.mail_from.clone(), tx.recipients.clone(), client);
    envelope.body = tx.body;
    envelope.smtputf8 = tx.smtputf8;
    envelope.ret = tx.ret;
    envelope.envid.clone_from(&tx.envid);
    envelope
}

/// Opens the spool message and writes the `Received:` header, or queues the
/// reply for why not.
async fn open_message<S>(
    params: &SessionParams,
    conn: &mut Conn<S>,
    state: &State,
    tx: &Transaction,
) -> Option<Incoming> {
    let envelope = envelope_for(params, state, tx);
    let mut incoming = match params.shared.ctx.spool.receive(envelope).await {
        Ok(incoming) => incoming,
        Err(e) => {
            spool_failed(conn, &e);
            return None;
        }
    };
    let single = match tx.recipients.as_slice() {
        [only] => Some(only.address.as_str()),
        _ => None,
    };
    let header = received_header(params, state, incoming.id().as_str(), single, tx.smtputf8);
    if let Err(e) = incoming.write(header.as_bytes()).await {
        incoming.abort().await;
        spool_failed(conn, &e);
        return None;
    }
    Some(incoming)
}

fn spool_failed<S>(conn: &mut Conn<S>, e: &SpoolError) {
    if e.is_storage_full() {
        warn!(error = %e, "spool full: message refused");
        conn.reply(452, "4.3.1", "Insufficient system storage, try again later");
    } else {
        warn!(error = %e, "spool error: message refused");
        conn.reply(451, "4.3.0", "Local error in processing, try again later");
    }
}

/// Commits a fully received message and queues the `250` (invariant 1: only
/// after the commit returned).
async fn commit<S>(
    params: &SessionParams,
    conn: &mut Conn<S>,
    incoming: Incoming,
    recipients: usize,
) {
    let id = incoming.id().clone();
    let size = incoming.len();
    let span = info_span!("message", queue_id = %id);
    let committed = tokio::time::timeout(
        params.shared.ctx.limits.data_termination_timeout(),
        incoming.commit(),
    )
    .instrument(span.clone())
    .await;
    let _enter = span.enter();
    match committed {
        Ok(Ok(id)) => {
            info!(size, recipients, "message accepted");
            params
                .shared
                .ctx
                .spool
                .metrics()
                .accepted(&params.listener.config.name);
            conn.reply(250, "2.0.0", &format!("Ok: queued as {id}"));
        }
        Ok(Err(e)) => spool_failed(conn, &e),
        Err(_) => {
            warn!("spool commit timed out");
            conn.reply(451, "4.3.0", "Local error in processing, try again later");
        }
    }
}

/// Parse options for command lines on this listener.
fn parse_options(params: &SessionParams) -> ParseOptions {
    ParseOptions::default()
        .lenient(true)
        .max_line(params.shared.ctx.limits.max_line_length.max(512))
}

fn put_reply<S>(conn: &mut Conn<S>, reply: &Reply<'_>) {
    reply.encode(&mut conn.output);
}

/// Handles one complete command line (CRLF or LF included).
async fn command<S>(
    params: &SessionParams,
    conn: &mut Conn<S>,
    state: &mut State,
    line: &[u8],
) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = &params.shared.ctx.limits;
    let opts = parse_options(params);
    let command = match Command::decode(line, &opts) {
        Ok((command, _)) => command,
        Err(e) => {
            debug!(error = %e, "bad command");
            put_reply(conn, &e.reply());
            return if too_many_errors(conn, state, limits.max_bad_commands) {
                Flow::Close
            } else {
                Flow::Continue
            };
        }
    };
    let config = &params.listener.config;
    let bad = |conn: &mut Conn<S>, state: &mut State, code: u16, enhanced: &str, text: &str| {
        conn.reply(code, enhanced, text);
        if too_many_errors(conn, state, limits.max_bad_commands) {
            Flow::Close
        } else {
            Flow::Continue
        }
    };
    match command {
        Command::Ehlo { domain } => {
            abort_transaction(state).await;
            state.helo = Some(domain.to_string());
            state.esmtp = true;
            let lines = ehlo_lines(params, state);
            conn.reply_lines(250, &lines);
            debug!(helo = %printable(&domain.to_string()), "ehlo");
            Flow::Continue
        }
        Command::Helo { domain } => {
            abort_transaction(state).await;
            state.helo = Some(domain.to_string());
            state.esmtp = false;
            let _ = write!(conn.output, "250 {}\r\n", params.listener.hostname);
            Flow::Continue
        }
        Command::Mail { from, params: mail } => {
            if state.transaction.is_some() {
                return bad(conn, state, 503, "5.5.1", "Nested MAIL command");
            }
            if config.require_helo && state.helo.is_none() {
                return bad(conn, state, 503, "5.5.1", "Send HELO/EHLO first");
            }
            if config.mode == ListenerMode::StarttlsRequired && state.tls.is_none() {
                return bad(
                    conn,
                    state,
                    530,
                    "5.7.0",
                    "Must issue a STARTTLS command first",
                );
            }
            if config.require_auth && state.auth_user.is_none() {
                return bad(conn, state, 530, "5.7.0", "Authentication required");
            }
            let max = limits.max_message_size;
            if mail.size.is_some_and(|size| size > max) {
                conn.reply(
                    552,
                    "5.3.4",
                    &format!("Message size exceeds fixed maximum message size of {max} octets"),
                );
                return Flow::Continue;
            }
            let body = match mail.body {
                None | Some(Body::SevenBit) => BodyType::SevenBit,
                Some(Body::EightBitMime) => BodyType::EightBitMime,
                Some(_) => {
                    conn.reply(555, "5.5.4", "BODY=BINARYMIME is not supported");
                    return Flow::Continue;
                }
            };
            if let Some(param) = mail.other().first() {
                conn.reply(
                    555,
                    "5.5.4",
                    &format!("Unsupported MAIL parameter {}", printable(&param.keyword)),
                );
                return Flow::Continue;
            }
            if !from.is_ascii() && !mail.smtputf8 {
                conn.reply(
                    553,
                    "5.6.7",
                    "Non-ASCII sender requires the SMTPUTF8 parameter",
                );
                return Flow::Continue;
            }
            let mail_from = from.mailbox().map(ToString::to_string);
            if let Some(user) = &state.auth_user
                && !params
                    .shared
                    .ctx
                    .policy
                    .sender_allowed(user, mail_from.as_deref())
            {
                warn!(user = %user, sender = %printable(mail_from.as_deref().unwrap_or("<>")), "sender not allowed for this account");
                conn.reply(553, "5.7.1", "Sender address not allowed for this account");
                return Flow::Continue;
            }
            // The AUTH= parameter is ignored on purpose (RFC 4954 section 5 lets a
            // server do so): it must never stand in for an authenticated session.
            let envid = mail
                .envid()
                .and_then(postern_smtp::xtext::decode)
                .map(|s| s.into_owned());
            state.transaction = Some(Transaction {
                mail_from,
                body,
                smtputf8: mail.smtputf8,
                ret: mail.ret.map(|r| match r {
                    SmtpRet::Full => crate::spool::Ret::Full,
                    _ => crate::spool::Ret::Hdrs,
                }),
                envid,
                recipients: Vec::new(),
                bdat: None,
            });
            conn.reply(250, "2.1.0", "Ok");
            Flow::Continue
        }
        Command::Rcpt { to, params: rcpt } => {
            let Some(tx) = &mut state.transaction else {
                return bad(conn, state, 503, "5.5.1", "Need MAIL before RCPT");
            };
            let address = match &to {
                Path::Mailbox(m) => m.to_string(),
                Path::Postmaster => "postmaster".to_owned(),
                _ => return bad(conn, state, 501, "5.1.3", "Bad recipient address syntax"),
            };
            let allowed = state.auth_user.is_some()
                || params
                    .shared
                    .ctx
                    .policy
                    .is_allowed_network(params.client.ip());
            if !allowed {
                relay_denied(conn, params, &address);
                return if too_many_errors(conn, state, limits.max_bad_commands) {
                    Flow::Close
                } else {
                    Flow::Continue
                };
            }
            if tx.recipients.len() >= limits.max_recipients {
                conn.reply(452, "4.5.3", "Too many recipients");
                return Flow::Continue;
            }
            if !to.is_ascii() && !tx.smtputf8 {
                conn.reply(
                    553,
                    "5.6.7",
                    "Non-ASCII recipient requires the SMTPUTF8 parameter",
                );
                return Flow::Continue;
            }
            if let Some(param) = rcpt.other().first() {
                conn.reply(
                    555,
                    "5.5.4",
                    &format!("Unsupported RCPT parameter {}", printable(&param.keyword)),
                );
                return Flow::Continue;
            }
            let mut recipient = Recipient::new(address);
            recipient.notify = rcpt
                .notify
                .map(|n| crate::spool::Notify::new(n.success, n.failure, n.delay));
            recipient.orcpt = rcpt.orcpt.map(|o| format!("{};{}", o.addr_type, o.addr));
            tx.recipients.push(recipient);
            if let Some(router) = &params.shared.ctx.router {
                // Routes that cannot take this recipient (Direct Send to an external
                // domain) refuse it now, not hours later in a bounce.
                let env = match &state.transaction {
                    Some(tx) => envelope_for(params, state, tx),
                    None => return Flow::Continue,
                };
                if let Err(why) = router.check_recipient(&env, env.recipients.len() - 1) {
                    if let Some(tx) = &mut state.transaction {
                        tx.recipients.pop();
                    }
                    warn!(recipient = %printable(&why), "recipient refused by its route");
                    conn.reply(550, "5.7.1", &why);
                    return Flow::Continue;
                }
            }
            conn.reply(250, "2.1.5", "Ok");
            Flow::Continue
        }
        Command::Data => data(params, conn, state).await,
        Command::Bdat { size, last } => bdat(params, conn, state, size, last).await,
        Command::Rset => {
            abort_transaction(state).await;
            conn.reply(250, "2.0.0", "Ok");
            Flow::Continue
        }
        Command::Noop { .. } => {
            conn.reply(250, "2.0.0", "Ok");
            Flow::Continue
        }
        Command::Vrfy { .. } => {
            conn.reply(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            );
            Flow::Continue
        }
        Command::Expn { .. } => {
            conn.reply(502, "5.5.1", "EXPN not supported");
            Flow::Continue
        }
        Command::Help { .. } => {
            conn.reply(214, "2.0.0", "See RFC 5321");
            Flow::Continue
        }
        Command::Quit => {
            conn.reply(221, "2.0.0", "Bye");
            Flow::Close
        }
        Command::StartTls => {
            if state.tls.is_some() {
                return bad(conn, state, 503, "5.5.1", "TLS already active");
            }
            if params.listener.tls.is_none() {
                return bad(conn, state, 502, "5.5.1", "STARTTLS not available");
            }
            if state.transaction.is_some() {
                return bad(
                    conn,
                    state,
                    503,
                    "5.5.1",
                    "STARTTLS not allowed during a mail transaction",
                );
            }
            conn.reply(220, "2.0.0", "Ready to start TLS");
            Flow::StartTls
        }
        Command::Auth { mechanism, initial } => {
            if !params.shared.ctx.policy.has_accounts() {
                return bad(conn, state, 502, "5.5.1", "AUTH not available");
            }
            if state.tls.is_none() && !config.allow_plaintext_auth {
                return bad(
                    conn,
                    state,
                    538,
                    "5.7.11",
                    "Encryption required for requested authentication mechanism",
                );
            }
            if state.auth_user.is_some() {
                return bad(conn, state, 503, "5.5.1", "Already authenticated");
            }
            if state.transaction.is_some() {
                return bad(
                    conn,
                    state,
                    503,
                    "5.5.1",
                    "AUTH not allowed during a mail transaction",
                );
            }
            let mechanism = match mechanism.to_ascii_uppercase().as_str() {
                "PLAIN" => Mechanism::Plain,
                "LOGIN" => Mechanism::Login,
                _ => {
                    return bad(
                        conn,
                        state,
                        504,
                        "5.5.4",
                        "Unrecognized authentication type",
                    );
                }
            };
            let initial = initial.map(|r| r.expose().as_bytes().to_vec());
            auth(params, conn, state, mechanism, initial.as_deref()).await
        }
        _ => bad(conn, state, 502, "5.5.1", "Command not implemented"),
    }
}

fn ehlo_lines(params: &SessionParams, state: &State) -> Vec<String> {
    let config = &params.listener.config;
    let ip = super::policy::canonical(params.client.ip());
    let mut lines = vec![
        format!("{} Hello [{ip}]", params.listener.hostname),
        "PIPELINING".to_owned(),
        format!("SIZE {}", params.shared.ctx.limits.max_message_size),
        "8BITMIME".to_owned(),
        "ENHANCEDSTATUSCODES".to_owned(),
        "SMTPUTF8".to_owned(),
        "CHUNKING".to_owned(),
        "DSN".to_owned(),
    ];
    if state.tls.is_none() && params.listener.tls.is_some() {
        lines.push("STARTTLS".to_owned());
    }
    if params.shared.ctx.policy.has_accounts()
        && state.auth_user.is_none()
        && (state.tls.is_some() || config.allow_plaintext_auth)
    {
        lines.push("AUTH PLAIN LOGIN".to_owned());
    }
    lines
}

/// `BDAT size [LAST]` (RFC 3030): reads exactly `size` octets whatever the
/// outcome, so the session stays in sync.
async fn bdat<S>(
    params: &SessionParams,
    conn: &mut Conn<S>,
    state: &mut State,
    size: u64,
    last: bool,
) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = &params.shared.ctx.limits;
    // The open message's deadline, or a new one: a refused chunk is read too.
    let mut deadline = state
        .bdat_deadline()
        .unwrap_or_else(|| DataDeadline::new(limits));
    // Decide where the chunk goes before reading it.
    let mut refusal: Option<(u16, &'static str, String)> = None;
    let ready = match &state.transaction {
        None => {
            refusal = Some((503, "5.5.1", "Need MAIL before BDAT".to_owned()));
            false
        }
        Some(tx) if tx.recipients.is_empty() => {
            refusal = Some((554, "5.5.1", "No valid recipients".to_owned()));
            false
        }
        Some(_) => true,
    };
    if ready
        && state
            .transaction
            .as_ref()
            .is_some_and(|tx| tx.bdat.is_none())
    {
        let tx = state.transaction.take().unwrap_or_default();
        let opened = open_message(params, conn, state, &tx).await;
        match opened {
            Some(incoming) => {
                let mut tx = tx;
                tx.bdat = Some(BdatState {
                    incoming,
                    size: 0,
                    endings: LineEndings::new(params.listener.config.bare_line_endings),
                    failed: None,
                    deadline,
                });
                state.transaction = Some(tx);
            }
            None => {
                // The spool refused: the reply is queued; drop the chunk.
                if skip_bytes(params, conn, size, &mut deadline).await.is_err() {
                    return Flow::Close;
                }
                return Flow::Continue;
            }
        }
    }
    let mut remaining = size;
    while remaining > 0 {
        if conn.input.is_empty()
            && fill_data(conn, limits, &deadline, "BDAT chunk")
                .await
                .is_err()
        {
            return Flow::Close;
        }
        let take = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(conn.input.len());
        deadline.add(take);
        if let Some(bdat) = state.transaction.as_mut().and_then(|tx| tx.bdat.as_mut())
            && bdat.failed.is_none()
        {
            bdat.size += take as u64;
            if bdat.size > limits.max_message_size {
                bdat.failed = Some((
                    552,
                    "5.3.4",
                    format!(
                        "Message size exceeds fixed maximum message size of {} octets",
                        limits.max_message_size
                    ),
                ));
            } else {
                let input = &conn.input[..take];
                let endings = &mut bdat.endings;
                let (_, written) = bdat
                    .incoming
                    .write_with(|buf| endings.feed(input, buf))
                    .await;
                if let Err(e) = written {
                    let (code, enhanced) = if e.is_storage_full() {
                        (452, "4.3.1")
                    } else {
                        (451, "4.3.0")
                    };
                    warn!(error = %e, "spool write failed");
                    bdat.failed = Some((
                        code,
                        enhanced,
                        "Cannot store the message now, try again later".to_owned(),
                    ));
                }
            }
        }
        conn.consume_data(take);
        remaining -= take as u64;
    }
    conn.shrink_if_idle();
    if let Some(bdat) = state.transaction.as_mut().and_then(|tx| tx.bdat.as_mut()) {
        bdat.deadline = deadline;
    }
    if let Some((code, enhanced, text)) = refusal {
        conn.reply(code, enhanced, &text);
        return Flow::Continue;
    }
    let Some(tx) = &mut state.transaction else {
        return Flow::Continue;
    };
    let failed = tx.bdat.as_ref().and_then(|b| b.failed.clone());
    if let Some((code, enhanced, text)) = failed {
        // RFC 3030: after a failed chunk the transaction is over.
        info!(code, "BDAT message refused: {text}");
        abort_transaction(state).await;
        conn.reply(code, enhanced, &text);
        return Flow::Continue;
    }
    if !last {
        conn.reply(250, "2.0.0", &format!("{size} octets received"));
        return Flow::Continue;
    }
    let Some(tx) = state.transaction.take() else {
        return Flow::Continue;
    };
    let recipients = tx.recipients.len();
    let Some(mut bdat) = tx.bdat else {
        return Flow::Continue;
    };
    let mut out = Vec::new();
    bdat.endings.finish(&mut out);
    if bdat.endings.rejected() {
        info!("message refused: bare CR or LF in BDAT data");
        bdat.incoming.abort().await;
        conn.reply(
            550,
            "5.6.11",
            "Bare CR or LF not allowed in message, use CRLF",
        );
        return Flow::Continue;
    }
    if !out.is_empty()
        && let Err(e) = bdat.incoming.write(&out).await
    {
        bdat.incoming.abort().await;
        spool_failed(conn, &e);
        return Flow::Continue;
    }
    commit(params, conn, bdat.incoming, recipients).await;
    Flow::Continue
}

/// Reads and drops `n` octets.
async fn skip_bytes<S>(
    params: &SessionParams,
    conn: &mut Conn<S>,
    mut n: u64,
    deadline: &mut DataDeadline,
) -> Result<(), ReadEnd>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    while n > 0 {
        if conn.input.is_empty() {
            fill_data(conn, &params.shared.ctx.limits, deadline, "BDAT chunk").await?;
        }
        let take = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(conn.input.len());
        deadline.add(take);
        conn.consume_data(take);
        n -= take as u64;
    }
    conn.shrink_if_idle();
    Ok(())
}

/// Reads more message data, waiting at most `data_block_timeout` and never
/// past `deadline`. On a timeout the `421` is queued (and the cause logged):
/// the caller closes the connection and discards the message.
async fn fill_data<S>(
    conn: &mut Conn<S>,
    limits: &LimitsConfig,
    deadline: &DataDeadline,
    what: &str,
) -> Result<usize, ReadEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(wait) = deadline.wait(limits.data_block_timeout()) else {
        deadline.refuse(conn);
        return Err(ReadEnd::Timeout);
    };
    match conn.fill_up_to(DATA_READ_CHUNK, wait, None).await {
        Err(ReadEnd::Timeout) if deadline.expired() => {
            deadline.refuse(conn);
            Err(ReadEnd::Timeout)
        }
        Err(ReadEnd::Timeout) => {
            info!("timeout in {what} (limits.data_block_timeout_secs)");
            conn.reply(421, "4.4.2", "Timeout waiting for data, closing connection");
            Err(ReadEnd::Timeout)
        }
        other => other,
    }
}

/// `DATA`: `354`, then the message through the strict decoder of
/// `postern-smtp` (only `CRLF . CRLF` ends it) straight into the spool.
async fn data<S>(params: &SessionParams, conn: &mut Conn<S>, state: &mut State) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = &params.shared.ctx.limits;
    let Some(tx) = &state.transaction else {
        conn.reply(503, "5.5.1", "Need MAIL before DATA");
        return if too_many_errors(conn, state, limits.max_bad_commands) {
            Flow::Close
        } else {
            Flow::Continue
        };
    };
    if tx.bdat.is_some() {
        conn.reply(503, "5.5.1", "DATA not allowed after BDAT");
        return Flow::Continue;
    }
    if tx.recipients.is_empty() {
        conn.reply(554, "5.5.1", "No valid recipients");
        return Flow::Continue;
    }
    // Whatever happens next, this transaction ends with the data.
    let Some(tx) = state.transaction.take() else {
        return Flow::Continue;
    };
    let Some(incoming) = open_message(params, conn, state, &tx).await else {
        return Flow::Continue;
    };
    let span = info_span!("message", queue_id = %incoming.id());
    // The 354 line has no enhanced code (RFC 2034 section 3).
    conn.output
        .extend_from_slice(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n");
    if conn.flush().await.is_err() {
        incoming.abort().await;
        return Flow::Close;
    }
    let policy = match params.listener.config.bare_line_endings {
        BareLineEndings::Normalize => BareLineEnding::Normalize,
        _ => BareLineEnding::Reject,
    };
    let mut decoder = DataDecoder::new(
        DataOptions::default()
            .bare_line_ending(policy)
            .max_line(usize::MAX)
            .max_size(Some(limits.max_message_size)),
    );
    let mut scratch = Vec::new();
    let mut incoming = Some(incoming);
    let mut write_error: Option<SpoolError> = None;
    let mut deadline = DataDeadline::new(limits);
    loop {
        // Decoded straight into the spool's buffer; into a scratch one once nothing more is
        // stored.
        let progress = match incoming.as_mut() {
            Some(message) => {
                let input = &conn.input;
                let (progress, written) = message
                    .write_with(|buf| decoder.decode(input, buf))
                    .instrument(span.clone())
                    .await;
                if let Err(e) = written {
                    // Keep reading to the terminator, then answer.
                    write_error = Some(e);
                    if let Some(message) = incoming.take() {
                        message.abort().await;
                    }
                }
                progress
            }
            None => {
                scratch.clear();
                decoder.decode(&conn.input, &mut scratch)
            }
        };
        conn.consume_data(progress.consumed);
        deadline.add(progress.consumed);
        if progress.done {
            break;
        }
        if decoder.error().is_some()
            && let Some(message) = incoming.take()
        {
            // Nothing more will be stored; drain to the terminator.
            message.abort().await;
        }
        let filled = fill_data(conn, limits, &deadline, "DATA")
            .instrument(span.clone())
            .await;
        if let Err(end) = filled {
            if let Some(message) = incoming.take() {
                message.abort().await;
            }
            if !matches!(end, ReadEnd::Timeout) {
                let _enter = span.enter();
                info!("connection lost in DATA: message discarded");
            }
            return Flow::Close;
        }
    }
    conn.shrink_if_idle();
    if let Err(e) = decoder.finish() {
        if let Some(message) = incoming.take() {
            message.abort().await;
        }
        let _enter = span.enter();
        info!(error = %e, size = decoder.size(), "message refused");
        put_reply(conn, &e.reply());
        return Flow::Continue;
    }
    if let Some(e) = write_error {
        let _enter = span.enter();
        spool_failed(conn, &e);
        return Flow::Continue;
    }
    if let Some(message) = incoming {
        commit(params, conn, message, tx.recipients.len()).await;
    }
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline(base_secs: u64, min_rate: u64) -> DataDeadline {
        DataDeadline::starting(
            tokio::time::Instant::now(),
            Duration::from_secs(base_secs),
            min_rate,
        )
    }

    #[test]
    fn data_deadline_grows_with_the_bytes_received() {
        let mut d = deadline(300, 1024);
        assert_eq!(d.allowance(), Duration::from_secs(300));
        d.add(10 * 1024);
        assert_eq!(d.allowance(), Duration::from_secs(310));
        d.add(512);
        assert_eq!(d.allowance(), Duration::from_millis(310_500));
        // A 150 MB message at the minimum rate: 300 s plus about 40.7 hours.
        let mut big = deadline(300, 1024);
        big.add(150_000_000);
        assert_eq!(big.allowance().as_secs(), 300 + 150_000_000 / 1024);
        // One byte a second for ten minutes earns under a second.
        let mut slow = deadline(300, 1024);
        for _ in 0..600 {
            slow.add(1);
        }
        assert!(slow.allowance() < Duration::from_secs(301));
    }

    #[test]
    fn data_deadline_without_a_rate_is_a_flat_cap_and_never_overflows() {
        let mut flat = deadline(600, 0);
        flat.add(usize::MAX);
        assert_eq!(flat.allowance(), Duration::from_secs(600));
        let mut huge = deadline(u64::MAX / 2, 1);
        huge.add(usize::MAX);
        huge.add(usize::MAX);
        assert_eq!(huge.allowance(), DataDeadline::CAP);
        let _ = huge.at();
    }

    #[test]
    fn data_deadline_wait_is_bounded_by_the_read_timeout_and_ends() {
        let d = deadline(300, 1024);
        assert_eq!(
            d.wait(Duration::from_secs(180)),
            Some(Duration::from_secs(180))
        );
        assert!(!d.expired());
        let past = DataDeadline::starting(
            tokio::time::Instant::now() - Duration::from_secs(10),
            Duration::from_secs(5),
            1024,
        );
        assert_eq!(past.wait(Duration::from_secs(180)), None);
        assert!(past.expired());
    }
}
