#!/usr/bin/env bash
# A three-node ringport cluster on loopback: one nats-server (with JetStream enabled, which
# ringport does not need yet), gateways A, B and C, a subscriber on B and one on C; a push
# made through A's HTTP API reaches both.
#
#   scripts/cluster-demo.sh            # builds (niced) and runs; everything it started is stopped at exit
#
# Needs nats-server (Debian: apt-get install -y nats-server) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$NATS" ] || { echo "nats-server is not installed (apt-get install -y nats-server)" >&2; exit 1; }

nice -n 19 cargo build --release -q -p ringport -p ringport-client --example subscribe
BIN=target/release/ringport
SUB=target/release/examples/subscribe
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for DESCRIPTION COMMAND...: bounded poll (20 s)
    local what=$1; shift
    for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "timed out waiting for $what" >&2; exit 1
}

NATS_PORT=$(free_port)
"$NATS" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$DIR/js" >"$DIR/nats.log" 2>&1 &
PIDS+=($!)
wait_for "nats-server" bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT"
echo "nats-server on 127.0.0.1:$NATS_PORT (JetStream on)"

export RINGPORT_AUTH_SECRET=cluster-demo-secret-0123456789abcdef
declare -A CLIENT ADMIN
for n in a b c; do
    CLIENT[$n]=$(free_port); ADMIN[$n]=$(free_port)
    "$BIN" serve --listen "127.0.0.1:${CLIENT[$n]}" --admin "127.0.0.1:${ADMIN[$n]}" --workers 1 \
        --cluster "nats://127.0.0.1:$NATS_PORT" --node-id "$n" >"$DIR/$n.log" 2>&1 &
    PIDS+=($!)
done
for n in a b c; do
    wait_for "node $n" bash -c "curl -sf 127.0.0.1:${ADMIN[$n]}/metrics | grep -q 'ringport_cluster_connected{node=\"$n\"} 1'"
    echo "node $n: clients 127.0.0.1:${CLIENT[$n]}, admin 127.0.0.1:${ADMIN[$n]}"
done

for n in b c; do
    TOKEN=$("$BIN" token --user "user-$n" --rooms lobby)
    "$SUB" "127.0.0.1:${CLIENT[$n]}" "$TOKEN" lobby >"$DIR/sub-$n.out" 2>"$DIR/sub-$n.err" &
    PIDS+=($!)
    # Subscribed on the bus to: the room, the user's inbox and broadcasts.
    wait_for "subscriber on $n" bash -c "curl -sf 127.0.0.1:${ADMIN[$n]}/metrics | grep -q '^ringport_cluster_subscriptions 3$'"
done

echo "push through node a:"
curl -sf -X POST "127.0.0.1:${ADMIN[a]}/v1/push/room/lobby" -d '{"payload":"hello from node a"}'
echo
for n in b c; do
    wait_for "the push on $n" grep -q "hello from node a" "$DIR/sub-$n.out"
    echo "subscriber on node $n got: $(cat "$DIR/sub-$n.out")"
done
echo "bus counters on a: $(curl -sf 127.0.0.1:${ADMIN[a]}/metrics | grep '^ringport_cluster_forwarded_total')"
