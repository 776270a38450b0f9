// Neon's serverless driver (@neondatabase/serverless) against pgfunnel's edge listener, run by
// tests/it/edge/shared.rs with EDGE_ADDR (host:port), EDGE_USER, EDGE_PASSWORD and EDGE_TABLE set:
// neon() over HTTP (typed parameters, fullResults, errors, transactions with every isolation
// level and a failing member), Pool and Client over WebSocket with pipelined and ordinary
// logins, and Drizzle's neon-http driver with its migrator. Prints "NEON OK <checks>" last; any failed check exits non-zero.
import assert from 'node:assert/strict';
import { neon, neonConfig, Pool, Client } from '@neondatabase/serverless';
import ws from 'ws';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { drizzle } from 'drizzle-orm/neon-http';
import { migrate } from 'drizzle-orm/neon-http/migrator';
import { pgSchema, integer, text } from 'drizzle-orm/pg-core';
import { eq, sql as dsql } from 'drizzle-orm';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run through tests/it/edge/shared.rs)`);
  return v;
};
const addr = env('EDGE_ADDR');
const table = env('EDGE_TABLE');
// The host in the URL is never dialled by pgfunnel: an unresolvable name proves it.
const url = `postgres://${env('EDGE_USER')}:${encodeURIComponent(env('EDGE_PASSWORD'))}@db.invalid:5432/app`;

// Node 20 has no global WebSocket: the ws package provides it.
neonConfig.webSocketConstructor = ws;
neonConfig.wsProxy = () => `${addr}/v2`;
neonConfig.useSecureWebSocket = false;
neonConfig.pipelineTLS = false;
neonConfig.pipelineConnect = 'password';
neonConfig.fetchEndpoint = () => `http://${addr}/sql`;

setTimeout(() => {
  console.error('neon_suite: timed out');
  process.exit(1);
}, 60000).unref();

let checks = 0;
const check = (fn) => {
  fn();
  checks += 1;
};

const sql = neon(url);

// Typed parameters and results through the driver's own parsers.
const when = new Date('2024-01-02T03:04:05.678Z');
const [row] = await sql`SELECT ${41}::int + 1 AS i, ${'héllo'}::text AS t, ${when}::timestamptz AS ts,
  ${JSON.stringify({ a: [1, null] })}::jsonb AS j, ${[1, 2, 3]}::int[] AS arr, ${null}::int AS n,
  ${Buffer.from([0, 255, 16])}::bytea AS b, ${true}::bool AS flag, ${'1.50'}::numeric AS num`;
check(() => assert.equal(row.i, 42));
check(() => assert.equal(row.t, 'héllo'));
check(() => assert.equal(row.ts.getTime(), when.getTime()));
check(() => assert.deepEqual(row.j, { a: [1, null] }));
check(() => assert.deepEqual(row.arr, [1, 2, 3]));
check(() => assert.equal(row.n, null));
check(() => assert.deepEqual([...row.b], [0, 255, 16]));
check(() => assert.equal(row.flag, true));
check(() => assert.equal(row.num, '1.50'));

const full = await sql.query('SELECT 1 AS x UNION ALL SELECT 2', [], { fullResults: true, arrayMode: true });
check(() => assert.equal(full.command, 'SELECT'));
check(() => assert.equal(full.rowCount, 2));
check(() => assert.deepEqual(full.rows, [[1], [2]]));
check(() => assert.equal(full.fields[0].name, 'x'));

await assert.rejects(sql`SELECT * FROM edge_no_such_table`, (e) => e.code === '42P01' && /does not exist/.test(e.message), 'missing table');
checks += 1;

// Transactions: every isolation level; a failing member rolls the whole batch back.
await sql`CREATE TABLE ${sql.unsafe(table)} (id int PRIMARY KEY)`;
for (const isolationLevel of ['ReadUncommitted', 'ReadCommitted', 'RepeatableRead', 'Serializable']) {
  const [, level] = await sql.transaction((tx) => [tx`SELECT 1`, tx`SHOW transaction_isolation`], { isolationLevel });
  check(() => assert.equal(level[0].transaction_isolation, isolationLevel.replace(/([a-z])([A-Z])/, '$1 $2').toLowerCase()));
}
const ins = (id) => sql`INSERT INTO ${sql.unsafe(table)} VALUES (${id})`;
await sql.transaction([ins(1), ins(2)]);
await assert.rejects(sql.transaction([ins(3), ins(1)]), (e) => e.code === '23505', 'failing member');
const [{ c }] = await sql`SELECT count(*)::int AS c FROM ${sql.unsafe(table)}`;
check(() => assert.equal(c, 2));
await assert.rejects(sql.transaction([ins(9)], { readOnly: true }), (e) => e.code === '25006', 'read-only transaction');
checks += 1;

// Pool over WebSocket, pipelined login, an interactive transaction.
const pool = new Pool({ connectionString: url });
const client = await pool.connect();
await client.query('BEGIN');
await client.query(`INSERT INTO ${table} VALUES ($1)`, [5]);
const inTx = await client.query(`SELECT count(*)::int AS c FROM ${table}`);
check(() => assert.equal(inTx.rows[0].c, 3));
await client.query('ROLLBACK');
client.release();
const after = await pool.query(`SELECT count(*)::int AS c FROM ${table}`);
check(() => assert.equal(after.rows[0].c, 2));
await pool.end();

// Client without pipelining: SCRAM as over TCP.
const plain = new Client(url);
plain.neonConfig.pipelineConnect = false;
await plain.connect();
const r = await plain.query('SELECT $1::text AS v', ['scram']);
check(() => assert.equal(r.rows[0].v, 'scram'));
await plain.end();

// A wrong password is refused with 28P01, over HTTP and over WebSocket.
const bad = `postgres://${env('EDGE_USER')}:wrong@db.invalid/app`;
await assert.rejects(neon(bad)`SELECT 1`, (e) => e.code === '28P01', 'wrong password over HTTP');
const badClient = new Client(bad);
badClient.on('error', () => {});
// Pipelined, connect() may resolve before the refusal arrives: then the first query gets it.
await assert.rejects(
  (async () => {
    await badClient.connect();
    await badClient.query('SELECT 1');
  })(),
  (e) => e.code === '28P01',
  'wrong password over WebSocket',
);
checks += 2;

await sql`DROP TABLE ${sql.unsafe(table)}`;

// Drizzle's neon-http driver: its migrator (run twice: the second applies nothing), queries
// and db.batch.
const schema = `${table}_drizzle`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'neon-drizzle-'));
fs.mkdirSync(path.join(dir, 'meta'));
const journal = { version: '7', dialect: 'postgresql', entries: [{ idx: 0, version: '7', when: 1700000000000, tag: '0000_init', breakpoints: true }] };
fs.writeFileSync(path.join(dir, 'meta/_journal.json'), JSON.stringify(journal));
fs.writeFileSync(
  path.join(dir, '0000_init.sql'),
  `CREATE TABLE "${schema}"."items" ("id" integer PRIMARY KEY, "name" text NOT NULL);\n--> statement-breakpoint\nINSERT INTO "${schema}"."items" VALUES (1, 'one');\n`,
);
const db = drizzle(neon(url));
const migrations = { migrationsFolder: dir, migrationsSchema: schema, migrationsTable: 'migrations' };
await migrate(db, migrations);
await migrate(db, migrations);
const items = pgSchema(schema).table('items', { id: integer('id').primaryKey(), name: text('name').notNull() });
await db.insert(items).values({ id: 2, name: 'two' });
const two = await db.select().from(items).where(eq(items.id, 2));
check(() => assert.deepEqual(two, [{ id: 2, name: 'two' }]));
const [all, counted] = await db.batch([db.select().from(items), db.select({ n: dsql`count(*)::int` }).from(items)]);
check(() => assert.equal(all.length, 2));
check(() => assert.equal(counted[0].n, 2));
const applied = await db.execute(dsql.raw(`SELECT count(*)::int AS c FROM "${schema}".migrations`));
check(() => assert.equal((applied.rows ?? applied)[0].c, 1));
await sql`DROP SCHEMA ${sql.unsafe(`"${schema}"`)} CASCADE`;
fs.rmSync(dir, { recursive: true, force: true });

console.log(`NEON OK ${checks}`);
