//! The queue: an in-memory index of spooled messages by next-attempt time, a bounded pool of
//! delivery workers, retry with exponential backoff and jitter, expiry, and bounces.
//!
//! Each attempt takes every pending recipient of a message, groups them by route (the
//! recipient's current route in the [`Router`]'s list, see failover below), asks the
//! [`RateLimits`] of each route's sending identity for a slot, hands each admitted group to
//! its [`Transport`], and records the outcomes in the message's [`MessageState`] (durably,
//! before the next attempt):
//!
//! - delivered: final;
//! - transient: **failover**: the recipient's next attempt uses the next route of its list
//!   at once (logged); after the last route it wraps to the first and waits
//!   `retry_initial * 2^(rounds-1)` (rounds = attempts / routes; capped at `retry_max`,
//!   ±20 % jitter, never before the route's `retry_after`), until `lifetime` after
//!   reception, then final failure (expired). The route index is kept in the recipient's
//!   state, so a restart resumes where it was. A `retry_after` also pauses the route's
//!   sending identity ([`RateLimits::pause`]): every message of that identity waits;
//! - permanent: final failure, no failover (another route would refuse it too, or worse,
//!   send what the first refused);
//! - over a rate limit, or the identity paused: no attempt is made or counted; the
//!   recipients wait until the limiter has a slot (never failed for it, but still bounded
//!   by `lifetime`).
//!
//! Recipients that fail get exactly one delivery status notification per failure batch, from
//! `<>` to the original sender, spooled under the derived id `QueueId::bounce(n)` (so a
//! restart never sends it twice); never to the null sender, so never a bounce of a bounce.
//! When every recipient is final the message files are deleted.

mod control;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use postern_ndr::BuiltDsn;
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use self::control::{ADMIN_BOUNCE_CATEGORY, ADMIN_BOUNCE_REPLY, QueueControl, QueueStopped};
use crate::delivery::{RcptOutcome, Transport, build_bounce};
use crate::ratelimit::{Admission, RateLimits};
use crate::router::Router;
use crate::spool::{
    ClientInfo, Envelope, FinalOutcome, MessageState, Recipient, RecoveredMessage, Ret, Spool,
    SpoolError, SpooledMessage,
};

/// Queue and retry settings (the `[queue]` table). Durations are strings such as `"90s"`,
/// `"15m"`, `"4h"`, `"5d"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Delivery attempts in progress at once. Default 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long a message is retried before its pending recipients fail. Default `"5d"`.
    #[serde(
        default = "default_lifetime",
        deserialize_with = "crate::config::de_duration"
    )]
    pub lifetime: Duration,
    /// The first retry delay. Default `"1m"`.
    #[serde(
        default = "default_retry_initial",
        deserialize_with = "crate::config::de_duration"
    )]
    pub retry_initial: Duration,
    /// The longest retry delay. Default `"1h"`.
    #[serde(
        default = "default_retry_max",
        deserialize_with = "crate::config::de_duration"
    )]
    pub retry_max: Duration,
    /// The name this relay gives itself in bounces (`Reporting-MTA`). Default: the host name.
    #[serde(default = "default_hostname")]
    pub hostname: String,
}

fn default_concurrency() -> usize {
    16
}
fn default_lifetime() -> Duration {
    Duration::from_secs(5 * 24 * 3600)
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(60)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(3600)
}
pub(crate) fn default_hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            lifetime: default_lifetime(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            hostname: default_hostname(),
        }
    }
}

/// The transports by route name.
pub type Transports = BTreeMap<Arc<str>, Arc<dyn Transport>>;

struct Ctx {
    spool: Arc<Spool>,
    router: Arc<Router>,
    transports: Transports,
    cfg: QueueConfig,
    control_marks: control::BounceMarks,
    limits: RateLimits,
}

/// A running queue. Dropping it does not stop it; call [`QueueHandle::shutdown`].
#[derive(Debug)]
pub struct QueueHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    control: QueueControl,
}

impl QueueHandle {
    /// Sends administrator actions (retry now, delete, bounce) to this queue.
    pub fn control(&self) -> QueueControl {
        self.control.clone()
    }

    /// Stops dispatching, waits for the attempts in progress to finish and be recorded, and
    /// returns. Queued messages stay in the spool for the next start.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the queue: takes the recovered messages, subscribes to new commits of `spool`, and
/// delivers through `transports` as `router` decides. No rate limit applies; see
/// [`start_with_limits`].
pub fn start(
    spool: Arc<Spool>,
    recovered: Vec<RecoveredMessage>,
    router: Arc<Router>,
    transports: Transports,
    cfg: QueueConfig,
) -> QueueHandle {
    start_with_limits(
        spool,
        recovered,
        router,
        transports,
        cfg,
        RateLimits::none(),
    )
}

/// [`start`], with the routes' sending identities limited (and paused after throttling)
/// by `limits`.
pub fn start_with_limits(
    spool: Arc<Spool>,
    recovered: Vec<RecoveredMessage>,
    router: Arc<Router>,
    transports: Transports,
    cfg: QueueConfig,
    limits: RateLimits,
) -> QueueHandle {
    let incoming = spool.subscribe();
    let (stop, stop_rx) = watch::channel(false);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        spool,
        router,
        transports,
        cfg,
        control_marks: control::BounceMarks::default(),
        limits,
    });
    let task = tokio::spawn(run(ctx, recovered, incoming, control_rx, stop_rx));
    QueueHandle {
        stop,
        task,
        control: QueueControl::new(control_tx),
    }
}

type Done = (SpooledMessage, MessageState, Option<SystemTime>);

async fn run(
    ctx: Arc<Ctx>,
    recovered: Vec<RecoveredMessage>,
    mut incoming: mpsc::UnboundedReceiver<SpooledMessage>,
    mut control_rx: mpsc::UnboundedReceiver<control::Command>,
    mut stop: watch::Receiver<bool>,
) {
    let mut idx = Index::default();
    let mut actions = control::Actions::default();
    let sem = Arc::new(Semaphore::new(ctx.cfg.concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut workers = JoinSet::new();

    let now = Instant::now();
    tracing::info!(messages = recovered.len(), "queue started");
    for r in recovered {
        let at = due_instant(earliest(&r.state));
        idx.push(r.message, r.state, at.max(now));
    }
    loop {
        // Dispatch everything due while there are free workers.
        let now = Instant::now();
        while let Some(Reverse((at, _))) = idx.heap.peek() {
            if *at > now {
                break;
            }
            let Ok(permit) = Arc::clone(&sem).try_acquire_owned() else {
                break;
            };
            let Some(Reverse((_, key))) = idx.heap.pop() else {
                break;
            };
            let Some((msg, state)) = idx.entries.remove(&key) else {
                continue;
            };
            actions.dispatched(msg.id());
            let ctx = Arc::clone(&ctx);
            let done_tx = done_tx.clone();
            workers.spawn(async move {
                let (msg, state, next) = attempt(&ctx, msg, state).await;
                drop(permit);
                let _ = done_tx.send((msg, state, next));
            });
        }
        let next_due = idx.heap.peek().map(|Reverse((at, _))| *at);
        let can_dispatch = sem.available_permits() > 0;
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(msg) = incoming.recv() => {
                let n = msg.envelope().recipients.len();
                idx.push(msg, MessageState::new(n), Instant::now());
            }
            Some((msg, mut state, next)) = done_rx.recv() => {
                if let Some(at) = actions.done(&ctx, &msg, &mut state, next).await {
                    idx.push(msg, state, at);
                }
            }
            Some(cmd) = control_rx.recv() => actions.apply(&ctx, &mut idx, cmd).await,
            Some(_) = workers.join_next(), if !workers.is_empty() => {}
            () = sleep_until_opt(next_due), if next_due.is_some() && can_dispatch => {}
        }
    }
    tracing::info!(
        in_progress = workers.len(),
        "queue stopping: waiting for attempts in progress"
    );
    while workers.join_next().await.is_some() {}
    tracing::info!(
        queued = idx.entries.len(),
        "queue stopped; queued messages stay in the spool"
    );
}

#[derive(Default)]
struct Index {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    entries: HashMap<u64, (SpooledMessage, MessageState)>,
    seq: u64,
}

impl Index {
    fn push(&mut self, msg: SpooledMessage, state: MessageState, at: Instant) {
        self.seq += 1;
        self.entries.insert(self.seq, (msg, state));
        self.heap.push(Reverse((at, self.seq)));
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// The earliest next attempt among pending recipients (`None`: now).
fn earliest(state: &MessageState) -> Option<SystemTime> {
    state
        .recipients
        .iter()
        .filter(|r| r.outcome.is_none())
        .map(|r| r.next_attempt)
        .min()
        .flatten()
}

fn due_instant(at: Option<SystemTime>) -> Instant {
    let now = Instant::now();
    match at.and_then(|t| t.duration_since(SystemTime::now()).ok()) {
        Some(d) => now + d,
        None => now,
    }
}

/// The delay before retry number `attempts` (1-based), with ±20 % jitter.
pub fn backoff(cfg: &QueueConfig, attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = cfg
        .retry_initial
        .saturating_mul(1u32 << exp)
        .min(cfg.retry_max);
    let jitter: f64 = rand::random_range(0.8..1.2);
    base.mul_f64(jitter)
}

/// One attempt over every pending recipient; returns the new state and when to try again
/// (`None`: finished and removed from the spool).
async fn attempt(
    ctx: &Ctx,
    msg: SpooledMessage,
    mut state: MessageState,
) -> (SpooledMessage, MessageState, Option<SystemTime>) {
    let id = msg.id().clone();
    let env = msg.envelope();
    if !state.dsn_pending.is_empty() {
        // Recovered with a notice decided but maybe not spooled.
        if let Err(e) = send_dsn(ctx, &msg, &mut state).await {
            tracing::error!(queue_id = %id, error = %e, "cannot spool delivery status notification; will retry");
            return (msg, state, Some(SystemTime::now() + ctx.cfg.retry_initial));
        }
    }
    let now = SystemTime::now();
    let admin_bounce = ctx.control_marks.take(&id);
    let due: Vec<usize> = state
        .pending()
        .into_iter()
        .filter(|&i| admin_bounce || state.recipients[i].next_attempt.is_none_or(|t| t <= now))
        .collect();
    let metrics = ctx.spool.metrics();
    let mut groups: BTreeMap<Arc<str>, Vec<usize>> = BTreeMap::new();
    let mut outcomes: Vec<(usize, Option<Arc<str>>, RcptOutcome)> = Vec::new();
    for &i in &due {
        if admin_bounce {
            let o = RcptOutcome::permanent(ADMIN_BOUNCE_REPLY, ADMIN_BOUNCE_CATEGORY);
            outcomes.push((i, None, o));
            continue;
        }
        let routes = ctx.router.routes_for(env, i);
        let route =
            (!routes.is_empty()).then(|| &routes[state.recipients[i].route_index % routes.len()]);
        match route {
            Some(route) if ctx.transports.contains_key(route) => {
                groups.entry(Arc::clone(route)).or_default().push(i);
            }
            other => outcomes.push((
                i,
                other.cloned(),
                RcptOutcome::permanent(
                    "550 5.4.4 no route configured for this recipient",
                    "no_route",
                ),
            )),
        }
    }
    // Rate limits: a group over its identity's limit waits for a slot, without an attempt.
    // A group whose identity is paused by the upstream fails over to the next route (each
    // route at most once per attempt); the last one tried keeps it waiting.
    let now = SystemTime::now();
    let mut admitted = Vec::new();
    let mut waiting: Vec<(usize, Arc<str>, SystemTime, String)> = Vec::new();
    let mut skips: HashMap<usize, usize> = HashMap::new();
    while !groups.is_empty() {
        let mut regroup: BTreeMap<Arc<str>, Vec<usize>> = BTreeMap::new();
        for (route, rcpts) in std::mem::take(&mut groups) {
            match ctx.limits.admit(&route, rcpts.len(), now) {
                Admission::Go(permit) => admitted.push((route, rcpts, permit)),
                Admission::Wait {
                    until,
                    reason,
                    paused,
                } => {
                    let wait = until.duration_since(now).unwrap_or_default();
                    for i in rcpts {
                        let routes = ctx.router.routes_for(env, i);
                        let skipped = skips.entry(i).or_default();
                        let r = &mut state.recipients[i];
                        let next_index =
                            (r.route_index % routes.len().max(1) + 1) % routes.len().max(1);
                        if paused
                            && *skipped + 1 < routes.len()
                            && ctx.transports.contains_key(&routes[next_index])
                        {
                            *skipped += 1;
                            r.route_index = next_index;
                            let next = &routes[next_index];
                            tracing::info!(queue_id = %id, rcpt = %env.recipients[i].address, route = %route, to_route = %next, %reason, "route paused: failing over to the next route");
                            regroup.entry(Arc::clone(next)).or_default().push(i);
                            continue;
                        }
                        tracing::info!(queue_id = %id, route = %route, rcpt = %env.recipients[i].address, %reason, wait_ms = wait.as_millis() as u64, "rate limited: queued");
                        waiting.push((i, Arc::clone(&route), until, reason.clone()));
                    }
                }
            }
        }
        groups = regroup;
    }
    let in_flight: Vec<usize> = admitted
        .iter()
        .flat_map(|(_, rcpts, _)| rcpts.iter().copied())
        .collect();
    if !in_flight.is_empty() {
        ctx.spool.mark_in_flight(&id, &in_flight).await;
    }
    for (route, rcpts, permit) in admitted {
        let transport = &ctx.transports[&route];
        let started = Instant::now();
        let report = transport.deliver(&msg, &rcpts).await;
        metrics.upstream_latency(&route, started.elapsed());
        let mut submitted = 0;
        let mut pause: Option<(Duration, String)> = None;
        for &i in &rcpts {
            let o = report.get(i).cloned().unwrap_or_else(|| {
                RcptOutcome::transient(format!("route {route} reported no outcome"), "internal")
            });
            match &o {
                RcptOutcome::Transient {
                    retry_after: Some(d),
                    reason,
                    ..
                } => {
                    if pause.as_ref().is_none_or(|(p, _)| p < d) {
                        pause = Some((*d, reason.clone()));
                    }
                }
                RcptOutcome::Transient { .. } => {}
                _ => submitted += 1,
            }
            outcomes.push((i, Some(Arc::clone(&route)), o));
        }
        ctx.limits.settle(permit, submitted);
        if let Some((d, reason)) = pause {
            ctx.limits.pause(&route, SystemTime::now() + d, &reason);
        }
    }
    ctx.limits.persist().await;

    let now = SystemTime::now();
    let expires = env.received_at + ctx.cfg.lifetime;
    let mut failed: Vec<(usize, String, bool)> = Vec::new();
    for (i, route, outcome) in outcomes {
        let rcpt = &env.recipients[i].address;
        let route = route.as_deref().unwrap_or("-");
        let r = &mut state.recipients[i];
        r.attempts += 1;
        if route != "-" {
            r.last_route = Some(route.to_owned());
        }
        match outcome {
            RcptOutcome::Delivered { reply } => {
                tracing::info!(queue_id = %id, from = env.mail_from_display(), rcpt, route, attempts = r.attempts, %reply, "delivered");
                metrics.delivered(route);
                r.last_reply = Some(reply.clone());
                r.last_category = None;
                r.next_attempt = None;
                r.outcome = Some(FinalOutcome::Delivered { reply, at: now });
            }
            RcptOutcome::Transient {
                reason,
                category,
                retry_after,
            } => {
                r.last_reply = Some(reason.clone());
                r.last_category = Some(category.clone());
                if now >= expires {
                    tracing::warn!(queue_id = %id, rcpt, route, attempts = r.attempts, %reason, category, "failed: retry period expired");
                    metrics.failed(route, &category, true);
                    failed.push((i, reason, true));
                } else {
                    // Failover: the next route of the list at once; after the last, the
                    // first again, with backoff.
                    let routes = ctx.router.routes_for(env, i);
                    let n = routes.len().max(1);
                    r.route_index = (r.route_index % n + 1) % n;
                    let delay = if r.route_index == 0 {
                        let rounds = r.attempts.div_ceil(u32::try_from(n).unwrap_or(u32::MAX));
                        backoff(&ctx.cfg, rounds).max(retry_after.unwrap_or_default())
                    } else {
                        let to = &routes[r.route_index];
                        tracing::warn!(queue_id = %id, rcpt, route, to_route = %to, attempts = r.attempts, %reason, category, "failing over to the next route");
                        Duration::ZERO
                    };
                    let next = (now + delay).min(expires);
                    r.next_attempt = Some(next);
                    metrics.deferred(route, &category);
                    tracing::warn!(queue_id = %id, rcpt, route, attempts = r.attempts, %reason, category, retry_in_s = delay.as_secs(), "deferred");
                }
            }
            RcptOutcome::Permanent {
                reason,
                category,
                remedy,
            } => {
                r.last_reply = Some(reason.clone());
                r.last_category = Some(category.clone());
                metrics.failed(route, &category, false);
                match &remedy {
                    Some(remedy) => {
                        tracing::error!(queue_id = %id, rcpt, route, %reason, category, remedy, "failed permanently")
                    }
                    None => {
                        tracing::warn!(queue_id = %id, rcpt, route, %reason, category, "failed permanently")
                    }
                }
                failed.push((i, reason, false));
            }
        }
    }
    // Rate-limited recipients: queued for the limiter's slot, still bounded by the lifetime.
    for (i, route, until, reason) in waiting {
        let rcpt = &env.recipients[i].address;
        let r = &mut state.recipients[i];
        if now >= expires {
            let reason = r.last_reply.clone().unwrap_or(reason);
            tracing::warn!(queue_id = %id, rcpt, route = %route, %reason, "failed: retry period expired while rate limited");
            metrics.failed(&route, "expired", true);
            failed.push((i, reason, true));
        } else {
            r.next_attempt = Some(until.min(expires));
            r.last_reply = Some(reason);
            r.last_category = Some("rate_limited".into());
            metrics.deferred(&route, "rate_limited");
        }
    }
    // Recipients whose lifetime ran out without an attempt now (e.g. retry scheduled late).
    for i in state.pending() {
        if now >= expires
            && !failed.iter().any(|f| f.0 == i)
            && state.recipients[i].attempts > 0
            && !due.contains(&i)
        {
            let reason = state.recipients[i]
                .last_reply
                .clone()
                .unwrap_or_else(|| "retry period expired".into());
            let category = state.recipients[i].last_category.as_deref();
            metrics.failed("-", category.unwrap_or("expired"), true);
            failed.push((i, reason, true));
        }
    }
    let mut notify = Vec::new();
    for (i, reason, expired) in &failed {
        let wants = env.mail_from.is_some() && env.recipients[*i].wants_failure_notice();
        let r = &mut state.recipients[*i];
        r.next_attempt = None;
        r.outcome = Some(FinalOutcome::Failed {
            reason: reason.clone(),
            category: r.last_category.clone().unwrap_or_else(|| "expired".into()),
            expired: *expired,
            notified: wants,
            at: now,
        });
        if wants {
            notify.push(*i);
        } else if env.mail_from.is_none() {
            tracing::info!(queue_id = %id, rcpt = %env.recipients[*i].address, "no failure notice: null sender");
        }
    }
    if !notify.is_empty() {
        state.dsn_pending = notify;
        let r = match ctx.spool.save_state(&id, &state).await {
            Ok(()) => send_dsn(ctx, &msg, &mut state).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::error!(queue_id = %id, error = %e, "cannot spool delivery status notification; will retry");
            return (msg, state, Some(SystemTime::now() + ctx.cfg.retry_initial));
        }
    }
    if state.is_finished() {
        if let Err(e) = ctx.spool.remove(&id).await {
            tracing::error!(queue_id = %id, error = %e, "cannot remove finished message");
        }
        tracing::info!(queue_id = %id, "message finished");
        return (msg, state, None);
    }
    if let Err(e) = ctx.spool.save_state(&id, &state).await {
        tracing::error!(queue_id = %id, error = %e, "cannot record delivery state; recipients may be attempted again");
    }
    let next = earliest(&state).unwrap_or(now);
    (msg, state, Some(next))
}

/// Spools the notice for `state.dsn_pending` (unless a previous run already did) and clears
/// it.
async fn send_dsn(
    ctx: &Ctx,
    msg: &SpooledMessage,
    state: &mut MessageState,
) -> Result<(), SpoolError> {
    let env = msg.envelope();
    let bounce_id = msg.id().bounce(state.dsn_seq);
    if env.mail_from.is_some() && !ctx.spool.contains(&bounce_id).await {
        let original = original_for_dsn(msg).await;
        let built = build_bounce(
            msg.id(),
            env,
            state,
            &original,
            &ctx.cfg.hostname,
            SystemTime::now(),
        );
        match built {
            Ok(Some(dsn)) => {
                let client = ClientInfo::new(
                    std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    ctx.cfg.hostname.clone(),
                    "bounce",
                );
                // From the null sender (`BuiltDsn::MAIL_FROM`), so it never bounces again.
                const _: () = assert!(BuiltDsn::MAIL_FROM.is_empty());
                let bounce_env =
                    Envelope::new(None, vec![Recipient::new(dsn.rcpt_to.clone())], client);
                ctx.spool
                    .store(bounce_id.clone(), bounce_env, dsn.message)
                    .await?;
                ctx.spool.metrics().bounce_queued();
                tracing::info!(queue_id = %msg.id(), bounce_id = %bounce_id, to = %dsn.rcpt_to, recipients = state.dsn_pending.len(), "failure notice queued");
            }
            Ok(None) => {
                tracing::info!(queue_id = %msg.id(), "no failure notice: no recipient asked for one");
            }
            Err(e) => {
                // Inputs the builder refuses do not change on a retry: give up on the notice
                // (the failures themselves are final and logged).
                tracing::error!(queue_id = %msg.id(), from = env.mail_from_display(), error = %e, "cannot build failure notice; the sender is not notified");
                for &i in &state.dsn_pending {
                    if let Some(FinalOutcome::Failed { notified, .. }) =
                        &mut state.recipients[i].outcome
                    {
                        *notified = false;
                    }
                }
            }
        }
    }
    state.dsn_seq += 1;
    state.dsn_pending.clear();
    Ok(())
}

/// The original message for the notice: its first 64 KiB (the header block is taken from
/// it), or for `RET=FULL` up to one byte past the full-return cap (a longer message returns
/// its headers only).
async fn original_for_dsn(msg: &SpooledMessage) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let limit = match msg.envelope().ret {
        Some(Ret::Full) => postern_ndr::DEFAULT_FULL_RETURN_CAP + 1,
        _ => 64 * 1024,
    };
    let mut out = Vec::new();
    if let Ok(r) = msg.open_body().await {
        let _ = r.take(limit as u64).read_to_end(&mut out).await;
    }
    out
}
