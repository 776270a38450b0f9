//! ReadyForQuery tracking: `client::tracker::Tracker` bookkeeping per request, alone and fed by
//! the `Scanner` from a server byte stream of many short replies (CommandComplete +
//! ReadyForQuery), which is what the relay does for every server read.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgfunnel::client::statement::recognise;
use pgfunnel::client::tracker::Tracker;
use pgfunnel::protocol::{Capture, ScanEvent, Scanner};

const CYCLES: u64 = 1000;

fn msg(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

fn tracker(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker");
    group.throughput(Throughput::Elements(CYCLES));
    group.bench_function("simple_query_cycles", |b| {
        let mut t = Tracker::default();
        b.iter(|| {
            let mut idle = 0;
            for _ in 0..CYCLES {
                t.client_message(black_box(b'Q'));
                t.ready_for_query(black_box(b'I'));
                idle += t.is_idle() as u32;
            }
            black_box(idle)
        });
    });
    group.bench_function("extended_query_cycles", |b| {
        let mut t = Tracker::default();
        b.iter(|| {
            let mut idle = 0;
            for _ in 0..CYCLES {
                for tag in [b'P', b'B', b'D', b'E', b'S'] {
                    t.client_message(black_box(tag));
                }
                t.ready_for_query(black_box(b'I'));
                idle += t.is_idle() as u32;
            }
            black_box(idle)
        });
    });
    let mut replies = Vec::new();
    for _ in 0..CYCLES {
        msg(&mut replies, b'C', b"UPDATE 1\0");
        msg(&mut replies, b'Z', b"T");
    }
    group.bench_function("scan_server_replies", |b| {
        let mut scanner = Scanner::new(u32::MAX >> 1);
        let mut t = Tracker::default();
        b.iter(|| {
            scanner
                .feed(
                    black_box(&replies),
                    |tag, _| {
                        if tag == b'Z' {
                            Capture::Body
                        } else {
                            Capture::Skip
                        }
                    },
                    |ev| {
                        if let ScanEvent::Message { tag: b'Z', body } = ev {
                            t.ready_for_query(body.first().copied().unwrap_or(b'I'));
                        }
                        true
                    },
                )
                .expect("valid stream");
            black_box(t.status())
        });
    });
    group.finish();
    // What every Query and Parse text goes through: typical OLTP texts.
    let texts: [&[u8]; 4] = [
        b"SELECT id, name, email FROM users WHERE id = $1",
        b"UPDATE accounts SET balance = balance + $1 WHERE id = $2",
        b"INSERT INTO events (kind, payload, created_at) VALUES ($1, $2, now()) RETURNING id",
        b"select a.x, b.y from a join b on a.id = b.a_id where a.label = 'it''s \\d' and b.z > 3",
    ];
    let mut group = c.benchmark_group("statement");
    group.throughput(Throughput::Elements(texts.len() as u64));
    group.bench_function("recognise_typical_queries", |b| {
        b.iter(|| {
            for t in texts {
                black_box(recognise(black_box(t)));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, tracker);
criterion_main!(benches);
