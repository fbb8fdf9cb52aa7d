# Shared helpers for scripts/bench-*.sh (sourced, not run).
# Servers are pinned with taskset to SERVER_CPU, the client to CLIENT_CPU; everything is on
# loopback and every command is bounded by `timeout`.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELEASE="${RELEASE:-$ROOT/target/release}"
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
# The server under test: `ringport` (ringport serve --app echo on the default backend),
# `ringport-epoll` (the same on the epoll backend) or `engine-example`
# (crates/ringport-io/examples/echo.rs, the bare engine echo, for when the ringport binary
# cannot run the data plane yet). The baseline is always tokio-echo.
OURS=${OURS:-ringport}
# Servers to run; SERVERS=tokio exercises a script with the baseline alone.
SERVERS=${SERVERS:-"$OURS tokio"}
# Extra arguments for every ringport-bench run (e.g. "--client tokio").
BENCH_ARGS=${BENCH_ARGS:-}

die() { echo "error: $*" >&2; exit 1; }

# round_order ROUND LIST...: LIST as given, or reversed in even rounds when SWAP is set (so
# no system always runs first in a round on a shared machine).
round_order() {
    local round=$1
    shift
    if [[ -n "${SWAP:-}" ]] && ((round % 2 == 0)); then
        printf '%s\n' "$@" | tac | tr '\n' ' '
    else
        echo "$@"
    fi
}

# gateway_run_defaults NAME: what the gateway-population benchmarks (bench-attacks.sh,
# bench-limits-cost.sh) share, each overridable from the environment: DURATION and WARMUP
# (seconds per run), SUBS (subscribers), the auth secret server and bench use, and OUT (the
# run's folder, target/bench/NAME-<time>, created).
gateway_run_defaults() {
    DURATION=${DURATION:-10}
    WARMUP=${WARMUP:-2}
    SUBS=${SUBS:-2000}
    OUT=${OUT:-"$ROOT/target/bench/$1-$(date +%Y%m%d-%H%M%S)"}
    export RINGPORT_AUTH_SECRET=${RINGPORT_AUTH_SECRET:-bench-secret-0123456789abcdef0123456789}
    export RINGPORT_BENCH_SECRET=$RINGPORT_AUTH_SECRET
    mkdir -p "$OUT"
}

# build: the release binaries the scripts run (niced: other builds share the machine).
# NO_BUILD=1 runs what target/release holds instead.
build() {
    command -v taskset >/dev/null || die "taskset (util-linux) is needed to pin processes"
    [[ -z "${NO_BUILD:-}" ]] || return 0
    local pkgs=(-p ringport-bench)
    [[ " $SERVERS " == *" ringport"* ]] && pkgs+=(-p ringport)
    (cd "$ROOT" && nice -n 19 cargo build --release "${pkgs[@]}" ${BENCH_FEATURES:+--features "$BENCH_FEATURES"}) >&2 \
        || die "release build failed"
    if [[ " $SERVERS " == *" engine-"* ]]; then
        (cd "$ROOT" && nice -n 19 cargo build --release -p ringport-io --example echo) >&2 || die "example build failed"
    fi
}

# wait_port PORT: until 127.0.0.1:PORT accepts, at most 10 s.
wait_port() {
    local port=$1 i
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# start_server NAME PORT: starts it pinned, sets SERVER_PID and SERVER_ADDR.
start_server() {
    local name=$1 port=$2
    case $name in
    ringport | ringport-epoll | ringport-base)
        # `ringport` runs the default backend (auto: io_uring where the host allows it),
        # `ringport-epoll` forces the epoll backend, `ringport-base` runs another build of the
        # binary (RINGPORT_BASE_BIN) on the default backend, for before/after ratios.
        local bin="$RELEASE/ringport"
        if [[ $name == ringport-base ]]; then
            bin=${RINGPORT_BASE_BIN:-}
            [[ -x "$bin" ]] || die "ringport-base needs RINGPORT_BASE_BIN (a ringport binary)"
        fi
        [[ -x "$bin" ]] || die "$bin not built"
        local backend=auto
        [[ $name == ringport-epoll ]] && backend=epoll
        taskset -c "$SERVER_CPU" "$bin" serve --app echo --listen "127.0.0.1:$port" --workers 1 \
            --io-backend "$backend" >"$OUT/$name-server.log" 2>&1 &
        SERVER_PID=$!
        SERVER_ADDR="127.0.0.1:$port"
        ;;
    engine-example)
        taskset -c "$SERVER_CPU" "$RELEASE/examples/echo" "127.0.0.1:$port" 1 \
            >"$OUT/engine-example-server.log" 2>&1 &
        SERVER_PID=$!
        SERVER_ADDR="127.0.0.1:$port"
        ;;
    engine-base)
        # Another build of the engine example (BASE_BIN), for before/after ratios of an
        # engine change: SERVERS="engine-example engine-base".
        [[ -x "${BASE_BIN:-}" ]] || die "engine-base needs BASE_BIN (an examples/echo binary)"
        taskset -c "$SERVER_CPU" "$BASE_BIN" "127.0.0.1:$port" 1 \
            >"$OUT/engine-base-server.log" 2>&1 &
        SERVER_PID=$!
        SERVER_ADDR="127.0.0.1:$port"
        ;;
    tokio)
        taskset -c "$SERVER_CPU" "$RELEASE/tokio-echo" --listen "127.0.0.1:$port" --threads 1 \
            >"$OUT/tokio-server.log" 2>&1 &
        SERVER_PID=$!
        SERVER_ADDR="127.0.0.1:$port"
        ;;
    *) die "unknown server $name" ;;
    esac
    wait_port "$port" || { stop_server; die "$name did not listen on $port within 10 s (see $OUT/$name-server.log)"; }
}

stop_server() {
    [[ -n "${SERVER_PID:-}" ]] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# bench ARGS...: the pinned client, bounded in time.
bench() {
    timeout "${BENCH_TIMEOUT:-300}" taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" "$@" $BENCH_ARGS
}

# field FILE EXPR: a value out of a gateway scenario's --json report (r = report,
# run = r["run"], g = r["gateway"], s = the server's numbers); floats with FIELD_DIGITS (2).
field() {
    python3 -c 'import json,sys
r=json.load(open(sys.argv[1])); run=r["run"]; g=r["gateway"]; s=run.get("server") or {}
v=eval(sys.argv[2]); d=int(sys.argv[3])
print("-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else v))' "$1" "$2" "${FIELD_DIGITS:-2}"
}

# json FILE EXPR: a number out of an echo --json file (python3 is on Debian images).
json() {
    python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))["runs"][0]
v=eval(sys.argv[2], {}, {"r": d})
print("-" if v is None else (f"{v:.3f}" if isinstance(v, float) else v))' "$1" "$2"
}
