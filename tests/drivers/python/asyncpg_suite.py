"""asyncpg through pgfunnel in transaction mode with its defaults: every query with arguments
and every fetch is a named prepared statement from its statement cache (__asyncpg_stmt_N__),
plus explicit conn.prepare(). Run by tests/it/drivers; exits non-zero on the first failed
check."""

import asyncio
import io

import asyncpg

from common import (BIG_ROWS, BIG_VALUE, CLIENTS, DB, HOST, NOTIFY_TIMEOUT, PASSWORD, POOL_SIZE,
                    PORT, PREFIX, ROUNDS, USER, check, check_eq, client_timeout, copy_rows, md5,
                    run_async_phases)

ITEMS, BIG, COPY = f"{PREFIX}_items", f"{PREFIX}_big", f"{PREFIX}_copy"
checks = 0


def ok(n=1):
    global checks
    checks += n


async def connect():
    return await asyncpg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB,
                                 ssl=False, timeout=20)


async def expect_error(conn, sqlstate, query, *args):
    try:
        await conn.fetch(query, *args)
    except asyncpg.PostgresError as e:
        check_eq(e.sqlstate, sqlstate, f"error of {query!r}")
        ok()
        return
    raise AssertionError(f"{query!r} succeeded, expected {sqlstate}")


async def create_tables():
    conn = await connect()
    try:
        for t in (ITEMS, BIG, COPY):
            await conn.execute(f"drop table if exists {t}")
        await conn.execute(f"create table {ITEMS} (id int primary key, client int not null, val text not null)")
        await conn.execute(f"create table {BIG} (id int primary key, data text not null)")
        await conn.execute(f"create table {COPY} (id int primary key, note text not null)")
    finally:
        await conn.close()


async def worker(ci, pids):
    conn = await connect()
    try:
        # Simple protocol (no arguments) for the SET, extended protocol for everything after.
        await conn.execute(f"set statement_timeout = '{client_timeout(ci)}'")
        select = await conn.prepare("select $1::int * 2, pg_backend_pid(), current_setting('statement_timeout')")
        for r in range(ROUNDS):
            key = ci * 1000 + r
            row = await select.fetchrow(key)
            check_eq(row[0], key * 2, "prepared select")
            check_eq(row[2], client_timeout(ci), f"client {ci} statement_timeout")
            pids.add(row[1])
            got = await conn.fetchrow(f"insert into {ITEMS} (id, client, val) values ($1, $2, $3) returning id, val",
                                      key, ci, f"v{key}")
            check_eq(tuple(got), (key, f"v{key}"), "insert returning")
            if r % 5 == 0:
                tr = conn.transaction()
                await tr.start()
                await conn.execute(f"insert into {ITEMS} (id, client, val) values ($1, $2, 'rolled back')",
                                   -key - 1, ci)
                await tr.rollback()
                n = await conn.fetchval(f"select count(*) from {ITEMS} where id = $1", -key - 1)
                check_eq(n, 0, "row of a rolled back transaction")
                await expect_error(conn, "22012", "select 1 / $1::int", 0)
                await expect_error(conn, "23505", f"insert into {ITEMS} (id, client, val) values ($1, $2, 'dup')",
                                   key, ci)
                try:
                    async with conn.transaction():
                        await conn.fetchval("select 1 / $1::int", 0)
                    raise AssertionError("division by zero in a transaction succeeded")
                except asyncpg.DivisionByZeroError:
                    ok()
                check_eq(await select.fetchval(7), 14, "prepared select after a failed transaction")
            ok(4)
        n = await conn.fetchval(f"select count(*) from {ITEMS} where client = $1", ci)
        check_eq(n, ROUNDS, f"rows of client {ci}")
    finally:
        await conn.close()


async def concurrent_clients():
    pids = set()
    await asyncio.gather(*(worker(ci, pids) for ci in range(CLIENTS)))
    check(1 <= len(pids) <= POOL_SIZE, f"{CLIENTS} clients saw {len(pids)} server pids, pool is {POOL_SIZE}")
    conn = await connect()
    try:
        row = await conn.fetchrow(f"select count(*), count(distinct client) from {ITEMS}")
        check_eq(tuple(row), (CLIENTS * ROUNDS, CLIENTS), "rows of all clients")
    finally:
        await conn.close()
    ok()


async def large_results():
    conn = await connect()
    try:
        rows = await conn.fetch("select g, md5(g::text) from generate_series(1, $1::int) g", BIG_ROWS)
        check_eq(len(rows), BIG_ROWS, "rows of a large result")
        check_eq(sum(r[0] for r in rows), BIG_ROWS * (BIG_ROWS + 1) // 2, "sum of a large result")
        check_eq(rows[-1][1], md5(str(BIG_ROWS)), "last row of a large result")
        got = await conn.fetchrow("select length(v), md5(v), v from (select repeat($1::text, $2::int) v) s",
                                  "0123456789abcdef", len(BIG_VALUE) // 16)
        check_eq((got[0], got[1]), (len(BIG_VALUE), md5(BIG_VALUE)), "5 MiB result value")
        check(got[2] == BIG_VALUE, "5 MiB result value differs")
        # A cursor (portal) fetched in pieces inside a transaction.
        async with conn.transaction():
            total = 0
            async for rec in conn.cursor("select g from generate_series(1, $1::int) g", BIG_ROWS, prefetch=5000):
                total += rec[0]
        check_eq(total, BIG_ROWS * (BIG_ROWS + 1) // 2, "sum over a cursor")
    finally:
        await conn.close()
    ok(5)


async def large_parameter():
    conn = await connect()
    try:
        await conn.execute(f"insert into {BIG} (id, data) values ($1, $2)", 1, BIG_VALUE)
        got = await conn.fetchrow(f"select length(data), md5(data), data from {BIG} where id = $1", 1)
        check_eq((got[0], got[1]), (len(BIG_VALUE), md5(BIG_VALUE)), "5 MiB parameter stored")
        check(got[2] == BIG_VALUE, "5 MiB parameter read back differs")
    finally:
        await conn.close()
    ok(2)


async def copy_in_out():
    rows = copy_rows()
    conn = await connect()
    try:
        status = await conn.copy_records_to_table(COPY, records=rows, columns=["id", "note"])
        check_eq(status, f"COPY {len(rows)}", "copy_records_to_table status")
        out = io.BytesIO()
        await conn.copy_from_query(f"select id, note from {COPY} order by id", output=out, format="csv")
        want = "".join(f"{i},{note}\n" for i, note in rows)
        check_eq(out.getvalue().decode(), want, "COPY TO output")
        try:
            await conn.copy_to_table(COPY, source=io.BytesIO(b"not a number\tx\n"), columns=["id", "note"])
            raise AssertionError("COPY of bad data succeeded")
        except asyncpg.InvalidTextRepresentationError:
            ok()
        check_eq(await conn.fetchval(f"select count(*) from {COPY}"), len(rows), "rows after a failed COPY")
    finally:
        await conn.close()
    ok(3)


async def listen_notify():
    channel = f"{PREFIX}_chan"
    listener, sender = await connect(), await connect()
    try:
        got = asyncio.get_running_loop().create_future()
        await listener.add_listener(channel, lambda _c, _pid, _ch, payload: got.done() or got.set_result(payload))
        await sender.execute("select pg_notify($1, $2)", channel, "hello from asyncpg")
        check_eq(await asyncio.wait_for(got, NOTIFY_TIMEOUT), "hello from asyncpg", "notification payload")
        check_eq(await sender.fetchval("select $1::int", 7), 7, "sender after NOTIFY")
    finally:
        await listener.close()
        await sender.close()
    ok(2)


async def statement_timeout_holds():
    conn, other = await connect(), await connect()
    try:
        await conn.execute("set statement_timeout = '150ms'")
        for _ in range(3):
            check_eq(await other.fetchval("select current_setting('statement_timeout')"), "0",
                     "statement_timeout of a client that never set it")
            await expect_error(conn, "57014", "select pg_sleep($1::int)", 5)
        await conn.execute("reset statement_timeout")
        check_eq(await conn.fetchval("select current_setting('statement_timeout')"), "0", "after RESET")
    finally:
        await conn.close()
        await other.close()
    ok(2)


if __name__ == "__main__":
    run_async_phases("asyncpg", [
        ("create tables", create_tables),
        ("concurrent clients", concurrent_clients),
        ("large results", large_results),
        ("copy", copy_in_out),
        ("listen/notify", listen_notify),
        ("statement_timeout", statement_timeout_holds),
        ("large parameter", large_parameter),
    ], lambda: checks)
