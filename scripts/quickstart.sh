#!/usr/bin/env bash
# First command on a fresh machine: starts a throwaway PostgreSQL (temp dir, free loopback port,
# SCRAM role `app` with a random password, database `app`), builds pgfunnel and runs it in the
# foreground in front of that database. Ctrl-C stops both and deletes everything it created.
#
#   scripts/quickstart.sh                 # pgfunnel on 127.0.0.1:6432
#   PGFUNNEL_PORT=7432 scripts/quickstart.sh
#   PGFUNNEL_BIN=path/to/pgfunnel scripts/quickstart.sh   # skip the build, use that binary
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '[quickstart] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    say "need root (or sudo) to run: $*"
    return 1
  fi
}

find_pg_bindir() {
  local bindir
  if bindir=$(pg_config --bindir 2>/dev/null) && [ -x "$bindir/initdb" ]; then
    echo "$bindir"
    return 0
  fi
  compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1 | xargs -r dirname
}

if [ -z "$(find_pg_bindir)" ] || ! command -v psql >/dev/null 2>&1; then
  say "installing postgresql (apt-get update && apt-get install -y postgresql postgresql-client)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends postgresql postgresql-client </dev/null >/dev/null
fi
PG_BIN=$(find_pg_bindir)
[ -n "$PG_BIN" ] || { say "initdb not found even after installing postgresql"; exit 1; }

# Build first: nothing to clean up if it fails, and Postgres does not idle through the build.
if [ -n "${PGFUNNEL_BIN:-}" ]; then
  BIN=$PGFUNNEL_BIN
else
  say "building pgfunnel (cargo build --release)"
  cargo build --release
  BIN="${CARGO_TARGET_DIR:-target}/release/pgfunnel"
fi
[ -x "$BIN" ] || { say "no executable at $BIN"; exit 1; }

WORK=$(mktemp -d /tmp/pgfunnel-quickstart-XXXXXX)
RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
  # Postgres refuses to run as root.
  chown postgres:postgres "$WORK"
  RUN_AS=(runuser -u postgres --)
fi
cleanup() {
  trap - EXIT INT TERM
  if [ -f "$WORK/data/postmaster.pid" ]; then
    (cd "$WORK" && "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast -w -s stop) || true
  fi
  rm -rf "$WORK"
  say "stopped PostgreSQL and removed $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pg_tool() { (cd "$WORK" && "${RUN_AS[@]}" "$PG_BIN/$1" "${@:2}"); }

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PG_PORT=
for _ in $(seq 1 50); do
  candidate=$((20000 + RANDOM % 40000))
  if port_is_free "$candidate"; then PG_PORT=$candidate; break; fi
done
[ -n "$PG_PORT" ] || { say "no free port found for PostgreSQL"; exit 1; }

PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

say "initdb in $WORK/data"
pg_tool initdb -D "$WORK/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  -E UTF8 --locale=C --no-instructions >"$WORK/initdb.log" 2>&1 ||
  { cat "$WORK/initdb.log" >&2; exit 1; }
cat >>"$WORK/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK'
password_encryption = 'scram-sha-256'
CONF
cat >"$WORK/data/pg_hba.conf" <<HBA
local all all trust
host all all 127.0.0.1/32 scram-sha-256
HBA

say "starting PostgreSQL on 127.0.0.1:$PG_PORT (log: $WORK/postgres.log)"
pg_tool pg_ctl -D "$WORK/data" -l "$WORK/postgres.log" -w -t 60 -s start ||
  { tail -n 20 "$WORK/postgres.log" >&2; exit 1; }

psql_admin() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres "$@"; }
psql_admin -d postgres -c "CREATE ROLE app LOGIN PASSWORD '$PASSWORD'"
psql_admin -d postgres -c "CREATE DATABASE app OWNER app"

LISTEN_PORT=${PGFUNNEL_PORT:-6432}
PORT_ARGS=()
[ -n "${PGFUNNEL_PORT:-}" ] && PORT_ARGS=(--port "$PGFUNNEL_PORT")
UPSTREAM="postgres://app:$PASSWORD@127.0.0.1:$PG_PORT/app"

echo
echo "DATABASE_URL=postgres://app:$PASSWORD@127.0.0.1:$LISTEN_PORT/app"
echo "psql \"postgres://app:$PASSWORD@127.0.0.1:$LISTEN_PORT/app\""
echo "(pgfunnel runs in the foreground; Ctrl-C stops it and the throwaway PostgreSQL)"
echo

# Not exec: the EXIT trap must still stop Postgres when pgfunnel ends.
"$BIN" serve --upstream "$UPSTREAM" "${PORT_ARGS[@]}"
