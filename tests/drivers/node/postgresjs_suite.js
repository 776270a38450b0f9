// postgres.js through pgfunnel in transaction mode with its default `prepare: true` (every
// query a named prepared statement, cached per connection), pipelined queries, sql.begin,
// COPY streams and sql.listen. Run by tests/it/drivers; exits non-zero on the first failed
// check.
'use strict';

const postgres = require('postgres');
const { pipeline } = require('node:stream/promises');
const { Readable } = require('node:stream');
const {
  cfg, ROUNDS, BIG_ROWS, BIG_VALUE, NOTIFY_TIMEOUT_MS, ok, check, checkEq, md5, clientTimeout,
  copyRows, copyText, expectError, waitFor, runPhases,
} = require('./common');

const ITEMS = `${cfg.prefix}_items`;
const BIG = `${cfg.prefix}_big`;
const COPY = `${cfg.prefix}_copy`;

// One postgres.js pool for the program, as applications use it: `max` connections.
const sql = postgres({
  host: cfg.host, port: cfg.port, user: cfg.user, password: cfg.password, database: cfg.database,
  max: cfg.clients, prepare: true, connect_timeout: 20, onnotice: () => {},
});

async function createTables() {
  for (const t of [ITEMS, BIG, COPY]) await sql`drop table if exists ${sql(t)}`;
  await sql`create table ${sql(ITEMS)} (id int primary key, client int not null, val text not null)`;
  await sql`create table ${sql(BIG)} (id int primary key, data text not null)`;
  await sql`create table ${sql(COPY)} (id int primary key, note text not null)`;
}

// A worker holds one connection of the pool (sql.reserve) for all its rounds.
async function worker(ci, pids) {
  const c = await sql.reserve();
  try {
    // A SET is no statement with parameters: unsafe, but still prepared (extended protocol).
    await c.unsafe(`set statement_timeout = '${clientTimeout(ci)}'`, [], { prepare: true });
    for (let r = 0; r < ROUNDS; r++) {
      const key = ci * 1000 + r;
      const [row] = await c`select ${key}::int * 2 as v, pg_backend_pid() as pid, current_setting('statement_timeout') as st`;
      checkEq(row.v, key * 2, 'prepared select');
      checkEq(row.st, clientTimeout(ci), `client ${ci} statement_timeout`);
      pids.add(row.pid);
      const [ins] = await c`insert into ${sql(ITEMS)} (id, client, val) values (${key}, ${ci}, ${`v${key}`}) returning id, val`;
      checkEq([ins.id, ins.val], [key, `v${key}`], 'prepared insert returning');
      if (r % 5 === 0) {
        await c`begin`;
        await c`insert into ${sql(ITEMS)} (id, client, val) values (${-key - 1}, ${ci}, 'rolled back')`;
        await c`rollback`;
        const [{ n }] = await c`select count(*)::int as n from ${sql(ITEMS)} where id = ${-key - 1}`;
        checkEq(n, 0, 'row of a rolled back transaction');
        await expectError(c`select 1 / ${0}::int`, '22012', 'division by zero');
        await expectError(c`insert into ${sql(ITEMS)} (id, client, val) values (${key}, ${ci}, 'dup')`, '23505', 'duplicate key');
        const [{ r: one }] = await c`select 1 / ${1}::int as r`;
        checkEq(one, 1, 'prepared query after errors');
      }
      ok(4);
    }
    const [{ n }] = await c`select count(*)::int as n from ${sql(ITEMS)} where client = ${ci}`;
    checkEq(n, ROUNDS, `rows of client ${ci}`);
    // The connection goes back to postgres.js's pool: leave no setting behind.
    await c`reset statement_timeout`;
  } finally {
    c.release();
  }
}

async function concurrentClients() {
  const pids = new Set();
  await Promise.all(Array.from({ length: cfg.clients }, (_, ci) => worker(ci, pids)));
  check(pids.size >= 1 && pids.size <= cfg.poolSize, `${cfg.clients} clients saw ${pids.size} server pids, pool is ${cfg.poolSize}`);
  // Pipelined: many queries in flight on the pool's connections at once.
  const results = await Promise.all(Array.from({ length: 200 }, (_, i) => sql`select ${i}::int + 1 as v`));
  results.forEach(([row], i) => checkEq(row.v, i + 1, 'pipelined query'));
  // Transactions with sql.begin: a thrown error rolls back.
  await expectError(sql.begin(async (tx) => {
    await tx`insert into ${sql(ITEMS)} (id, client, val) values (${-1}, ${0}, 'rolled back')`;
    await tx`select 1 / ${0}::int`;
  }), '22012', 'error inside sql.begin');
  const [{ n: gone }] = await sql`select count(*)::int as n from ${sql(ITEMS)} where id = ${-1}`;
  checkEq(gone, 0, 'row of a rolled back sql.begin');
  const [{ n, clients }] = await sql`select count(*)::int as n, count(distinct client)::int as clients from ${sql(ITEMS)}`;
  checkEq([n, clients], [cfg.clients * ROUNDS, cfg.clients], 'rows of all clients');
  ok(203);
}

async function largeResults() {
  const rows = await sql`select g, md5(g::text) as h from generate_series(1, ${BIG_ROWS}::int) g`;
  checkEq(rows.length, BIG_ROWS, 'rows of a large result');
  checkEq(rows.reduce((s, r) => s + r.g, 0), (BIG_ROWS * (BIG_ROWS + 1)) / 2, 'sum of a large result');
  checkEq(rows[rows.length - 1].h, md5(String(BIG_ROWS)), 'last row of a large result');
  const [got] = await sql`select length(v) as n, md5(v) as h, v from (select repeat(${'0123456789abcdef'}::text, ${BIG_VALUE.length / 16}::int) v) s`;
  checkEq([got.n, got.h], [BIG_VALUE.length, md5(BIG_VALUE)], '5 MiB result value');
  check(got.v === BIG_VALUE, '5 MiB result value differs');
  // A cursor: rows in batches of 5000 inside one transaction.
  let sum = 0;
  await sql.begin(async (tx) => {
    await tx`select g from generate_series(1, ${BIG_ROWS}::int) g`.cursor(5000, (batch) => {
      for (const r of batch) sum += r.g;
    });
  });
  checkEq(sum, (BIG_ROWS * (BIG_ROWS + 1)) / 2, 'sum over a cursor');
  ok(5);
}

async function largeParameter() {
  await sql`insert into ${sql(BIG)} (id, data) values (${1}, ${BIG_VALUE})`;
  const [got] = await sql`select length(data) as n, md5(data) as h, data from ${sql(BIG)} where id = ${1}`;
  checkEq([got.n, got.h], [BIG_VALUE.length, md5(BIG_VALUE)], '5 MiB parameter stored');
  check(got.data === BIG_VALUE, '5 MiB parameter read back differs');
  ok(2);
}

async function copyInOut() {
  const rows = copyRows();
  await pipeline(Readable.from([copyText(rows)]), await sql`copy ${sql(COPY)} (id, note) from stdin`.writable());
  const chunks = [];
  for await (const chunk of await sql`copy (select id, note from ${sql(COPY)} order by id) to stdout`.readable()) chunks.push(chunk);
  checkEq(Buffer.concat(chunks).toString(), copyText(rows), 'COPY TO output');
  // No failing COPY here: postgres.js 3.4 never completes the write of a COPY FROM that the
  // server rejects mid-stream (also straight to Postgres); the other drivers cover that case.
  const [{ n }] = await sql`select count(*)::int as n from ${sql(COPY)}`;
  checkEq(n, rows.length, 'rows after COPY');
  ok(2);
}

async function listenNotify() {
  const channel = `${cfg.prefix}_chan`;
  let received;
  const got = waitFor(NOTIFY_TIMEOUT_MS, 'notification', (done) => {
    received = done;
  });
  // sql.listen opens its own connection and resolves once LISTEN ran.
  const listening = await sql.listen(channel, (payload) => received(payload));
  await sql.notify(channel, 'hello from postgres.js');
  checkEq(await got, 'hello from postgres.js', 'notification payload');
  await listening.unlisten();
  const [{ v }] = await sql`select ${7}::int as v`;
  checkEq(v, 7, 'query after UNLISTEN');
  ok(2);
}

async function statementTimeoutHolds() {
  const c = await sql.reserve();
  try {
    await c`set statement_timeout = '150ms'`;
    for (let i = 0; i < 3; i++) {
      const [{ st }] = await sql`select current_setting('statement_timeout') as st`;
      checkEq(st, '0', 'statement_timeout of a client that never set it');
      await expectError(c`select pg_sleep(${5})`, '57014', 'pg_sleep past statement_timeout');
    }
    await c`reset statement_timeout`;
    const [{ st }] = await c`select current_setting('statement_timeout') as st`;
    checkEq(st, '0', 'after RESET');
  } finally {
    c.release();
  }
  ok(2);
}

runPhases('postgres.js', [
  ['create tables', createTables],
  ['concurrent clients', concurrentClients],
  ['large results', largeResults],
  ['copy', copyInOut],
  ['listen/notify', listenNotify],
  ['statement_timeout', statementTimeoutHolds],
  ['large parameter', largeParameter],
  ['close', () => sql.end({ timeout: 5 })],
]);
