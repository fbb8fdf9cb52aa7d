#!/usr/bin/env bash
# Issue 15's cluster targets (docs/benchmarks.md, "Cluster"): one nats-server and three
# gateways a, b, c on loopback; b is the receiving node under test.
#
#   scripts/bench-cluster.sh                  # everything, ROUNDS rounds each
#   ONLY="cpu bytes" ROUNDS=5 scripts/bench-cluster.sh
#
# Parts (ONLY selects):
#   cpu      CPU per delivery on node b (its process plus ksoftirqd/SERVER_CPU) for SUBS
#            subscribers on b in one room b owns, at RATE msg/s: local = pushed through b's
#            HTTP API (b numbers and delivers it), remote = pushed through a's (a forwards it
#            to b over the bus); local and remote alternate in every round.
#   latency  publish->deliver p50/p99 at each of LAT_RATES msg/s into LAT_ROOMS rooms (owners spread
#            over a, b and c), LAT_SUBS subscribers on b, published by a protocol client on
#            node a (LAT_VIA); and the same load published on b, alternating.
#   bytes    bytes and messages on each NATS connection (nats-server's /connz) per push, for
#            BYTES_PUSHES pushes to a room with members on b (and on b and c), with
#            cluster.replicate_history true (the default) and false.
# Pinning: node b alone on SERVER_CPU; nats-server, a, c and the bench on CLIENT_CPU (the
# machine has two cores). Every process and load is bounded by `timeout`; everything started
# is stopped at exit. Every run's JSON is kept in OUT.
set -euo pipefail
source "$(dirname "$0")/bench-common.sh"

# DURATION, WARMUP, SUBS, OUT and the auth secret: bench-common.sh's defaults.
gateway_run_defaults cluster
FIELD_DIGITS=${FIELD_DIGITS:-3}
ROUNDS=${ROUNDS:-5}
ONLY=${ONLY:-"cpu latency bytes"}
RATE=${RATE:-50}
SIZE=${SIZE:-64}
LAT_RATES=${LAT_RATES:-"10000"}
LAT_ROOMS=${LAT_ROOMS:-30}
LAT_SUBS=${LAT_SUBS:-60}
# How the latency publisher publishes: client (a protocol connection's PUBLISH on the node),
# or http / batch (the node's admin API; a push to a stream another node owns waits for the
# owner's answer, so one HTTP connection's pushes are serialised by broker round trips).
LAT_VIA=${LAT_VIA:-client}
# The nodes' per-connection client publish limit (rooms.publish_rate_per_sec and
# publish_burst; default 10 and 20), raised so one bench connection can publish LAT_RATES.
PUBLISH_LIMIT=${PUBLISH_LIMIT:-100000}
BYTES_PUSHES=${BYTES_PUSHES:-1000}
BASE_PORT=${BASE_PORT:-17300}

NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
[[ -x "$NATS" ]] || die "nats-server is not installed (apt-get install -y nats-server)"
command -v curl >/dev/null || die "curl is needed"

NATS_PORT=$BASE_PORT
NATS_MON=$((BASE_PORT + 1))
declare -A PORT ADMIN PID CPU
PORT[a]=$((BASE_PORT + 10)) ADMIN[a]=$((BASE_PORT + 11)) CPU[a]=$CLIENT_CPU
PORT[b]=$((BASE_PORT + 20)) ADMIN[b]=$((BASE_PORT + 21)) CPU[b]=$SERVER_CPU
PORT[c]=$((BASE_PORT + 30)) ADMIN[c]=$((BASE_PORT + 31)) CPU[c]=$CLIENT_CPU
NATS_PID=

stop_all() {
    local p
    for p in "${PID[@]}" $NATS_PID; do kill "$p" 2>/dev/null || true; done
    for p in "${PID[@]}" $NATS_PID; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PID=()
    NATS_PID=
}
trap stop_all EXIT

SERVERS=ringport build

# until DESCRIPTION COMMAND...: bounded poll (30 s).
until_ok() {
    local what=$1
    shift
    for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "timed out waiting for $what (logs in $OUT)"
}

metric() { # metric NODE NAME: one sample of the node's /metrics
    curl -sf "127.0.0.1:${ADMIN[$1]}/metrics" | awk -v n="$2" '$1 == n { print $2; exit }'
}

# start_cluster [--set k=v ...]: nats-server and nodes a, b, c, until every node sees three.
start_cluster() {
    timeout 3600 taskset -c "$CLIENT_CPU" "$NATS" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" \
        >"$OUT/nats.log" 2>&1 &
    NATS_PID=$!
    wait_port "$NATS_PORT" || die "nats-server did not listen (see $OUT/nats.log)"
    local n
    for n in a b c; do
        timeout 3600 taskset -c "${CPU[$n]}" "$RELEASE/ringport" serve --listen "127.0.0.1:${PORT[$n]}" \
            --admin "127.0.0.1:${ADMIN[$n]}" --workers 1 --log-level warn \
            --cluster "nats://127.0.0.1:$NATS_PORT" --node-id "$n" \
            --set "rooms.publish_rate_per_sec=$PUBLISH_LIMIT" --set "rooms.publish_burst=$PUBLISH_LIMIT" \
            "$@" >"$OUT/node-$n.log" 2>&1 &
        PID[$n]=$!
    done
    for n in a b c; do
        until_ok "node $n to see three nodes" bash -c \
            "[[ \$(curl -sf 127.0.0.1:${ADMIN[$n]}/metrics | awk '\$1 == \"ringport_cluster_nodes\" {print \$2}') == 3 ]]"
    done
    # `timeout` is the pid we hold; the server is its child.
    for n in a b c; do PID[$n]=$(pgrep -P "${PID[$n]}" || echo "${PID[$n]}"); done
    B_PID=${PID[b]}
}

# owner ROOM: the node (a, b or c) that numbers ROOM (cluster/members.rs: rendezvous hashing
# with FNV-1a and splitmix64's finalizer; the runs check it through b's counters).
owner() {
    python3 - "$1" <<'EOF'
import sys
M = (1 << 64) - 1
def fnv(parts):
    h = 0xcbf29ce484222325
    for p in parts:
        for b in p:
            h = ((h ^ b) * 0x100000001b3) & M
        h = ((h ^ 0xff) * 0x100000001b3) & M
    return h
def mix(z):
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
    return z ^ (z >> 31)
s = fnv([b"room", sys.argv[1].encode()])
print(max("abc", key=lambda n: (mix(s ^ fnv([n.encode()])), [-ord(ch) for ch in n])))
EOF
}

# stats LABEL VALUES...: median, min and max.
stats() {
    local label=$1
    shift
    python3 -c 'import statistics,sys
v=[float(x) for x in sys.argv[2:] if x != "-"]
print(f"{sys.argv[1]}: median {statistics.median(v):.3f}  min {min(v):.3f}  max {max(v):.3f}  (n={len(v)})" if v else f"{sys.argv[1]}: no values")' "$label" "$@"
}

# fanout FILE VIA ARGS...: one bench run, subscribers on b, the publisher on node VIA (its
# HTTP API, or its client port with --publisher client).
fanout() {
    local f=$1 via=$2
    shift 2
    timeout "${BENCH_TIMEOUT:-300}" taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" fanout \
        --target "127.0.0.1:${PORT[b]}" --admin "127.0.0.1:${ADMIN[$via]}" \
        --publish-target "127.0.0.1:${PORT[$via]}" --size "$SIZE" \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$B_PID" --softirq-cpu "$SERVER_CPU" \
        --json "$@" >"$f"
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# room_of NODE STEM: a room prefix STEMi- whose room 0 NODE owns.
room_of() {
    local i
    for i in $(seq 0 999); do
        [[ $(owner "$2$i-0") == "$1" ]] && { echo "$2$i-"; return; }
    done
    die "no room of $2 owned by $1"
}

part_cpu() {
    # local: a room b owns, pushed through b (b numbers and delivers it; the bus only carries
    # the copy for a and c). bus: a room a owns, pushed through a; b receives the numbered
    # message on its subscription (the cross-node fan-out path). owner: a room b owns, pushed
    # through a; a forwards it to b (one request on b's owner inbox), b numbers and delivers.
    local p_b p_a
    p_b=$(room_of b cpu)
    p_a=$(room_of a cpu)
    echo "## cpu: $SUBS subscribers on node b (core $SERVER_CPU) in one room x $RATE msg/s, $SIZE B; modes (alternating, order rotated per round): local = room ${p_b}0 (owner b) pushed through b, bus = room ${p_a}0 (owner a) pushed through a, owner = room ${p_b}0 pushed through a; load average $(loadavg)"
    local round mode f order recv0 recv1 via prefix
    local -A cpu
    local modes=(local bus owner)
    for round in $(seq "$ROUNDS"); do
        local k=$(((round - 1) % 3))
        order="${modes[*]:$k} ${modes[*]:0:$k}"
        for mode in $order; do
            f="$OUT/cpu-$mode-$round.json"
            case $mode in
            local) via=b prefix=$p_b ;;
            bus) via=a prefix=$p_a ;;
            owner) via=a prefix=$p_b ;;
            esac
            recv0=$(metric b ringport_cluster_received_total)
            fanout "$f" "$via" --connections "$SUBS" --rooms 1 --room-prefix "$prefix" --rate "$RATE"
            recv1=$(metric b ringport_cluster_received_total)
            cpu[$mode]=$(field "$f" 's.get("cpu_us_per_message")')
            # A run whose subscribers were not all ready (a stalled connect phase) says so in
            # "ready"; its expected count, and so its "lost", is then meaningless.
            printf '  round %s %-5s: us/delivery %s  ready %s  deliveries/s %s  lost %s of %s  p99 %sus  published %s, b received from the bus %s  load %s\n' \
                "$round" "$mode" "${cpu[$mode]}" "$(field "$f" 'run["peak_connections"]')" "$(field "$f" 'run["messages_per_sec"]')" \
                "$(field "$f" 'r["lost"]')" "$(field "$f" 'g["expected"]')" "$(field "$f" 'run["latency"]["p99_us"]')" \
                "$(field "$f" 'g["published_accepted"]')" "$((recv1 - recv0))" "$(loadavg)"
        done
        echo "$round ${cpu[local]} ${cpu[bus]} ${cpu[owner]}" >>"$OUT/cpu-rounds.txt"
        echo "  round $round: bus/local $(python3 -c "print(f'{${cpu[bus]}/${cpu[local]}:.3f}')")  owner/local $(python3 -c "print(f'{${cpu[owner]}/${cpu[local]}:.3f}')")"
    done
    python3 - "$OUT/cpu-rounds.txt" <<'PY'
import statistics, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1])]
def st(name, v):
    print(f"  {name}: median {statistics.median(v):.3f}  min {min(v):.3f}  max {max(v):.3f}  (n={len(v)})")
st("local us/delivery", [r[0] for r in rows])
st("bus   us/delivery", [r[1] for r in rows])
st("owner us/delivery", [r[2] for r in rows])
st("bus/local ratio  ", [r[1] / r[0] for r in rows])
st("owner/local ratio", [r[2] / r[0] for r in rows])
PY
}

part_latency() {
    local owners rate
    owners=$(for i in $(seq 0 $((LAT_ROOMS - 1))); do owner "lat-$i"; done | sort | uniq -c | tr -s ' \n' ' ')
    for rate in $LAT_RATES; do
        echo "## latency: $LAT_SUBS subscribers on node b in $LAT_ROOMS rooms (owners:$owners) x $rate msg/s published by $LAT_VIA, $SIZE B; remote = published through a, local = through b (alternating); load average $(loadavg)"
        local round mode f order via p99s_r=() p99s_l=()
        for round in $(seq "$ROUNDS"); do
            order="remote local"
            ((round % 2 == 0)) && order="local remote"
            for mode in $order; do
                f="$OUT/latency-$rate-$mode-$round.json"
                via=a
                [[ $mode == local ]] && via=b
                fanout "$f" "$via" --connections "$LAT_SUBS" --rooms "$LAT_ROOMS" --room-prefix lat- \
                    --rate "$rate" --publisher "$LAT_VIA"
                printf '  round %s %-6s: published %s (max lag %s ms)  deliveries/s %s  lost %s of %s  p50 %sus  p99 %sus  max %sus  load %s\n' \
                    "$round" "$mode" "$(field "$f" 'g["published_accepted"]')" "$(field "$f" 'g["publisher_max_lag_ms"]')" \
                    "$(field "$f" 'run["messages_per_sec"]')" "$(field "$f" 'r["lost"]')" "$(field "$f" 'g["expected"]')" \
                    "$(field "$f" 'run["latency"]["p50_us"]')" "$(field "$f" 'run["latency"]["p99_us"]')" \
                    "$(field "$f" 'run["latency"]["max_us"]')" "$(loadavg)"
                if [[ $mode == remote ]]; then
                    p99s_r+=("$(field "$f" 'run["latency"]["p99_us"]')")
                else
                    p99s_l+=("$(field "$f" 'run["latency"]["p99_us"]')")
                fi
            done
        done
        stats "  $rate msg/s remote p99 us" "${p99s_r[@]}"
        stats "  $rate msg/s local p99 us " "${p99s_l[@]}"
    done
}

# connz: {node: (in_msgs, out_msgs, in_bytes, out_bytes)} of the ringport connections.
connz() {
    curl -sf "127.0.0.1:$NATS_MON/connz?limit=1024" | python3 -c 'import json,sys
d=json.load(sys.stdin)
print(json.dumps({c["name"].split()[-1]: [c["in_msgs"], c["out_msgs"], c["in_bytes"], c["out_bytes"]] for c in d["connections"] if c.get("name","").startswith("ringport ")}))'
}

# bytes_run LABEL MEMBERS_ON PUSH_VIA: BYTES_PUSHES pushes (one batch request per 1,000) to a
# room b owns, whose members (SUBS/2 each) are on MEMBERS_ON (space-separated nodes).
bytes_run() {
    local label=$1 members=$2 via=$3 room n holders=()
    room=$(room_of b "bytes$RANDOM-")
    for n in $members; do
        timeout 120 taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" idle --target "127.0.0.1:${PORT[$n]}" \
            --admin "127.0.0.1:${ADMIN[$n]}" --connections $((SUBS / 2)) --rooms 1 --room-prefix "$room" \
            --duration 60 --warmup 1 --json >"$OUT/bytes-$label-$n-idle.json" 2>"$OUT/bytes-$label-$n-idle.err" &
        holders+=($!)
    done
    local want=$(($(wc -w <<<"$members") * (SUBS / 2)))
    until_ok "$want members in ${room}0" bash -c \
        "curl -sf 127.0.0.1:${ADMIN[b]}/v1/rooms/${room}0 | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)[\"online\"] != $want)'"
    sleep 1 # the user-count messages of the joins settle
    local before after body
    before=$(connz)
    body=$(python3 -c 'import json,sys
print(json.dumps({"items": [{"room": sys.argv[1], "payload": "x" * int(sys.argv[2])} for _ in range(int(sys.argv[3]))]}))' "${room}0" "$SIZE" 1000)
    local sent=0 r0
    r0=$(metric b ringport_cluster_received_total)
    while ((sent < BYTES_PUSHES)); do
        curl -sf -o /dev/null -X POST "127.0.0.1:${ADMIN[$via]}/v1/publish/batch" -H 'content-type: application/json' -d "$body"
        sent=$((sent + 1000))
    done
    # Every other node with the room got every push (bounded poll on their counters).
    sleep 1
    after=$(connz)
    for p in "${holders[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    python3 - "$label" "$sent" "$before" "$after" "$via" "$members" <<'EOF'
import json, sys
label, sent, before, after, via, members = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5], sys.argv[6]
print(f"  {label}: {sent} pushes through {via}, members on {members} (room owned by b)")
tin = tout = 0
for n in sorted(after):
    d = [a - b for a, b in zip(after[n], before.get(n, [0, 0, 0, 0]))]
    tin += d[2]; tout += d[3]
    print(f"    node {n}: to broker {d[0]/sent:.3f} msgs {d[2]/sent:.1f} B per push; from broker {d[1]/sent:.3f} msgs {d[3]/sent:.1f} B per push")
print(f"    all nodes: {tin/sent:.1f} B to the broker + {tout/sent:.1f} B from it per push ({(tin+tout)/sent:.1f} B on the NATS connections)")
EOF
}

part_bytes() {
    local rh
    for rh in true false; do
        echo "## bytes: nats-server /connz per push, $SIZE B payloads, $((SUBS / 2)) members per node, cluster.replicate_history=$rh; load average $(loadavg)"
        stop_all
        start_cluster --set "cluster.replicate_history=$rh"
        bytes_run "replicate_history=$rh-local" b b
        bytes_run "replicate_history=$rh-remote" b a
        bytes_run "replicate_history=$rh-two-nodes" "b c" a
    done
}

start_cluster
echo "# bench-cluster: nats-server $("$NATS" --version | awk '{print $2}'), nodes a, b, c (--workers 1); b on core $SERVER_CPU, the rest on core $CLIENT_CPU; load average $(loadavg); OUT=$OUT"
for part in $ONLY; do
    case $part in
    cpu) part_cpu ;;
    latency) part_latency ;;
    bytes) part_bytes ;;
    *) die "unknown part $part" ;;
    esac
done
