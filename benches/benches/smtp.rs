//! postern-smtp: command parsing (a typical MAIL FROM, the target is under 100 ns), reply and
//! EHLO parsing, and DATA decode/encode throughput on a 10 MB message (target: 1 GB/s).
//!
//! `cargo bench -p postern-benches --bench smtp -- --warm-up-time 1 --measurement-time 3`

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_smtp::{
    BareLineEnding, Capabilities, Command, DataDecoder, DataEncoder, DataOptions, ParseOptions,
    Reply,
};
use std::hint::black_box;

fn commands(c: &mut Criterion) {
    let opts = ParseOptions::default();
    let mut g = c.benchmark_group("smtp/command");
    for (name, line) in [
        ("mail_from", &b"MAIL FROM:<scanner@contoso.com> SIZE=52311\r\n"[..]),
        ("mail_from_bare", &b"MAIL FROM:<scanner@contoso.com>\r\n"[..]),
        (
            "rcpt_to_dsn",
            &b"RCPT TO:<reception@contoso.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;reception@contoso.com\r\n"[..],
        ),
        ("ehlo", &b"EHLO printer.contoso.com\r\n"[..]),
        ("data", &b"DATA\r\n"[..]),
    ] {
        g.throughput(Throughput::Elements(1));
        // `iter` black-boxes the whole result; moving the command out into a second
        // `black_box` would add a copy of the 176-byte `Result` to each parse.
        g.bench_function(name, |b| b.iter(|| Command::decode(black_box(line), &opts)));
    }
    let lenient = ParseOptions::default().lenient(true);
    g.bench_function("mail_from_lenient", |b| {
        b.iter(|| Command::decode(black_box(b"MAIL FROM: scanner@contoso.com  \n"), &lenient))
    });
    let cmd = Command::decode(b"MAIL FROM:<scanner@contoso.com> SIZE=52311\r\n", &opts)
        .unwrap()
        .0;
    g.bench_function("mail_from_encode", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            black_box(&cmd).encode(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

fn replies(c: &mut Criterion) {
    let mut g = c.benchmark_group("smtp/reply");
    let single = b"250 2.1.0 Sender OK\r\n";
    g.bench_function("single", |b| {
        b.iter(|| Reply::decode(black_box(single)).map(|r| r.1))
    });
    let ehlo = b"250-smtp.office365.com Hello [203.0.113.7]\r\n250-SIZE 157286400\r\n\
        250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-AUTH LOGIN XOAUTH2\r\n\
        250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n";
    g.bench_function("ehlo_capabilities", |b| {
        b.iter(|| {
            let (r, _) = Reply::decode(black_box(ehlo)).unwrap();
            black_box(Capabilities::from_ehlo(&r))
        })
    });
    g.finish();
}

fn data(c: &mut Criterion) {
    let message = postern_benches::message(10 * 1024 * 1024);
    let wire = DataEncoder::encode_all(&message);
    let mut g = c.benchmark_group("smtp/data");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.sample_size(20);
    let mut out = Vec::with_capacity(wire.len());
    for (name, policy) in [
        ("decode_10MB", BareLineEnding::Reject),
        ("decode_10MB_normalize", BareLineEnding::Normalize),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let mut dec = DataDecoder::new(DataOptions::default().bare_line_ending(policy));
                let p = dec.decode(black_box(&wire), &mut out);
                assert!(p.done);
                black_box(out.len())
            })
        });
    }
    // The same stream as it arrives from a socket: 64 KiB reads.
    g.bench_function("decode_10MB_64k_chunks", |b| {
        b.iter(|| {
            out.clear();
            let mut dec = DataDecoder::new(DataOptions::default());
            for chunk in wire.chunks(64 * 1024) {
                dec.decode(black_box(chunk), &mut out);
            }
            assert!(dec.is_done());
            black_box(out.len())
        })
    });
    g.throughput(Throughput::Bytes(message.len() as u64));
    g.bench_function("encode_10MB", |b| {
        b.iter(|| {
            out.clear();
            let mut enc = DataEncoder::new();
            enc.encode(black_box(&message), &mut out);
            enc.finish(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, commands, replies, data);
criterion_main!(benches);
