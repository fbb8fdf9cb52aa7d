#!/usr/bin/env bash
# Where loopback TCP's ACKs are processed during a fan-out run, second by second: the
# 1,000-room start-up seconds of docs/benchmarks.md ("TCP's quick ACKs").
#
# One `ringport serve --workers 1` pinned to SERVER_CPU, one `ringport-bench fanout` (SUBS
# subscribers in ROOMS rooms, RATE msg/s over the rooms, publisher PUBLISHER) pinned to
# CLIENT_CPU. Every second while the bench runs: NET_RX softirqs per CPU (/proc/softirqs), the
# kernel's TCP counters (nstat: segments, delayed ACKs), and the bench's per-second latency,
# server CPU and bench CPU from its JSON timeline.
#
# On loopback the receiving socket's TCP work runs in the softirq of the CPU that sent the
# segment. A receiver that ACKs at once (TCP's quick-ACK mode, the first 16 segments of a
# connection) does so inside that softirq, so the server's CPU pays for generating the ACK and
# for receiving it. A delayed ACK is sent later by the reading bench on its own CPU, and its
# NET_RX count rises. So while NET_RX on CLIENT_CPU stays low, the ACKs are on the server's
# core.
#
#   scripts/bench-acks.sh                      # 10,000 subscribers, 1,000 rooms, 10,000 msg/s
#   RATE=5000 scripts/bench-acks.sh            # half the rate: the quick-ACK phase lasts twice as long
#   STOP_AT=6 STOP_S=0.9 scripts/bench-acks.sh # the bench stopped (SIGSTOP) for 0.9 s at sample 6
#
# A receiver also re-enters quick-ACK mode when a segment comes more than its RTO (200 ms on
# loopback) after the previous one (tcp_event_data_recv in net/ipv4/tcp_input.c): STOP_AT
# makes such a gap on every connection at once (publisher and subscribers both pause) and
# shows how long the ACKs stay on the server's core afterwards.
#
# NO_BUILD=1 runs RINGPORT_BIN and BENCH_BIN as they are. Needs nstat (iproute2) and taskset.
set -euo pipefail
source "$(dirname "$0")/bench-common.sh"

SUBS=${SUBS:-10000}
ROOMS=${ROOMS:-1000}
RATE=${RATE:-10000}
PUBLISHER=${PUBLISHER:-batch}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
SIZE=${SIZE:-64}
PORT=${PORT:-17290}
ADMIN_PORT=${ADMIN_PORT:-17291}
RINGPORT_BIN=${RINGPORT_BIN:-$RELEASE/ringport}
BENCH_BIN=${BENCH_BIN:-$RELEASE/ringport-bench}
STOP_AT=${STOP_AT:-0}
STOP_S=${STOP_S:-0.3}
OUT=${OUT:-$(mktemp -d /tmp/ringport-acks.XXXXXX)}
mkdir -p "$OUT"

command -v nstat >/dev/null || die "nstat (iproute2) is needed"
SERVERS=ringport build
[[ -x "$RINGPORT_BIN" && -x "$BENCH_BIN" ]] || die "$RINGPORT_BIN or $BENCH_BIN not built"

taskset -c "$SERVER_CPU" "$RINGPORT_BIN" serve --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    --workers 1 --log-level warn --set "rooms.publish_rate_per_sec=$((RATE * 4))" \
    --set "rooms.publish_burst=$((RATE * 20))" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
trap stop_server EXIT
wait_port "$PORT" && wait_port "$ADMIN_PORT" || die "ringport did not listen (see $OUT/server.log)"

timeout "${BENCH_TIMEOUT:-300}" taskset -c "$CLIENT_CPU" "$BENCH_BIN" fanout --protocol ringport \
    --publisher "$PUBLISHER" --target "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    --connections "$SUBS" --rooms "$ROOMS" --rate "$RATE" --size "$SIZE" --duration "$DURATION" \
    --warmup "$WARMUP" --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" --json \
    >"$OUT/run.json" 2>"$OUT/run.err" &
BENCH_PID=$!

# One line per second: NET_RX of both CPUs (cumulative) and nstat's increments since the last.
nstat -n >/dev/null
for i in $(seq $((DURATION + WARMUP + 300))); do
    kill -0 "$BENCH_PID" 2>/dev/null || break
    read -r rx_s rx_c < <(awk -v s=$((SERVER_CPU + 2)) -v c=$((CLIENT_CPU + 2)) \
        '$1 == "NET_RX:" { print $s, $c }' /proc/softirqs)
    echo "$(date +%s.%N) $rx_s $rx_c $(nstat -z TcpOutSegs TcpExtDelayedACKs | awk 'NR > 1 { printf "%s ", $2 }')"
    if ((i == STOP_AT)); then
        # BENCH_PID is `timeout`; its child is the bench (taskset execs it).
        bench_pid=$(pgrep -P "$BENCH_PID") || die "the bench process was not found"
        kill -STOP "$bench_pid"
        sleep "$STOP_S"
        kill -CONT "$bench_pid"
        sleep "$(python3 -c "print(max(0.0, 1 - $STOP_S))")"
    else
        sleep 1
    fi
done >"$OUT/samples.txt"
wait "$BENCH_PID" || die "the bench failed (see $OUT/run.err)"
stop_server

echo "# $SUBS subscribers in $ROOMS rooms, $RATE msg/s via $PUBLISHER, ${WARMUP}s warm-up + ${DURATION}s; server core $SERVER_CPU, bench core $CLIENT_CPU; files in $OUT"
((STOP_AT == 0)) || echo "# the bench was stopped for ${STOP_S}s right after sample $STOP_AT"
python3 - "$OUT" "$SERVER_CPU" "$CLIENT_CPU" <<'EOF'
import json, sys
out, scpu, ccpu = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [l.split() for l in open(f"{out}/samples.txt") if l.strip()]
print(f"{'second':>6} {'NET_RX cpu' + scpu:>12} {'NET_RX cpu' + ccpu:>12} {'TCP segs out':>12} {'delayed ACKs':>12}")
for i in range(1, len(rows)):
    a, b = rows[i - 1], rows[i]
    segs = b[3] if len(b) > 3 else "-"
    delack = b[4] if len(b) > 4 else "-"
    print(f"{i:>6} {int(b[1]) - int(a[1]):>12} {int(b[2]) - int(a[2]):>12} {segs:>12} {delack:>12}")
run = json.load(open(f"{out}/run.json"))["run"]
print("bench timeline (the first seconds are the warm-up):")
print(f"{'second':>6} {'p50 ms':>7} {'p99 ms':>7} {'server %':>9} {'bench %':>8}")
for i, s in enumerate(run["timeline"], 1):
    print(f"{i:>6} {s['latency']['p50_us'] / 1000:>7.1f} {s['latency']['p99_us'] / 1000:>7.1f} "
          f"{s.get('server_cpu_pct') or 0:>9.0f} {s.get('bench_cpu_pct') or 0:>8.0f}")
EOF
