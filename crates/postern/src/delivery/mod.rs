//! Delivery: the [`Transport`] seam every route implements, and the routes of this release
//! (local sink, the SMTP routes, Graph `sendMail`).
//!
//! A transport receives a spooled message and the indices (into the envelope's recipients) it
//! must deliver, and answers one [`RcptOutcome`] per index. It reads the message from the
//! spool with [`SpooledMessage::open_body`] (streaming), never from memory. The queue turns
//! outcomes into state: delivered and permanent outcomes are final, transient ones are retried
//! with backoff until the message's lifetime runs out.

mod bounce;
pub mod graph;
mod local;
pub mod rewrite;
pub mod smtp;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use self::bounce::build_bounce;
pub use self::graph::GraphTransport;
pub use self::local::{LocalFormat, LocalSink};
pub use self::smtp::SmtpTransport;
use crate::spool::SpooledMessage;

/// The future a [`Transport`] returns.
pub type DeliveryFuture<'a> = Pin<Box<dyn Future<Output = DeliveryReport> + Send + 'a>>;

/// A delivery route: local sink, SMTP submission, Graph, ...
///
/// Object-safe, so the router holds `Arc<dyn Transport>`.
///
/// ```
/// use postern::delivery::{DeliveryFuture, DeliveryReport, RcptOutcome, Transport};
/// use postern::spool::SpooledMessage;
///
/// /// Accepts everything (a test double).
/// struct Accept;
///
/// impl Transport for Accept {
///     fn deliver<'a>(&'a self, _msg: &'a SpooledMessage, rcpts: &'a [usize]) -> DeliveryFuture<'a> {
///         Box::pin(async move {
///             DeliveryReport::all(rcpts, &RcptOutcome::delivered("250 2.0.0 OK"))
///         })
///     }
/// }
/// ```
pub trait Transport: Send + Sync {
    /// Delivers `msg` to the recipients at `rcpts` (indices into `msg.envelope().recipients`)
    /// and reports one outcome per index. A missing index counts as a transient failure.
    fn deliver<'a>(&'a self, msg: &'a SpooledMessage, rcpts: &'a [usize]) -> DeliveryFuture<'a>;
}

/// What a transport says about one attempt: an outcome per recipient index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryReport {
    /// `(recipient index, outcome)` pairs.
    pub outcomes: Vec<(usize, RcptOutcome)>,
}

impl DeliveryReport {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same outcome for every recipient.
    pub fn all(rcpts: &[usize], outcome: &RcptOutcome) -> Self {
        Self {
            outcomes: rcpts.iter().map(|&i| (i, outcome.clone())).collect(),
        }
    }

    /// Adds the outcome of one recipient.
    pub fn push(&mut self, rcpt: usize, outcome: RcptOutcome) {
        self.outcomes.push((rcpt, outcome));
    }

    /// The outcome reported for `rcpt`, if any.
    pub fn get(&self, rcpt: usize) -> Option<&RcptOutcome> {
        self.outcomes
            .iter()
            .find_map(|(i, o)| (*i == rcpt).then_some(o))
    }
}

/// The outcome of one recipient in one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RcptOutcome {
    /// Accepted by the route.
    Delivered {
        /// The route's reply, e.g. `250 2.0.0 OK <id>`.
        reply: String,
    },
    /// Not now: try again later.
    Transient {
        /// The reply or reason.
        reason: String,
        /// The failure category (an NDR classifier name such as `"throttled"`).
        category: String,
        /// The earliest retry the route asks for (a `Retry-After`, a throttling reply).
        retry_after: Option<Duration>,
    },
    /// Never: the recipient fails and the sender gets a notice.
    Permanent {
        /// The reply or reason.
        reason: String,
        /// The failure category (an NDR classifier name such as `"send_as_denied"`).
        category: String,
        /// What the operator can do about it, if anything.
        remedy: Option<String>,
    },
}

impl RcptOutcome {
    /// `Delivered` with the given reply.
    pub fn delivered(reply: impl Into<String>) -> Self {
        Self::Delivered {
            reply: reply.into(),
        }
    }

    /// `Transient` without a retry hint.
    pub fn transient(reason: impl Into<String>, category: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            category: category.into(),
            retry_after: None,
        }
    }

    /// `Permanent` without a remedy.
    pub fn permanent(reason: impl Into<String>, category: impl Into<String>) -> Self {
        Self::Permanent {
            reason: reason.into(),
            category: category.into(),
            remedy: None,
        }
    }
}
