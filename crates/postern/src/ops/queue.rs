//! `relay queue list | show ID | retry [ID] | delete ID | bounce ID`.
//!
//! Safe while the relay runs: when its admin API answers, every command goes through it (the
//! running queue applies the action between attempts). When no relay runs, the command takes
//! the spool lock ([`SpoolLock`]) and changes the spool directly; the next start picks the
//! change up. A relay that runs without an admin listener holds the lock, so changes are then
//! refused with a message saying how to enable the API; `list` and `show` only read and
//! always work.
//!
//! ```text
//! ID                AGE     SENDER                RECIPIENTS             ATTEMPTS  NEXT TRY  LAST ERROR
//! 01J9X3T2M4V8QK7A  12m04s  scanner@contoso.com   alice@contoso.com      3         in 4m     throttled
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::OpsError;
use super::client;
use crate::queue::{ADMIN_BOUNCE_CATEGORY, ADMIN_BOUNCE_REPLY};
use crate::spool::{
    FinalOutcome, InspectedMessage, QueueId, Spool, SpoolConfig, SpoolLock, inspect, inspect_one,
};

/// One queued message, as the admin API returns it and the CLI prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueEntry {
    /// The queue id.
    pub id: String,
    /// When the relay accepted it (seconds since the Unix epoch).
    pub received_at: u64,
    /// Message size in bytes.
    pub size: u64,
    /// The envelope sender (`<>` for the null sender).
    pub sender: String,
    /// The client that sent it (`ip:port`).
    pub client: String,
    /// Every recipient with its state.
    pub recipients: Vec<RecipientEntry>,
    /// Whether an attempt is in progress.
    pub in_flight: bool,
}

/// One recipient of a [`QueueEntry`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecipientEntry {
    /// The address.
    pub address: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (seconds since the Unix epoch; `None`: as soon as
    /// possible).
    pub next_attempt: Option<u64>,
    /// The last reply from the route.
    pub last_reply: Option<String>,
    /// The category of the last failure (a `postern-ndr` category name).
    pub last_category: Option<String>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl QueueEntry {
    /// The entry for a message read from the spool.
    pub fn from_inspected(m: &InspectedMessage) -> Self {
        let env = m.message.envelope();
        let recipients = env
            .recipients
            .iter()
            .zip(&m.state.recipients)
            .map(|(r, s)| RecipientEntry {
                address: r.address.clone(),
                status: match &s.outcome {
                    None => "pending",
                    Some(FinalOutcome::Delivered { .. }) => "delivered",
                    Some(_) => "failed",
                }
                .to_owned(),
                attempts: s.attempts,
                next_attempt: s.next_attempt.map(unix),
                last_reply: s.last_reply.clone(),
                last_category: s.last_category.clone(),
            })
            .collect();
        Self {
            id: m.message.id().to_string(),
            received_at: unix(env.received_at),
            size: m.message.body_len(),
            sender: env.mail_from_display().to_owned(),
            client: env.client.addr.to_string(),
            recipients,
            in_flight: m.in_flight,
        }
    }

    fn pending(&self) -> impl Iterator<Item = &RecipientEntry> {
        self.recipients.iter().filter(|r| r.status == "pending")
    }

    /// The most attempts of any recipient.
    pub fn attempts(&self) -> u32 {
        self.recipients
            .iter()
            .map(|r| r.attempts)
            .max()
            .unwrap_or(0)
    }

    /// The earliest next attempt of a pending recipient (`None`: due now or nothing pending).
    pub fn next_try(&self) -> Option<u64> {
        if self.pending().any(|r| r.next_attempt.is_none()) {
            return None;
        }
        self.pending().filter_map(|r| r.next_attempt).min()
    }

    /// The last failure category of any pending recipient (else of any recipient).
    pub fn last_category(&self) -> Option<&str> {
        self.pending()
            .find_map(|r| r.last_category.as_deref())
            .or_else(|| {
                self.recipients
                    .iter()
                    .find_map(|r| r.last_category.as_deref())
            })
    }
}

/// `3s`, `12m04s`, `2h05m`, `3d04h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn since(now: SystemTime, at: u64) -> Duration {
    Duration::from_secs(unix(now).saturating_sub(at))
}

fn next_try_text(e: &QueueEntry, now: SystemTime) -> String {
    if e.in_flight {
        return "in flight".into();
    }
    if e.pending().next().is_none() {
        return "-".into();
    }
    match e.next_try() {
        None => "now".into(),
        Some(t) if t <= unix(now) => "now".into(),
        Some(t) => format!("in {}", human_duration(Duration::from_secs(t - unix(now)))),
    }
}

fn recipients_text(e: &QueueEntry) -> String {
    let mut pending = e.pending();
    match (pending.next(), pending.count()) {
        (None, _) => "(none pending)".into(),
        (Some(first), 0) => first.address.clone(),
        (Some(first), more) => format!("{} +{more}", first.address),
    }
}

/// Writes the queue as a table (`now` for ages), and a summary line.
pub fn write_table(
    entries: &[QueueEntry],
    now: SystemTime,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if entries.is_empty() {
        return writeln!(out, "the queue is empty");
    }
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            [
                e.id.clone(),
                human_duration(since(now, e.received_at)),
                e.sender.clone(),
                recipients_text(e),
                e.attempts().to_string(),
                next_try_text(e, now),
                e.last_category().unwrap_or("-").to_owned(),
            ]
        })
        .collect();
    let head = [
        "ID",
        "AGE",
        "SENDER",
        "RECIPIENTS",
        "ATTEMPTS",
        "NEXT TRY",
        "LAST ERROR",
    ];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s
    };
    writeln!(out, "{}", line(&head.map(str::to_owned)))?;
    for r in &rows {
        writeln!(out, "{}", line(r))?;
    }
    let rcpts: usize = entries.iter().map(|e| e.pending().count()).sum();
    writeln!(
        out,
        "{} message(s), {rcpts} recipient(s) pending",
        entries.len()
    )
}

/// Writes one message in detail.
pub fn write_detail(e: &QueueEntry, now: SystemTime, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "id:        {}", e.id)?;
    writeln!(
        out,
        "received:  {} ago",
        human_duration(since(now, e.received_at))
    )?;
    writeln!(out, "sender:    {}", e.sender)?;
    writeln!(out, "client:    {}", e.client)?;
    writeln!(out, "size:      {} bytes", e.size)?;
    writeln!(out, "next try:  {}", next_try_text(e, now))?;
    writeln!(out, "recipients:")?;
    for r in &e.recipients {
        let next = match r.next_attempt {
            Some(t) if r.status == "pending" && t > unix(now) => {
                format!(
                    ", next in {}",
                    human_duration(Duration::from_secs(t - unix(now)))
                )
            }
            _ => String::new(),
        };
        writeln!(
            out,
            "  {:<9} {}  (attempts {}{next})",
            r.status, r.address, r.attempts
        )?;
        if let Some(reply) = &r.last_reply {
            let cat = r.last_category.as_deref().unwrap_or("-");
            writeln!(out, "            last: [{cat}] {reply}")?;
        }
    }
    Ok(())
}

/// Where the queue commands act: the running relay's admin API, or the spool directory.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueTarget {
    /// The admin listener of the relay, when configured.
    pub admin: Option<SocketAddr>,
    /// The spool directory.
    pub spool: PathBuf,
}

impl QueueTarget {
    /// A target for a relay with this spool and, optionally, this admin listener.
    pub fn new(spool: impl Into<PathBuf>, admin: Option<SocketAddr>) -> Self {
        Self {
            admin,
            spool: spool.into(),
        }
    }

    /// The spool and admin listener a configuration names.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self::new(cfg.spool.path.clone(), cfg.admin.as_ref().map(|a| a.bind))
    }

    /// The admin API, if it answers.
    async fn live_admin(&self) -> Option<SocketAddr> {
        let addr = self.admin?;
        match client::call(addr, Method::GET, "/healthz").await {
            Ok((StatusCode::OK, _)) => Some(addr),
            _ => None,
        }
    }
}

async fn admin_json(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<serde_json::Value, OpsError> {
    let (status, body) = client::call(addr, method, path)
        .await
        .map_err(|e| OpsError::Admin {
            addr,
            message: e.to_string(),
        })?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| OpsError::Admin {
        addr,
        message: format!("unreadable answer ({status}): {e}"),
    })?;
    if status == StatusCode::NOT_FOUND {
        return Err(OpsError::NotFound(
            path.split('/').nth(2).unwrap_or("").to_owned(),
        ));
    }
    if !status.is_success() {
        let message = value["error"]
            .as_str()
            .unwrap_or("request failed")
            .to_owned();
        return Err(OpsError::Admin { addr, message });
    }
    Ok(value)
}

fn parse_id(id: &str) -> Result<QueueId, OpsError> {
    QueueId::parse(id).ok_or_else(|| OpsError::Refused(format!("{id:?} is not a queue id")))
}

/// The queued messages, oldest first.
pub async fn entries(target: &QueueTarget) -> Result<Vec<QueueEntry>, OpsError> {
    if let Some(addr) = target.live_admin().await {
        let v = admin_json(addr, Method::GET, "/queue").await?;
        return serde_json::from_value(v).map_err(|e| OpsError::Admin {
            addr,
            message: e.to_string(),
        });
    }
    let root = target.spool.clone();
    let list = tokio::task::spawn_blocking(move || inspect(&root))
        .await
        .map_err(|e| OpsError::Refused(e.to_string()))??;
    Ok(list.iter().map(QueueEntry::from_inspected).collect())
}

/// `relay queue list`.
pub async fn list(
    target: &QueueTarget,
    now: SystemTime,
    out: &mut dyn Write,
) -> Result<(), OpsError> {
    let list = entries(target).await?;
    write_table(&list, now, out)?;
    Ok(())
}

/// `relay queue show ID`.
pub async fn show(
    target: &QueueTarget,
    id: &str,
    now: SystemTime,
    out: &mut dyn Write,
) -> Result<(), OpsError> {
    let qid = parse_id(id)?;
    let entry = if let Some(addr) = target.live_admin().await {
        let v = admin_json(addr, Method::GET, &format!("/queue/{qid}")).await?;
        serde_json::from_value(v).map_err(|e| OpsError::Admin {
            addr,
            message: e.to_string(),
        })?
    } else {
        let root = target.spool.clone();
        let found = tokio::task::spawn_blocking(move || inspect_one(&root, &qid))
            .await
            .map_err(|e| OpsError::Refused(e.to_string()))??;
        QueueEntry::from_inspected(&found.ok_or_else(|| OpsError::NotFound(id.to_owned()))?)
    };
    write_detail(&entry, now, out)?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Retry,
    Delete,
    Bounce,
}

/// `relay queue retry [ID]`: due now, ignoring the backoff.
pub async fn retry(
    target: &QueueTarget,
    id: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), OpsError> {
    let n = act(target, id, Action::Retry).await?;
    match id {
        Some(id) => writeln!(out, "{id}: will be retried now")?,
        None => writeln!(out, "{n} message(s) will be retried now")?,
    }
    Ok(())
}

/// `relay queue delete ID`: removed without a notice to the sender.
pub async fn delete(target: &QueueTarget, id: &str, out: &mut dyn Write) -> Result<(), OpsError> {
    act(target, Some(id), Action::Delete).await?;
    writeln!(out, "{id}: deleted (the sender was not notified)")?;
    Ok(())
}

/// `relay queue bounce ID`: pending recipients fail and the sender gets a notice.
pub async fn bounce(target: &QueueTarget, id: &str, out: &mut dyn Write) -> Result<(), OpsError> {
    act(target, Some(id), Action::Bounce).await?;
    writeln!(
        out,
        "{id}: pending recipients returned to the sender with a failure notice"
    )?;
    Ok(())
}

async fn act(target: &QueueTarget, id: Option<&str>, action: Action) -> Result<usize, OpsError> {
    let qid = id.map(parse_id).transpose()?;
    if let Some(addr) = target.live_admin().await {
        let (method, path) = match (action, &qid) {
            (Action::Retry, Some(id)) => (Method::POST, format!("/queue/{id}/retry")),
            (Action::Retry, None) => (Method::POST, "/queue/retry".to_owned()),
            (Action::Delete, Some(id)) => (Method::DELETE, format!("/queue/{id}")),
            (Action::Bounce, Some(id)) => (Method::POST, format!("/queue/{id}/bounce")),
            (_, None) => return Err(OpsError::Refused("a queue id is required".into())),
        };
        let v = admin_json(addr, method, &path).await?;
        let n = v["messages"].as_u64().unwrap_or(0);
        return Ok(usize::try_from(n).unwrap_or(usize::MAX));
    }
    let Some(_lock) = SpoolLock::try_acquire(&target.spool)? else {
        let how = match target.admin {
            Some(addr) => format!("its admin API at {addr} does not answer; check the relay's log"),
            None => format!(
                "add `[admin]` with `bind = \"{}\"` to its configuration and restart it, so that `relay queue` can ask it, or stop it",
                crate::admin::DEFAULT_BIND
            ),
        };
        return Err(OpsError::Refused(format!(
            "a relay is running on the spool {} (it holds the lock); {how}",
            target.spool.display()
        )));
    };
    offline(target, qid.as_ref(), action).await
}

/// Applies an action on the spool directly; the caller holds the spool lock.
async fn offline(
    target: &QueueTarget,
    id: Option<&QueueId>,
    action: Action,
) -> Result<usize, OpsError> {
    let (spool, recovered) = Spool::open(&SpoolConfig::new(&target.spool)).await?;
    let mut n = 0;
    for r in recovered.messages {
        if id.is_some_and(|id| r.message.id() != id) {
            continue;
        }
        n += 1;
        let mid = r.message.id().clone();
        let mut state = r.state;
        match action {
            Action::Retry => {
                for rs in &mut state.recipients {
                    if rs.outcome.is_none() {
                        rs.next_attempt = None;
                    }
                }
                spool.save_state(&mid, &state).await?;
            }
            Action::Delete => {
                spool.remove(&mid).await?;
                tracing::warn!(queue_id = %mid, "administrator: message deleted without notice");
            }
            Action::Bounce => {
                let env = r.message.envelope();
                let now = SystemTime::now();
                let mut notify = Vec::new();
                for i in state.pending() {
                    let wants = env.mail_from.is_some() && env.recipients[i].wants_failure_notice();
                    let rs = &mut state.recipients[i];
                    rs.next_attempt = None;
                    rs.last_reply = Some(ADMIN_BOUNCE_REPLY.into());
                    rs.last_category = Some(ADMIN_BOUNCE_CATEGORY.into());
                    rs.outcome = Some(FinalOutcome::Failed {
                        reason: ADMIN_BOUNCE_REPLY.into(),
                        category: ADMIN_BOUNCE_CATEGORY.into(),
                        expired: false,
                        notified: wants,
                        at: now,
                    });
                    if wants {
                        notify.push(i);
                    }
                }
                // The notice itself is spooled by the queue at the next start.
                state.dsn_pending.extend(notify);
                if state.is_finished() {
                    spool.remove(&mid).await?;
                } else {
                    spool.save_state(&mid, &state).await?;
                }
                tracing::warn!(queue_id = %mid, "administrator: pending recipients returned to the sender");
            }
        }
    }
    if n == 0
        && let Some(id) = id
    {
        return Err(OpsError::NotFound(id.to_string()));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(Duration::from_secs(7)), "7s");
        assert_eq!(human_duration(Duration::from_secs(724)), "12m04s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d04h"
        );
    }

    type Row<'a> = (&'a str, &'a str, u32, Option<u64>, Option<&'a str>);

    fn entry(id: &str, rcpts: &[Row<'_>]) -> QueueEntry {
        QueueEntry {
            id: id.into(),
            received_at: 1_000,
            size: 10,
            sender: "scanner@contoso.com".into(),
            client: "192.0.2.7:40000".into(),
            recipients: rcpts
                .iter()
                .map(|(a, s, n, next, cat)| RecipientEntry {
                    address: (*a).into(),
                    status: (*s).into(),
                    attempts: *n,
                    next_attempt: *next,
                    last_reply: cat.map(|c| format!("451 4.3.2 {c}")),
                    last_category: cat.map(str::to_owned),
                })
                .collect(),
            in_flight: false,
        }
    }

    #[test]
    fn table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_724);
        let a = entry(
            "AAAA",
            &[
                (
                    "a@contoso.com",
                    "pending",
                    3,
                    Some(1_964),
                    Some("throttled"),
                ),
                ("b@contoso.com", "delivered", 1, None, None),
                (
                    "c@contoso.com",
                    "pending",
                    3,
                    Some(2_000),
                    Some("throttled"),
                ),
            ],
        );
        let b = entry("BBBB", &[("d@fabrikam.com", "pending", 0, None, None)]);
        let mut out = Vec::new();
        write_table(&[a, b], now, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID    AGE     SENDER"), "{text}");
        assert!(
            lines[1].starts_with("AAAA  12m04s  scanner@contoso.com  a@contoso.com +1"),
            "{text}"
        );
        assert!(lines[1].contains("  3 "), "{text}");
        assert!(lines[1].contains("in 4m00s"), "{text}");
        assert!(lines[1].ends_with("throttled"), "{text}");
        assert!(lines[2].contains("now"), "{text}");
        assert!(lines[2].ends_with("-"), "{text}");
        assert_eq!(lines[3], "2 message(s), 3 recipient(s) pending");
        let mut out = Vec::new();
        write_table(&[], now, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "the queue is empty\n");
    }
}
