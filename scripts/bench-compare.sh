#!/usr/bin/env bash
# ringport side by side with Redis pub/sub and NATS core (issue 12, item 6): the same fan-out
# load (SUBS subscribers spread over ROOMS rooms, default one, RATE msg/s round-robin over the
# rooms, SIZE-byte stamped payloads) from the same
# client (`ringport-bench fanout --protocol ringport|redis|nats`), servers pinned to SERVER_CPU,
# the bench to CLIENT_CPU, alternating systems within every round, then per rate the median
# and min-max spread of the per-round ratios ringport/Redis and ringport/NATS of server CPU
# per delivery (ksoftirqd/SERVER_CPU counted) and of p99 publish→deliver latency.
#
#   scripts/bench-compare.sh                              # defaults below
#   RATES="50 1000" ROUNDS=5 scripts/bench-compare.sh
#   SYSTEMS="ringport ringport-client redis nats" scripts/bench-compare.sh
#   SYSTEMS="ringport base" BASE_BIN=/tmp/ringport-old scripts/bench-compare.sh   # before/after
#   SUBS=10000 ROOMS=1000 RATES=10000 SYSTEMS="ringport-batch redis" scripts/bench-compare.sh
#   BATCH_WINDOW=20 SYSTEMS="ringport redis" scripts/bench-compare.sh
#
# BATCH_WINDOW (default 0) is every ringport server's rooms.batch_window_ms, given with --set
# (which outranks RINGPORT_ROOMS__BATCH_WINDOW_MS in the environment), except
# ringport-window's, which is WINDOW (default 30).
#
# SWAP=1 reverses the order of SYSTEMS in every even round, so neither always runs first
# (on a shared machine the first and the last system of a round see different neighbours).
#
# SYSTEMS (run in this order in every round, or reversed in even rounds with SWAP=1):
#   ringport         ringport serve --workers 1, publisher PUBLISHER (http: admin API, pipelined)
#   ringport-epoll   the same on the epoll backend (--io-backend epoll); also reported as the
#                    ratio ringport-epoll/ringport
#   ringport-http    the same with the HTTP publisher
#   ringport-window  the same with rooms.batch_window_ms=WINDOW (default 30); also reported
#                    as the ratio ringport-window/ringport
#   ringport-batch   the same with the HTTP batch API (the messages due each ms in one request)
#   ringport-client  the same with a protocol client's PUBLISH
#   ringport-ws      ringport with PUBLISHER, subscribers over WebSocket (`--protocol
#                    ringport-ws`); also reported as the ratio ringport-ws/ringport
#   ringport-tls     ringport with a certificate (tls.cert_file, made here with openssl: ECDSA
#                    P-256, TLS 1.3), subscribers over TLS (`--tls --tls-ca`); also reported as
#                    the ratio ringport-tls/ringport
#   ringport-wss     the same with the subscribers over WebSocket over TLS; also reported as
#                    the ratio ringport-wss/ringport-ws
#   base             BASE_BIN (another ringport build) with PUBLISHER: "ringport/base" ratios
#   redis            redis-server (no persistence, maxclients 19000), publisher PUBLISH, pipelined
#   nats             nats-server, publisher PUB
# redis-server and nats-server are installed with apt-get (Debian packages) when missing.
# Every run's JSON is kept in OUT; everything is on loopback and bounded by `timeout`.
set -euo pipefail
source "$(dirname "$0")/bench-common.sh"

ROUNDS=${ROUNDS:-3}
RATES=${RATES:-"50 1000"}
SYSTEMS=${SYSTEMS:-"ringport redis nats"}
PUBLISHER=${PUBLISHER:-http}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SUBS=${SUBS:-2000}
ROOMS=${ROOMS:-1}
SIZE=${SIZE:-64}
PORT=${PORT:-17280}
ADMIN_PORT=${ADMIN_PORT:-17281}
REDIS_PORT=${REDIS_PORT:-17279}
NATS_PORT=${NATS_PORT:-17282}
RINGPORT_BIN=${RINGPORT_BIN:-$RELEASE/ringport}
BASE_BIN=${BASE_BIN:-}
# NO_BUILD=1 runs the binaries as they are (RINGPORT_BIN, BENCH_BIN) instead of building first.
BENCH_BIN=${BENCH_BIN:-$RELEASE/ringport-bench}
NO_BUILD=${NO_BUILD:-}
OUT=${OUT:-"$ROOT/target/bench/compare-$(date +%Y%m%d-%H%M%S)"}
export RINGPORT_AUTH_SECRET=${RINGPORT_AUTH_SECRET:-bench-secret-0123456789abcdef0123456789}
export RINGPORT_BENCH_SECRET=$RINGPORT_AUTH_SECRET
mkdir -p "$OUT"
trap stop_server EXIT

# Debian installs nats-server into /usr/sbin, which a non-root PATH may lack.
find_bin() { command -v "$1" 2>/dev/null || { [[ -x "/usr/sbin/$1" ]] && echo "/usr/sbin/$1"; } || true; }

install_servers() {
    local missing=()
    [[ " $SYSTEMS " == *" redis "* && -z "$(find_bin redis-server)" ]] && missing+=(redis-server)
    [[ " $SYSTEMS " == *" nats "* && -z "$(find_bin nats-server)" ]] && missing+=(nats-server)
    ((${#missing[@]} == 0)) && return 0
    local sudo=()
    [[ $(id -u) -ne 0 ]] && sudo=(sudo)
    echo "installing ${missing[*]} (apt-get)" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
}

# start_system NAME: starts it pinned to SERVER_CPU; sets SERVER_PID and the bench arguments
# TARGET_ARGS.
start_system() {
    local name=$1 bin=$RINGPORT_BIN publisher=$PUBLISHER
    case $name in
    ringport | ringport-epoll | ringport-http | ringport-window | ringport-batch | ringport-client | ringport-ws | ringport-tls | ringport-wss | base)
        local protocol=ringport backend=auto tls_set=() tls_args=() window=${BATCH_WINDOW:-0}
        [[ $name == ringport-window ]] && window=${WINDOW:-30}
        [[ $name == ringport-epoll ]] && backend=epoll
        [[ $name == ringport-ws || $name == ringport-wss ]] && protocol=ringport-ws
        if [[ $name == ringport-tls || $name == ringport-wss ]]; then
            make_cert
            tls_set=(--set "tls.cert_file=$OUT/tls-cert.pem" --set "tls.key_file=$OUT/tls-key.pem")
            tls_args=(--tls --tls-ca "$OUT/tls-cert.pem" --tls-server-name localhost)
        fi
        [[ $name == ringport-http ]] && publisher=http
        [[ $name == ringport-batch ]] && publisher=batch
        [[ $name == ringport-client ]] && publisher=client
        if [[ $name == base ]]; then
            [[ -x "$BASE_BIN" ]] || die "SYSTEMS has base but BASE_BIN ($BASE_BIN) is not an executable"
            bin=$BASE_BIN
        fi
        # A client publisher needs the per-connection publish rate (and burst: a publisher
        # that fell behind catches up in a burst) to allow the load.
        taskset -c "$SERVER_CPU" "$bin" serve --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
            --workers 1 --io-backend "$backend" --log-level warn --set "rooms.batch_window_ms=$window" \
            --set "rooms.publish_rate_per_sec=$((RATE * 4))" --set "rooms.publish_burst=$((RATE * 20))" \
            "${tls_set[@]}" >"$OUT/$name-server.log" 2>&1 &
        SERVER_PID=$!
        wait_port "$PORT" && wait_port "$ADMIN_PORT" || die "$name did not listen (see $OUT/$name-server.log)"
        TARGET_ARGS=(--protocol "$protocol" --publisher "$publisher" --target "127.0.0.1:$PORT"
            --admin "127.0.0.1:$ADMIN_PORT" "${tls_args[@]}")
        ;;
    redis)
        taskset -c "$SERVER_CPU" "$(find_bin redis-server)" --bind 127.0.0.1 --port "$REDIS_PORT" \
            --save '' --appendonly no --protected-mode yes --maxclients 19000 >"$OUT/redis-server.log" 2>&1 &
        SERVER_PID=$!
        wait_port "$REDIS_PORT" || die "redis-server did not listen (see $OUT/redis-server.log)"
        TARGET_ARGS=(--protocol redis --target "127.0.0.1:$REDIS_PORT")
        ;;
    nats)
        taskset -c "$SERVER_CPU" "$(find_bin nats-server)" -a 127.0.0.1 -p "$NATS_PORT" \
            >"$OUT/nats-server.log" 2>&1 &
        SERVER_PID=$!
        wait_port "$NATS_PORT" || die "nats-server did not listen (see $OUT/nats-server.log)"
        TARGET_ARGS=(--protocol nats --target "127.0.0.1:$NATS_PORT")
        ;;
    *) die "unknown system $name (ringport, ringport-epoll, ringport-http, ringport-window, ringport-batch, ringport-client, ringport-ws, ringport-tls, ringport-wss, base, redis, nats)" ;;
    esac
}

# make_cert: a self-signed ECDSA P-256 certificate for localhost in OUT (once per run); not a
# CA (webpki refuses a CA certificate as the server's own).
make_cert() {
    [[ -s "$OUT/tls-cert.pem" ]] && return 0
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$OUT/tls-key.pem" -out "$OUT/tls-cert.pem" >/dev/null 2>&1 ||
        die "openssl could not make a test certificate"
}

# ratios RATE OURS THEIRS: per-round ratios of server us/delivery and p99, median (min-max).
ratios() {
    python3 - "$OUT" "$1" "$2" "$3" "$ROUNDS" <<'EOF'
import json, statistics, sys
out, rate, ours, theirs, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def load(name, i):
    try:
        return json.load(open(f"{out}/{name}-{rate}-{i}.json"))
    except (OSError, ValueError):
        return None
def cpu(r): return ((r["run"].get("server") or {}).get("cpu_us_per_message"))
def p99(r): return r["run"]["latency"]["p99_us"]
for what, f in (("server us/delivery", cpu), ("p99", p99)):
    vals = []
    for i in range(1, rounds + 1):
        a, b = load(ours, i), load(theirs, i)
        if a and b and f(a) and f(b):
            vals.append(f(a) / f(b))
    if vals:
        print(f"  {ours}/{theirs} {what:<18} median {statistics.median(vals):.2f}  "
              f"min {min(vals):.2f}  max {max(vals):.2f}  (n={len(vals)})")
    else:
        print(f"  {ours}/{theirs} {what:<18} no pairs")
EOF
}

install_servers
[[ -n "$NO_BUILD" ]] || SERVERS=ringport build
echo "# $SUBS subscribers in $ROOMS room(s), $SIZE B payloads, ${DURATION}s (+${WARMUP}s warm-up), server core $SERVER_CPU (+ksoftirqd/$SERVER_CPU), bench core $CLIENT_CPU; JSON in $OUT"
for RATE in $RATES; do
    echo "## $RATE msg/s ($((SUBS * RATE / ROOMS)) deliveries/s offered), systems: $SYSTEMS"
    for round in $(seq "$ROUNDS"); do
        echo "  round $round: load average $(cut -d' ' -f1-3 /proc/loadavg)"
        for sys in $(round_order "$round" $SYSTEMS); do
            start_system "$sys"
            f="$OUT/$sys-$RATE-$round.json"
            if ! timeout "${BENCH_TIMEOUT:-300}" taskset -c "$CLIENT_CPU" "$BENCH_BIN" fanout \
                "${TARGET_ARGS[@]}" --connections "$SUBS" --rooms "$ROOMS" --rate "$RATE" --size "$SIZE" \
                --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" \
                --softirq-cpu "$SERVER_CPU" --json $BENCH_ARGS >"$f" 2>"$OUT/$sys-$RATE-$round.err"; then
                stop_server
                die "bench against $sys failed (see $OUT/$sys-$RATE-$round.err)"
            fi
            stop_server
            python3 - "$f" "$sys" "$round" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); run = r["run"]; g = r["gateway"]; s = run.get("server") or {}
l = run["latency"]
print(f"  round {sys.argv[3]} {sys.argv[2]:<16} delivered {g['deliveries']['unique']} of {g['expected']} "
      f"({g['published_accepted']} msgs)  server {s.get('cpu_us_per_message') or 0:.2f} us/delivery  "
      f"p50 {l['p50_us'] / 1000:.1f} ms  p99 {l['p99_us'] / 1000:.1f} ms  max {l['max_us'] / 1000:.1f} ms  "
      f"bench cpu {run['bench_cpu_secs']:.2f}s" + "".join(f"\n    note: {x}" for x in r["findings"]))
EOF
        done
    done
    for ours in $SYSTEMS; do
        case $ours in redis | nats | base) continue ;; esac
        for theirs in $SYSTEMS; do
            case $theirs in redis | nats | base) ratios "$RATE" "$ours" "$theirs" ;; esac
        done
        # WebSocket's cost over the native protocol on the same load (issue 14's target).
        if [[ $ours == ringport-ws && " $SYSTEMS " == *" ringport "* ]]; then
            ratios "$RATE" ringport-ws ringport
        fi
        # TLS's cost over plaintext on the same load (issue 14's report).
        if [[ $ours == ringport-tls && " $SYSTEMS " == *" ringport "* ]]; then
            ratios "$RATE" ringport-tls ringport
        fi
        if [[ $ours == ringport-wss && " $SYSTEMS " == *" ringport-ws "* ]]; then
            ratios "$RATE" ringport-wss ringport-ws
        fi
        # What holding room messages for the window saves, and costs in latency.
        if [[ $ours == ringport-window && " $SYSTEMS " == *" ringport "* ]]; then
            ratios "$RATE" ringport-window ringport
        fi
        # The epoll backend's cost over the io_uring one on the same load (issue 13's target).
        if [[ $ours == ringport-epoll && " $SYSTEMS " == *" ringport "* ]]; then
            ratios "$RATE" ringport-epoll ringport
        fi
    done
done
