//! Micro benchmarks of `postern-mx`'s pure parts: the MX ordering policy and the SPF parser.
//!
//! ```text
//! cargo bench -p postern-benches --bench mx
//! ```
#![allow(missing_docs)] // criterion_main! generates an undocumented `main`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use postern_mx::policy::{MxRecord, plan_mx};
use postern_mx::spf::SpfRecord;
use rand::SeedableRng as _;
use rand::rngs::StdRng;

fn mx_policy(c: &mut Criterion) {
    let exo = [MxRecord::new(0, "contoso-com.mail.protection.outlook.com.")];
    let mixed: Vec<MxRecord> = (0..8)
        .map(|i| MxRecord::new(10 * (i % 3), &format!("mx{i}.example.com.")))
        .collect();
    let mut rng = StdRng::seed_from_u64(1);
    c.bench_function("mx/plan_single_exo", |b| {
        b.iter(|| plan_mx(black_box(&exo), &mut rng))
    });
    c.bench_function("mx/plan_8_hosts_3_prefs", |b| {
        b.iter(|| plan_mx(black_box(&mixed), &mut rng))
    });
}

fn spf_parse(c: &mut Criterion) {
    let typical = b"v=spf1 include:spf.protection.outlook.com -all";
    let long = b"v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.0/24 ip6:2001:db8::/32 a mx:mail.contoso.com/28//64 \
include:spf.protection.outlook.com include:_spf.google.com exists:%{ir}.%{l1r-}._spf.%{d} ~all";
    c.bench_function("spf/parse_typical", |b| {
        b.iter(|| SpfRecord::decode(black_box(typical)))
    });
    c.bench_function("spf/parse_long", |b| {
        b.iter(|| SpfRecord::decode(black_box(long)))
    });
}

criterion_group!(benches, mx_policy, spf_parse);
criterion_main!(benches);
