//! The SMTP session both Exchange Online simulators run: commands are read with the project's
//! own codec ([`postern_smtp::Command::decode`]), and what Exchange does the same way on every
//! endpoint (greeting, `EHLO`, `STARTTLS`, the SASL exchange, envelope sequencing, `DATA` and
//! `BDAT`, injected faults, recording) lives here. What differs between endpoints (which
//! mechanisms, who may send, which recipients are taken, what the final reply says) is a
//! [`Policy`].
//!
//! ```text
//!  bytes ──▶ Command::decode ──▶ Session (sequence, faults, DATA/BDAT) ──▶ reply line
//!                                    │  ▲
//!                          Policy::{mail_gate, rcpt, accept, …} ──▶ Ok / Err(reply line)
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use postern_sasl::{AuthError, Credentials, Mechanism, ServerExchange, ServerStep};
use postern_smtp::{Command, DecodeError, InvalidKind, ParseOptions, Path};
use tokio::net::TcpStream;

use crate::exo::SERVICE_MAX_SIZE;
use crate::fault::{Fault, Faults, SERVICE_UNAVAILABLE, TEMPORARY};
use crate::record::{AcceptedMessage, Endpoint, Identity, Recorder, Refusal};
use crate::wire::{self, Conn, HostNames};

/// What every session of one simulator shares.
pub(crate) struct Core {
    pub(crate) names: HostNames,
    pub(crate) faults: Arc<Faults>,
    pub(crate) recorder: Recorder,
    pub(crate) tls: Arc<rustls::ServerConfig>,
}

/// What a policy sees of the session it decides for.
pub(crate) struct Cx<'a> {
    /// The simulator's host names (for reply trailers).
    pub(crate) names: &'a HostNames,
    /// The connection: TLS or not, the peer, its client certificate.
    pub(crate) conn: &'a Conn,
}

impl Cx<'_> {
    /// The `[<host> <timestamp> <id>]` trailer of Exchange replies.
    pub(crate) fn trailer(&self) -> String {
        self.names.trailer()
    }
}

/// A message whose data has been read, as a policy sees it before accepting it.
pub(crate) struct Message<'a> {
    pub(crate) mail_from: &'a str,
    pub(crate) rcpts: &'a [String],
    pub(crate) data: &'a [u8],
}

/// The part of an endpoint's behaviour that differs from the others. A refusal is
/// `Err(reply line)`.
pub(crate) trait Policy: Send + 'static {
    /// The endpoint that accepted messages and refusals are recorded under.
    fn endpoint(&self) -> Endpoint;

    /// Who the session authenticated as, if anyone.
    fn identity(&self) -> Option<Identity> {
        None
    }

    /// The `EHLO` keyword between `ENHANCEDSTATUSCODES` and `8BITMIME` (`STARTTLS` before TLS,
    /// `AUTH ...` after it), if any.
    fn ehlo_keyword(&self, tls: bool) -> Option<&'static str>;

    /// The SASL mechanisms `AUTH` takes now; none means every `AUTH` gets `504 5.7.4`.
    fn auth_mechanisms(&self, _tls: bool) -> &'static [Mechanism] {
        &[]
    }

    /// Checks the credentials of a completed SASL exchange, and remembers who it was.
    fn authenticate(&mut self, cx: &Cx<'_>, _creds: &Credentials) -> Result<(), String> {
        Err(format!(
            "535 5.7.3 Authentication unsuccessful {}",
            cx.trailer()
        ))
    }

    /// Whether `MAIL` may be given at all (before its syntax is looked at).
    fn mail_gate(&self, _cx: &Cx<'_>) -> Result<(), String> {
        Ok(())
    }

    /// The largest message this session may send (at `MAIL ... SIZE=` and after the data).
    fn max_size(&self) -> usize {
        SERVICE_MAX_SIZE
    }

    /// The last check of a well-formed `MAIL`.
    fn mail(&mut self, _cx: &Cx<'_>) -> Result<(), String> {
        Ok(())
    }

    /// Whether `rcpt` is taken, the envelope so far being `mail_from` and `rcpts`.
    fn rcpt(
        &self,
        cx: &Cx<'_>,
        mail_from: &str,
        rcpts: &[String],
        rcpt: &str,
    ) -> Result<(), String>;

    /// The checks after the data, once size and faults are dealt with. `Ok` holds how long the
    /// final reply is held back (throttling).
    fn accept(&mut self, _cx: &Cx<'_>, _message: &Message<'_>) -> Result<Duration, String> {
        Ok(Duration::ZERO)
    }

    /// The final `250` for an accepted message.
    fn accepted_reply(&self, cx: &Cx<'_>, message_id: &str, size: usize) -> String;

    /// Forgets per-transaction state (`RSET`, `HELO`/`EHLO`, `STARTTLS`, the end of a message).
    fn reset_transaction(&mut self) {}

    /// Forgets per-session state after `STARTTLS`.
    fn reset_session(&mut self) {}
}

/// Serves one connection with `policy`.
pub(crate) async fn serve<P: Policy>(
    core: Arc<Core>,
    policy: P,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let conn = Conn::new(stream, peer, Arc::clone(&core.faults));
    let mut s = Session {
        core,
        conn,
        helo: None,
        txn: Txn::default(),
        policy,
    };
    let _ = s.run().await;
    s.conn.close().await;
}

/// How command lines are read: leniently (bare LF, extra spaces, as real devices send), and
/// long enough for XOAUTH2 initial responses, as Exchange tolerates.
fn parse_options() -> ParseOptions {
    ParseOptions::default()
        .lenient(true)
        .max_line(wire::MAX_COMMAND_LINE)
}

/// One command line as read.
enum Input {
    Command(Command<'static>),
    /// A complete line the codec refused; the verb as typed, upper-cased.
    Invalid {
        verb: String,
        kind: InvalidKind,
    },
    /// The peer closed the connection.
    Eof,
}

enum Flow {
    Continue,
    Stop,
}

#[derive(Default)]
struct Txn {
    mail_from: Option<String>,
    rcpts: Vec<String>,
    bdat: Vec<u8>,
    bdat_size: usize,
    bdat_fault: Option<Fault>,
}

struct Session<P> {
    core: Arc<Core>,
    conn: Conn,
    helo: Option<String>,
    txn: Txn,
    policy: P,
}

/// The address of a path as recorded: empty for `<>`.
fn address(path: &Path<'_>) -> String {
    match path {
        Path::Mailbox(m) => m.to_string(),
        Path::Postmaster => "Postmaster".to_owned(),
        _ => String::new(),
    }
}

impl<P: Policy> Session<P> {
    fn trailer(&self) -> String {
        self.core.names.trailer()
    }

    fn cx(&self) -> Cx<'_> {
        Cx {
            names: &self.core.names,
            conn: &self.conn,
        }
    }

    /// Sends `line`, recording it as a refusal of `command` when it is one.
    async fn reply(&mut self, command: &str, line: &str) -> io::Result<()> {
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if code >= 400 {
            self.core.recorder.push_refusal(Refusal {
                endpoint: self.policy.endpoint(),
                command: command.to_owned(),
                code,
                text: line.get(4..).unwrap_or_default().to_owned(),
                identity: self.policy.identity(),
                mail_from: self.txn.mail_from.clone(),
                client_addr: self.conn.peer,
            });
        }
        self.conn.send(line).await
    }

    /// Replies and carries on with the session.
    async fn answer(&mut self, command: &str, line: &str) -> io::Result<Flow> {
        self.reply(command, line).await?;
        Ok(Flow::Continue)
    }

    fn reset(&mut self) {
        self.txn = Txn::default();
        self.policy.reset_transaction();
    }

    async fn read_input(&mut self) -> io::Result<Input> {
        let opts = parse_options();
        loop {
            let buf = self.conn.buffered();
            match Command::decode(buf, &opts) {
                Ok((command, used)) => {
                    let command = command.into_owned();
                    self.conn.consume(used);
                    return Ok(Input::Command(command));
                }
                Err(DecodeError::Invalid { consumed, kind }) => {
                    let line = &buf[..consumed];
                    let end = line
                        .iter()
                        .position(|b| b.is_ascii_whitespace())
                        .unwrap_or(line.len());
                    let verb = String::from_utf8_lossy(&line[..end]).to_ascii_uppercase();
                    self.conn.consume(consumed);
                    return Ok(Input::Invalid { verb, kind });
                }
                Err(DecodeError::TooLong { .. }) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "command line too long",
                    ));
                }
                Err(_) => {
                    if self.conn.fill().await? == 0 {
                        return Ok(Input::Eof);
                    }
                }
            }
        }
    }

    async fn run(&mut self) -> io::Result<()> {
        match self.core.faults.take_connection_fault() {
            Some(Fault::RefuseConnection) => {
                return self.reply("CONNECT", SERVICE_UNAVAILABLE).await;
            }
            Some(Fault::Hang) => std::future::pending::<()>().await,
            _ => {}
        }
        let greeting = format!(
            "220 {} Microsoft ESMTP MAIL Service ready at {} [{}]",
            self.core.names.greeting_host(),
            wire::rfc5322_now(),
            wire::hex16()
        );
        self.conn.send(&greeting).await?;
        loop {
            let flow = match self.read_input().await? {
                Input::Eof => return Ok(()),
                Input::Command(command) => self.command(command).await?,
                Input::Invalid { verb, kind } => self.invalid(verb, &kind).await?,
            };
            if let Flow::Stop = flow {
                return Ok(());
            }
        }
    }

    async fn command(&mut self, command: Command<'static>) -> io::Result<Flow> {
        match command {
            Command::Ehlo { domain } => self.hello("EHLO", domain.to_string()).await,
            Command::Helo { domain } => self.hello("HELO", domain.to_string()).await,
            Command::StartTls => self.starttls().await,
            Command::Auth { mechanism, initial } => {
                let initial = initial.as_ref().map(|i| i.expose().as_bytes());
                self.auth(&mechanism, initial).await
            }
            Command::Mail { from, params } => self.mail(Some((address(&from), params.size))).await,
            Command::Rcpt { to, .. } => self.rcpt(Some(address(&to))).await,
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset => {
                self.reset();
                self.answer("RSET", "250 2.0.0 Resetting").await
            }
            Command::Noop { .. } => self.answer("NOOP", "250 2.0.0 OK").await,
            Command::Quit => {
                self.reply("QUIT", "221 2.0.0 Service closing transmission channel")
                    .await?;
                Ok(Flow::Stop)
            }
            // VRFY, EXPN, HELP: Exchange Online's submission and MX endpoints do not take them.
            other => self.unrecognized(other.kind().name()).await,
        }
    }

    /// A line the codec refused: Exchange's answer depends on the verb.
    async fn invalid(&mut self, verb: String, kind: &InvalidKind) -> io::Result<Flow> {
        match (verb.as_str(), kind) {
            (_, InvalidKind::UnknownCommand) => self.unrecognized(&verb).await,
            ("EHLO" | "HELO", _) => self.answer(&verb, "501 5.5.4 Invalid domain name").await,
            ("MAIL", _) => self.mail(None).await,
            ("RCPT", _) => self.rcpt(None).await,
            ("AUTH", _) => self.auth("", None).await,
            ("BDAT", _) => {
                self.reply("BDAT", "501 5.5.4 Invalid arguments").await?;
                Ok(Flow::Stop)
            }
            _ => self.answer(&verb, "501 5.5.4 Invalid arguments").await,
        }
    }

    async fn unrecognized(&mut self, verb: &str) -> io::Result<Flow> {
        let line = format!("500 5.3.3 Unrecognized command '{verb}'");
        self.answer(verb, &line).await
    }

    async fn hello(&mut self, verb: &str, domain: String) -> io::Result<Flow> {
        self.helo = Some(domain);
        self.reset();
        let hello = format!(
            "{} Hello {}",
            self.core.names.greeting_host(),
            wire::bracket_ip(self.conn.peer)
        );
        if verb == "HELO" {
            return self.answer(verb, &format!("250 {hello}")).await;
        }
        let mut lines = vec![
            format!("250-{hello}"),
            format!("250-SIZE {SERVICE_MAX_SIZE}"),
            "250-PIPELINING".to_owned(),
            "250-DSN".to_owned(),
            "250-ENHANCEDSTATUSCODES".to_owned(),
        ];
        if let Some(keyword) = self.policy.ehlo_keyword(self.conn.is_tls()) {
            lines.push(format!("250-{keyword}"));
        }
        lines.extend(
            [
                "250-8BITMIME",
                "250-BINARYMIME",
                "250-CHUNKING",
                "250 SMTPUTF8",
            ]
            .map(str::to_owned),
        );
        self.answer(verb, &lines.join("\r\n")).await
    }

    async fn starttls(&mut self) -> io::Result<Flow> {
        if self.conn.is_tls() {
            return self
                .answer("STARTTLS", "503 5.5.1 Bad sequence of commands")
                .await;
        }
        self.reply("STARTTLS", "220 2.0.0 SMTP server ready")
            .await?;
        if self
            .conn
            .starttls(Arc::clone(&self.core.tls))
            .await
            .is_err()
        {
            return Ok(Flow::Stop);
        }
        self.helo = None;
        self.reset();
        self.policy.reset_session();
        Ok(Flow::Continue)
    }

    async fn auth(&mut self, mechanism: &str, initial: Option<&[u8]>) -> io::Result<Flow> {
        let unrecognized = format!(
            "504 5.7.4 Unrecognized authentication type {}",
            self.trailer()
        );
        let offered = self.policy.auth_mechanisms(self.conn.is_tls());
        if offered.is_empty() {
            return self.answer("AUTH", &unrecognized).await;
        }
        if self.policy.identity().is_some() || self.txn.mail_from.is_some() {
            return self
                .answer("AUTH", "503 5.5.1 Bad sequence of commands")
                .await;
        }
        let Some(mechanism) = mechanism
            .parse::<Mechanism>()
            .ok()
            .filter(|m| offered.contains(m))
        else {
            return self.answer("AUTH", &unrecognized).await;
        };
        let mut exchange = ServerExchange::new(mechanism);
        let mut step = exchange.start(initial);
        let creds = loop {
            match step {
                Ok(ServerStep::Challenge(c)) => {
                    self.conn.send(&format!("334 {c}")).await?;
                    let Some(line) = self.conn.read_line(&parse_options()).await? else {
                        return Ok(Flow::Stop);
                    };
                    step = exchange.step(&line);
                }
                Ok(ServerStep::Done(creds)) => break creds,
                Ok(_) => {
                    return self
                        .answer("AUTH", "503 5.5.1 Bad sequence of commands")
                        .await;
                }
                Err(AuthError::Cancelled) => {
                    // Office 365 answers a cancelled exchange with 535, not RFC 4954's 501.
                    let line = format!("535 5.7.3 Authentication unsuccessful {}", self.trailer());
                    return self.answer("AUTH", &line).await;
                }
                Err(e) => return self.answer("AUTH", &e.reply().to_string()).await,
            }
        };
        let cx = Cx {
            names: &self.core.names,
            conn: &self.conn,
        };
        match self.policy.authenticate(&cx, &creds) {
            Ok(()) => {
                self.answer("AUTH", "235 2.7.0 Authentication successful")
                    .await
            }
            Err(line) => self.answer("AUTH", &line).await,
        }
    }

    /// `MAIL`, with its address and declared size, or `None` when its syntax was refused.
    async fn mail(&mut self, path: Option<(String, Option<u64>)>) -> io::Result<Flow> {
        if let Err(line) = self.policy.mail_gate(&self.cx()) {
            return self.answer("MAIL", &line).await;
        }
        if self.txn.mail_from.is_some() {
            return self
                .answer("MAIL", "503 5.5.1 Bad sequence of commands")
                .await;
        }
        let Some((address, declared)) = path else {
            return self.answer("MAIL", "501 5.1.7 Invalid address").await;
        };
        let max = self.policy.max_size();
        if declared.is_some_and(|size| size > max as u64) {
            return self
                .answer(
                    "MAIL",
                    "552 5.3.4 Message size exceeds fixed maximum message size",
                )
                .await;
        }
        let cx = Cx {
            names: &self.core.names,
            conn: &self.conn,
        };
        if let Err(line) = self.policy.mail(&cx) {
            return self.answer("MAIL", &line).await;
        }
        self.txn.mail_from = Some(address);
        self.answer("MAIL", "250 2.1.0 Sender OK").await
    }

    /// `RCPT`, with its address, or `None` when its syntax was refused.
    async fn rcpt(&mut self, address: Option<String>) -> io::Result<Flow> {
        let Some(mail_from) = self.txn.mail_from.as_deref() else {
            return self
                .answer("RCPT", "503 5.5.1 Bad sequence of commands")
                .await;
        };
        let Some(address) = address.filter(|a| !a.is_empty()) else {
            return self.answer("RCPT", "501 5.1.3 Invalid address").await;
        };
        if let Err(line) = self
            .policy
            .rcpt(&self.cx(), mail_from, &self.txn.rcpts, &address)
        {
            return self.answer("RCPT", &line).await;
        }
        self.txn.rcpts.push(address);
        self.answer("RCPT", "250 2.1.5 Recipient OK").await
    }

    fn has_envelope(&self) -> bool {
        self.txn.mail_from.is_some() && !self.txn.rcpts.is_empty()
    }

    async fn data(&mut self) -> io::Result<Flow> {
        if !self.has_envelope() {
            return self
                .answer("DATA", "503 5.5.1 Bad sequence of commands")
                .await;
        }
        let fault = self.core.faults.take_message_fault();
        self.reply("DATA", "354 Start mail input; end with <CRLF>.<CRLF>")
            .await?;
        let drop = matches!(fault, Some(Fault::DropMidData));
        let Some(data) = self.conn.read_data(SERVICE_MAX_SIZE + 1, drop).await? else {
            return Ok(Flow::Stop);
        };
        self.finish("DATA", data.bytes, data.size, fault).await
    }

    async fn bdat(&mut self, size: u64, last: bool) -> io::Result<Flow> {
        let Ok(size) = usize::try_from(size) else {
            self.reply("BDAT", "501 5.5.4 Invalid arguments").await?;
            return Ok(Flow::Stop);
        };
        if self.txn.bdat_size == 0 && self.txn.bdat.is_empty() {
            self.txn.bdat_fault = self.core.faults.take_message_fault();
        }
        if matches!(self.txn.bdat_fault, Some(Fault::DropMidData)) {
            self.conn.close().await;
            return Ok(Flow::Stop);
        }
        let keep = (SERVICE_MAX_SIZE + 1).saturating_sub(self.txn.bdat.len());
        let Some(chunk) = self.conn.read_chunk(size, keep).await? else {
            return Ok(Flow::Stop);
        };
        if !self.has_envelope() {
            self.txn.bdat.clear();
            return self
                .answer("BDAT", "503 5.5.1 Bad sequence of commands")
                .await;
        }
        self.txn.bdat.extend_from_slice(&chunk);
        self.txn.bdat_size += size;
        if !last {
            return self
                .answer("BDAT", &format!("250 2.0.0 {size} bytes received"))
                .await;
        }
        let bytes = std::mem::take(&mut self.txn.bdat);
        let total = self.txn.bdat_size;
        let fault = self.txn.bdat_fault.take();
        self.finish("BDAT", bytes, total, fault).await
    }

    /// Everything after the end of the message data: faults, size, the policy, recording.
    async fn finish(
        &mut self,
        command: &str,
        bytes: Vec<u8>,
        size: usize,
        fault: Option<Fault>,
    ) -> io::Result<Flow> {
        let txn = std::mem::take(&mut self.txn);
        match fault {
            Some(Fault::ServiceUnavailable) => {
                self.reply(command, SERVICE_UNAVAILABLE).await?;
                return Ok(Flow::Stop);
            }
            Some(Fault::HangAfterData(d)) => {
                self.conn.hang(d).await;
                return Ok(Flow::Stop);
            }
            _ => {}
        }
        // From here on the transaction is over, whatever the answer.
        let endpoint = self.policy.endpoint();
        self.policy.reset_transaction();
        match fault {
            Some(Fault::Temporary) => {
                let line = format!("{TEMPORARY} {}", self.trailer());
                return self.answer(command, &line).await;
            }
            Some(Fault::ReplyAfterData(line)) => return self.answer(command, &line).await,
            _ => {}
        }
        if size > self.policy.max_size() {
            return self
                .answer(
                    command,
                    "552 5.3.4 Message size exceeds fixed maximum message size",
                )
                .await;
        }
        let mail_from = txn.mail_from.unwrap_or_default();
        let message = Message {
            mail_from: &mail_from,
            rcpts: &txn.rcpts,
            data: &bytes,
        };
        let cx = Cx {
            names: &self.core.names,
            conn: &self.conn,
        };
        let delay = match self.policy.accept(&cx, &message) {
            Ok(delay) => delay,
            Err(line) => return self.answer(command, &line).await,
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let names = &self.core.names;
        let message_id = wire::header_values(&bytes, "Message-ID")
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                format!(
                    "<{}@{}.{}.PROD.OUTLOOK.COM>",
                    wire::hex16(),
                    names.mailbox_server,
                    names.region
                )
            });
        let line = self.policy.accepted_reply(&self.cx(), &message_id, size);
        self.core.recorder.push_accepted(AcceptedMessage {
            seq: 0,
            endpoint,
            mail_from,
            rcpt_to: txn.rcpts,
            identity: self.policy.identity(),
            data: bytes,
            message_id,
            tls: self.conn.is_tls(),
            client_cert_subject: self.conn.client_cert.as_ref().map(|c| c.subject.clone()),
            client_addr: self.conn.peer,
            helo: self.helo.clone(),
            accepted_at: SystemTime::now(),
            throttled_for: delay,
        });
        self.answer(command, &line).await
    }
}
