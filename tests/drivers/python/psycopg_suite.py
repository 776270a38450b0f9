"""psycopg 3 through pgfunnel in transaction mode, prepare_threshold=0 (every query is a named
prepared statement from its first execution). Run by tests/it/drivers; exits non-zero on the
first failed check."""

import threading

import psycopg
from psycopg import errors

from common import (BIG_ROWS, BIG_VALUE, CLIENTS, DB, HOST, NOTIFY_TIMEOUT, PASSWORD, POOL_SIZE,
                    PORT, PREFIX, ROUNDS, USER, check, check_eq, client_timeout, copy_rows, md5,
                    run_phases)

ITEMS, BIG, COPY = f"{PREFIX}_items", f"{PREFIX}_big", f"{PREFIX}_copy"
checks = 0
lock = threading.Lock()


def ok(n=1):
    global checks
    with lock:
        checks += n


def connect(**kw):
    return psycopg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DB,
                           prepare_threshold=0, autocommit=True, connect_timeout=20, **kw)


def expect_error(conn, sqlstate, query, params=None):
    try:
        conn.execute(query, params)
    except psycopg.Error as e:
        check_eq(e.sqlstate, sqlstate, f"error of {query!r}")
        ok()
        return
    raise AssertionError(f"{query!r} succeeded, expected {sqlstate}")


def create_tables():
    with connect() as conn:
        for t in (ITEMS, BIG, COPY):
            conn.execute(f"drop table if exists {t}")
        conn.execute(f"create table {ITEMS} (id int primary key, client int not null, val text not null)")
        conn.execute(f"create table {BIG} (id int primary key, data text not null)")
        conn.execute(f"create table {COPY} (id int primary key, note text not null)")


def worker(ci, pids, failures):
    try:
        with connect() as conn:
            conn.execute(f"set statement_timeout = '{client_timeout(ci)}'")
            for r in range(ROUNDS):
                row = conn.execute("select %s::int * 2, pg_backend_pid(), current_setting('statement_timeout')",
                                   (ci * 1000 + r,)).fetchone()
                check_eq(row[0], (ci * 1000 + r) * 2, "prepared select")
                check_eq(row[2], client_timeout(ci), f"client {ci} statement_timeout")
                pids.add(row[1])
                key = ci * 1000 + r
                got = conn.execute(f"insert into {ITEMS} (id, client, val) values (%s, %s, %s) returning id, val",
                                   (key, ci, f"v{key}")).fetchone()
                check_eq(got, (key, f"v{key}"), "insert returning")
                if r % 5 == 0:
                    with conn.transaction():
                        conn.execute(f"insert into {ITEMS} (id, client, val) values (%s, %s, 'rolled back')",
                                     (-key - 1, ci))
                        raise psycopg.Rollback()
                    n = conn.execute(f"select count(*) from {ITEMS} where id = %s", (-key - 1,)).fetchone()[0]
                    check_eq(n, 0, "row of a rolled back transaction")
                    expect_error(conn, "22012", "select 1 / %s::int", (0,))
                    expect_error(conn, "23505", f"insert into {ITEMS} (id, client, val) values (%s, %s, 'dup')",
                                 (key, ci))
                    # An error inside a transaction aborts it; the connection goes on after it.
                    with conn.transaction():
                        try:
                            with conn.transaction():
                                conn.execute("select 1 / %s::int", (0,))
                        except errors.DivisionByZero:
                            ok()
                        check_eq(conn.execute("select %s::text", ("after savepoint",)).fetchone()[0],
                                 "after savepoint", "query after a failed savepoint")
                ok(4)
            n = conn.execute(f"select count(*) from {ITEMS} where client = %s", (ci,)).fetchone()[0]
            check_eq(n, ROUNDS, f"rows of client {ci}")
    except BaseException as e:  # noqa: BLE001 - reported by the main thread
        failures.append(f"client {ci}: {type(e).__name__}: {e}")


def concurrent_clients():
    pids, failures = set(), []
    threads = [threading.Thread(target=worker, args=(ci, pids, failures)) for ci in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        check(not t.is_alive(), "a client thread did not finish within 120 s")
    check(not failures, "; ".join(failures))
    check(1 <= len(pids) <= POOL_SIZE, f"{CLIENTS} clients saw {len(pids)} server pids, pool is {POOL_SIZE}")
    with connect() as conn:
        n = conn.execute(f"select count(*), count(distinct client) from {ITEMS}").fetchone()
        check_eq(n, (CLIENTS * ROUNDS, CLIENTS), "rows of all clients")
    ok()


def large_results():
    with connect() as conn:
        rows = conn.execute("select g, md5(g::text) from generate_series(1, %s) g", (BIG_ROWS,)).fetchall()
        check_eq(len(rows), BIG_ROWS, "rows of a large result")
        check_eq(sum(r[0] for r in rows), BIG_ROWS * (BIG_ROWS + 1) // 2, "sum of a large result")
        check_eq(rows[-1][1], md5(str(BIG_ROWS)), "last row of a large result")
        got = conn.execute("select length(v), md5(v), v from (select repeat(%s::text, %s) v) s",
                           ("0123456789abcdef", len(BIG_VALUE) // 16)).fetchone()
        check_eq(got[:2], (len(BIG_VALUE), md5(BIG_VALUE)), "5 MiB result value")
        check(got[2] == BIG_VALUE, "5 MiB result value differs")
    ok(4)


def large_parameter():
    with connect() as conn:
        conn.execute(f"insert into {BIG} (id, data) values (%s, %s)", (1, BIG_VALUE))
        got = conn.execute(f"select length(data), md5(data), data from {BIG} where id = %s", (1,)).fetchone()
        check_eq(got[:2], (len(BIG_VALUE), md5(BIG_VALUE)), "5 MiB parameter stored")
        check(got[2] == BIG_VALUE, "5 MiB parameter read back differs")
    ok(2)


def copy_in_out():
    rows = copy_rows()
    with connect() as conn, conn.cursor() as cur:
        with cur.copy(f"copy {COPY} (id, note) from stdin") as cp:
            for row in rows:
                cp.write_row(row)
        check_eq(cur.rowcount, len(rows), "COPY FROM rowcount")
        with cur.copy(f"copy (select id, note from {COPY} order by id) to stdout") as cp:
            got = [(int(a), b) for a, b in cp.rows()]
        check_eq(got, rows, "COPY TO rows")
        try:
            with cur.copy(f"copy {COPY} (id, note) from stdin") as cp:
                cp.write(b"not a number\tx\n")
            raise AssertionError("COPY of bad data succeeded")
        except errors.InvalidTextRepresentation:
            ok()
        check_eq(conn.execute(f"select count(*) from {COPY}").fetchone()[0], len(rows), "rows after failed COPY")
    ok(3)


def listen_notify():
    channel = f"{PREFIX}_chan"
    with connect() as listener, connect() as sender:
        listener.execute(f"listen {channel}")
        sender.execute("select pg_notify(%s, %s)", (channel, "hello from psycopg"))
        got = [n.payload for n in listener.notifies(timeout=NOTIFY_TIMEOUT, stop_after=1)]
        check_eq(got, ["hello from psycopg"], "notifications received")
        check_eq(sender.execute("select %s::int", (7,)).fetchone()[0], 7, "sender after NOTIFY")
    ok(2)


def statement_timeout_holds():
    with connect() as conn, connect() as other:
        conn.execute("set statement_timeout = '150ms'")
        for _ in range(3):
            # The other client takes turns on the pool's servers in between.
            check_eq(other.execute("select current_setting('statement_timeout')").fetchone()[0], "0",
                     "statement_timeout of a client that never set it")
            expect_error(conn, "57014", "select pg_sleep(%s)", (5,))
        conn.execute("reset statement_timeout")
        check_eq(conn.execute("select current_setting('statement_timeout')").fetchone()[0], "0", "after RESET")
    ok(2)


def main():
    run_phases("psycopg", [
        ("create tables", create_tables),
        ("concurrent clients", concurrent_clients),
        ("large results", large_results),
        ("copy", copy_in_out),
        ("listen/notify", listen_notify),
        ("statement_timeout", statement_timeout_holds),
        ("large parameter", large_parameter),
    ], lambda: checks)


if __name__ == "__main__":
    main()
