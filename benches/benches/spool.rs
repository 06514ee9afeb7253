//! Spool commit throughput: 20 concurrent sessions each committing 10 KB messages, every one
//! durable (file fsync + group-committed directory fsync) before `commit` returns.
//!
//! `cargo bench -p postern-benches --bench spool` (the throughput is reported in elements/s =
//! messages/s).
#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented items.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern::spool::{ClientInfo, Envelope, Recipient, Spool, SpoolConfig};

const SESSIONS: usize = 20;
const PER_SESSION: usize = 25;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (spool, _) = rt
        .block_on(Spool::open(&SpoolConfig::new(dir.path().join("spool"))))
        .expect("spool");
    let spool = Arc::new(spool);
    let body = Arc::new(postern_benches::message(10 * 1024));
    let mut g = c.benchmark_group("spool");
    g.throughput(Throughput::Elements((SESSIONS * PER_SESSION) as u64));
    g.sample_size(10);
    g.bench_function("commit_10k_x20_sessions", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tasks = Vec::new();
                for _ in 0..SESSIONS {
                    let (spool, body) = (spool.clone(), body.clone());
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..PER_SESSION {
                            let env = Envelope::new(
                                Some("scanner@contoso.com".into()),
                                vec![Recipient::new("reception@contoso.com")],
                                ClientInfo::new(([127, 0, 0, 1], 40000).into(), "scanner", "lan"),
                            );
                            let mut inc = spool.receive(env).await.expect("receive");
                            inc.write(&body).await.expect("write");
                            inc.commit().await.expect("commit");
                        }
                    }));
                }
                for t in tasks {
                    t.await.expect("task");
                }
            });
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
