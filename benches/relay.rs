//! A whole in-process relay round trip of a simple query: a client writes Query, the
//! `client::relay::Relay` waits for it, relays it to a fake server over `tokio::io::duplex`,
//! relays the reply (RowDescription, DataRows, CommandComplete, ReadyForQuery 'I') back and
//! releases the server, and the client reads the whole reply. One current-thread runtime;
//! the duplex pipes cost some of the time, so compare runs of this bench with each other,
//! not with the socket numbers of benches/compare.

use std::collections::HashMap;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgfunnel::client::relay::{IdleEnd, LinkState, Relay, RelayEnd, RelayMode};
use pgfunnel::pool::prepared::ServerStatements;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn msg(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

fn reply(rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    msg(
        &mut out,
        b'T',
        b"\0\x01?column?\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
    );
    for _ in 0..rows {
        msg(&mut out, b'D', b"\0\x01\0\0\0\x011");
    }
    msg(&mut out, b'C', format!("SELECT {rows}\0").as_bytes());
    msg(&mut out, b'Z', b"I");
    out
}

/// Answers every Query with `reply` until the pipe closes.
async fn fake_server(mut far: DuplexStream, reply: Vec<u8>) {
    let mut header = [0u8; 5];
    let mut body = Vec::new();
    loop {
        if far.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        body.resize(len - 4, 0);
        if far.read_exact(&mut body).await.is_err() || far.write_all(&reply).await.is_err() {
            return;
        }
    }
}

struct Link {
    relay: Relay,
    client: DuplexStream,
    client_far: DuplexStream,
    server: DuplexStream,
    params: HashMap<String, String>,
    seen: pgfunnel::client::params::Reported,
    prepared: ServerStatements,
    query: Vec<u8>,
    answer: Vec<u8>,
}

impl Link {
    async fn round_trip(&mut self) {
        self.client_far
            .write_all(&self.query)
            .await
            .expect("write query");
        let idle = self.relay.wait_for_request(&mut self.client).await;
        assert!(matches!(idle, IdleEnd::Request), "{idle:?}");
        let end = self
            .relay
            .run(
                &mut self.client,
                &mut self.server,
                true,
                &mut LinkState {
                    params: &mut self.params,
                    seen: &mut self.seen,
                    prepared: &mut self.prepared,
                },
            )
            .await;
        assert!(matches!(end, RelayEnd::Released), "{end:?}");
        self.client_far
            .read_exact(&mut self.answer)
            .await
            .expect("read reply");
    }
}

fn relay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Elements(1));
    for rows in [1usize, 100] {
        let reply = reply(rows);
        let mut link = rt.block_on(async {
            let (client, client_far) = tokio::io::duplex(64 * 1024);
            let (server, server_far) = tokio::io::duplex(64 * 1024);
            tokio::spawn(fake_server(server_far, reply.clone()));
            let mut query = Vec::new();
            msg(&mut query, b'Q', b"SELECT 1\0");
            Link {
                relay: {
                    let mut r = Relay::new(1 << 20);
                    r.mode = RelayMode::Transaction;
                    r
                },
                client,
                client_far,
                server,
                params: HashMap::new(),
                seen: Default::default(),
                prepared: ServerStatements::default(),
                query,
                answer: vec![0; reply.len()],
            }
        });
        group.bench_function(BenchmarkId::new("simple_query_round_trip", rows), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        link.round_trip().await;
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
