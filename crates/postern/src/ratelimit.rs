//! Rate limits per sending identity: what keeps a mailbox under Exchange Online's limits
//! (spec E.1: 30 messages a minute, 10,000 recipients in a sliding 24 hours) by *queueing*
//! mail, never by failing it.
//!
//! Every route maps to a sending identity (a mailbox for client submission, the account for
//! HVE, the resource for ACS, app + mailbox for Graph, the route itself otherwise; see
//! [`IdentityLimits::key`]); routes that share an identity share its limits. Before an
//! attempt the queue asks [`RateLimits::admit`]; over a limit (or while the identity is
//! paused) the answer is [`Admission::Wait`] with the instant a slot frees, and the
//! recipients are rescheduled for it without counting an attempt. Throttling replies
//! (`432 4.3.2`, `554 5.2.0 ...SubmissionQuotaExceededException`, `550 5.2.25x`,
//! `451 4.7.500`, Graph `429` with `Retry-After`) come back as a transient outcome's
//! `retry_after`, and [`RateLimits::pause`] holds the whole identity until then.
//!
//! Both limits are sliding windows (at most `n` in any window), not refilling buckets: a
//! bucket allows a burst of `n` right after `n` (so `2n` in one window), which is exactly what
//! Exchange's per-minute counter throttles.
//!
//! The recipient budget and pauses survive restarts: they are kept in
//! `<spool>/ratelimits.json` ([`STATE_FILE`]), replaced atomically (temporary file, fsync,
//! rename, directory fsync) after each change. The per-minute window is not persisted (a
//! restart takes longer than most of it).
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use postern::ratelimit::{Admission, IdentityLimits, RateLimits};
//!
//! let limits = IdentityLimits::new("mailbox:scanner@contoso.com")
//!     .messages(2, Duration::from_secs(60));
//! let rl = RateLimits::open(None, [("m365".to_owned(), limits)], SystemTime::now());
//! let now = SystemTime::now();
//! assert!(matches!(rl.admit("m365", 1, now), Admission::Go(_)));
//! assert!(matches!(rl.admit("m365", 1, now), Admission::Go(_)));
//! let Admission::Wait { until, .. } = rl.admit("m365", 1, now) else { panic!() };
//! assert_eq!(until, now + Duration::from_secs(60));
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file, in the spool directory, that keeps recipient budgets and pauses.
pub const STATE_FILE: &str = "ratelimits.json";
/// Default window of `max_messages_per_minute`.
pub const DEFAULT_MESSAGE_WINDOW: Duration = Duration::from_secs(60);
/// Default window of `max_recipients_per_day`.
pub const DEFAULT_RECIPIENT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Default pause after a throttling reply that names no delay.
pub const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(60);
/// Pause after `550 5.2.25x` (Exchange stopped the mailbox for a period it does not say).
pub const SUSPENDED_PAUSE: Duration = Duration::from_secs(3600);
/// Exchange Online's message rate for SMTP AUTH client submission (spec E.1).
pub const EXO_MESSAGES_PER_MINUTE: u32 = 30;
/// Exchange Online's recipient budget per mailbox and 24 hours (spec E.1).
pub const EXO_RECIPIENTS_PER_DAY: u32 = 10_000;

/// The limits of one sending identity, resolved from a route's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdentityLimits {
    /// The identity: `mailbox:<address>`, `hve:<account>`, `acs:<resource>`,
    /// `graph:<identity>:<mailbox>`, or `route:<name>`. Routes with the same key share one
    /// limiter (with the smaller of their limits).
    pub key: String,
    /// At most this many messages in any `message_window` (`None`: no limit).
    pub max_messages: Option<u32>,
    /// The message window (default one minute).
    pub message_window: Duration,
    /// At most this many recipients in any `recipient_window` (`None`: no limit).
    pub max_recipients: Option<u32>,
    /// The recipient window (default 24 hours).
    pub recipient_window: Duration,
}

impl IdentityLimits {
    /// No limit (pauses after throttling replies still apply).
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            max_messages: None,
            message_window: DEFAULT_MESSAGE_WINDOW,
            max_recipients: None,
            recipient_window: DEFAULT_RECIPIENT_WINDOW,
        }
    }

    /// At most `n` messages per `window` (`0`: no limit).
    #[must_use]
    pub fn messages(mut self, n: u32, window: Duration) -> Self {
        self.max_messages = (n > 0).then_some(n);
        self.message_window = window;
        self
    }

    /// At most `n` recipients per `window` (`0`: no limit).
    #[must_use]
    pub fn recipients(mut self, n: u32, window: Duration) -> Self {
        self.max_recipients = (n > 0).then_some(n);
        self.recipient_window = window;
        self
    }

    fn merge(&mut self, other: &Self) {
        let min = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_messages = min(self.max_messages, other.max_messages);
        self.max_recipients = min(self.max_recipients, other.max_recipients);
        self.message_window = self.message_window.max(other.message_window);
        self.recipient_window = self.recipient_window.max(other.recipient_window);
    }
}

/// The answer of [`RateLimits::admit`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Admission {
    /// Go ahead; hand the permit back to [`RateLimits::settle`] with the outcome.
    Go(Permit),
    /// Not before `until`.
    Wait {
        /// When a slot frees (or the pause ends).
        until: SystemTime,
        /// Why, for the log and the recipient's `last_reply`.
        reason: String,
        /// Whether the identity is paused by the upstream (a throttling reply), rather than
        /// held back by its own limits: the queue then fails over to the next route.
        paused: bool,
    },
}

/// A slot taken by [`RateLimits::admit`].
#[derive(Debug)]
pub struct Permit {
    limiter: Option<Arc<Limiter>>,
    at: SystemTime,
    rcpts: u32,
}

#[derive(Debug, Default)]
struct Usage {
    sends: VecDeque<SystemTime>,
    /// `(when, recipients)`, oldest first; close entries are merged.
    recipients: VecDeque<(SystemTime, u32)>,
    paused_until: Option<SystemTime>,
    pause_reason: Option<String>,
}

#[derive(Debug)]
struct Limiter {
    limits: IdentityLimits,
    usage: Mutex<Usage>,
}

impl Limiter {
    fn usage(&self) -> MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Usage {
    fn prune(&mut self, now: SystemTime, l: &IdentityLimits) {
        while self
            .sends
            .front()
            .is_some_and(|t| *t + l.message_window <= now)
        {
            self.sends.pop_front();
        }
        while self
            .recipients
            .front()
            .is_some_and(|(t, _)| *t + l.recipient_window <= now)
        {
            self.recipients.pop_front();
        }
        if self.paused_until.is_some_and(|p| p <= now) {
            self.paused_until = None;
            self.pause_reason = None;
        }
    }

    fn recipients_used(&self) -> u64 {
        self.recipients.iter().map(|(_, n)| u64::from(*n)).sum()
    }
}

#[derive(Debug)]
struct Inner {
    by_route: BTreeMap<String, Arc<Limiter>>,
    by_key: BTreeMap<String, Arc<Limiter>>,
    file: Option<PathBuf>,
    dirty: std::sync::atomic::AtomicBool,
    write: Mutex<()>,
}

/// The limiters of every route, and their durable state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RateLimits {
    inner: Arc<Inner>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileState {
    version: u32,
    identities: BTreeMap<String, FileIdentity>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileIdentity {
    /// `(unix milliseconds, recipients)`.
    #[serde(default)]
    recipients: Vec<(u64, u32)>,
    #[serde(default)]
    paused_until: Option<u64>,
    #[serde(default)]
    pause_reason: Option<String>,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl RateLimits {
    /// No route has a limit (pauses are not kept either).
    pub fn none() -> Self {
        Self::open(None, std::iter::empty(), SystemTime::now())
    }

    /// Limiters for `routes` (route name, its identity's limits), with the durable state
    /// read from `file` (when given; a missing file is an empty state, an unreadable one is
    /// logged and replaced).
    pub fn open(
        file: Option<PathBuf>,
        routes: impl IntoIterator<Item = (String, IdentityLimits)>,
        now: SystemTime,
    ) -> Self {
        let mut merged: BTreeMap<String, IdentityLimits> = BTreeMap::new();
        let routes: Vec<(String, IdentityLimits)> = routes.into_iter().collect();
        for (_, l) in &routes {
            merged
                .entry(l.key.clone())
                .and_modify(|m| m.merge(l))
                .or_insert_with(|| l.clone());
        }
        let saved = file.as_deref().map(load).unwrap_or_default();
        let by_key: BTreeMap<String, Arc<Limiter>> = merged
            .into_iter()
            .map(|(key, limits)| {
                let mut usage = Usage::default();
                if let Some(s) = saved.identities.get(&key) {
                    usage.recipients = s.recipients.iter().map(|(t, n)| (from_ms(*t), *n)).collect();
                    usage.paused_until = s.paused_until.map(from_ms);
                    usage.pause_reason.clone_from(&s.pause_reason);
                    usage.prune(now, &limits);
                    if usage.paused_until.is_some() || !usage.recipients.is_empty() {
                        tracing::info!(identity = %key, recipients_used = usage.recipients_used(), paused_until_unix = usage.paused_until.map(|t| ms(t) / 1000), "rate limit state restored");
                    }
                }
                let limiter = Arc::new(Limiter {
                    limits,
                    usage: Mutex::new(usage),
                });
                (key, limiter)
            })
            .collect();
        let by_route = routes
            .into_iter()
            .filter_map(|(route, l)| by_key.get(&l.key).map(|x| (route, Arc::clone(x))))
            .collect();
        Self {
            inner: Arc::new(Inner {
                by_route,
                by_key,
                file,
                dirty: std::sync::atomic::AtomicBool::new(false),
                write: Mutex::new(()),
            }),
        }
    }

    /// The limits in force for `route` (merged over routes sharing its identity).
    pub fn limits(&self, route: &str) -> Option<&IdentityLimits> {
        self.inner.by_route.get(route).map(|l| &l.limits)
    }

    /// Recipients counted against `route`'s identity in its current window, at `now`.
    pub fn recipients_used(&self, route: &str, now: SystemTime) -> u64 {
        self.inner.by_route.get(route).map_or(0, |l| {
            let mut u = l.usage();
            u.prune(now, &l.limits);
            u.recipients_used()
        })
    }

    /// Until when `route`'s identity is paused, if it is at `now`.
    pub fn paused_until(&self, route: &str, now: SystemTime) -> Option<SystemTime> {
        let l = self.inner.by_route.get(route)?;
        let mut u = l.usage();
        u.prune(now, &l.limits);
        u.paused_until
    }

    /// Takes a slot for one message to `rcpts` recipients through `route` at `now`, or says
    /// when to come back. A message with more recipients than the whole budget goes when
    /// the window is empty (it could never fit otherwise).
    pub fn admit(&self, route: &str, rcpts: usize, now: SystemTime) -> Admission {
        let rcpts = u32::try_from(rcpts).unwrap_or(u32::MAX);
        let Some(l) = self.inner.by_route.get(route) else {
            return Admission::Go(Permit {
                limiter: None,
                at: now,
                rcpts,
            });
        };
        let lim = &l.limits;
        let mut u = l.usage();
        u.prune(now, lim);
        if let Some(p) = u.paused_until {
            return Admission::Wait {
                until: p,
                reason: format!(
                    "sending identity {} paused after a throttling reply ({})",
                    lim.key,
                    u.pause_reason.as_deref().unwrap_or("throttled")
                ),
                paused: true,
            };
        }
        if let Some(max) = lim.max_messages {
            let max = max as usize;
            if u.sends.len() >= max {
                let until = u.sends[u.sends.len() - max] + lim.message_window;
                return Admission::Wait {
                    until,
                    reason: format!(
                        "sending identity {} at its limit of {max} messages per {}s; queued",
                        lim.key,
                        lim.message_window.as_secs_f32()
                    ),
                    paused: false,
                };
            }
        }
        if let Some(max) = lim.max_recipients {
            let used = u.recipients_used();
            let need = u64::from(rcpts);
            let max64 = u64::from(max);
            if used > 0 && used + need > max64 {
                let mut left = used;
                let mut until = now;
                for (t, n) in &u.recipients {
                    left -= u64::from(*n);
                    until = *t + lim.recipient_window;
                    if left + need <= max64 {
                        break;
                    }
                }
                return Admission::Wait {
                    until,
                    reason: format!(
                        "sending identity {} used {used} of its {max} recipients per {}h; queued",
                        lim.key,
                        lim.recipient_window.as_secs() / 3600
                    ),
                    paused: false,
                };
            }
        }
        if lim.max_messages.is_some() {
            u.sends.push_back(now);
        }
        if lim.max_recipients.is_some() {
            // Entries closer than a thousandth of the window are merged: the file stays small.
            let merge = lim.recipient_window / 1000;
            match u.recipients.back_mut() {
                Some((t, n)) if now >= *t && now.duration_since(*t).unwrap_or_default() < merge => {
                    *n = n.saturating_add(rcpts);
                }
                _ => u.recipients.push_back((now, rcpts)),
            }
            self.inner
                .dirty
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Admission::Go(Permit {
            limiter: Some(Arc::clone(l)),
            at: now,
            rcpts,
        })
    }

    /// Gives back what an attempt did not use: recipients that were not submitted
    /// (transient failures) no longer count against the budget, and the message slot is
    /// returned when nothing at all was submitted.
    pub fn settle(&self, permit: Permit, submitted_rcpts: usize) {
        let Some(l) = permit.limiter else { return };
        let submitted = u32::try_from(submitted_rcpts).unwrap_or(u32::MAX);
        let refund = permit.rcpts.saturating_sub(submitted);
        if refund == 0 {
            return;
        }
        let mut u = l.usage();
        if l.limits.max_recipients.is_some()
            && let Some((_, n)) = u.recipients.iter_mut().rev().find(|(t, _)| *t <= permit.at)
        {
            *n = n.saturating_sub(refund);
            self.inner
                .dirty
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if submitted == 0
            && let Some(pos) = u.sends.iter().rposition(|t| *t == permit.at)
        {
            u.sends.remove(pos);
        }
    }

    /// Holds every message of `route`'s identity until `until` (a throttling reply or a
    /// `Retry-After`); an earlier pause never shortens a later one.
    pub fn pause(&self, route: &str, until: SystemTime, reason: &str) {
        let Some(l) = self.inner.by_route.get(route) else {
            return;
        };
        let mut u = l.usage();
        if u.paused_until.is_none_or(|p| p < until) {
            u.paused_until = Some(until);
            u.pause_reason = Some(reason.to_owned());
            self.inner
                .dirty
                .store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(identity = %l.limits.key, route, reason, pause_s = until.duration_since(SystemTime::now()).unwrap_or_default().as_secs(), "sending identity paused");
        }
    }

    /// Writes the durable state if it changed (atomically; on a blocking thread). Errors are
    /// logged: a lost update only makes the relay forget part of a budget.
    pub async fn persist(&self) {
        if self.inner.file.is_none() || !self.inner.dirty.load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.persist_blocking()).await;
    }

    fn persist_blocking(&self) {
        let Some(path) = &self.inner.file else { return };
        let _turn = self
            .inner
            .write
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Cleared before the snapshot: a change made after it marks the state dirty again.
        if !self
            .inner
            .dirty
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let now = SystemTime::now();
        let mut state = FileState {
            version: 1,
            identities: BTreeMap::new(),
        };
        for (key, l) in &self.inner.by_key {
            let mut u = l.usage();
            u.prune(now, &l.limits);
            if u.recipients.is_empty() && u.paused_until.is_none() {
                continue;
            }
            state.identities.insert(
                key.clone(),
                FileIdentity {
                    recipients: u
                        .recipients
                        .iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(t, n)| (ms(*t), *n))
                        .collect(),
                    paused_until: u.paused_until.map(ms),
                    pause_reason: u.pause_reason.clone(),
                },
            );
        }
        if let Err(e) = write_atomically(path, &state) {
            self.inner
                .dirty
                .store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::error!(path = %path.display(), error = %e, "cannot save the rate limit state");
        }
    }
}

fn load(path: &Path) -> FileState {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<FileState>(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "rate limit state unreadable: starting with empty budgets");
                FileState::default()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState::default(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the rate limit state: starting with empty budgets");
            FileState::default()
        }
    }
}

fn write_atomically(path: &Path, state: &FileState) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);

    fn one(l: IdentityLimits, file: Option<PathBuf>, now: SystemTime) -> RateLimits {
        RateLimits::open(file, [("r".to_owned(), l)], now)
    }

    fn wait(a: Admission) -> SystemTime {
        match a {
            Admission::Wait { until, .. } => until,
            Admission::Go(_) => panic!("admitted"),
        }
    }

    #[test]
    fn message_window_slides() {
        let t0 = UNIX_EPOCH + DAY;
        let rl = one(IdentityLimits::new("k").messages(3, MIN), None, t0);
        for s in 0..3 {
            assert!(matches!(
                rl.admit("r", 1, t0 + Duration::from_secs(s * 10)),
                Admission::Go(_)
            ));
        }
        // The 4th waits until the 1st leaves the window, not for a whole new minute.
        assert_eq!(
            wait(rl.admit("r", 1, t0 + Duration::from_secs(30))),
            t0 + MIN
        );
        assert!(matches!(rl.admit("r", 1, t0 + MIN), Admission::Go(_)));
        assert_eq!(
            wait(rl.admit("r", 1, t0 + MIN)),
            t0 + MIN + Duration::from_secs(10)
        );
        // Unknown routes are never limited.
        assert!(matches!(rl.admit("other", 1000, t0), Admission::Go(_)));
    }

    #[test]
    fn recipient_budget_refunds_and_oversized_messages() {
        let t0 = UNIX_EPOCH + DAY;
        let rl = one(IdentityLimits::new("k").recipients(10, DAY), None, t0);
        let Admission::Go(p) = rl.admit("r", 6, t0) else {
            panic!()
        };
        let t1 = t0 + Duration::from_secs(3600);
        let Admission::Go(p2) = rl.admit("r", 4, t1) else {
            panic!()
        };
        rl.settle(p, 6);
        assert_eq!(rl.recipients_used("r", t1), 10);
        // Full: the next recipient waits until the first 6 leave the window.
        assert_eq!(wait(rl.admit("r", 1, t1)), t0 + DAY);
        // Two of the 4 failed transiently: given back.
        rl.settle(p2, 2);
        assert_eq!(rl.recipients_used("r", t1), 8);
        assert!(matches!(rl.admit("r", 2, t1), Admission::Go(_)));
        // A message larger than the budget waits for an empty window, then goes.
        assert_eq!(wait(rl.admit("r", 50, t1)), t1 + DAY);
        assert!(matches!(rl.admit("r", 50, t1 + DAY), Admission::Go(_)));
    }

    #[test]
    fn pauses_and_shared_identities() {
        let t0 = UNIX_EPOCH + DAY;
        let rl = RateLimits::open(
            None,
            [
                (
                    "a".to_owned(),
                    IdentityLimits::new("mailbox:x").messages(30, MIN),
                ),
                (
                    "b".to_owned(),
                    IdentityLimits::new("mailbox:x").messages(5, MIN),
                ),
                ("c".to_owned(), IdentityLimits::new("route:c")),
            ],
            t0,
        );
        assert_eq!(rl.limits("a").unwrap().max_messages, Some(5));
        rl.pause("b", t0 + MIN, "432 4.3.2");
        assert_eq!(wait(rl.admit("a", 1, t0)), t0 + MIN);
        // A shorter pause does not shorten it.
        rl.pause("a", t0 + Duration::from_secs(5), "429");
        assert_eq!(rl.paused_until("a", t0), Some(t0 + MIN));
        assert!(matches!(rl.admit("c", 1, t0), Admission::Go(_)));
        assert!(matches!(rl.admit("a", 1, t0 + MIN), Admission::Go(_)));
    }

    #[tokio::test]
    async fn budget_and_pause_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(STATE_FILE);
        let now = SystemTime::now();
        let l = IdentityLimits::new("mailbox:x").recipients(10, DAY);
        let rl = one(l.clone(), Some(file.clone()), now);
        let Admission::Go(_) = rl.admit("r", 7, now) else {
            panic!()
        };
        rl.pause("r", now + MIN, "554 5.2.0 quota");
        rl.persist().await;
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("mailbox:x"), "{text}");
        let again = one(l, Some(file.clone()), now);
        assert_eq!(again.recipients_used("r", now), 7);
        assert!(again.paused_until("r", now).is_some());
        // A corrupt file is not fatal.
        std::fs::write(&file, "{").unwrap();
        let fresh = one(IdentityLimits::new("mailbox:x"), Some(file), now);
        assert_eq!(fresh.recipients_used("r", now), 0);
    }
}
