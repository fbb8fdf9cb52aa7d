#!/usr/bin/env bash
# Instructions the server executes per HTTP push (POST /v1/push/room/r1, 64-byte payload,
# one request at a time on one keep-alive connection, a room with no members), counted by
# valgrind's callgrind: deterministic where wall-clock CPU on this shared machine is not.
# Runs N1 and N2 pushes against a fresh server each and prints (Ir(N2) - Ir(N1)) / (N2 - N1),
# so start-up and shutdown cancel out. The server uses the epoll backend (valgrind does not
# model io_uring); the admin path measured is the same on both.
#
#   scripts/bench-push-instructions.sh [BIN...]     (default: target/release/ringport)
#   N1=200 N2=2000 scripts/bench-push-instructions.sh /tmp/ringport-old target/release/ringport
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
N1=${N1:-200}
N2=${N2:-2000}
command -v valgrind >/dev/null || die "valgrind is needed (apt-get install valgrind)"
command -v python3 >/dev/null || die "python3 is needed for the HTTP client"
BINS=("$@")
[[ ${#BINS[@]} -gt 0 ]] || BINS=("$RELEASE/ringport")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cat > "$WORK/push.py" <<'PY'
import http.client, json, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
body = json.dumps({"payload": "x" * 64})
for _ in range(n):
    c.request("POST", "/v1/push/room/r1", body=body, headers={"content-type": "application/json"})
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"push answered {r.status}")
PY

# instructions BIN N: total instructions of one server run that served N pushes.
instructions() {
    local bin=$1 n=$2 port=$((20000 + RANDOM % 20000)) vp
    timeout 600 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$bin" serve \
        --io-backend epoll --workers 1 --listen 127.0.0.1:$((port + 1)) \
        --admin 127.0.0.1:$port >"$WORK/server.log" 2>&1 &
    vp=$!
    for _ in $(seq 300); do
        curl -sf "127.0.0.1:$port/healthz" >/dev/null && break
        sleep 0.2
    done
    timeout 600 python3 "$WORK/push.py" "$n" "$port" || { kill "$vp"; die "pushes failed"; }
    kill -INT "$vp"
    wait "$vp" || true
    awk '/^summary:/ {print $2}' "$WORK/cg.out"
}

for bin in "${BINS[@]}"; do
    a=$(instructions "$bin" "$N1")
    b=$(instructions "$bin" "$N2")
    echo "$bin: $(( (b - a) / (N2 - N1) )) instructions per push ($N1 pushes: $a, $N2 pushes: $b)"
done
