#!/usr/bin/env bash
# Fuzzes every parser that reads a peer's or a file's bytes (targets in fuzz/fuzz_targets/,
# seeds in fuzz/corpus/<target>/seed-*) with cargo-fuzz (libFuzzer) for SECS seconds each.
#
#   scripts/fuzz.sh              # 2 s per target (CI, ~20 s of fuzzing after the build)
#   scripts/fuzz.sh 600          # the longer run: 10 minutes per target
#   scripts/fuzz.sh 600 rewriter # one target
#
# cargo-fuzz is installed from crates.io when missing. Stable Rust works with
# RUSTC_BOOTSTRAP=1 and no sanitizer (libFuzzer's coverage guidance still applies).
# Without cargo-fuzz (offline, no C++ compiler) it falls back to the seeded property test
# tests/fuzz_smoke.rs for the same time budget, so CI never fails for lack of the tool.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script: copy it to
# fuzz/corpus/<target>/seed-regress-<name> so every `cargo test` replays it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${1:-2}
only=${2:-}
say() { printf '[fuzz.sh] %s\n' "$*" >&2; }

targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^pgfunnel-fuzz$')
[ -n "$only" ] && targets=$only

fallback() {
  say "cargo-fuzz unavailable ($1); running the seeded property fuzz test instead"
  PGFUNNEL_FUZZ_SECS=$secs cargo test --test fuzz_smoke -- --nocapture
  exit $?
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz from crates.io"
  cargo install --locked cargo-fuzz >/dev/null 2>&1 || fallback "cargo install cargo-fuzz failed"
fi
command -v c++ >/dev/null 2>&1 || fallback "no C++ compiler for libFuzzer"

export RUSTC_BOOTSTRAP=1
work=$(mktemp -d)
# cargo fuzz resolves fuzz/Cargo.lock afresh; running the fuzzers must not change tracked files.
cp fuzz/Cargo.lock "$work/Cargo.lock.orig"
trap 'cp "$work/Cargo.lock.orig" fuzz/Cargo.lock; rm -rf "$work"' EXIT
fuzz_target_dir=${CARGO_TARGET_DIR:-$PWD/target}/fuzz
say "building fuzz targets (target dir $fuzz_target_dir)"
(cd fuzz && CARGO_TARGET_DIR=$fuzz_target_dir cargo fuzz build --sanitizer none -O) ||
  fallback "cargo fuzz build failed"

failed=()
for t in $targets; do
  mkdir -p "$work/$t"
  log="$work/$t.log"
  # New inputs go to the scratch corpus; the checked-in seeds are only read.
  if (cd fuzz && CARGO_TARGET_DIR=$fuzz_target_dir cargo fuzz run --sanitizer none -O "$t" \
        "$work/$t" "corpus/$t" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len=4096) >"$log" 2>&1; then
    say "$t: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -1)"
  else
    tail -n 40 "$log" >&2
    say "$t: CRASH (input saved under fuzz/artifacts/$t/)"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  say "failing targets: ${failed[*]}"
  exit 1
fi
