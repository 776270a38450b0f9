//! The exchanges the stress test runs, each checking that every byte arrived: COPY FROM
//! STDIN of random rows (count, length sum and md5 checked by Postgres), COPY TO and large
//! SELECTs (every byte compared with what the query must produce), and echo of a large
//! bytea parameter.

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use rand::rngs::StdRng;
use rand::Rng;
use tokio_postgres::Client;

/// What went wrong in one exchange (a message for the test's panic).
pub type OpResult = Result<(), String>;

fn err(what: &str) -> impl Fn(tokio_postgres::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// `len` random letters (COPY-safe: no tab, newline or backslash).
pub fn letters(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    for b in &mut v {
        *b = b'a' + *b % 26;
    }
    v
}

/// Rows for a COPY of about `total` bytes with payloads of `row_len` bytes.
pub struct CopyPlan {
    pub total: usize,
    pub row_len: usize,
    /// Largest CopyData message the client sends (one message may hold many rows).
    pub max_message: usize,
}

/// CREATE TABLE, COPY FROM STDIN of the plan's rows, then Postgres's own count, length sum
/// and md5 of the payloads compared with the client's. `in_txn` wraps DDL and COPY in one
/// transaction block (the transaction-mode case).
pub async fn copy_in(
    client: &Client,
    table: &str,
    plan: &CopyPlan,
    rng: &mut StdRng,
    in_txn: bool,
) -> OpResult {
    let begin = if in_txn { "BEGIN; " } else { "" };
    let ddl = format!("{begin}CREATE TABLE {table} (id int, payload text)");
    client.batch_execute(&ddl).await.map_err(err("create"))?;
    let sink = client
        .copy_in(&format!("COPY {table} FROM STDIN"))
        .await
        .map_err(err("copy in"))?;
    futures::pin_mut!(sink);
    let (mut rows, mut bytes, mut md5) = (0u64, 0usize, Md5::new());
    let mut pending = BytesMut::new();
    let mut sent = 0;
    while sent < plan.total || rows == 0 {
        let payload = letters(rng, plan.row_len);
        md5.update(&payload);
        rows += 1;
        bytes += payload.len();
        pending.extend_from_slice(format!("{rows}\t").as_bytes());
        pending.extend_from_slice(&payload);
        pending.extend_from_slice(b"\n");
        sent += payload.len() + 8;
        if pending.len() >= plan.max_message {
            sink.send(pending.split().freeze())
                .await
                .map_err(err("copy data"))?;
        }
    }
    if !pending.is_empty() {
        sink.send(pending.freeze())
            .await
            .map_err(err("copy data"))?;
    }
    let n = sink.finish().await.map_err(err("copy done"))?;
    if n != rows {
        return Err(format!("COPY reported {n} rows, sent {rows}"));
    }
    let check = format!(
        "SELECT count(*), coalesce(sum(length(payload)), 0)::bigint, \
         md5(coalesce(string_agg(payload, '' ORDER BY id), '')) FROM {table}"
    );
    let row = client.query_one(&check, &[]).await.map_err(err("check"))?;
    let (count, sum, digest): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    let want = hex(&md5.finalize());
    if (count as u64, sum as usize, digest.as_str()) != (rows, bytes, want.as_str()) {
        return Err(format!(
            "table holds ({count}, {sum}, {digest}), sent ({rows}, {bytes}, {want})"
        ));
    }
    let end = if in_txn { "; COMMIT" } else { "" };
    client
        .batch_execute(&format!("DROP TABLE {table}{end}"))
        .await
        .map_err(err("drop"))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The rows `generated_sql(rows, width)` produces, in COPY text form.
fn expected_rows(rows: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * (width + 8));
    for i in 1..=rows {
        out.extend_from_slice(format!("{i}\t").as_bytes());
        out.extend(std::iter::repeat_n(b'A' + (i % 26) as u8, width));
        out.push(b'\n');
    }
    out
}

fn generated_sql(rows: usize, width: usize) -> String {
    format!("SELECT i, repeat(chr(65 + i % 26), {width}) FROM generate_series(1, {rows}) i")
}

/// COPY (query) TO STDOUT, every byte compared.
pub async fn copy_out(client: &Client, rows: usize, width: usize) -> OpResult {
    let sql = format!("COPY ({}) TO STDOUT", generated_sql(rows, width));
    let stream = client.copy_out(&sql).await.map_err(err("copy out"))?;
    futures::pin_mut!(stream);
    let want = expected_rows(rows, width);
    let mut at = 0;
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(err("copy out data"))?;
        if want.get(at..at + chunk.len()) != Some(&chunk[..]) {
            return Err(format!(
                "COPY TO differs within bytes {at}..{}",
                at + chunk.len()
            ));
        }
        at += chunk.len();
    }
    if at != want.len() {
        return Err(format!("COPY TO gave {at} bytes, want {}", want.len()));
    }
    Ok(())
}

/// A SELECT of `rows` rows `width` wide, every value compared.
pub async fn select(client: &Client, rows: usize, width: usize) -> OpResult {
    let got = client
        .query(&generated_sql(rows, width), &[])
        .await
        .map_err(err("select"))?;
    if got.len() != rows {
        return Err(format!("SELECT gave {} rows, want {rows}", got.len()));
    }
    for (i, row) in got.iter().enumerate() {
        let (id, text): (i32, &str) = (row.get(0), row.get(1));
        let letter = (b'A' + ((i + 1) % 26) as u8) as char;
        if id as usize != i + 1 || text.len() != width || text.chars().any(|c| c != letter) {
            return Err(format!("SELECT row {} is wrong", i + 1));
        }
    }
    Ok(())
}

/// Sends `len` random bytes as a bytea parameter and checks Postgres echoes them back.
pub async fn echo(client: &Client, len: usize, rng: &mut StdRng) -> OpResult {
    let mut value = vec![0u8; len];
    rng.fill(&mut value[..]);
    let row = client
        .query_one("SELECT $1::bytea, length($1::bytea)", &[&value])
        .await
        .map_err(err("echo"))?;
    let (back, n): (&[u8], i32) = (row.get(0), row.get(1));
    if n as usize != len || back != &value[..] {
        return Err(format!(
            "echo of {len} bytes came back as {} bytes",
            back.len()
        ));
    }
    Ok(())
}

/// A few statements of DDL and a small query.
pub async fn ddl(client: &Client, table: &str) -> OpResult {
    let sql = format!(
        "CREATE TABLE {table} (a int); ALTER TABLE {table} ADD COLUMN b text; \
         CREATE INDEX ON {table} (a); INSERT INTO {table} VALUES (1, 'x'), (2, 'y')"
    );
    client.batch_execute(&sql).await.map_err(err("ddl"))?;
    let n: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .map_err(err("count"))?
        .get(0);
    if n != 2 {
        return Err(format!("{table} has {n} rows, want 2"));
    }
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .map_err(err("drop"))
}
