#!/usr/bin/env bash
# What issue 10's limits cost the data plane: the same load against `ringport serve` with the
# limits on and off, in alternating runs (the order flips every round), ROUNDS rounds; prints
# per load the median on/off ratio with min-max spread of server CPU per message (ksoftirqd of
# the server's core included) and of p99.
#
#   scripts/bench-limits-cost.sh                    # both loads, 5 rounds
#   LOADS=ping ROUNDS=3 scripts/bench-limits-cost.sh
#
# on:  the defaults, with `limits.exempt_loopback=false` so that the per-address limits run
#      for these loopback clients too (they are spread over 127.0.0.2-250, below every limit);
# off: every limit that has an off value set to 0 (limits.max_connections_per_ip,
#      handshakes_per_ip_per_sec, auth_failures_per_ip_per_sec, max_connections_per_user,
#      room_ops_per_sec, control_frames_per_sec). The memory-budget accounting, history.max_bytes
#      and the engine's send high-water mark cannot be switched off and run in both.
# Loads (server `--workers 1` on SERVER_CPU, bench on CLIENT_CPU):
#   fanout: SUBS subscribers in one room, FANOUT_RATE msg/s through the admin API, batch window
#           0; every delivery is ACKed by its subscriber (a control frame through the limiter);
#   ping:   SUBS idle connections with a 100 ms heartbeat: each PINGs every 100 ms and the
#           server answers PONG - the gateway's echo, every PING through the limiter.
set -euo pipefail
source "$(dirname "$0")/bench-common.sh"

ROUNDS=${ROUNDS:-5}
FANOUT_RATE=${FANOUT_RATE:-50}
LOADS=${LOADS:-"fanout ping"}
PORT=${PORT:-17280}
ADMIN_PORT=${ADMIN_PORT:-17281}
gateway_run_defaults limits-cost
trap stop_server EXIT

SERVERS=ringport build

ON=(--set limits.exempt_loopback=false)
OFF=(--set limits.max_connections_per_ip=0 --set limits.handshakes_per_ip_per_sec=0
    --set limits.auth_failures_per_ip_per_sec=0 --set limits.max_connections_per_user=0
    --set limits.room_ops_per_sec=0 --set limits.control_frames_per_sec=0)

run() { # run LOAD VARIANT ROUND
    local load=$1 variant=$2 round=$3 limits extra=()
    if [[ $variant == on ]]; then limits=("${ON[@]}"); else limits=("${OFF[@]}"); fi
    [[ $load == ping ]] && extra=(--set protocol.heartbeat_interval_ms=100 --set protocol.heartbeat_probe_interval_ms=100)
    [[ $load == fanout ]] && extra=(--set rooms.batch_window_ms=0)
    taskset -c "$SERVER_CPU" "$RELEASE/ringport" serve --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
        --workers 1 --log-level warn "${limits[@]}" "${extra[@]}" >"$OUT/$load-$variant-$round-server.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$PORT" && wait_port "$ADMIN_PORT" || { stop_server; die "ringport serve did not listen"; }
    local args=(--target "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" --connections "$SUBS" --rooms 1
        --source-addrs 127.0.0.2-127.0.0.250 --duration "$DURATION" --warmup "$WARMUP"
        --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" --json)
    local f="$OUT/$load-$variant-$round.json"
    if [[ $load == fanout ]]; then
        timeout 300 taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" fanout "${args[@]}" --rate "$FANOUT_RATE" >"$f"
    else
        timeout 300 taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" idle "${args[@]}" >"$f"
    fi
    stop_server
    python3 - "$f" "$load" "$variant" "$round" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); run = r["run"]; s = run["server"]
load = open("/proc/loadavg").read().split()[0]
print(f"  {sys.argv[2]:<6} {sys.argv[3]:<3} round {sys.argv[4]}: {run['messages_per_sec']:.0f} msg/s"
      f"  server {s['cpu_us_per_message']:.3f} us/msg  p99 {run['latency']['p99_us'] / 1000:.2f} ms"
      f"  lost {r.get('lost')}  load {load}")
EOF
}

echo "# bench-limits-cost: rounds=$ROUNDS duration=${DURATION}s subscribers=$SUBS fanout rate=$FANOUT_RATE; load average $(cat /proc/loadavg)"
for load in $LOADS; do
    for round in $(seq "$ROUNDS"); do
        if ((round % 2)); then order="on off"; else order="off on"; fi
        for variant in $order; do run "$load" "$variant" "$round"; done
    done
    python3 - "$OUT" "$load" "$ROUNDS" <<'EOF'
import json, statistics, sys
out, load, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def get(v, i):
    r = json.load(open(f"{out}/{load}-{v}-{i}.json"))["run"]
    return r["server"]["cpu_us_per_message"], r["latency"]["p99_us"], r["messages_per_sec"]
pairs = [(get("on", i), get("off", i)) for i in range(1, rounds + 1)]
for k, name in [(0, "server CPU per message"), (1, "p99"), (2, "messages/s")]:
    ratios = sorted(on[k] / off[k] for on, off in pairs if off[k])
    print(f"{load}: on/off {name}: median {statistics.median(ratios):.3f}, min {ratios[0]:.3f}, max {ratios[-1]:.3f} (n={len(ratios)})")
EOF
done
echo "load average after: $(cat /proc/loadavg)"
