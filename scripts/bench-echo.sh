#!/usr/bin/env bash
# ringport vs the tokio baseline on echo: alternating runs, same pinned client.
#
#   scripts/bench-echo.sh                 # 5 rounds each, 50 and 1000 connections
#   ROUNDS=3 DURATION=5 CONNS="50" scripts/bench-echo.sh
#   OURS=engine-example scripts/bench-echo.sh   # the bare ringport-io echo example instead
#   SERVERS="ringport ringport-epoll tokio" scripts/bench-echo.sh   # both backends and tokio
#   SERVERS="engine-example engine-base" BASE_BIN=/tmp/echo-before SWAP=1 scripts/bench-echo.sh
#       # an engine change before/after (RINGPORT_IO_BACKEND picks the backend of both)
#   SERVERS="ringport ringport-base tokio" RINGPORT_BASE_BIN=/tmp/ringport-before SWAP=1 scripts/bench-echo.sh
#       # a ringport binary before/after, both against tokio
#
# SWAP=1 reverses the order of SERVERS in every even round, so neither always runs first.
# Each round runs ringport then tokio-echo (both `taskset -c $SERVER_CPU`, one worker /
# current-thread runtime) under `taskset -c $CLIENT_CPU ringport-bench echo` with $SIZE-byte
# messages at depth $DEPTH. Prints msgs/s and server CPU us/message per run, then the median
# ratio of every server to tokio (and ringport-epoll/ringport when both ran) with its min-max
# spread. Also prints the load average before every round. JSON for every run is kept in $OUT.
set -euo pipefail
source "$(dirname "$0")/bench-common.sh"

ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-"50 1000"}
SIZE=${SIZE:-512}
DEPTH=${DEPTH:-1}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
PORT=${PORT:-17071}
OUT=${OUT:-"$ROOT/target/bench/echo-$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$OUT"
trap stop_server EXIT

build
echo "# bench-echo: rounds=$ROUNDS conns=[$CONNS] size=$SIZE depth=$DEPTH duration=${DURATION}s warmup=${WARMUP}s servers=[$SERVERS] server-cpu=$SERVER_CPU client-cpu=$CLIENT_CPU"
echo "# kernel $(uname -r), $(nproc) cpus, results in $OUT"
for conns in $CONNS; do
    for round in $(seq "$ROUNDS"); do
        echo "# conns=$conns round=$round load average $(cut -d' ' -f1-3 /proc/loadavg)"
        for server in $(round_order "$round" $SERVERS); do
            start_server "$server" "$PORT"
            file="$OUT/$server-c$conns-r$round.json"
            bench echo --target "$SERVER_ADDR" --connections "$conns" --size "$SIZE" --depth "$DEPTH" \
                --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" --json >"$file"
            stop_server
            printf '%-9s conns=%-5s round=%s  msgs/s=%-12s server_cpu_us/msg=%-8s p99_us=%-9s errors=%s\n' \
                "$server" "$conns" "$round" \
                "$(json "$file" 'r["messages_per_sec"]')" \
                "$(json "$file" '(r["server"] or {}).get("cpu_us_per_message")')" \
                "$(json "$file" 'r["latency"]["p99_us"]')" \
                "$(json "$file" 'r["connect_failed"] + r["closed_unexpectedly"] + r["mismatches"]')"
        done
    done
done
# compare_pair OURS BASELINE CONNS: median ratio and spread of the alternating rounds.
compare_pair() {
    local ours=$1 baseline=$2 conns=$3 a=() b=() round
    for round in $(seq "$ROUNDS"); do
        a+=("$OUT/$ours-c$conns-r$round.json")
        b+=("$OUT/$baseline-c$conns-r$round.json")
    done
    echo
    echo "## $conns connections: $ours / $baseline"
    "$RELEASE/ringport-bench" compare --ours-name "$ours" --ours "${a[@]}" \
        --baseline-name "$baseline" --baseline "${b[@]}" | tee "$OUT/compare-$ours-$baseline-c$conns.txt"
}
for conns in $CONNS; do
    # Every server against tokio, and the epoll backend against the default (io_uring) one.
    if [[ " $SERVERS " == *" tokio "* ]]; then
        for server in $SERVERS; do
            [[ $server == tokio ]] || compare_pair "$server" tokio "$conns"
        done
    fi
    if [[ " $SERVERS " == *" ringport "* && " $SERVERS " == *" ringport-epoll "* ]]; then
        compare_pair ringport-epoll ringport "$conns"
    fi
    if [[ " $SERVERS " == *" engine-example "* && " $SERVERS " == *" engine-base "* ]]; then
        compare_pair engine-example engine-base "$conns"
    fi
    if [[ " $SERVERS " == *" ringport "* && " $SERVERS " == *" ringport-base "* ]]; then
        compare_pair ringport ringport-base "$conns"
    fi
done
