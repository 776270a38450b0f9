# Sourced by scripts/quickstart.sh and scripts/test.sh (from the repository root): prerequisite
# checks that say exactly what is missing and how to get it.

# need_rust: cargo present and at least the rust-version of Cargo.toml (Debian 12's own cargo,
# 1.63, is too old). Prints what to do and exits 1 otherwise.
need_rust() {
  local want have
  want=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
  if ! command -v cargo >/dev/null 2>&1; then
    printf '%s\n' "cargo not found: pgfunnel needs Rust $want or newer. Install it with rustup (https://rustup.rs), then open a new shell or run: . \"\$HOME/.cargo/env\"" >&2
    exit 1
  fi
  have=$(cargo --version | awk '{print $2}')
  if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n 1)" != "$want" ]; then
    printf '%s\n' "cargo $have is too old: pgfunnel needs Rust $want or newer (rustup update; Debian's own cargo is too old: install rustup from https://rustup.rs)" >&2
    exit 1
  fi
}
