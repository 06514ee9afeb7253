//! Token-cache hits: what every delivery pays to get its access token.
//!
//! `cargo bench -p postern-benches --bench token_cache`
//!
//! The cache is primed once through a canned in-process transport; the benchmarks then measure
//! only hits: through a kept [`TokenHandle`](postern_entra::TokenHandle) (the engine's path),
//! through `TokenCache::get` (key built and looked up each time), and the synchronous `peek`;
//! `block_on_baseline` is the cost of driving a ready future on the runtime, included in the
//! first two.
#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented items.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use postern_entra::{
    Authority, CachePolicy, Clock, ManualClock, MemoryStore, OAuthClient, Secret, TokenCache,
    TransportError,
};

const SCOPE: &str = "https://outlook.office365.com/.default";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        // postern-entra puts a tokio timeout around each request (the "time" feature is its own).
        .enable_time()
        .build()
        .expect("runtime");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let http = |_req: http::Request<Vec<u8>>| async {
        Ok::<_, TransportError>(http::Response::new(
            br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAiOiJKV1QiLCJub25jZSI6"}"#.to_vec(),
        ))
    };
    let client = OAuthClient::builder(
        Authority::global(),
        "contoso.onmicrosoft.com",
        "11111111-2222-3333-4444-555555555555",
    )
    .client_secret(Secret::new("bench"))
    .http_client(Arc::new(http))
    .clock(Arc::clone(&clock))
    .build()
    .expect("client");
    let cache = TokenCache::with(Arc::new(MemoryStore::new()), clock, CachePolicy::default());
    let handle = cache.handle(&client, SCOPE, None);
    rt.block_on(handle.get()).expect("prime");

    let mut g = c.benchmark_group("token_cache");
    g.bench_function("hit_handle", |b| {
        b.iter(|| rt.block_on(black_box(&handle).get()).expect("hit"))
    });
    g.bench_function("hit_get", |b| {
        b.iter(|| {
            rt.block_on(cache.get(black_box(&client), black_box(SCOPE), None))
                .expect("hit")
        })
    });
    // What block_on itself costs, to read the two lines above against.
    g.bench_function("block_on_baseline", |b| {
        b.iter(|| rt.block_on(black_box(async {})))
    });
    g.bench_function("peek", |b| {
        b.iter(|| black_box(&handle).peek().expect("hit"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
