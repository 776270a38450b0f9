#!/usr/bin/env bash
# The one test command: unit, component and end-to-end tests (against a real PostgreSQL that the
# test harness starts itself from the OS package), and the driver suite (tests/drivers: Python,
# Node and Java drivers through pgfunnel). On a fresh Debian 12 machine it first installs what is
# missing: the postgresql packages, what the benches/compare smoke test runs (pgbouncer, python3,
# openssl; pgbench comes with the server package), prometheus (for promtool),
# prometheus-pgbouncer-exporter, python3-venv, nodejs/npm, a JDK and Debian's pgjdbc (as root, or
# through sudo), the rustfmt/clippy components, then the drivers' own packages from PyPI and npm
# (tests/drivers/setup.sh). Idempotent; a second run installs nothing.
#
#   scripts/test.sh                  # everything: cargo test --all-targets --no-fail-fast
#   scripts/test.sh -- --nocapture   # extra arguments go to cargo test
#   scripts/test.sh --setup-only     # install prerequisites and stop (used by .ci/run)
#
# After the tests, scripts/fuzz.sh fuzzes every parser for 2 s each with cargo-fuzz (installed
# from crates.io when missing; without it, the seeded property test runs instead).
# PGFUNNEL_FUZZ_SECS sets the time per target; PGFUNNEL_FUZZ_SECS=0 skips this step.
#
# Every test binary runs even when an earlier one failed (--no-fail-fast); the exit status is
# non-zero when anything failed. Tests that read PgBouncer's own sample files
# (../shared/testdata/pgbouncer) are skipped, with one printed line, in a clone without them.
# Needs: Rust (see rust-version in Cargo.toml; rustup), about 1 GB of RAM and 5 GB of disk.
#
# CARGO_TARGET_DIR and the other cargo variables are honoured as usual.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '[test.sh] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    say "need root (or sudo) to run: $*"
    return 1
  fi
}

# Server binaries (initdb, pg_ctl, postgres): what the test harness looks for.
have_pg_server() {
  local bindir
  bindir=$(pg_config --bindir 2>/dev/null) && [ -x "$bindir/initdb" ] && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

have_psql() {
  command -v psql >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/psql' >/dev/null
}

apt_install() {
  local log hint=${APT_HINT:-"install by hand: apt-get update && apt-get install -y $*"}
  log=$(mktemp)
  say "installing $* with apt-get (log: $log)"
  if [ -n "${CI:-}" ] && [ ! -e /etc/postgresql-common/createcluster.d/pgfunnel-ci.conf ]; then
    # Tests run their own clusters; do not let the package create and start one on 5432.
    as_root mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' |
      as_root tee /etc/postgresql-common/createcluster.d/pgfunnel-ci.conf >/dev/null
  fi
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update \
      >"$log" 2>&1 ||
    ! as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install \
      -y --no-install-recommends "$@" </dev/null >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    say "apt-get install $* failed; $hint"
    exit 1
  fi
  rm -f "$log"
}

ensure_postgres() {
  local pkgs=()
  have_pg_server || pkgs+=(postgresql)
  have_psql || pkgs+=(postgresql-client)
  if [ ${#pkgs[@]} -gt 0 ]; then
    pkgs+=(postgresql-client) # the harness runs psql from the server's bindir
    apt_install "${pkgs[@]}"
    have_pg_server || { say "postgresql installed but initdb still not found"; exit 1; }
  fi
}

# benches/compare (and its smoke test in tests/it/bench_compare.rs) runs PgBouncer from the
# Debian package beside pgfunnel, pgbench against both, and generates a TLS certificate.
# pgbench ships in the server package on Debian 12 (postgresql-15), so ensure_postgres covers it.
ensure_bench_tools() {
  local pkgs=()
  command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || pkgs+=(pgbouncer)
  command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
  command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
  [ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
  compgen -G '/usr/lib/postgresql/*/bin/pgbench' >/dev/null || command -v pgbench >/dev/null 2>&1 ||
    { say "pgbench not found beside initdb: apt-get install -y postgresql-contrib"; exit 1; }
}

# promtool (Debian's prometheus package) checks config/pgfunnel-alerts.yml; Debian's
# prometheus-pgbouncer-exporter is pointed at the admin console by tests/it/admin.rs.
have_exporter() {
  /usr/bin/python3 -c 'import prometheus_pgbouncer_exporter' >/dev/null 2>&1
}

ensure_ops_tools() {
  local pkgs=()
  command -v promtool >/dev/null 2>&1 || pkgs+=(prometheus)
  have_exporter || pkgs+=(prometheus-pgbouncer-exporter)
  if [ ${#pkgs[@]} -gt 0 ]; then
    apt_install "${pkgs[@]}"
  fi
}

ensure_rust_components() {
  local missing=()
  cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
  [ ${#missing[@]} -eq 0 ] && return 0
  if command -v rustup >/dev/null 2>&1 && rustup component add "${missing[@]}" >/dev/null 2>&1; then
    say "added rust components: ${missing[*]}"
  else
    say "warning: could not add rust components ${missing[*]} (offline?); fmt/clippy checks will fail"
  fi
}

# What the driver suite runs its programs with (tests/it/drivers); the drivers' packages come
# from their own registries through tests/drivers/setup.sh.
ensure_driver_prerequisites() {
  local pkgs=()
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || pkgs+=(python3 python3-venv)
  command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
  command -v npm >/dev/null 2>&1 || pkgs+=(npm)
  command -v javac >/dev/null 2>&1 || pkgs+=(default-jdk-headless)
  [ -f "${PGJDBC_JAR:-/usr/share/java/postgresql.jar}" ] || pkgs+=(libpostgresql-jdbc-java)
  [ ${#pkgs[@]} -eq 0 ] && return 0
  APT_HINT="install the driver suite's prerequisites by hand: apt-get install -y ${pkgs[*]}" \
    apt_install "${pkgs[@]}"
}

# deploy/kubernetes validation (tests/it/deploy.rs): kubernetes-validate, which ships the
# Kubernetes schemas, and PyYAML from PyPI in their own venv. Without them the deploy tests
# skip schema validation with a message.
ensure_deploy_tools() {
  local venv=target/k8s-venv
  [ -x "$venv/bin/kubernetes-validate" ] && return 0
  say "installing kubernetes-validate into $venv"
  { python3 -m venv "$venv" && "$venv/bin/pip" install -q kubernetes-validate; } ||
    say "warning: kubernetes-validate not installed; deploy tests will skip schema validation"
}

# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh

need_rust
ensure_postgres
ensure_bench_tools
ensure_ops_tools
ensure_rust_components
ensure_driver_prerequisites
# Failing here fails the run: the driver tests would fail the same way, later.
tests/drivers/setup.sh all
ensure_deploy_tools

if [ "${1:-}" = "--setup-only" ]; then
  exit 0
fi
[ "${1:-}" = "--" ] && shift

say "cargo test --all-targets --no-fail-fast $*"
set +e
cargo test --all-targets --no-fail-fast "$@"
status=$?
set -e
[ "$status" -ne 0 ] && exit "$status"

fuzz_secs=${PGFUNNEL_FUZZ_SECS:-2}
if [ "$fuzz_secs" != 0 ]; then
  scripts/fuzz.sh "$fuzz_secs"
fi
