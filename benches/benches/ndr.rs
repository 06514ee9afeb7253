//! postern-ndr: classify real Exchange Online and generic replies (the engine calls this for
//! every upstream reply), parse a reply line, parse a Gmail-shaped bounce, and build a DSN.
//!
//! `cargo bench -p postern-benches --bench ndr`

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postern_ndr::{Action, DeliveryReport, RecipientStatus, ReplyView, classify, classify_view};
use std::hint::black_box;

/// Real reply lines from the Exchange Online spec, plus generic ones that reach the later
/// tables (registry, text heuristics, basic code).
const LINES: &[(&str, &str)] = &[
    (
        "ok",
        "250 2.0.0 OK <scan.1@scanner.contoso.com> [Hostname=SYBP282MB2635.AUSP282.PROD.OUTLOOK.COM]",
    ),
    (
        "send_as_denied",
        "554 5.2.252 SendAsDenied; info@a.au not allowed to send as noreply@a.au; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message. 1.84300:0A000000, 1.84300:0A000000, 1.84300:0A000000",
    ),
    (
        "auth_disabled",
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [MN2PR05CA0004.namprd05.prod.outlook.com 2023-09-12T20:59:57.214Z 08DBB276B7E699C4]",
    ),
    (
        "throttled",
        "432 4.3.2 Concurrent connections limit exceeded.",
    ),
    (
        "server_busy",
        "451 4.7.500 Server busy. Please try again later from [174.136.107.245]. (AS843)",
    ),
    (
        "registry",
        "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
    ),
    ("basic_only", "554 Transaction failed"),
];

fn classify_lines(c: &mut Criterion) {
    let mut group = c.benchmark_group("ndr_classify");
    for (name, line) in LINES {
        let reply = ReplyView::parse(line).unwrap();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(name), &reply, |b, reply| {
            b.iter(|| {
                classify(
                    black_box(reply.code),
                    black_box(reply.enhanced),
                    black_box(&reply.text),
                )
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("ndr_parse_and_classify");
    for (name, line) in LINES {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(name), line, |b, line| {
            b.iter(|| classify_view(&ReplyView::parse(black_box(line)).unwrap()))
        });
    }
    group.finish();
}

const GMAIL: &[u8] = include_bytes!("../../crates/ndr/tests/data/gmail.eml");

fn dsn(c: &mut Criterion) {
    let mut group = c.benchmark_group("ndr_dsn");
    group.throughput(Throughput::Bytes(GMAIL.len() as u64));
    group.bench_function("parse_gmail", |b| {
        b.iter(|| DeliveryReport::parse(black_box(GMAIL)).unwrap())
    });
    let original = postern_benches::message(10 * 1024);
    let rcpt = RecipientStatus::new(
        "ceo@contoso.com",
        Action::Failed,
        "5.2.252".parse().unwrap(),
    )
    .with_smtp_diagnostic(LINES[1].1)
    .with_remote_mta("smtp.office365.com");
    group.throughput(Throughput::Elements(1));
    group.bench_function("build_headers_only", |b| {
        b.iter(|| {
            DeliveryReport::builder("relay.contoso.com")
                .to("scanner@contoso.com")
                .date("Sun, 22 Nov 2026 14:00:00 +0000")
                .message_id("dsn.1", "relay.contoso.com")
                .boundary("=_postern_bench")
                .recipient(rcpt.clone())
                .original(black_box(&original))
                .build()
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, classify_lines, dsn);
criterion_main!(benches);
