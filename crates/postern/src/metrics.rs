//! Operational metrics, rendered in the Prometheus / OpenMetrics text format.
//!
//! One [`Metrics`] lives with each [`Spool`](crate::spool::Spool) (so two relays in one
//! process, as in the tests, never mix their numbers) and is reached from everywhere the
//! engine counts something: the inbound session (`accepted`), the spool (commits, queue depth
//! and age), the queue (`delivered`, `deferred`, `failed` by route and category, upstream
//! latency) and the token sources (refreshes and failures). The admin listener
//! ([`crate::admin`]) serves [`Metrics::render`] at `GET /metrics`.
//!
//! ```
//! use std::time::Duration;
//! let m = postern::metrics::Metrics::new();
//! m.accepted("lan");
//! m.delivered("exo");
//! m.deferred("exo", "throttled");
//! m.upstream_latency("exo", Duration::from_millis(420));
//! let text = m.render();
//! assert!(text.contains("postern_messages_accepted_total{listener=\"lan\"} 1"));
//! assert!(text.contains("postern_recipients_deferred_total{route=\"exo\",category=\"throttled\"} 1"));
//! assert!(text.ends_with("# EOF\n"));
//! ```
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `postern_messages_accepted_total` | counter | `listener` |
//! | `postern_spool_commits_total` | counter | |
//! | `postern_recipients_delivered_total` | counter | `route` |
//! | `postern_recipients_deferred_total` | counter | `route`, `category` |
//! | `postern_recipients_failed_total` | counter | `route`, `category`, `expired` |
//! | `postern_bounces_queued_total` | counter | |
//! | `postern_queue_messages` | gauge | |
//! | `postern_queue_oldest_age_seconds` | gauge | |
//! | `postern_token_refreshes_total` | counter | `identity` |
//! | `postern_token_failures_total` | counter | `identity`, `category` |
//! | `postern_upstream_duration_seconds` | histogram | `route` |
//! | `postern_admin_actions_total` | counter | `action` |

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::spool::QueueId;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCategory {
    route: String,
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Failed {
    route: String,
    category: String,
    expired: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabel {
    identity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityCategory {
    identity: String,
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

fn latency_histogram() -> Histogram {
    // 50 ms .. ~100 s: a loopback sink answers in milliseconds, Exchange Online in about a
    // second, a stalled TLS handshake in tens of seconds.
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

/// The messages in the spool, for the depth and age gauges.
#[derive(Debug, Default)]
struct Depth {
    by_age: BTreeSet<(SystemTime, QueueId)>,
    received: HashMap<QueueId, SystemTime>,
}

/// The relay's counters, gauges and histograms. Cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    accepted: Family<ListenerLabel, Counter>,
    spool_commits: Counter,
    delivered: Family<RouteLabel, Counter>,
    deferred: Family<RouteCategory, Counter>,
    failed: Family<Failed, Counter>,
    bounces: Counter,
    queue_messages: Gauge,
    queue_oldest: Gauge<f64, AtomicU64>,
    token_refreshes: Family<IdentityLabel, Counter>,
    token_failures: Family<IdentityCategory, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    admin_actions: Family<ActionLabel, Counter>,
    depth: Mutex<Depth>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("postern");
        let accepted = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "messages_accepted",
            "Messages acknowledged with 250 to a client, by listener",
            accepted.clone(),
        );
        let spool_commits = Counter::default();
        registry.register(
            "spool_commits",
            "Messages made durable in the spool (client messages and failure notices)",
            spool_commits.clone(),
        );
        let delivered = Family::<RouteLabel, Counter>::default();
        registry.register(
            "recipients_delivered",
            "Recipients accepted by a route",
            delivered.clone(),
        );
        let deferred = Family::<RouteCategory, Counter>::default();
        registry.register(
            "recipients_deferred",
            "Recipient attempts that failed transiently and will be retried, by failure category",
            deferred.clone(),
        );
        let failed = Family::<Failed, Counter>::default();
        registry.register(
            "recipients_failed",
            "Recipients that failed for good (permanent refusal, or expired=\"true\" when the retry period ran out)",
            failed.clone(),
        );
        let bounces = Counter::default();
        registry.register(
            "bounces_queued",
            "Delivery status notifications queued to senders",
            bounces.clone(),
        );
        let queue_messages = Gauge::default();
        registry.register(
            "queue_messages",
            "Messages in the spool waiting for at least one recipient",
            queue_messages.clone(),
        );
        let queue_oldest = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest message in the spool (0 when it is empty)",
            queue_oldest.clone(),
        );
        let token_refreshes = Family::<IdentityLabel, Counter>::default();
        registry.register(
            "token_refreshes",
            "Access tokens obtained from the authority, by identity",
            token_refreshes.clone(),
        );
        let token_failures = Family::<IdentityCategory, Counter>::default();
        registry.register(
            "token_failures",
            "Failed token requests, by identity and category (transient, or the OAuth error code)",
            token_failures.clone(),
        );
        let latency: Family<RouteLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_duration_seconds",
            "Time a route took for one delivery attempt (connect, TLS, AUTH and transaction)",
            latency.clone(),
        );
        let admin_actions = Family::<ActionLabel, Counter>::default();
        registry.register(
            "admin_actions",
            "Queue actions taken by an administrator (retry, delete, bounce)",
            admin_actions.clone(),
        );
        Self {
            registry,
            accepted,
            spool_commits,
            delivered,
            deferred,
            failed,
            bounces,
            queue_messages,
            queue_oldest,
            token_refreshes,
            token_failures,
            latency,
            admin_actions,
            depth: Mutex::new(Depth::default()),
        }
    }

    /// A client's message was acknowledged on `listener`.
    pub fn accepted(&self, listener: &str) {
        self.accepted
            .get_or_create(&ListenerLabel {
                listener: listener.to_owned(),
            })
            .inc();
    }

    /// A message (`id`, received at `received_at`) is now durable in the spool.
    pub fn spooled(&self, id: &QueueId, received_at: SystemTime) {
        self.spool_commits.inc();
        self.recovered(id, received_at);
    }

    /// A message found in the spool at start-up (counts towards depth, not commits).
    pub fn recovered(&self, id: &QueueId, received_at: SystemTime) {
        let mut d = self.depth.lock().unwrap_or_else(PoisonError::into_inner);
        if d.received.insert(id.clone(), received_at).is_none() {
            d.by_age.insert((received_at, id.clone()));
        }
    }

    /// A message left the spool (finished, or deleted).
    pub fn unspooled(&self, id: &QueueId) {
        let mut d = self.depth.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = d.received.remove(id) {
            d.by_age.remove(&(at, id.clone()));
        }
    }

    /// A recipient was accepted by `route`.
    pub fn delivered(&self, route: &str) {
        self.delivered
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .inc();
    }

    /// A recipient attempt through `route` failed transiently with `category`.
    pub fn deferred(&self, route: &str, category: &str) {
        self.deferred
            .get_or_create(&RouteCategory {
                route: route.to_owned(),
                category: category.to_owned(),
            })
            .inc();
    }

    /// A recipient failed for good (`expired`: its retry period ran out).
    pub fn failed(&self, route: &str, category: &str, expired: bool) {
        self.failed
            .get_or_create(&Failed {
                route: route.to_owned(),
                category: category.to_owned(),
                expired: expired.to_string(),
            })
            .inc();
    }

    /// A delivery status notification was queued.
    pub fn bounce_queued(&self) {
        self.bounces.inc();
    }

    /// One attempt through `route` took `took`.
    pub fn upstream_latency(&self, route: &str, took: Duration) {
        self.latency
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A new access token was obtained for `identity`.
    pub fn token_refreshed(&self, identity: &str) {
        self.token_refreshes
            .get_or_create(&IdentityLabel {
                identity: identity.to_owned(),
            })
            .inc();
    }

    /// A token request for `identity` failed (`category`: `transient` or the OAuth error).
    pub fn token_failed(&self, identity: &str, category: &str) {
        self.token_failures
            .get_or_create(&IdentityCategory {
                identity: identity.to_owned(),
                category: category.to_owned(),
            })
            .inc();
    }

    /// An administrator took `action` on the queue.
    pub fn admin_action(&self, action: &str) {
        self.admin_actions
            .get_or_create(&ActionLabel {
                action: action.to_owned(),
            })
            .inc();
    }

    /// Messages in the spool and the receive time of the oldest.
    pub fn depth(&self) -> (usize, Option<SystemTime>) {
        let d = self.depth.lock().unwrap_or_else(PoisonError::into_inner);
        (d.received.len(), d.by_age.first().map(|(at, _)| *at))
    }

    /// The number of recipients delivered through `route` so far.
    pub fn delivered_count(&self, route: &str) -> u64 {
        self.delivered
            .get(&RouteLabel {
                route: route.to_owned(),
            })
            .map_or(0, |c| c.get())
    }

    /// Everything, in the OpenMetrics text format ([`CONTENT_TYPE`]), ending in `# EOF`.
    pub fn render(&self) -> String {
        self.render_at(SystemTime::now())
    }

    /// [`render`](Self::render) with the queue age computed at `now`.
    pub fn render_at(&self, now: SystemTime) -> String {
        let (n, oldest) = self.depth();
        self.queue_messages
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        let age = oldest
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.queue_oldest.set(age);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_and_age() {
        let m = Metrics::new();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let a = QueueId::generate();
        let b = QueueId::generate();
        m.spooled(&a, t0);
        m.spooled(&b, t0 + Duration::from_secs(30));
        m.spooled(&b, t0 + Duration::from_secs(30));
        let text = m.render_at(t0 + Duration::from_secs(90));
        assert!(text.contains("postern_queue_messages 2\n"), "{text}");
        assert!(
            text.contains("postern_queue_oldest_age_seconds 90.0\n"),
            "{text}"
        );
        assert!(text.contains("postern_spool_commits_total 3\n"), "{text}");
        m.unspooled(&a);
        let text = m.render_at(t0 + Duration::from_secs(90));
        assert!(
            text.contains("postern_queue_oldest_age_seconds 60.0\n"),
            "{text}"
        );
        m.unspooled(&b);
        let text = m.render_at(t0 + Duration::from_secs(90));
        assert!(text.contains("postern_queue_messages 0\n"), "{text}");
        assert!(
            text.contains("postern_queue_oldest_age_seconds 0.0\n"),
            "{text}"
        );
    }

    #[test]
    fn outcomes_by_route_and_category() {
        let m = Metrics::new();
        m.delivered("exo");
        m.delivered("exo");
        m.failed("exo", "send_as_denied", false);
        m.failed("direct", "expired", true);
        m.token_refreshed("app");
        m.token_failed("app", "invalid_client");
        m.upstream_latency("exo", Duration::from_millis(120));
        assert_eq!(m.delivered_count("exo"), 2);
        assert_eq!(m.delivered_count("other"), 0);
        let text = m.render();
        assert!(text.contains("postern_recipients_delivered_total{route=\"exo\"} 2"));
        assert!(text.contains(
            "postern_recipients_failed_total{route=\"exo\",category=\"send_as_denied\",expired=\"false\"} 1"
        ));
        assert!(text.contains(
            "postern_token_failures_total{identity=\"app\",category=\"invalid_client\"} 1"
        ));
        assert!(text.contains("postern_upstream_duration_seconds_count{route=\"exo\"} 1"));
        assert!(text.contains("# TYPE postern_upstream_duration_seconds histogram"));
    }
}
