#!/usr/bin/env bash
# First command on a fresh machine: starts a throwaway PostgreSQL (temp dir, free loopback port,
# SCRAM role `app` with a random password, database `app`), builds pgfunnel and runs it in the
# foreground in front of that database, with the admin console and /metrics enabled. Ctrl-C
# stops both and deletes everything it created. Options (environment variables):
#
#   PGFUNNEL_PORT=7432          pgfunnel's port; stops with a message if it is taken.
#                               Unset: the first free port from 6432 up.
#   PGFUNNEL_METRICS_PORT=9200  /metrics port; same rules, unset: the first free from 9127 up.
#   PGFUNNEL_BIN=path           use that binary, skip `cargo build --release`.
#
#   scripts/quickstart.sh --check-port-only   # only choose the ports, print them, exit
#
# The password never appears in a command line: pgfunnel gets the URL through the
# PGFUNNEL_UPSTREAM environment variable and psql reads SQL from stdin. The URLs are written to
# a 0600 file (printed at the end) as well as to stdout, but only once pgfunnel listens.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '[quickstart] %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}

# ---- ports: chosen before anything is installed, built or started -------------------------
# A port counts as taken when something accepts a connection on 127.0.0.1 (a listener on
# 0.0.0.0 or 127.0.0.1 there would make pgfunnel's bind fail).
port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# choose_port NAME REQUESTED FIRST: REQUESTED (when set) must be free; else the first free port
# of FIRST..FIRST+99. Prints the port; fails with a message naming NAME's variable otherwise.
choose_port() {
  local name=$1 requested=$2 first=$3 p
  if [ -n "$requested" ]; then
    case $requested in
      *[!0-9]* | '') die "$name=$requested is not a port number" ;;
    esac
    [ "$requested" -ge 1 ] && [ "$requested" -le 65535 ] || die "$name=$requested is not a port number (1-65535)"
    port_is_free "$requested" ||
      die "port $requested ($name) is already in use on 127.0.0.1: stop what listens there, or pick another port with $name=N (unset it to let the script choose a free one)"
    echo "$requested"
    return 0
  fi
  for ((p = first; p < first + 100 && p <= 65535; p++)); do
    if port_is_free "$p"; then
      echo "$p"
      return 0
    fi
  done
  die "no free port in $first-$((first + 99)) for $name; set $name=N to a free port"
}

LISTEN_PORT=$(choose_port PGFUNNEL_PORT "${PGFUNNEL_PORT:-}" "${QUICKSTART_FIRST_PORT:-6432}")
METRICS_PORT=$(choose_port PGFUNNEL_METRICS_PORT "${PGFUNNEL_METRICS_PORT:-}" "${QUICKSTART_FIRST_METRICS_PORT:-9127}")
[ "$LISTEN_PORT" != "$METRICS_PORT" ] || die "PGFUNNEL_PORT and PGFUNNEL_METRICS_PORT are both $LISTEN_PORT"
if [ -z "${PGFUNNEL_PORT:-}" ] && [ "$LISTEN_PORT" != "${QUICKSTART_FIRST_PORT:-6432}" ]; then
  say "port ${QUICKSTART_FIRST_PORT:-6432} is in use; pgfunnel will listen on $LISTEN_PORT instead"
fi
if [ "${1:-}" = "--check-port-only" ]; then
  echo "port=$LISTEN_PORT metrics_port=$METRICS_PORT"
  exit 0
fi
[ $# -eq 0 ] || die "unknown argument $1 (the only option is --check-port-only; see the top of $0)"

# ---- prerequisites --------------------------------------------------------------------------
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    say "need root (or sudo) to run: $*"
    return 1
  fi
}

# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh

find_pg_bindir() {
  local bindir
  if bindir=$(pg_config --bindir 2>/dev/null) && [ -x "$bindir/initdb" ]; then
    echo "$bindir"
    return 0
  fi
  compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1 | xargs -r dirname
}

[ -n "${PGFUNNEL_BIN:-}" ] || need_rust
if [ -z "$(find_pg_bindir)" ] || ! command -v psql >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 ||
    die "PostgreSQL's server (initdb, pg_ctl) and psql are needed and this is not a Debian-like system: install them, then run this again"
  say "installing postgresql (apt-get update && apt-get install -y postgresql postgresql-client)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends postgresql postgresql-client </dev/null >/dev/null
fi
PG_BIN=$(find_pg_bindir)
[ -n "$PG_BIN" ] || die "initdb not found even after installing postgresql"

# Build first: nothing to clean up if it fails, and Postgres does not idle through the build.
if [ -n "${PGFUNNEL_BIN:-}" ]; then
  BIN=$PGFUNNEL_BIN
else
  say "building pgfunnel (cargo build --release; the first build takes a few minutes)"
  cargo build --release
  BIN="${CARGO_TARGET_DIR:-target}/release/pgfunnel"
fi
[ -x "$BIN" ] || die "no executable at $BIN"

# ---- throwaway PostgreSQL -------------------------------------------------------------------
WORK=$(mktemp -d /tmp/pgfunnel-quickstart-XXXXXX)
RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
  # Postgres refuses to run as root.
  chown postgres:postgres "$WORK"
  RUN_AS=(runuser -u postgres --)
fi
STATE=$(mktemp -d /tmp/pgfunnel-quickstart-urls-XXXXXX) # 0700, for the 0600 URL file
PGFUNNEL_PID=
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$PGFUNNEL_PID" ] && kill -0 "$PGFUNNEL_PID" 2>/dev/null; then
    # SIGQUIT: immediate shutdown. SIGKILL if it is still starting (signals not yet handled).
    kill -QUIT "$PGFUNNEL_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$PGFUNNEL_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$PGFUNNEL_PID" 2>/dev/null || true
    wait "$PGFUNNEL_PID" 2>/dev/null || true
  fi
  if [ -f "$WORK/data/postmaster.pid" ]; then
    (cd "$WORK" && "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast -w -s stop) || true
  fi
  rm -rf "$WORK" "$STATE"
  say "stopped pgfunnel and PostgreSQL, removed $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pg_tool() { (cd "$WORK" && "${RUN_AS[@]}" "$PG_BIN/$1" "${@:2}"); }

PG_PORT=
for _ in $(seq 1 50); do
  candidate=$((20000 + RANDOM % 40000))
  if port_is_free "$candidate" && [ "$candidate" != "$LISTEN_PORT" ] && [ "$candidate" != "$METRICS_PORT" ]; then
    PG_PORT=$candidate
    break
  fi
done
[ -n "$PG_PORT" ] || die "no free port found for PostgreSQL"

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

# SQL goes through stdin: the password stays out of every command line. PG* variables of the
# caller's environment must not redirect these calls.
psql_admin() {
  env -u PGSERVICE -u PGOPTIONS -u PGDATABASE -u PGUSER -u PGPASSWORD \
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres -d postgres "$@"
}
psql_admin <<SQL
CREATE ROLE app LOGIN PASSWORD '$PASSWORD';
SQL
psql_admin -c "CREATE DATABASE app OWNER app"

# ---- pgfunnel ---------------------------------------------------------------------------------
# The ports may have been taken during the build: choose again (same rules) before starting.
LISTEN_PORT=$(choose_port PGFUNNEL_PORT "${PGFUNNEL_PORT:-}" "$LISTEN_PORT")
METRICS_PORT=$(choose_port PGFUNNEL_METRICS_PORT "${PGFUNNEL_METRICS_PORT:-}" "$METRICS_PORT")

PGFUNNEL_UPSTREAM="postgres://app:$PASSWORD@127.0.0.1:$PG_PORT/app" \
  "$BIN" serve --port "$LISTEN_PORT" --admin-users app \
  --metrics-listen "127.0.0.1:$METRICS_PORT" &
PGFUNNEL_PID=$!

# Print the URLs only once pgfunnel serves: a login as `app` with the random password through
# the port proves that pgfunnel (not something else that took the port meanwhile) answers.
served=
for _ in $(seq 1 150); do
  kill -0 "$PGFUNNEL_PID" 2>/dev/null || break
  if PGPASSWORD=$PASSWORD PGCONNECT_TIMEOUT=2 env -u PGSERVICE -u PGOPTIONS "$PG_BIN/psql" -X -q \
    -h 127.0.0.1 -p "$LISTEN_PORT" -U app -d app -c 'select 1' >/dev/null 2>&1; then
    served=1
    break
  fi
  sleep 0.2
done
if [ -z "$served" ] || ! kill -0 "$PGFUNNEL_PID" 2>/dev/null; then
  die "pgfunnel is not serving on 127.0.0.1:$LISTEN_PORT (see its messages above; was the port taken meanwhile?)"
fi

DATABASE_URL="postgres://app:$PASSWORD@127.0.0.1:$LISTEN_PORT/app"
ADMIN_URL="postgres://app:$PASSWORD@127.0.0.1:$LISTEN_PORT/pgfunnel"
METRICS_URL="http://127.0.0.1:$METRICS_PORT/metrics"
(
  umask 077
  printf 'export DATABASE_URL=%q\nexport PGFUNNEL_ADMIN_URL=%q\nexport PGFUNNEL_METRICS_URL=%q\n' \
    "$DATABASE_URL" "$ADMIN_URL" "$METRICS_URL" >"$STATE/env"
)
cat <<EOF

DATABASE_URL=$DATABASE_URL
  psql "\$DATABASE_URL"                  # after: . $STATE/env
Admin console (SHOW POOLS; SHOW STATS; SHOW CONFIG; ...):
  psql "\$PGFUNNEL_ADMIN_URL"             # $ADMIN_URL
Metrics:
  curl -s $METRICS_URL
(pgfunnel runs in the foreground; Ctrl-C stops it and the throwaway PostgreSQL)

EOF

set +e
wait "$PGFUNNEL_PID"
status=$?
set -e
PGFUNNEL_PID=
exit "$status"
