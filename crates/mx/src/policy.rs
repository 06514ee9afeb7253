//! MX selection policy (RFC 5321 section 5.1, RFC 7505), as pure functions.
//!
//! ```text
//!  (preference, exchange) pairs ──▶ plan_mx(records, rng) ──▶ MxPlan::{NullMx, Implicit, Exchanges}
//! ```
//!
//! No DNS here: the resolver hands over what the MX query returned, and the caller supplies the
//! random number generator, so tests fix a seed.

use rand::Rng;
use rand::seq::SliceRandom as _;
use serde::Serialize;

/// One MX record: a preference (lower is tried first) and an exchange host name.
///
/// The exchange is lower-case ASCII without the trailing dot; the root name (the null MX
/// target) is kept as `"."`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub struct MxRecord {
    /// Lower values are tried first.
    pub preference: u16,
    /// The host that accepts mail.
    pub exchange: String,
}

impl MxRecord {
    /// Builds a record, normalising the exchange (lower case, no trailing dot, `"."` for root).
    pub fn new(preference: u16, exchange: &str) -> Self {
        Self {
            preference,
            exchange: normalise_exchange(exchange),
        }
    }

    /// True when the exchange is the root name `.` (RFC 7505 null MX target).
    pub fn is_root(&self) -> bool {
        self.exchange == "."
    }
}

fn normalise_exchange(exchange: &str) -> String {
    let trimmed = exchange.strip_suffix('.').unwrap_or(exchange);
    if trimmed.is_empty() {
        ".".to_owned()
    } else {
        trimmed.to_ascii_lowercase()
    }
}

/// What the MX records say about where mail for a domain goes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MxPlan {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail. Bounce with
    /// `556 5.1.10` (RFC 7505 section 4.2); do not retry.
    NullMx,
    /// There are no MX records: deliver to the domain's own A/AAAA (RFC 5321 section 5.1).
    Implicit,
    /// Try these exchanges in this order.
    Exchanges(Vec<MxRecord>),
}

/// Orders MX records for delivery (RFC 5321 section 5.1).
///
/// - No records: [`MxPlan::Implicit`].
/// - Only root exchanges (`0 .`, the RFC 7505 null MX, or the malformed `10 .`): there is
///   nowhere to deliver, [`MxPlan::NullMx`].
/// - Otherwise root exchanges are dropped (RFC 7505 forbids mixing them with real ones), a host
///   listed twice keeps its lowest preference, the rest is sorted by ascending preference, and
///   hosts of equal preference are shuffled with `rng` to spread load as the RFC asks.
///
/// ```
/// use postern_mx::policy::{plan_mx, MxPlan, MxRecord};
/// use rand::SeedableRng as _;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(7);
/// let records = [MxRecord::new(20, "b.example."), MxRecord::new(10, "a.example.")];
/// let MxPlan::Exchanges(order) = plan_mx(&records, &mut rng) else { unreachable!() };
/// assert_eq!(order[0].exchange, "a.example");
/// assert_eq!(plan_mx(&[MxRecord::new(0, ".")], &mut rng), MxPlan::NullMx);
/// assert_eq!(plan_mx(&[], &mut rng), MxPlan::Implicit);
/// ```
pub fn plan_mx<R: Rng + ?Sized>(records: &[MxRecord], rng: &mut R) -> MxPlan {
    if records.is_empty() {
        return MxPlan::Implicit;
    }
    let mut hosts: Vec<MxRecord> = records.iter().filter(|r| !r.is_root()).cloned().collect();
    if hosts.is_empty() {
        return MxPlan::NullMx;
    }
    // Deduplicate by exchange, keeping the lowest preference.
    hosts.sort_by(|a, b| {
        a.exchange
            .cmp(&b.exchange)
            .then(a.preference.cmp(&b.preference))
    });
    hosts.dedup_by(|later, earlier| later.exchange == earlier.exchange);
    hosts.sort_by_key(|r| r.preference);
    let mut start = 0;
    while start < hosts.len() {
        let preference = hosts[start].preference;
        let end = hosts[start..]
            .iter()
            .position(|r| r.preference != preference)
            .map_or(hosts.len(), |n| start + n);
        hosts[start..end].shuffle(rng);
        start = end;
    }
    MxPlan::Exchanges(hosts)
}

/// True when `records` is exactly the RFC 7505 null MX: one record, preference 0, exchange `.`.
///
/// [`plan_mx`] is more lenient (any all-root set means "no mail"); this is the strict test, for
/// reports.
pub fn is_strict_null_mx(records: &[MxRecord]) -> bool {
    matches!(records, [only] if only.is_root() && only.preference == 0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    #[test]
    fn sorts_by_preference() {
        let recs = [
            MxRecord::new(30, "c.example."),
            MxRecord::new(10, "A.Example."),
            MxRecord::new(20, "b.example"),
        ];
        let MxPlan::Exchanges(order) = plan_mx(&recs, &mut rng(1)) else {
            panic!()
        };
        let names: Vec<_> = order.iter().map(|r| r.exchange.as_str()).collect();
        assert_eq!(names, ["a.example", "b.example", "c.example"]);
    }

    #[test]
    fn null_mx_and_root_handling() {
        assert_eq!(
            plan_mx(&[MxRecord::new(0, ".")], &mut rng(1)),
            MxPlan::NullMx
        );
        assert_eq!(
            plan_mx(&[MxRecord::new(10, "")], &mut rng(1)),
            MxPlan::NullMx
        );
        assert!(is_strict_null_mx(&[MxRecord::new(0, ".")]));
        assert!(!is_strict_null_mx(&[MxRecord::new(10, ".")]));
        let mixed = [MxRecord::new(0, "."), MxRecord::new(10, "mx.example")];
        assert_eq!(
            plan_mx(&mixed, &mut rng(1)),
            MxPlan::Exchanges(vec![MxRecord::new(10, "mx.example")])
        );
    }

    #[test]
    fn duplicates_keep_lowest_preference() {
        let recs = [
            MxRecord::new(20, "mx.example"),
            MxRecord::new(5, "MX.example."),
        ];
        assert_eq!(
            plan_mx(&recs, &mut rng(1)),
            MxPlan::Exchanges(vec![MxRecord::new(5, "mx.example")])
        );
    }

    #[test]
    fn equal_preference_is_shuffled_across_seeds() {
        let recs: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| MxRecord::new(10, n))
            .collect();
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            if let MxPlan::Exchanges(order) = plan_mx(&recs, &mut rng(seed)) {
                seen.insert(order.into_iter().map(|r| r.exchange).collect::<Vec<_>>());
            }
        }
        assert_eq!(seen.len(), 6, "all 3! orders appear: {seen:?}");
    }

    fn arb_records() -> impl Strategy<Value = Vec<MxRecord>> {
        proptest::collection::vec((0u16..4, "[a-e]{1,2}|\\."), 0..12).prop_map(|v| {
            v.into_iter()
                .map(|(p, e)| MxRecord::new(p * 10, &e))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn plan_is_sorted_permutation_of_usable_hosts(records in arb_records(), seed in any::<u64>()) {
            let plan = plan_mx(&records, &mut rng(seed));
            let usable: BTreeSet<&str> =
                records.iter().filter(|r| !r.is_root()).map(|r| r.exchange.as_str()).collect();
            match plan {
                MxPlan::Implicit => prop_assert!(records.is_empty()),
                MxPlan::NullMx => {
                    prop_assert!(!records.is_empty());
                    prop_assert!(usable.is_empty());
                }
                MxPlan::Exchanges(order) => {
                    // Every usable host exactly once.
                    let got: BTreeSet<&str> = order.iter().map(|r| r.exchange.as_str()).collect();
                    prop_assert_eq!(got.len(), order.len());
                    prop_assert_eq!(&got, &usable);
                    // Non-decreasing preference.
                    prop_assert!(order.windows(2).all(|w| w[0].preference <= w[1].preference));
                    // Each host carries its lowest listed preference.
                    for r in &order {
                        let min = records.iter().filter(|x| x.exchange == r.exchange)
                            .map(|x| x.preference).min();
                        prop_assert_eq!(Some(r.preference), min);
                    }
                }
            }
        }

        #[test]
        fn same_seed_same_order(records in arb_records(), seed in any::<u64>()) {
            prop_assert_eq!(plan_mx(&records, &mut rng(seed)), plan_mx(&records, &mut rng(seed)));
        }

        #[test]
        fn preference_groups_do_not_depend_on_seed(records in arb_records(), a in any::<u64>(), b in any::<u64>()) {
            let groups = |plan: MxPlan| match plan {
                MxPlan::Exchanges(order) => order.iter()
                    .map(|r| (r.preference, r.exchange.clone()))
                    .collect::<BTreeSet<_>>(),
                _ => BTreeSet::new(),
            };
            let pa = plan_mx(&records, &mut rng(a));
            let pb = plan_mx(&records, &mut rng(b));
            if let (MxPlan::Exchanges(x), MxPlan::Exchanges(y)) = (&pa, &pb) {
                let px: Vec<u16> = x.iter().map(|r| r.preference).collect();
                let py: Vec<u16> = y.iter().map(|r| r.preference).collect();
                prop_assert_eq!(px, py);
            }
            prop_assert_eq!(groups(pa), groups(pb));
        }
    }
}
