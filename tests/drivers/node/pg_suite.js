// node-postgres (`pg`) through pgfunnel in transaction mode, with named queries ({ name, text,
// values }: Parse once per connection, then Bind/Execute only), COPY through pg-copy-streams.
// Run by tests/it/drivers; exits non-zero on the first failed check.
'use strict';

const { Client } = require('pg');
const { from: copyFrom, to: copyTo } = require('pg-copy-streams');
const { pipeline } = require('node:stream/promises');
const { Readable } = require('node:stream');
const {
  cfg, ROUNDS, BIG_ROWS, BIG_VALUE, NOTIFY_TIMEOUT_MS, ok, check, checkEq, md5, clientTimeout,
  copyRows, copyText, expectError, waitFor, runPhases,
} = require('./common');

const ITEMS = `${cfg.prefix}_items`;
const BIG = `${cfg.prefix}_big`;
const COPY = `${cfg.prefix}_copy`;

async function connect() {
  const c = new Client({
    host: cfg.host, port: cfg.port, user: cfg.user, password: cfg.password, database: cfg.database,
    connectionTimeoutMillis: 20000,
  });
  await c.connect();
  return c;
}

async function withClient(fn) {
  const c = await connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

const q = {
  double: (v) => ({
    name: 'double', values: [v],
    text: "select $1::int * 2 as v, pg_backend_pid() as pid, current_setting('statement_timeout') as st",
  }),
  insert: (id, client, val) => ({
    name: 'insert-item', values: [id, client, val],
    text: `insert into ${ITEMS} (id, client, val) values ($1, $2, $3) returning id, val`,
  }),
  countId: (id) => ({ name: 'count-id', values: [id], text: `select count(*)::int as n from ${ITEMS} where id = $1` }),
  div: (d) => ({ name: 'div', values: [d], text: 'select 1 / $1::int as r' }),
  setting: () => ({ name: 'setting', values: [], text: "select current_setting('statement_timeout') as st" }),
};

async function createTables() {
  await withClient(async (c) => {
    for (const t of [ITEMS, BIG, COPY]) await c.query(`drop table if exists ${t}`);
    await c.query(`create table ${ITEMS} (id int primary key, client int not null, val text not null)`);
    await c.query(`create table ${BIG} (id int primary key, data text not null)`);
    await c.query(`create table ${COPY} (id int primary key, note text not null)`);
  });
}

async function worker(ci, pids) {
  await withClient(async (c) => {
    await c.query(`set statement_timeout = '${clientTimeout(ci)}'`);
    for (let r = 0; r < ROUNDS; r++) {
      const key = ci * 1000 + r;
      const row = (await c.query(q.double(key))).rows[0];
      checkEq(row.v, key * 2, 'named select');
      checkEq(row.st, clientTimeout(ci), `client ${ci} statement_timeout`);
      pids.add(row.pid);
      const ins = (await c.query(q.insert(key, ci, `v${key}`))).rows[0];
      checkEq([ins.id, ins.val], [key, `v${key}`], 'named insert returning');
      if (r % 5 === 0) {
        await c.query('begin');
        await c.query(q.insert(-key - 1, ci, 'rolled back'));
        await c.query('rollback');
        checkEq((await c.query(q.countId(-key - 1))).rows[0].n, 0, 'row of a rolled back transaction');
        await expectError(c.query(q.div(0)), '22012', 'division by zero');
        await expectError(c.query(q.insert(key, ci, 'dup')), '23505', 'duplicate key');
        await c.query('begin');
        await expectError(c.query(q.div(0)), '22012', 'division by zero in a transaction');
        await expectError(c.query(q.double(1)), '25P02', 'query in an aborted transaction');
        await c.query('rollback');
        checkEq((await c.query(q.div(1))).rows[0].r, 1, 'named query after an aborted transaction');
      }
      ok(4);
    }
    const n = (await c.query({ name: 'count-client', text: `select count(*)::int as n from ${ITEMS} where client = $1`, values: [ci] })).rows[0].n;
    checkEq(n, ROUNDS, `rows of client ${ci}`);
  });
}

async function concurrentClients() {
  const pids = new Set();
  await Promise.all(Array.from({ length: cfg.clients }, (_, ci) => worker(ci, pids)));
  check(pids.size >= 1 && pids.size <= cfg.poolSize, `${cfg.clients} clients saw ${pids.size} server pids, pool is ${cfg.poolSize}`);
  await withClient(async (c) => {
    const row = (await c.query(`select count(*)::int as n, count(distinct client)::int as clients from ${ITEMS}`)).rows[0];
    checkEq([row.n, row.clients], [cfg.clients * ROUNDS, cfg.clients], 'rows of all clients');
  });
  ok();
}

async function largeResults() {
  await withClient(async (c) => {
    const rows = (await c.query({ name: 'series', text: 'select g, md5(g::text) as h from generate_series(1, $1::int) g', values: [BIG_ROWS] })).rows;
    checkEq(rows.length, BIG_ROWS, 'rows of a large result');
    checkEq(rows.reduce((s, r) => s + r.g, 0), (BIG_ROWS * (BIG_ROWS + 1)) / 2, 'sum of a large result');
    checkEq(rows[rows.length - 1].h, md5(String(BIG_ROWS)), 'last row of a large result');
    const got = (await c.query({ name: 'repeat', text: 'select length(v) as n, md5(v) as h, v from (select repeat($1::text, $2::int) v) s', values: ['0123456789abcdef', BIG_VALUE.length / 16] })).rows[0];
    checkEq([got.n, got.h], [BIG_VALUE.length, md5(BIG_VALUE)], '5 MiB result value');
    check(got.v === BIG_VALUE, '5 MiB result value differs');
  });
  ok(4);
}

async function largeParameter() {
  await withClient(async (c) => {
    await c.query({ name: 'insert-big', text: `insert into ${BIG} (id, data) values ($1, $2)`, values: [1, BIG_VALUE] });
    const got = (await c.query({ name: 'read-big', text: `select length(data) as n, md5(data) as h, data from ${BIG} where id = $1`, values: [1] })).rows[0];
    checkEq([got.n, got.h], [BIG_VALUE.length, md5(BIG_VALUE)], '5 MiB parameter stored');
    check(got.data === BIG_VALUE, '5 MiB parameter read back differs');
  });
  ok(2);
}

async function copyInOut() {
  const rows = copyRows();
  await withClient(async (c) => {
    const stream = c.query(copyFrom(`copy ${COPY} (id, note) from stdin`));
    await pipeline(Readable.from([copyText(rows)]), stream);
    checkEq(stream.rowCount, rows.length, 'COPY FROM row count');
    const chunks = [];
    for await (const chunk of c.query(copyTo(`copy (select id, note from ${COPY} order by id) to stdout`))) chunks.push(chunk);
    checkEq(Buffer.concat(chunks).toString(), copyText(rows), 'COPY TO output');
    await expectError(pipeline(Readable.from(['not a number\tx\n']), c.query(copyFrom(`copy ${COPY} (id, note) from stdin`))), '22P02', 'COPY of bad data');
    checkEq((await c.query({ name: 'count-copy', text: `select count(*)::int as n from ${COPY}`, values: [] })).rows[0].n, rows.length, 'rows after a failed COPY');
  });
  ok(3);
}

async function listenNotify() {
  const channel = `${cfg.prefix}_chan`;
  const listener = await connect();
  try {
    await withClient(async (sender) => {
      const got = waitFor(NOTIFY_TIMEOUT_MS, 'notification', (done) => listener.on('notification', (m) => done([m.channel, m.payload])));
      await listener.query(`listen ${channel}`);
      await sender.query({ name: 'notify', text: 'select pg_notify($1, $2)', values: [channel, 'hello from pg'] });
      checkEq(await got, [channel, 'hello from pg'], 'notification received');
      checkEq((await sender.query(q.div(1))).rows[0].r, 1, 'sender after NOTIFY');
    });
  } finally {
    await listener.end();
  }
  ok(2);
}

async function statementTimeoutHolds() {
  await withClient(async (c) => {
    await withClient(async (other) => {
      await c.query("set statement_timeout = '150ms'");
      for (let i = 0; i < 3; i++) {
        checkEq((await other.query(q.setting())).rows[0].st, '0', 'statement_timeout of a client that never set it');
        await expectError(c.query({ name: 'sleep', text: 'select pg_sleep($1::int)', values: [5] }), '57014', 'pg_sleep past statement_timeout');
      }
      await c.query('reset statement_timeout');
      checkEq((await c.query(q.setting())).rows[0].st, '0', 'after RESET');
    });
  });
  ok(2);
}

runPhases('pg', [
  ['create tables', createTables],
  ['concurrent clients', concurrentClients],
  ['large results', largeResults],
  ['copy', copyInOut],
  ['listen/notify', listenNotify],
  ['statement_timeout', statementTimeoutHolds],
  ['large parameter', largeParameter],
]);
