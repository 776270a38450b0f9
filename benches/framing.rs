//! Framing: `protocol::Scanner` finding message boundaries in a server's result stream
//! (RowDescription, many DataRows, CommandComplete, ReadyForQuery), as the relay feeds it:
//! the whole buffer at once and in the relay's 16 KiB read chunks. Only ReadyForQuery and
//! ParameterStatus bodies are captured, as in `client::relay`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgfunnel::protocol::{Capture, ScanEvent, Scanner};

fn msg(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

/// A result set of `rows` DataRows of three columns (int4 id, int4 balance, 84-byte filler),
/// the shape of pgbench_accounts.
fn result_stream(rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    msg(&mut out, b'T', &[0u8; 3 * 24]);
    let mut row = Vec::new();
    row.extend_from_slice(&3u16.to_be_bytes());
    for col in [&b"12345"[..], b"-4200", &[b' '; 84]] {
        row.extend_from_slice(&(col.len() as i32).to_be_bytes());
        row.extend_from_slice(col);
    }
    for _ in 0..rows {
        msg(&mut out, b'D', &row);
    }
    msg(&mut out, b'C', format!("SELECT {rows}\0").as_bytes());
    msg(&mut out, b'Z', b"I");
    out
}

fn scan(scanner: &mut Scanner, data: &[u8], chunk: usize) -> usize {
    let mut headers = 0;
    for part in data.chunks(chunk) {
        scanner
            .feed(
                part,
                |t, _| match t {
                    b'Z' | b'S' => Capture::Body,
                    _ => Capture::Skip,
                },
                |ev| {
                    if let ScanEvent::Header { .. } = ev {
                        headers += 1;
                    }
                    true
                },
            )
            .expect("valid stream");
    }
    headers
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing");
    for rows in [1usize, 1000] {
        let data = result_stream(rows);
        group.throughput(Throughput::Elements(rows as u64 + 3));
        for (name, chunk) in [("whole", usize::MAX), ("16k_reads", 16 * 1024)] {
            group.bench_with_input(BenchmarkId::new(name, rows), &data, |b, data| {
                let mut scanner = Scanner::new(u32::MAX >> 1);
                b.iter(|| black_box(scan(&mut scanner, black_box(data), chunk)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
