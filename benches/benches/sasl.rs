//! postern-sasl: XOAUTH2 encode (client, the line sent to Exchange Online) and decode (server,
//! the whole exchange from the `AUTH` line to credentials), with a token the size of an Entra
//! access token.
//!
//! `cargo bench -p postern-benches --bench sasl`

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postern_sasl::{Client, Credentials, Mechanism, ServerExchange, ServerStep};
use std::hint::black_box;

/// A token shaped like an Entra access token (three base64url segments), `len` bytes long.
fn token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|i| {
            if i == len / 3 || i == 2 * len / 3 {
                '.'
            } else {
                ALPHABET[(i * 31 + 7) % ALPHABET.len()] as char
            }
        })
        .collect()
}

fn xoauth2(c: &mut Criterion) {
    let mut group = c.benchmark_group("sasl_xoauth2");
    // Microsoft's documented example token (40 B), a typical Entra token (2.5 KB), a big one.
    for len in [40, 2500, 8000] {
        let creds = Credentials::bearer("scanner@contoso.onmicrosoft.com", token(len));
        let line = Client::new(Mechanism::Xoauth2, &creds)
            .unwrap()
            .initial_response()
            .unwrap();
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", len), &creds, |b, creds| {
            b.iter(|| {
                let mut client = Client::new(Mechanism::Xoauth2, black_box(creds)).unwrap();
                client.initial_response().unwrap()
            })
        });
        group.bench_with_input(
            BenchmarkId::new("decode", len),
            line.expose_secret().as_bytes(),
            |b, line| {
                b.iter(|| {
                    let mut server = ServerExchange::new(Mechanism::Xoauth2);
                    match server.start(Some(black_box(line))) {
                        Ok(ServerStep::Done(creds)) => creds,
                        other => panic!("{other:?}"),
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, xoauth2);
criterion_main!(benches);
