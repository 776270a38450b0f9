"""Shared settings of the Python driver programs: where pgfunnel listens (env vars set by
tests/it/drivers) and the checks every program makes. A failed check raises, so the program
exits non-zero with the reason."""

import asyncio
import hashlib
import os
import threading
import time
import traceback

HOST = os.environ["PGFUNNEL_HOST"]
PORT = int(os.environ["PGFUNNEL_PORT"])
USER = os.environ["PGFUNNEL_USER"]
PASSWORD = os.environ["PGFUNNEL_PASSWORD"]
DB = os.environ["PGFUNNEL_DB"]
# Prefix of this run's tables and channels (the shared Postgres serves many tests at once).
PREFIX = os.environ["PGFUNNEL_PREFIX"]
CLIENTS = int(os.environ.get("PGFUNNEL_CLIENTS", "12"))
POOL_SIZE = int(os.environ.get("PGFUNNEL_POOL_SIZE", "2"))
ROUNDS = 15
BIG_ROWS = 50_000
BIG_VALUE = ("0123456789abcdef" * (5 * 1024 * 1024 // 16))  # 5 MiB of text
NOTIFY_TIMEOUT = 10.0


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def short(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def check_eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {short(got)}, want {short(want)}")


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def client_timeout(ci):
    """A statement_timeout only client `ci` uses, as Postgres prints it."""
    return f"{10_001 + ci}ms"  # never a whole second: Postgres would print "10s"


def copy_rows():
    return [(i, f"copy row {i}\twith tab") for i in range(1, 1001)]


# Every phase gets a deadline: a hang (a pooler bug) fails fast with the phase's name.
PHASE_TIMEOUT = 60.0


def fail_now(msg):
    print(f"FAILED: {msg}", flush=True)
    os._exit(1)


def watchdog(phase):
    """Ends the process when `phase` outlives PHASE_TIMEOUT, whatever the phase is blocked on
    (a driver may not give up a cancelled query while the pooler is stuck)."""
    timer = threading.Timer(PHASE_TIMEOUT, fail_now,
                            [f"phase {phase!r} did not finish within {PHASE_TIMEOUT:.0f} s"])
    timer.daemon = True
    timer.start()
    return timer


def run_phases(name, phases, counter):
    """Runs (phase name, function) pairs in order, each under a watchdog; prints a line per
    phase and, last, the line tests/it/drivers looks for."""
    for phase, fn in phases:
        timer, started = watchdog(phase), time.monotonic()
        try:
            fn()
        except BaseException:  # noqa: BLE001 - reported with its traceback
            fail_now(f"phase {phase!r}: {traceback.format_exc()}")
        timer.cancel()
        print(f"phase {phase}: ok ({(time.monotonic() - started) * 1000:.0f} ms)", flush=True)
    print(f"DRIVER OK {name} checks={counter()}", flush=True)


def run_async_phases(name, phases, counter):
    """run_phases for coroutine functions (asyncio)."""

    async def main():
        for phase, fn in phases:
            timer, started = watchdog(phase), time.monotonic()
            try:
                await fn()
            except BaseException:  # noqa: BLE001 - reported with its traceback
                fail_now(f"phase {phase!r}: {traceback.format_exc()}")
            timer.cancel()
            print(f"phase {phase}: ok ({(time.monotonic() - started) * 1000:.0f} ms)", flush=True)
        print(f"DRIVER OK {name} checks={counter()}", flush=True)

    asyncio.run(main())
