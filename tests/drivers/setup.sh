#!/usr/bin/env bash
# Installs the packages of the driver suite (tests/it/drivers) from each driver's own registry,
# into git-ignored folders beside the test programs:
#
#   tests/drivers/setup.sh python   # venv tests/drivers/python/.venv: psycopg 3, asyncpg (PyPI)
#   tests/drivers/setup.sh node     # tests/drivers/node/node_modules: pg, postgres, @neondatabase/serverless, ws, drizzle-orm (npm ci)
#   tests/drivers/setup.sh java     # checks java + Debian's pgjdbc jar (nothing to download)
#   tests/drivers/setup.sh all
#
# Idempotent and quiet: a stamp (hash of the lock file) skips work already done. System
# prerequisites (python3-venv, nodejs/npm, a JDK, libpostgresql-jdbc-java) come from
# scripts/test.sh --setup-only; when one is missing this exits 1 with the command that installs it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf '[drivers/setup.sh] %s\n' "$*" >&2; }
fail() {
  say "$1"
  say "install hint: $2"
  exit 1
}

hash_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

# Runs a command quietly; on failure prints its output and the hint, and exits 1.
quietly() {
  local hint=$1 log
  shift
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -f "$log"
    fail "failed: $*" "$hint"
  fi
  rm -f "$log"
}

setup_python() {
  local dir=$here/python venv=$here/python/.venv stamp want
  command -v python3 >/dev/null 2>&1 || fail "python3 not found" "apt-get install -y python3 python3-venv"
  want=$(hash_of "$dir/requirements.txt" <(python3 --version 2>&1))
  stamp=$venv/.pgfunnel-stamp
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  rm -rf "$venv"
  python3 -m venv "$venv" >/dev/null 2>&1 ||
    { rm -rf "$venv"; fail "python3 -m venv failed" "apt-get install -y python3-venv"; }
  quietly "check access to PyPI, then: $venv/bin/pip install -r $dir/requirements.txt" \
    "$venv/bin/pip" install --disable-pip-version-check -q -r "$dir/requirements.txt"
  echo "$want" >"$stamp"
}

setup_node() {
  local dir=$here/node stamp want major
  command -v node >/dev/null 2>&1 || fail "node not found" "apt-get install -y nodejs npm"
  command -v npm >/dev/null 2>&1 || fail "npm not found" "apt-get install -y npm"
  major=$(node --version | sed -E 's/^v([0-9]+).*/\1/')
  [ "$major" -ge 18 ] || fail "node $(node --version) is too old (need 18+)" "apt-get install -y nodejs npm"
  want=$(hash_of "$dir/package-lock.json" <(node --version))
  stamp=$dir/node_modules/.pgfunnel-stamp
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  quietly "check access to the npm registry, then: (cd $dir && npm ci)" \
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
}

setup_java() {
  command -v java >/dev/null 2>&1 || fail "java not found" "apt-get install -y default-jdk-headless"
  # The single-file source launcher (java File.java) needs the compiler, i.e. a JDK.
  command -v javac >/dev/null 2>&1 || fail "javac not found (need a JDK)" "apt-get install -y default-jdk-headless"
  [ -f "${PGJDBC_JAR:-/usr/share/java/postgresql.jar}" ] ||
    fail "pgjdbc jar not found at ${PGJDBC_JAR:-/usr/share/java/postgresql.jar}" \
      "apt-get install -y libpostgresql-jdbc-java (or set PGJDBC_JAR)"
}

case "${1:-}" in
  python) setup_python ;;
  node) setup_node ;;
  java) setup_java ;;
  all) setup_python && setup_node && setup_java ;;
  *)
    say "usage: $0 python|node|java|all"
    exit 2
    ;;
esac
