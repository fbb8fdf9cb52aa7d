#!/usr/bin/env bash
# Regenerates every number in docs/benchmarks.md, in the order the page lists them:
#
#   1. echo, ringport serve --app echo vs tokio-echo      (scripts/bench-echo.sh)
#   2. idle connections, raw TCP, server RSS per connection (scripts/bench-idle-memory.sh)
#   3. the gateway: fan-out 2,000 x 50 and 2,000 x 1,000 msg/s, 19,000 idle authenticated
#      connections, 100,000 connections with heartbeats  (scripts/bench-gateway.sh)
#   4. a short `ringport-bench echo --baseline tokio` check that the in-run baseline works.
#
# Each step keeps its JSON under target/bench/. Takes about 15 minutes with the defaults;
# the knobs of each script (ROUNDS, DURATION, ...) pass through the environment.
set -euo pipefail
here=$(dirname "$0")
source "$here/bench-common.sh"
OUT=${OUT_ALL:-"$ROOT/target/bench/all-$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$OUT"
echo "# bench-all: logs in $OUT"

"$here/bench-echo.sh" 2>&1 | tee "$OUT/echo.txt"
"$here/bench-idle-memory.sh" 2>&1 | tee "$OUT/idle-memory.txt"
"$here/bench-gateway.sh" 2>&1 | tee "$OUT/gateway.txt"

# The in-run baseline: ringport serve --app echo on SERVER_CPU, tokio-echo started by the bench.
PORT=${PORT:-17090}
SERVERS=ringport
start_server ringport "$PORT"
trap stop_server EXIT
bench echo --target "$SERVER_ADDR" --connections 50 --duration 5 --warmup 1 \
    --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" --baseline tokio --server-cpu "$SERVER_CPU" 2>&1 | tee "$OUT/echo-baseline.txt"
