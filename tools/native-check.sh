#!/usr/bin/env bash
# The native crate's CI checks (issue #15): `cargo fmt --check`, `cargo clippy -D warnings`,
# `cargo test`, then the fuzz targets (native/fuzz: `change_line`, the producer's parser,
# `avro_reader`, the sink's Avro reader, and `snapshot_copy`, the snapshot's binary COPY reader)
# for a bounded time, NATIVE_FUZZ_SECONDS in all (split evenly).
#
#   bash tools/native-check.sh            # everything (NATIVE_FUZZ_SECONDS=60 by default)
#   NATIVE_FUZZ_SECONDS=0 bash tools/native-check.sh   # no fuzzing
#
# The fuzz targets are cargo-fuzz targets (`cargo +nightly fuzz run change_line` works for a
# developer). CI builds them here with the stable toolchain and the same libFuzzer coverage
# instrumentation cargo-fuzz passes (SanitizerCoverage: inline 8-bit counters, PC table,
# compare tracing; `--cfg fuzzing`, debug assertions, overflow checks), but without
# AddressSanitizer: the crate has no `unsafe` code, and this spares CI a nightly toolchain and a
# 4-minute `cargo install cargo-fuzz`. A panic, an overflow or a failed assertion is a crash.
# Build output and the corpora live outside the clone, under ~/.cache/pgbridge, so a later run
# on the same machine reuses them. Measured on the 2-core machine: fuzz build ~35 s cold, < 5 s
# warm; fmt+clippy+test ~40 s cold, < 10 s warm; plus the fuzzing time.
set -euo pipefail
cd "$(dirname "$0")/.."

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
FUZZ_TARGET_DIR="$CACHE/native-fuzz-target"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
(cd native && CARGO_TARGET_DIR="$FUZZ_TARGET_DIR" RUSTFLAGS="-Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
  --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build -q --release --target "$TRIPLE" --manifest-path fuzz/Cargo.toml --bins)
step "fuzz build took $(( $(date +%s) - t )) s"
TARGETS=(change_line avro_reader snapshot_copy)
per=$(( (SECONDS_FUZZ + ${#TARGETS[@]} - 1) / ${#TARGETS[@]} ))
for target in "${TARGETS[@]}"; do
  corpus="$CACHE/native-fuzz-corpus/$target"
  mkdir -p "$corpus"
  seeds=()
  if [ -d "native/fuzz/seeds/$target" ]; then seeds=("native/fuzz/seeds/$target"); fi
  t=$(date +%s)
  # libFuzzer exits non-zero on a crash (and writes the input as crash-* in the work dir)
  (cd "$CACHE" && "$FUZZ_TARGET_DIR/$TRIPLE/release/$target" "$corpus" "${seeds[@]/#/$OLDPWD/}" \
    -max_total_time="$per" -rss_limit_mb=1024 -print_final_stats=1 2>&1 | tail -n 8)
  step "fuzzed $target for ${per} s ($(( $(date +%s) - t )) s)"
done
