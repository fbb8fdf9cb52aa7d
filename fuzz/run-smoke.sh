#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 20 s each; override with
# FUZZ_SECS). Needs cargo-fuzz and a nightly toolchain; without them it says
# why it skipped and exits 0, because the same bodies also run on stable in
# crates/ringport-proto/tests/fuzz_bodies.rs.
set -euo pipefail
cd "$(dirname "$0")"

secs="${FUZZ_SECS:-20}"
targets=(decode_frames session_sequence)

if ! command -v cargo >/dev/null 2>&1; then
    echo "fuzz smoke: skipped: cargo not found"
    exit 0
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz smoke: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: skipped: cargo-fuzz not installed (cargo install cargo-fuzz)"
    exit 0
fi

for t in "${targets[@]}"; do
    echo "fuzz smoke: $t for ${secs}s"
    cargo +nightly fuzz run "$t" -- -max_total_time="$secs"
done
echo "fuzz smoke: all targets ran without a crash"
