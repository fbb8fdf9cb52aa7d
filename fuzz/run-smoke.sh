#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 20 s each; override with FUZZ_SECS)
# and fails if any target crashes or cannot run at all: a smoke step that could not run
# is a failure, never a skip.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`; .ci/run installs it). libFuzzer
# needs rustc's -Z flags: on a nightly toolchain they just work; on stable this script
# sets RUSTC_BOOTSTRAP=1 (stable ships the AddressSanitizer runtime cargo-fuzz uses).
set -euo pipefail
cd "$(dirname "$0")"

secs="${FUZZ_SECS:-20}"
targets=(decode_frames session_sequence hello_resume ws_decode)

fail() {
    echo "fuzz smoke: FAILED: $*" >&2
    exit 1
}

command -v cargo >/dev/null 2>&1 || fail "cargo not found"
cargo fuzz --version >/dev/null 2>&1 ||
    fail "cargo-fuzz not installed (cargo install cargo-fuzz --locked)"
export RUSTC_BOOTSTRAP=1

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
    echo "fuzz smoke: $t for ${secs}s"
    status=0
    cargo fuzz run "$t" -- -max_total_time="$secs" >"$log" 2>&1 || status=$?
    [ "$status" -eq 0 ] || { tail -40 "$log" >&2; fail "$t exited with status $status"; }
    # Proof that libFuzzer really ran: "Done N runs in S second(s)" with N > 0.
    runs="$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)"
    [ -n "$runs" ] && [ "$runs" -gt 0 ] || { tail -40 "$log" >&2; fail "$t did not run (no libFuzzer summary)"; }
    echo "fuzz smoke: $t: $runs runs, no crash"
done
echo "fuzz smoke: all targets ran without a crash"
