//! `relay send`: one test message through a configured route, directly (not through the
//! listener or the relay's queue), with the SMTP conversation on request.
//!
//! The message goes through the same transport the relay builds for the route (TLS
//! verification, XOAUTH2 tokens, sender rewriting), from a throw-away spool in the system's
//! temporary directory. `--transcript` prints every line of the SMTP session with the AUTH
//! payloads replaced by `[redacted]` (the token, a LOGIN password and user name never
//! appear) and the message data summarised.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use super::OpsError;
use crate::config::Config;
use crate::delivery::smtp::{SmtpTransport, Transcript};
use crate::delivery::{LocalSink, RcptOutcome, Transport};
use crate::identity::Identities;
use crate::router::RouteConfig;
use crate::spool::{ClientInfo, Envelope, Recipient, Spool, SpoolConfig};

/// What to send (`relay send --route NAME --from A --to B ...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// The route (`[routes.<name>]`).
    pub route: String,
    /// The envelope sender and `From:`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// The subject. Default: `Postern test message`.
    pub subject: Option<String>,
    /// The body text. Default: a line naming the route.
    pub body: Option<String>,
    /// Print the SMTP conversation (redacted).
    pub transcript: bool,
}

impl SendOptions {
    /// A message from `from` to `to` through `route`, with the default subject and body.
    pub fn new(route: impl Into<String>, from: impl Into<String>, to: Vec<String>) -> Self {
        Self {
            route: route.into(),
            from: from.into(),
            to,
            ..Self::default()
        }
    }

    /// Sets the subject.
    #[must_use]
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the body text.
    #[must_use]
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Prints the SMTP transcript.
    #[must_use]
    pub fn transcript(mut self, on: bool) -> Self {
        self.transcript = on;
        self
    }
}

/// What happened to one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendResult {
    /// `(recipient, outcome)` in the order given.
    pub outcomes: Vec<(String, RcptOutcome)>,
}

impl SendResult {
    /// Whether every recipient was accepted.
    pub fn all_delivered(&self) -> bool {
        !self.outcomes.is_empty()
            && self
                .outcomes
                .iter()
                .all(|(_, o)| matches!(o, RcptOutcome::Delivered { .. }))
    }
}

/// The test message: RFC 5322 headers, a text body, CRLF line ends.
pub fn build_message(opts: &SendOptions, hostname: &str, now: SystemTime) -> Vec<u8> {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let date = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_default();
    let subject = opts.subject.as_deref().unwrap_or("Postern test message");
    let body = opts.body.clone().unwrap_or_else(|| {
        format!(
            "This is a test message sent by `relay send` through route {} of {hostname}.\n",
            opts.route
        )
    });
    let mut text = format!(
        "From: <{}>\nTo: {}\nSubject: {subject}\nDate: {date}\n\
         Message-ID: <{}.{}@{hostname}>\nMIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n",
        opts.from,
        opts.to
            .iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(", "),
        secs,
        std::process::id(),
    );
    text.push_str(&body);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    // CRLF everywhere, whatever the body file used.
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// A route's transport as the relay builds it.
pub(crate) enum RouteTransport {
    /// An SMTP-based route.
    Smtp(Box<SmtpTransport>),
    /// A local sink.
    Local(LocalSink),
}

impl RouteTransport {
    pub(crate) fn as_dyn(&self) -> &dyn Transport {
        match self {
            Self::Smtp(t) => t.as_ref(),
            Self::Local(t) => t,
        }
    }

    /// QUITs the pooled connection, if any.
    pub(crate) async fn close(&self) {
        if let Self::Smtp(t) = self {
            t.close_idle().await;
        }
    }
}

/// Builds the transport of route `name` as the relay would, with `transcript` attached to
/// SMTP routes.
pub(crate) fn transport(
    cfg: &Config,
    identities: &Identities,
    name: &str,
    transcript: Option<Transcript>,
) -> Result<RouteTransport, OpsError> {
    let Some(route) = cfg.routes.get(name) else {
        let names: Vec<&str> = cfg.routes.keys().map(String::as_str).collect();
        return Err(OpsError::Refused(format!(
            "no route {name:?} in the configuration (routes: {})",
            names.join(", ")
        )));
    };
    if let RouteConfig::Local { dir, format } = route {
        return Ok(RouteTransport::Local(LocalSink::new(dir.clone(), *format)));
    }
    let Some((kind, smtp)) = route.smtp() else {
        return Err(OpsError::Refused(format!(
            "route {name:?} is not an SMTP or local route; `relay send` cannot use it"
        )));
    };
    let mut t = SmtpTransport::build(name, kind, smtp, identities, &cfg.identities, &cfg.hostname)
        .map_err(|e| OpsError::Refused(e.to_string()))?;
    if let Some(tr) = transcript {
        t = t.with_transcript(tr);
    }
    Ok(RouteTransport::Smtp(Box::new(t)))
}

/// A unique throw-away spool directory.
fn scratch_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "postern-send-{}-{nanos}-{}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

/// Sends the message through `transport` from a throw-away spool.
pub(crate) async fn deliver(
    transport: &dyn Transport,
    opts: &SendOptions,
    message: &[u8],
) -> Result<SendResult, OpsError> {
    let dir = scratch_dir();
    let r = deliver_in(&dir, transport, opts, message).await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

async fn deliver_in(
    dir: &std::path::Path,
    transport: &dyn Transport,
    opts: &SendOptions,
    message: &[u8],
) -> Result<SendResult, OpsError> {
    let (spool, _) = Spool::open(&SpoolConfig::new(dir)).await?;
    let mut committed = spool.subscribe();
    let envelope = Envelope::new(
        Some(opts.from.clone()),
        opts.to.iter().map(Recipient::new).collect(),
        ClientInfo::new(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            "relay-send",
            "relay send",
        ),
    );
    let mut incoming = spool.receive(envelope).await?;
    incoming.write(message).await?;
    incoming.commit().await?;
    let msg = committed
        .recv()
        .await
        .ok_or_else(|| OpsError::Refused("the scratch spool lost the message".into()))?;
    let rcpts: Vec<usize> = (0..opts.to.len()).collect();
    let report = transport.deliver(&msg, &rcpts).await;
    let outcomes = opts
        .to
        .iter()
        .enumerate()
        .map(|(i, to)| {
            let o = report
                .get(i)
                .cloned()
                .unwrap_or_else(|| RcptOutcome::transient("no outcome reported", "internal"));
            (to.clone(), o)
        })
        .collect();
    Ok(SendResult { outcomes })
}

/// One line per recipient: `delivered`, `deferred (category)` or `refused (category)`,
/// the reply, and the remedy when there is one.
pub(crate) fn describe(o: &RcptOutcome) -> String {
    match o {
        RcptOutcome::Delivered { reply } => format!("delivered: {reply}"),
        RcptOutcome::Transient {
            reason, category, ..
        } => format!("deferred ({category}): {reason}"),
        RcptOutcome::Permanent {
            reason,
            category,
            remedy,
        } => match remedy {
            Some(r) => format!("refused ({category}): {reason}; fix: {r}"),
            None => format!("refused ({category}): {reason}"),
        },
    }
}

/// `relay send`: sends one message through the route and reports each recipient on `out`
/// (preceded by the SMTP transcript when asked). `Ok(true)` when every recipient was
/// accepted.
///
/// # Errors
/// An unknown route, a route that cannot be built (missing files, unknown identity), or a
/// scratch spool that cannot be written.
pub async fn send(
    cfg: &Config,
    opts: &SendOptions,
    out: &mut (dyn Write + Send),
) -> Result<bool, OpsError> {
    if opts.to.is_empty() {
        return Err(OpsError::Refused("give at least one --to".into()));
    }
    let identities =
        Identities::from_config(&cfg.identities).map_err(|e| OpsError::Refused(e.to_string()))?;
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let transcript = opts.transcript.then(|| {
        let lines = Arc::clone(&lines);
        Transcript::new(move |side, text| {
            lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("{} {text}", side.prefix()));
        })
    });
    let transport = transport(cfg, &identities, &opts.route, transcript)?;
    let message = build_message(opts, &cfg.hostname, SystemTime::now());
    writeln!(
        out,
        "Sending {} bytes from {} to {} through route {}",
        message.len(),
        opts.from,
        opts.to.join(", "),
        opts.route
    )?;
    let result = deliver(transport.as_dyn(), opts, &message).await?;
    transport.close().await;
    if opts.transcript {
        let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(PoisonError::into_inner));
        for l in lines {
            writeln!(out, "  {l}")?;
        }
    }
    for (to, o) in &result.outcomes {
        writeln!(out, "{to}: {}", describe(o))?;
    }
    Ok(result.all_delivered())
}
