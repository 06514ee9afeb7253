//! Administrator actions on a running queue: retry now, delete, bounce.
//!
//! The queue's index lives in its run loop, so actions travel to it as commands over a
//! channel ([`QueueControl`]) and are applied between dispatches. A message whose attempt is
//! in progress cannot be touched mid-attempt: the action is remembered and applied when the
//! attempt's outcome is recorded (a delete then removes whatever is left; a retry or bounce
//! makes it due at once).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Ctx, Index};
use crate::spool::{MessageState, QueueId, SpooledMessage};

/// The reply a recipient bounced by the administrator fails with.
pub const ADMIN_BOUNCE_REPLY: &str = "550 5.3.0 Returned to the sender by the relay administrator";
/// The failure category of recipients bounced by the administrator.
pub const ADMIN_BOUNCE_CATEGORY: &str = "admin_bounce";

/// The queue is not running (stopped, or stopping), so it cannot take an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the queue is not running")]
#[non_exhaustive]
pub struct QueueStopped;

pub(super) enum Command {
    Retry(Option<QueueId>, oneshot::Sender<usize>),
    Delete(QueueId, oneshot::Sender<bool>),
    Bounce(QueueId, oneshot::Sender<bool>),
}

/// Sends administrator actions to a running queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct QueueControl {
    tx: mpsc::UnboundedSender<Command>,
}

impl QueueControl {
    pub(super) fn new(tx: mpsc::UnboundedSender<Command>) -> Self {
        Self { tx }
    }

    async fn ask<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, QueueStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(cmd(reply)).map_err(|_| QueueStopped)?;
        rx.await.map_err(|_| QueueStopped)
    }

    /// Makes the pending recipients of `id` (or of every message, with `None`) due now,
    /// ignoring their backoff. Returns how many messages were found.
    pub async fn retry(&self, id: Option<&QueueId>) -> Result<usize, QueueStopped> {
        let id = id.cloned();
        self.ask(|r| Command::Retry(id, r)).await
    }

    /// Removes `id` from the queue and the spool without notifying anyone. Returns whether
    /// the queue had it.
    pub async fn delete(&self, id: &QueueId) -> Result<bool, QueueStopped> {
        let id = id.clone();
        self.ask(|r| Command::Delete(id, r)).await
    }

    /// Fails every pending recipient of `id` now and sends the sender a failure notice (as
    /// for a permanent refusal, with [`ADMIN_BOUNCE_REPLY`]). Returns whether the queue had
    /// it.
    pub async fn bounce(&self, id: &QueueId) -> Result<bool, QueueStopped> {
        let id = id.clone();
        self.ask(|r| Command::Bounce(id, r)).await
    }
}

/// Messages marked for bouncing, read by the next attempt. Shared with the workers.
#[derive(Debug, Default)]
pub(super) struct BounceMarks(Mutex<HashSet<QueueId>>);

impl BounceMarks {
    /// Whether `id` is marked; unmarks it.
    pub(super) fn take(&self, id: &QueueId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    fn mark(&self, id: QueueId) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Deferred {
    Retry,
    Delete,
}

/// The run loop's bookkeeping for actions: which messages are in an attempt, and what to do
/// when their attempt ends.
#[derive(Default)]
pub(super) struct Actions {
    in_flight: HashSet<QueueId>,
    deferred: HashMap<QueueId, Deferred>,
}

fn make_due(state: &mut MessageState) {
    for r in &mut state.recipients {
        if r.outcome.is_none() {
            r.next_attempt = None;
        }
    }
}

impl Actions {
    /// `id` was handed to a worker.
    pub(super) fn dispatched(&mut self, id: &QueueId) {
        self.in_flight.insert(id.clone());
    }

    /// The attempt on `msg` ended and wants to run again at `next` (`None`: finished).
    /// Returns when it should really run again (`None`: drop it from the index).
    pub(super) async fn done(
        &mut self,
        ctx: &Arc<Ctx>,
        msg: &SpooledMessage,
        state: &mut MessageState,
        next: Option<SystemTime>,
    ) -> Option<Instant> {
        let id = msg.id();
        self.in_flight.remove(id);
        let next = next?;
        match self.deferred.remove(id) {
            Some(Deferred::Delete) => {
                remove(ctx, id).await;
                None
            }
            Some(Deferred::Retry) => {
                make_due(state);
                Some(Instant::now())
            }
            None => Some(super::due_instant(Some(next))),
        }
    }

    /// Applies one administrator command.
    pub(super) async fn apply(&mut self, ctx: &Arc<Ctx>, idx: &mut Index, cmd: Command) {
        match cmd {
            Command::Retry(id, reply) => {
                let n = self.retry(idx, id.as_ref());
                if n > 0 {
                    ctx.spool.metrics().admin_action("retry");
                }
                tracing::info!(
                    queue_id = id.as_ref().map_or("*", QueueId::as_str),
                    messages = n,
                    "administrator: retry now"
                );
                let _ = reply.send(n);
            }
            Command::Delete(id, reply) => {
                let found = if let Some(key) = find(idx, &id) {
                    idx.entries.remove(&key);
                    remove(ctx, &id).await;
                    true
                } else if self.in_flight.contains(&id) {
                    self.deferred.insert(id.clone(), Deferred::Delete);
                    true
                } else {
                    false
                };
                if found {
                    ctx.spool.metrics().admin_action("delete");
                    tracing::warn!(queue_id = %id, "administrator: message deleted without notice");
                }
                let _ = reply.send(found);
            }
            Command::Bounce(id, reply) => {
                let found = find(idx, &id).is_some() || self.in_flight.contains(&id);
                if found {
                    ctx.control_marks.mark(id.clone());
                    self.retry(idx, Some(&id));
                    ctx.spool.metrics().admin_action("bounce");
                    tracing::warn!(queue_id = %id, "administrator: pending recipients returned to the sender");
                }
                let _ = reply.send(found);
            }
        }
    }

    fn retry(&mut self, idx: &mut Index, id: Option<&QueueId>) -> usize {
        let keys: Vec<u64> = idx
            .entries
            .iter()
            .filter(|(_, (m, _))| id.is_none_or(|id| m.id() == id))
            .map(|(k, _)| *k)
            .collect();
        let mut n = 0;
        let now = Instant::now();
        for key in keys {
            if let Some((msg, mut state)) = idx.entries.remove(&key) {
                make_due(&mut state);
                idx.push(msg, state, now);
                n += 1;
            }
        }
        let busy: Vec<QueueId> = self
            .in_flight
            .iter()
            .filter(|f| id.is_none_or(|id| *f == id))
            .cloned()
            .collect();
        for f in busy {
            self.deferred.entry(f).or_insert(Deferred::Retry);
            n += 1;
        }
        n
    }
}

fn find(idx: &Index, id: &QueueId) -> Option<u64> {
    idx.entries
        .iter()
        .find_map(|(k, (m, _))| (m.id() == id).then_some(*k))
}

async fn remove(ctx: &Ctx, id: &QueueId) {
    if let Err(e) = ctx.spool.remove(id).await {
        tracing::error!(queue_id = %id, error = %e, "cannot delete message");
    }
}
