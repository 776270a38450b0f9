#!/usr/bin/env bash
# Soak run: the pgfunnel binary under mixed traffic (checked writes, TLS sessions) while
# Postgres restarts (fast and SIGKILL), certificates rotate (+ SIGHUP) and SIGHUP reloads
# run, in turn every PERIOD seconds. Prints errors by kind and pgfunnel's memory every 10 s,
# then asserts lost = 0, doubled = 0, no hang, bounded memory.
#
#   scripts/soak.sh           # CI variant: 2 minutes, a fault every 5 s
#   scripts/soak.sh 3600 30   # the one-hour run, a fault every 30 s
#   scripts/soak.sh SECS [PERIOD]
#
# The test suite (scripts/test.sh) runs the same test for 20 s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${1:-120}
period=${2:-5}
scripts/test.sh --setup-only
echo "[soak.sh] ${secs}s, a fault every ${period}s" >&2
PGFUNNEL_SOAK_SECS=$secs PGFUNNEL_SOAK_PERIOD=$period \
  cargo test --release --test it soak:: -- --nocapture --test-threads 1
