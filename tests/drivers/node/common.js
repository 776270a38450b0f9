// Shared settings of the Node driver programs: where pgfunnel listens (env vars set by
// tests/it/drivers), the checks every program makes, and phases with a watchdog. A failed
// check throws, so the program exits non-zero with the reason.
'use strict';

const crypto = require('node:crypto');

const env = (name) => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set (run through tests/it/drivers)`);
  return v;
};

const cfg = {
  host: env('PGFUNNEL_HOST'),
  port: Number(env('PGFUNNEL_PORT')),
  user: env('PGFUNNEL_USER'),
  password: env('PGFUNNEL_PASSWORD'),
  database: env('PGFUNNEL_DB'),
  // Prefix of this run's tables and channels (the shared Postgres serves many tests at once).
  prefix: env('PGFUNNEL_PREFIX'),
  clients: Number(process.env.PGFUNNEL_CLIENTS || '12'),
  poolSize: Number(process.env.PGFUNNEL_POOL_SIZE || '2'),
};

const ROUNDS = 15;
const BIG_ROWS = 50000;
const BIG_VALUE = '0123456789abcdef'.repeat((5 * 1024 * 1024) / 16); // 5 MiB of text
const NOTIFY_TIMEOUT_MS = 10000;
const PHASE_TIMEOUT_MS = 60000;

let checks = 0;
const ok = (n = 1) => {
  checks += n;
};

const short = (v) => {
  const text = typeof v === 'string' ? JSON.stringify(v) : JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x));
  return text && text.length > 300 ? `${text.slice(0, 300)}... (${text.length} chars)` : text;
};

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

function checkEq(got, want, what) {
  if (short(got) !== short(want)) throw new Error(`${what}: got ${short(got)}, want ${short(want)}`);
}

const md5 = (text) => crypto.createHash('md5').update(text).digest('hex');

// A statement_timeout only client `ci` uses, as Postgres prints it (never a whole second).
const clientTimeout = (ci) => `${10001 + ci}ms`;

const copyRows = () => Array.from({ length: 1000 }, (_, i) => [i + 1, `copy row ${i + 1} with tab\t`]);
const copyText = (rows) => rows.map(([id, note]) => `${id}\t${note.replace(/\t/g, '\\t')}\n`).join('');

// Expects `promise` to fail with `sqlstate`.
async function expectError(promise, sqlstate, what) {
  try {
    await promise;
  } catch (e) {
    checkEq(e.code, sqlstate, `error of ${what} (${e.message})`);
    ok();
    return;
  }
  throw new Error(`${what} succeeded, expected ${sqlstate}`);
}

// Resolves with the value the callback receives, or rejects after `ms`.
function waitFor(ms, what, register) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
    register((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

// Runs [name, async fn] phases in order, each under a watchdog that ends the process (a
// driver may not give up while the pooler is stuck); the last line is what tests/it/drivers
// looks for.
async function runPhases(name, phases) {
  for (const [phase, fn] of phases) {
    const started = Date.now();
    const timer = setTimeout(() => {
      console.log(`FAILED: phase '${phase}' did not finish within ${PHASE_TIMEOUT_MS / 1000} s`);
      process.exit(1);
    }, PHASE_TIMEOUT_MS);
    try {
      await fn();
    } catch (e) {
      console.log(`FAILED: phase '${phase}': ${e && e.stack ? e.stack : e}`);
      process.exit(1);
    }
    clearTimeout(timer);
    console.log(`phase ${phase}: ok (${Date.now() - started} ms)`);
  }
  console.log(`DRIVER OK ${name} checks=${checks}`);
  process.exit(0);
}

module.exports = {
  cfg, ROUNDS, BIG_ROWS, BIG_VALUE, NOTIFY_TIMEOUT_MS, ok, check, checkEq, md5, clientTimeout,
  copyRows, copyText, expectError, waitFor, runPhases,
};
