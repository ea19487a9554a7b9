#!/usr/bin/env bash
# The native crate's CI checks (issue #15): `cargo fmt --check`, `cargo clippy -D warnings`,
# `cargo test`, then the parser's fuzz target for a bounded time.
#
#   bash tools/native-check.sh            # everything (NATIVE_FUZZ_SECONDS=60 by default)
#   NATIVE_FUZZ_SECONDS=0 bash tools/native-check.sh   # no fuzzing
#
# Build output and tools live outside the clone, under ~/.cache/pgbridge, so a later run on the
# same machine reuses them: the crate's target dir, cargo-fuzz (pinned, `cargo install --locked`)
# and the fuzz corpus. The nightly toolchain cargo-fuzz needs is pinned and installed through
# rustup (minimal profile). Measured on the 2-core CI machine, under load: nightly install 39 s,
# cargo-fuzz install 3 min 50 s, fuzz build 3 min 27 s (cold); warm: fmt+clippy+test < 10 s,
# fuzz build < 5 s, plus the fuzzing time.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_TOOLCHAIN=nightly-2026-05-19
CARGO_FUZZ_VERSION=0.13.2
CACHE="${BRIDGE_CACHE_DIR:-$HOME/.cache/pgbridge}"
export CARGO_TARGET_DIR="$CACHE/native-target"
SECONDS_FUZZ="${NATIVE_FUZZ_SECONDS:-60}"

step() { echo "native-check: $*" >&2; }

command -v cargo >/dev/null || { echo "native-check: cargo not found (install Rust with rustup)" >&2; exit 1; }
start=$(date +%s)
step "cargo fmt --check"
(cd native && cargo fmt --check)
step "cargo clippy --all-targets -- -D warnings"
(cd native && cargo clippy -q --all-targets -- -D warnings)
step "cargo test"
(cd native && cargo test -q)
step "fmt+clippy+test took $(( $(date +%s) - start )) s"

if [ "$SECONDS_FUZZ" = "0" ]; then
  exit 0
fi
t=$(date +%s)
if ! rustup run "$FUZZ_TOOLCHAIN" rustc --version >/dev/null 2>&1; then
  step "installing $FUZZ_TOOLCHAIN (minimal profile)"
  rustup toolchain install "$FUZZ_TOOLCHAIN" --profile minimal
fi
FUZZ_ROOT="$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION"
if [ ! -x "$FUZZ_ROOT/bin/cargo-fuzz" ]; then
  step "installing cargo-fuzz $CARGO_FUZZ_VERSION into $FUZZ_ROOT"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$FUZZ_ROOT.tmp"
  rm -rf "$FUZZ_ROOT" && mv "$FUZZ_ROOT.tmp" "$FUZZ_ROOT"
fi
step "fuzz tools ready after $(( $(date +%s) - t )) s"
CORPUS="$CACHE/native-fuzz-corpus/change_line"
mkdir -p "$CORPUS"
cp -n native/fuzz/seeds/change_line/* "$CORPUS/" 2>/dev/null || true
t=$(date +%s)
(cd native && PATH="$FUZZ_ROOT/bin:$PATH" cargo "+$FUZZ_TOOLCHAIN" fuzz run --fuzz-dir fuzz \
  --target-dir "$CACHE/native-fuzz-target" change_line "$CORPUS" -- \
  -max_total_time="$SECONDS_FUZZ" -print_final_stats=1 2>&1 | tail -n 20)
step "fuzz build + ${SECONDS_FUZZ} s run took $(( $(date +%s) - t )) s"
