//! The whole product in one run, offline: the Microsoft 365 simulators of
//! `postern-testkit`, a relay configured against them, a printer sending one message, and
//! what happened at each hop.
//!
//! ```text
//!  printer ──plain SMTP──▶ relay ──STARTTLS + AUTH XOAUTH2──▶ simulated Exchange Online
//!                            │                                  (smtp.office365.com shape)
//!                            └──client credentials──▶ simulated Entra ID (token service)
//! ```
//!
//! [`run`] builds its own single-threaded runtime so that it can watch the relay's upstream
//! session through the `postern::transcript` wire log (secrets redacted by the SMTP client)
//! and the `delivered` log event, without installing a global logger.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use postern::Relay;
use postern::config::Config;
use postern::delivery::smtp::TRACE_TARGET;
use postern_testkit::entra::{App, EntraSim, Tenant};
use postern_testkit::exo::{Profile, SubmissionServer};
use postern_testkit::org::{Mailbox, Organization, ServicePrincipal};
use postern_testkit::record::{AcceptedMessage, AuthMethod};
use postern_testkit::tls::TestCa;
use postern_testkit::token::AccessToken;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::{Layer, Registry};

const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const APP: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
const SECRET: &str = "demo-client-secret";
const MAILBOX: &str = "scanner@contoso.com";
const RECIPIENT: &str = "bob@fabrikam.com";
/// How long the demo waits for the relay to deliver.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// Why the demo could not finish.
#[derive(Debug)]
#[non_exhaustive]
pub struct DemoError(pub String);

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DemoError {}

fn err(context: &str) -> impl FnOnce(String) -> DemoError + '_ {
    move |e| DemoError(format!("{context}: {e}"))
}

/// What the demo saw, for tests.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DemoOutcome {
    /// The relay's queue id, from its `250 ... queued as <id>` to the printer.
    pub queue_id: String,
    /// The relay's upstream session, line by line (`C: ...`, `S: ...`, `* ...`).
    pub upstream: Vec<String>,
    /// The message as the simulated Exchange Online accepted it.
    pub accepted: AcceptedMessage,
    /// The relay's reply from upstream, as logged when the recipient was delivered.
    pub upstream_reply: String,
    /// Every access token the simulated Exchange was shown (facts only, no secrets).
    pub tokens_presented: Vec<AccessToken>,
    /// The token grants the simulated Entra ID served.
    pub token_grants: usize,
}

/// One captured log event: its target, message and fields.
#[derive(Debug, Clone, Default)]
struct Event {
    target: String,
    message: String,
    fields: Vec<(String, String)>,
}

impl Event {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find_map(|(k, v)| (k == name).then_some(v.as_str()))
    }
}

impl tracing::field::Visit for Event {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let mut v = String::new();
        let _ = write!(v, "{value:?}");
        if field.name() == "message" {
            self.message = v;
        } else {
            self.fields.push((field.name().to_owned(), v));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .push((field.name().to_owned(), value.to_owned()));
        }
    }
}

/// Keeps the engine's events (the wire log and the queue's outcomes).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Event>>>);

impl Capture {
    fn events(&self) -> Vec<Event> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        let t = metadata.target();
        t == TRACE_TARGET || (t.starts_with("postern") && *metadata.level() <= tracing::Level::INFO)
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut e = Event {
            target: event.metadata().target().to_owned(),
            ..Event::default()
        };
        event.record(&mut e);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(e);
    }
}

/// Runs the demo, printing each hop on `out`. Takes a second or two; needs no network
/// beyond loopback.
///
/// # Errors
/// A simulator or the relay could not start, or the message was not delivered in time.
pub fn run(out: &mut dyn Write) -> Result<DemoOutcome, DemoError> {
    let capture = Capture::default();
    let subscriber = Registry::default().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DemoError(format!("cannot start the runtime: {e}")))?;
    rt.block_on(run_async(out, &capture))
}

fn say(out: &mut dyn Write, text: &str) -> Result<(), DemoError> {
    writeln!(out, "{text}").map_err(|e| DemoError(format!("cannot write: {e}")))
}

async fn run_async(out: &mut dyn Write, capture: &Capture) -> Result<DemoOutcome, DemoError> {
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(|e| err("temp dir")(e.to_string()))?;
    say(
        out,
        "Postern demo: a scanner sends one message through a simulated Microsoft 365 tenant (offline, loopback only)\n",
    )?;

    // 1. The tenant: Entra ID and Exchange Online client submission, one CA.
    let ca = TestCa::new();
    let entra = EntraSim::builder()
        .ca(ca.clone())
        .tenant(Tenant::new(TENANT).domain("contoso.com"))
        .app(
            App::new(APP, TENANT)
                .secret(SECRET)
                .app_role("https://outlook.office365.com", "SMTP.SendAsApp"),
        )
        .start()
        .await
        .map_err(|e| err("Entra ID simulator")(e.to_string()))?;
    let org = Organization::builder(TENANT, "contoso.com")
        .mailbox(Mailbox::new(MAILBOX))
        .service_principal(ServicePrincipal::new(APP).full_access(MAILBOX))
        .build();
    let presented = Arc::new(Mutex::new(Vec::<AccessToken>::new()));
    let (seen, validator) = (Arc::clone(&presented), entra.clone());
    let exo = SubmissionServer::builder(Profile::ClientSubmission)
        .organization(org)
        .ca(ca.clone())
        .tokens(move |t: &str| {
            let facts = validator.validate_access_token(t);
            if let Some(f) = &facts {
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(f.clone());
            }
            facts
        })
        .start()
        .await
        .map_err(|e| err("Exchange Online simulator")(e.to_string()))?;
    say(out, "[1] simulated tenant contoso.com is up")?;
    say(
        out,
        &format!(
            "    Entra ID token service       {}  (app {APP}, application permission SMTP.SendAsApp, admin consent)",
            entra.authority()
        ),
    )?;
    say(
        out,
        &format!(
            "    Exchange Online submission   {}  (as {}:587, STARTTLS + XOAUTH2; service principal has FullAccess on {MAILBOX})",
            exo.addr(),
            exo.tls_server_name()
        ),
    )?;

    // 2. The relay, configured as an admin would for client submission with app-only OAuth.
    let d = dir.path();
    let ca_file = d.join("tenant-ca.pem");
    ca.write_cert_pem(&ca_file)
        .map_err(|e| err("CA file")(e.to_string()))?;
    std::fs::write(d.join("client-secret"), SECRET)
        .map_err(|e| err("secret file")(e.to_string()))?;
    let toml = format!(
        r#"hostname = "relay.contoso.lan"
default_routes = ["m365"]

[[listeners]]
name = "lan"
bind = "127.0.0.1:0"

[policy]
allowed_networks = ["127.0.0.1/32"]

[spool]
path = "{spool}"

[routes.m365]
type = "client_submission"
host = "127.0.0.1"                 # smtp.office365.com in real life
port = {port}
tls_name = "smtp.office365.com"
ca_file = "{ca}"
identity = "scanner-app"
mailbox = "{MAILBOX}"

[identities.scanner-app]
authority = "{authority}"          # "global" in real life
tenant = "{TENANT}"
client_id = "{APP}"
client_secret_file = "{secret}"
ca_file = "{ca}"
"#,
        spool = d.join("spool").display(),
        port = exo.addr().port(),
        ca = ca_file.display(),
        authority = entra.authority(),
        secret = d.join("client-secret").display(),
    );
    let cfg =
        Config::from_toml(&toml, "demo.toml").map_err(|e| err("configuration")(e.to_string()))?;
    let relay = Relay::start(cfg)
        .await
        .map_err(|e| err("relay")(e.to_string()))?;
    let listener = relay.local_addrs()[0];
    say(
        out,
        &format!(
            "[2] relay started: listening on {listener} for the LAN (127.0.0.1/32 may relay without a password); route m365 = client_submission as {MAILBOX}, identity scanner-app (app-only)"
        ),
    )?;

    // 3. The printer: plain SMTP, no TLS, no AUTH.
    say(
        out,
        "[3] printer -> relay (plain SMTP, as a scanner sends it)",
    )?;
    let queue_id = match printer_sends(listener, out).await {
        Ok(id) => id,
        Err(e) => {
            relay.shutdown().await;
            return Err(e);
        }
    };

    // 4-6. Wait until the simulated Exchange has it and the relay has recorded the outcome.
    let delivered = wait_delivered(&exo, capture).await;
    let outcome = match delivered {
        Ok(r) => r,
        Err(e) => {
            relay.shutdown().await;
            return Err(e);
        }
    };
    let (accepted, upstream_reply) = outcome;
    let grants = entra.grant_count("client_credentials");
    let issued = entra.issued_access_tokens();
    let token_line = issued.first().map_or_else(
        || "no token issued".to_owned(),
        |t| {
            format!(
                "token for {} with roles [{}] issued to app {}",
                t.audience,
                t.roles.join(", "),
                t.client_id
            )
        },
    );
    say(
        out,
        &format!(
            "[4] relay -> Entra ID: client credentials grant ({grants} request): {token_line}; cached and renewed before expiry"
        ),
    )?;
    say(
        out,
        "[5] relay -> Exchange Online (the relay's own SMTP session; AUTH payloads redacted by the client)",
    )?;
    let upstream: Vec<String> = capture
        .events()
        .iter()
        .filter(|e| e.target == TRACE_TARGET)
        .map(|e| format!("{} {}", e.field("side").unwrap_or("?"), e.message))
        .collect();
    for l in &upstream {
        say(out, &format!("    {l}"))?;
    }
    say(
        out,
        &format!(
            "    relay logged: delivered {queue_id} to {RECIPIENT} via m365: {upstream_reply}"
        ),
    )?;
    let tokens_presented = presented
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let how = match accepted.identity.as_ref().map(|i| (&i.method, &i.mailbox)) {
        Some((AuthMethod::Xoauth2App { client_id }, mb)) => {
            format!("AUTH XOAUTH2 with an app-only token of {client_id} for mailbox {mb}")
        }
        Some((other, mb)) => format!("{other:?} as {mb}"),
        None => "no AUTH".to_owned(),
    };
    let subject = String::from_utf8_lossy(&accepted.data)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        .unwrap_or_default();
    say(
        out,
        &format!(
            "[6] simulated Exchange Online recorded message #{}: MAIL FROM {} RCPT TO {}, {} bytes, TLS {}, {how}, Subject: {subject}",
            accepted.seq,
            accepted.mail_from,
            accepted.rcpt_to.join(", "),
            accepted.data.len(),
            if accepted.tls { "yes" } else { "no" },
        ),
    )?;
    let metrics = relay.spool().metrics().render();
    let wanted = [
        "postern_recipients_delivered_total",
        "postern_token_refreshes_total",
    ];
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .collect();
    say(
        out,
        &format!("[7] relay metrics (/metrics): {}", lines.join("  ")),
    )?;
    relay.shutdown().await;
    exo.shutdown().await;
    say(
        out,
        &format!(
            "\ndone in {:.1} s. Next: copy examples/relay.sample.toml, set your tenant, run `relay doctor`, then `relay serve`.",
            started.elapsed().as_secs_f64()
        ),
    )?;
    Ok(DemoOutcome {
        queue_id,
        upstream,
        accepted,
        upstream_reply,
        tokens_presented,
        token_grants: grants,
    })
}

/// The printer's session; returns the queue id from the relay's `250`.
async fn printer_sends(listener: SocketAddr, out: &mut dyn Write) -> Result<String, DemoError> {
    let io = |e: std::io::Error| DemoError(format!("printer: {e}"));
    let stream = TcpStream::connect(listener).await.map_err(io)?;
    let mut r = BufReader::new(stream);
    let mut last = read_reply(&mut r, out).await?;
    let message = format!(
        "From: Scanner 3F <{MAILBOX}>\r\nTo: <{RECIPIENT}>\r\nSubject: Scanned document (3F)\r\n\
         Message-ID: <scan-0001@scanner-3f.lan>\r\n\r\nYour scan is attached (demo: one page of text).\r\n"
    );
    for cmd in [
        "EHLO scanner-3f.lan".to_owned(),
        format!("MAIL FROM:<{MAILBOX}>"),
        format!("RCPT TO:<{RECIPIENT}>"),
        "DATA".to_owned(),
    ] {
        say(out, &format!("    C: {cmd}"))?;
        r.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .map_err(io)?;
        last = read_reply(&mut r, out).await?;
    }
    if !last.starts_with("354") {
        return Err(DemoError(format!("the relay refused DATA: {last}")));
    }
    say(out, &format!("    C: [message: {} bytes] .", message.len()))?;
    r.get_mut()
        .write_all(format!("{message}.\r\n").as_bytes())
        .await
        .map_err(io)?;
    let done = read_reply(&mut r, out).await?;
    say(out, "    C: QUIT")?;
    r.get_mut().write_all(b"QUIT\r\n").await.map_err(io)?;
    let _ = read_reply(&mut r, out).await;
    if !done.starts_with("250") {
        return Err(DemoError(format!("the relay refused the message: {done}")));
    }
    done.rsplit(' ')
        .next()
        .map(str::to_owned)
        .ok_or_else(|| DemoError(format!("no queue id in {done:?}")))
}

/// Reads one (possibly multi-line) reply, prints it, returns its last line.
async fn read_reply(
    r: &mut BufReader<TcpStream>,
    out: &mut dyn Write,
) -> Result<String, DemoError> {
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .map_err(|_| DemoError("printer: no reply from the relay".into()))?
            .map_err(|e| DemoError(format!("printer: {e}")))?;
        if n == 0 {
            return Err(DemoError("printer: the relay closed the connection".into()));
        }
        let line = line.trim_end().to_owned();
        say(out, &format!("    S: {line}"))?;
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line);
        }
    }
}

/// Waits for the simulator's record and the relay's `delivered` event.
async fn wait_delivered(
    exo: &SubmissionServer,
    capture: &Capture,
) -> Result<(AcceptedMessage, String), DemoError> {
    let deadline = tokio::time::Instant::now() + DELIVERY_WAIT;
    loop {
        let delivered = capture
            .events()
            .into_iter()
            .find(|e| e.message == "delivered")
            .and_then(|e| e.field("reply").map(str::to_owned));
        if let (Some(reply), Some(msg)) = (delivered, exo.recorder().messages().into_iter().next())
        {
            return Ok((msg, reply));
        }
        if tokio::time::Instant::now() >= deadline {
            let problems: Vec<String> = capture
                .events()
                .iter()
                .filter(|e| e.target != TRACE_TARGET)
                .map(|e| format!("{} {:?}", e.message, e.fields))
                .collect();
            return Err(DemoError(format!(
                "not delivered within {DELIVERY_WAIT:?}; relay log: {}",
                problems.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
