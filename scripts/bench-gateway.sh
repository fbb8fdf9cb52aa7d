#!/usr/bin/env bash
# The gateway numbers of docs/benchmarks.md: fan-out cost and latency, memory per idle
# authenticated connection, and the 100,000-connection run.
#
#   scripts/bench-gateway.sh                  # everything, ROUNDS rounds each
#   ONLY="fanout50 fanout1000" scripts/bench-gateway.sh
#
# Parts (ONLY selects): fanout50 (2,000 subscribers x 50 msg/s), fanout1000 (2,000 x 1,000
# msg/s, batch window 0), idle19k (19,000 idle authenticated connections in one room),
# idlemix (19,000 idle connections with/without token and JOIN), churn (CHURN_RATE cycles/s),
# resume (disconnects with resume while publishing), scale100k (100,000 authenticated
# connections with heartbeats, one server with 8 shards).
# The first three pin the server (`ringport serve --workers 1`) to SERVER_CPU and the bench to
# CLIENT_CPU; scale100k pins nothing (both need both cores). Every run's JSON is kept in OUT.
set -euo pipefail
source "$(dirname "$0")/bench-common.sh"

ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-"fanout50 fanout1000 idle19k idlemix churn resume scale100k"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SUBS=${SUBS:-2000}
SIZE=${SIZE:-64}
SOURCE_ADDRS=${SOURCE_ADDRS:-127.0.0.2-127.0.0.250}
PORT=${PORT:-17080}
ADMIN_PORT=${ADMIN_PORT:-17081}
OUT=${OUT:-"$ROOT/target/bench/gateway-$(date +%Y%m%d-%H%M%S)"}
# Shared by server and bench: authenticated connections, one HS256 token per bench user.
export RINGPORT_AUTH_SECRET=${RINGPORT_AUTH_SECRET:-bench-secret-0123456789abcdef0123456789}
export RINGPORT_BENCH_SECRET=$RINGPORT_AUTH_SECRET
mkdir -p "$OUT"
trap stop_server EXIT

SERVERS=ringport build

# start_gateway CPUS WORKERS [--set k=v ...]: ringport serve pinned to CPUS ("" = not pinned).
start_gateway() {
    local cpus=$1 workers=$2
    shift 2
    local pin=()
    [[ -n "$cpus" ]] && pin=(taskset -c "$cpus")
    "${pin[@]}" "${RINGPORT_BIN:-$RELEASE/ringport}" serve --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
        --workers "$workers" --log-level warn "$@" >"$OUT/server.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$PORT" && wait_port "$ADMIN_PORT" ||
        { stop_server; die "ringport serve did not listen (see $OUT/server.log)"; }
}

gbench() {
    timeout "${BENCH_TIMEOUT:-600}" "$@"
}

# summary NAME EXPR FILES...: median and min-max of EXPR over the files.
summary() {
    local name=$1 expr=$2
    shift 2
    python3 -c 'import json,sys,statistics
vals=[]
for f in sys.argv[2:]:
    r=json.load(open(f)); run=r["run"]; g=r["gateway"]; s=run.get("server") or {}
    v=eval(sys.argv[1])
    if v is not None: vals.append(v)
print(f"  median {statistics.median(vals):.2f}  min {min(vals):.2f}  max {max(vals):.2f}  (n={len(vals)})" if vals else "  no values")' "$expr" "$@" | sed "s|^|$name|"
}

fanout() { # fanout LABEL RATE
    local label=$1 rate=$2 files=()
    echo "## $label: $SUBS subscribers in one room x $rate msg/s, $SIZE B, batch window ${BATCH_WINDOW:-0} ms, server core $SERVER_CPU, bench core $CLIENT_CPU"
    for round in $(seq "$ROUNDS"); do
        start_gateway "$SERVER_CPU" 1 --set "rooms.batch_window_ms=${BATCH_WINDOW:-0}"
        local f="$OUT/$label-$round.json"
        gbench taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" fanout --target "127.0.0.1:$PORT" \
            --admin "127.0.0.1:$ADMIN_PORT" --connections "$SUBS" --rooms 1 --rate "$rate" --size "$SIZE" \
            --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" --json >"$f"
        stop_server
        files+=("$f")
        printf '  round %s: deliveries/s %s  server us/delivery %s  server cpu %ss  bench cpu %ss  lost %s of %s  p50 %sus p99 %sus max %sus\n' \
            "$round" "$(field "$f" 'run["messages_per_sec"]')" "$(field "$f" 's.get("cpu_us_per_message")')" \
            "$(field "$f" 's.get("cpu_secs")')" "$(field "$f" 'run["bench_cpu_secs"]')" \
            "$(field "$f" 'r["lost"]')" "$(field "$f" 'g["expected"]')" \
            "$(field "$f" 'run["latency"]["p50_us"]')" "$(field "$f" 'run["latency"]["p99_us"]')" \
            "$(field "$f" 'run["latency"]["max_us"]')"
    done
    summary "  server us/delivery" 's.get("cpu_us_per_message")' "${files[@]}"
    summary "  deliveries/s      " 'run["messages_per_sec"]' "${files[@]}"
    summary "  lost              " 'r["lost"]' "${files[@]}"
    summary "  p99 us            " 'run["latency"]["p99_us"]' "${files[@]}"
    summary "  bench cpu s       " 'run["bench_cpu_secs"]' "${files[@]}"
}

idle() { # idle LABEL CONNS WORKERS CPUS THREADS HOLD [server --set ...]
    local label=$1 conns=$2 workers=$3 cpus=$4 threads=$5 hold=$6 files=()
    shift 6
    echo "## $label: $conns idle authenticated connections in one room, server workers $workers, hold ${hold}s"
    local rounds=$ROUNDS
    [[ $label == scale100k ]] && rounds=${SCALE_ROUNDS:-1}
    for round in $(seq "$rounds"); do
        start_gateway "$cpus" "$workers" "$@"
        local f="$OUT/$label-$round.json"
        local pin=()
        [[ -n "$cpus" ]] && pin=(taskset -c "$CLIENT_CPU")
        gbench "${pin[@]}" "$RELEASE/ringport-bench" idle --target "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
            --connections "$conns" --rooms 1 --threads "$threads" --source-addrs "$SOURCE_ADDRS" \
            --duration "$hold" --warmup 1 --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" --json >"$f"
        stop_server
        files+=("$f")
        printf '  round %s: ready %s  failed %s  rss %s -> %s KiB  bytes/conn %s  server cpu %ss  bench cpu %ss  pings %s pongs %s  server pings %s\n' \
            "$round" "$(field "$f" 'run["peak_connections"]')" "$(field "$f" 'run["connect_failed"]')" \
            "$(field "$f" 's.get("rss_before_kib")')" "$(field "$f" 's.get("rss_after_kib")')" \
            "$(field "$f" 's.get("rss_bytes_per_connection")')" "$(field "$f" 's.get("cpu_secs")')" \
            "$(field "$f" 'run["bench_cpu_secs"]')" "$(field "$f" 'g["counters"]["pings_sent"]')" \
            "$(field "$f" 'g["counters"]["pongs_received"]')" "$(field "$f" 'g["counters"]["server_pings"]')"
    done
    summary "  bytes/conn" 's.get("rss_bytes_per_connection")' "${files[@]}"
}

# idle_mix: where the idle memory goes: 19,000 connections with and without a token, with and
# without a JOIN (server on SERVER_CPU with --allow-anonymous true, so both kinds get in).
idle_mix() {
    echo "## idlemix: 19000 idle connections, server workers 1, hold ${HOLD:-10}s"
    local variant auth rpc
    for variant in "anonymous 0" "anonymous 1" "token 0" "token 1"; do
        read -r auth rpc <<<"$variant"
        start_gateway "$SERVER_CPU" 1 --allow-anonymous true
        local f="$OUT/idlemix-$auth-rooms$rpc.json"
        local env_args=()
        [[ $auth == anonymous ]] && env_args=(env -u RINGPORT_BENCH_SECRET)
        gbench "${env_args[@]}" taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" idle --target "127.0.0.1:$PORT" \
            --admin "127.0.0.1:$ADMIN_PORT" --connections 19000 --rooms 1 --rooms-per-conn "$rpc" \
            --source-addrs "$SOURCE_ADDRS" --duration "${HOLD:-10}" --warmup 1 --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" --json >"$f"
        stop_server
        printf '  %-9s rooms-per-conn %s: ready %s  rss %s -> %s KiB  bytes/conn %s\n' "$auth" "$rpc" \
            "$(field "$f" 'run["peak_connections"]')" "$(field "$f" 's.get("rss_before_kib")')" \
            "$(field "$f" 's.get("rss_after_kib")')" "$(field "$f" 's.get("rss_bytes_per_connection")')"
    done
}

churn() {
    local rate=${CHURN_RATE:-2000} files=()
    echo "## churn: $rate connect/HELLO/JOIN/close cycles per second, server core $SERVER_CPU, bench core $CLIENT_CPU"
    for round in $(seq "$ROUNDS"); do
        start_gateway "$SERVER_CPU" 1
        local f="$OUT/churn-$round.json"
        gbench taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" churn --target "127.0.0.1:$PORT" \
            --admin "127.0.0.1:$ADMIN_PORT" --rate "$rate" --rooms 1 --source-addrs "$SOURCE_ADDRS" \
            --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" --json >"$f"
        stop_server
        files+=("$f")
        printf '  round %s: handshakes/s %s  failed %s  p50 %sus p99 %sus max %sus  server cpu %ss (%s us/handshake)  bench cpu %ss\n' \
            "$round" "$(field "$f" 'run["messages_per_sec"]')" "$(field "$f" 'g["counters"]["handshake_failed"] + run["connect_failed"]')" \
            "$(field "$f" 'run["latency"]["p50_us"]')" "$(field "$f" 'run["latency"]["p99_us"]')" \
            "$(field "$f" 'run["latency"]["max_us"]')" "$(field "$f" 's.get("cpu_secs")')" \
            "$(field "$f" 's.get("cpu_us_per_message")')" "$(field "$f" 'run["bench_cpu_secs"]')"
    done
    summary "  handshakes/s" 'run["messages_per_sec"]' "${files[@]}"
    summary "  p99 us      " 'run["latency"]["p99_us"]' "${files[@]}"
}

# resume: RESUME_CONNS subscribers, RESUME_RATE msg/s, RESUME_DISCONNECTS abrupt closes/s, each
# reconnecting with resume data. RESUME_HISTORY sets history.max_messages_per_stream (a small
# value forces GAP answers); RINGPORT_BIN runs another build of the server (e.g. a branch).
resume() {
    local conns=${RESUME_CONNS:-200} rate=${RESUME_RATE:-100} disc=${RESUME_DISCONNECTS:-20}
    echo "## resume: $conns subscribers, $rate msg/s, $disc abrupt disconnects/s with resume (one round)"
    local extra=()
    [[ -n "${RESUME_HISTORY:-}" ]] && extra=(--set "history.max_messages_per_stream=$RESUME_HISTORY")
    start_gateway "$SERVER_CPU" 1 "${extra[@]}"
    local f="$OUT/resume.json"
    gbench taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" resume --target "127.0.0.1:$PORT" \
        --admin "127.0.0.1:$ADMIN_PORT" --connections "$conns" --rooms 1 --rate "$rate" --disconnect-rate "$disc" \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" --json >"$f"
    stop_server
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); c=r["gateway"]["counters"]
print("  disconnects", c["disconnects"], " resume answered", c["resume_answered"], " unanswered", c["resume_unanswered"], " verdict", r["gateway"]["resume"])
[print("  note:", x) for x in r["findings"]]' "$f"
}

echo "# bench-gateway: rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s results in $OUT"
for part in $ONLY; do
    case $part in
    fanout50) fanout fanout50 50 ;;
    fanout1000) fanout fanout1000 1000 ;;
    idle19k) idle idle19k 19000 1 "$SERVER_CPU" 1 "${HOLD:-10}" ${SERVER_SET:-} ;;
    idlemix) idle_mix ;;
    churn) churn ;;
    resume) resume ;;
    scale100k)
        # 8 shards x <= 20,000 direct descriptors each; heartbeat every 10 s so a 30 s hold
        # exchanges about 3 per connection.
        idle scale100k "${SCALE_CONNS:-100000}" 8 "" 8 "${SCALE_HOLD:-30}" \
            --set engine.max_connections_per_shard=20000 --set protocol.heartbeat_interval_ms=10000 \
            --set protocol.heartbeat_probe_interval_ms=5000
        ;;
    *) die "unknown part $part" ;;
    esac
done
