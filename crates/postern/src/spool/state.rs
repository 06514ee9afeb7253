//! Per-recipient delivery state, persisted beside each message.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Version of the state file format.
pub(crate) const STATE_VERSION: u32 = 1;

/// The delivery state of one spooled message: one entry per envelope recipient, plus the
/// bookkeeping that makes bounces exactly-once.
///
/// Stored as JSON in `<id>.state`, replaced atomically (tmp + fsync + rename + directory
/// fsync) after every attempt that changed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MessageState {
    /// Format version (1).
    pub version: u32,
    /// One entry per envelope recipient, same order.
    pub recipients: Vec<RecipientState>,
    /// How many delivery status notifications were generated for this message so far; the next
    /// one gets the id `QueueId::bounce(dsn_seq)`.
    pub dsn_seq: u32,
    /// Recipients whose failure notice is decided but not yet known to be spooled (it is, iff
    /// the message `QueueId::bounce(dsn_seq)` exists).
    #[serde(default)]
    pub dsn_pending: Vec<usize>,
}

impl MessageState {
    /// A fresh state for `n` recipients: nothing attempted yet.
    pub fn new(n: usize) -> Self {
        Self {
            version: STATE_VERSION,
            recipients: vec![RecipientState::default(); n],
            dsn_seq: 0,
            dsn_pending: Vec::new(),
        }
    }

    /// Indices of the recipients without a final outcome.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.recipients.len())
            .filter(|&i| self.recipients[i].outcome.is_none())
            .collect()
    }

    /// Whether every recipient has a final outcome and no notice is pending.
    pub fn is_finished(&self) -> bool {
        self.dsn_pending.is_empty() && self.recipients.iter().all(|r| r.outcome.is_some())
    }
}

/// The delivery state of one recipient.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecipientState {
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (`None`: as soon as possible).
    pub next_attempt: Option<SystemTime>,
    /// The last upstream reply or failure reason.
    pub last_reply: Option<String>,
    /// The category of the last failure (from the NDR classifier), e.g. `"mailbox_full"`.
    pub last_category: Option<String>,
    /// Which route of the recipient's route list the next attempt uses (failover: moves on
    /// after a transient failure, wraps to the first after the last). An index into the
    /// list the router gives; taken modulo its length, so a shorter list after a
    /// configuration change is harmless.
    #[serde(default)]
    pub route_index: usize,
    /// The route of the last attempt, by name.
    #[serde(default)]
    pub last_route: Option<String>,
    /// The final outcome, once there is one.
    pub outcome: Option<FinalOutcome>,
}

/// How a recipient ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinalOutcome {
    /// Accepted by the route.
    Delivered {
        /// The route's reply (e.g. `250 2.0.0 OK`).
        reply: String,
        /// When.
        at: SystemTime,
    },
    /// Refused permanently, or still failing when its lifetime ran out.
    Failed {
        /// The reply or reason.
        reason: String,
        /// The failure category.
        category: String,
        /// Whether the retry lifetime ran out (otherwise a permanent refusal).
        expired: bool,
        /// Whether a failure notice was sent to the sender.
        notified: bool,
        /// When.
        at: SystemTime,
    },
}
