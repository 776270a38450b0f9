//! Prepared-statement rewriting: one `pgbench -M prepared` style exchange per iteration
//! (Bind + Execute + Sync of a named statement the server already has, then BindComplete,
//! DataRow, CommandComplete and ReadyForQuery back) through `client::rewrite::Rewriter`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgfunnel::client::rewrite::Rewriter;
use pgfunnel::pool::prepared::{ServerStatements, StatementRegistry};

fn msg(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

fn prepared(c: &mut Criterion) {
    let mut rw = Rewriter::new(Arc::new(StatementRegistry::default()), 200);
    let mut server = ServerStatements::default();
    let (mut out, mut s2c) = (BytesMut::new(), BytesMut::new());
    // Parse once (as pgbench -M prepared does per connection).
    let mut parse = Vec::new();
    msg(
        &mut parse,
        b'P',
        b"P0_1\0SELECT abalance FROM pgbench_accounts WHERE aid = $1\0\0\0",
    );
    msg(&mut parse, b'S', b"");
    rw.client_to_server(
        &mut BytesMut::from(&parse[..]),
        &mut out,
        &mut server,
        &mut s2c,
    );
    let mut reply = Vec::new();
    msg(&mut reply, b'1', b"");
    msg(&mut reply, b'Z', b"I");
    rw.server_to_client(&mut BytesMut::from(&reply[..]), &mut s2c, &mut server);
    assert!(rw.is_settled(), "setup exchange settled");
    let mut request = Vec::new();
    msg(&mut request, b'B', b"\0P0_1\0\0\0\0\x01\0\0\0\x0512345\0\0");
    msg(&mut request, b'E', b"\0\0\0\0\0");
    msg(&mut request, b'S', b"");
    let mut answer = Vec::new();
    msg(&mut answer, b'2', b"");
    msg(&mut answer, b'D', b"\0\x01\0\0\0\x011");
    msg(&mut answer, b'C', b"SELECT 1\0");
    msg(&mut answer, b'Z', b"I");
    let mut group = c.benchmark_group("prepared");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bind_execute_sync_round_trip", |b| {
        b.iter(|| {
            out.clear();
            s2c.clear();
            let mut input = BytesMut::from(&request[..]);
            rw.client_to_server(&mut input, &mut out, &mut server, &mut s2c);
            let mut back = BytesMut::from(&answer[..]);
            rw.server_to_client(&mut back, &mut s2c, &mut server);
            black_box((out.len(), s2c.len()))
        });
    });
    group.finish();
    assert!(rw.is_settled());
}

criterion_group!(benches, prepared);
criterion_main!(benches);
