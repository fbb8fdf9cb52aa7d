#!/usr/bin/env bash
# One process, N authenticated connections (default 1,000,000), each joined to one room, with
# heartbeats (issue 16). Starts `ringport serve` on SERVER_CPU (taskset -c 0, one worker, as
# many direct-descriptor tables as N needs) and `ringport-bench idle` on CLIENT_CPU (taskset
# -c 1), which connects N sessions through its pacer and holds them; HOLD seconds (default 60)
# after the last one is ready it makes one broadcast to all of them via the HTTP API
# (`POST /v1/broadcast`) and reports the time until the last delivery and the server CPU it
# took, RSS per connection, unexpected closes and the connect phase over time.
#
#   scripts/bench-million.sh                   # N=1000000
#   N=200000 HOLD=60 scripts/bench-million.sh
#   SYSCTL=1 scripts/bench-million.sh          # also set the kernel settings it checks
#
# Kernel settings checked first (set only with SYSCTL=1): the ephemeral port range,
# net.core.somaxconn, net.ipv4.tcp_mem, fs.file-max, nf_conntrack_max if conntrack is
# loaded. The kernel needs ~9.7 KB per loopback pair (~10 GB for a million): the run stops
# when MemAvailable falls below MIN_AVAIL_MIB (default 3072), and every step is bounded in
# time. Output (Markdown + JSON + PNG charts of connections, RSS and CPU over time): OUT.
#
# Both processes run in a network namespace of their own (NETNS, default ringport-million;
# NETNS= runs them in the current one) created with an established-connection hash table
# sized for 2N sockets (net.ipv4.tcp_child_ehash_entries): the host's table is sized at boot
# (262,144 buckets here), and with two million sockets in it every packet's socket lookup
# walks a chain of ~8 (__inet_lookup_established was the top symbol of both processes at
# 900,000 connections).
set -euo pipefail
source "$(dirname "$0")/bench-common.sh"

N=${N:-1000000}
NETNS=${NETNS-ringport-million}
HOLD=${HOLD:-60}
# 120 s: with 30 s, a million connections' PING/PONG alone (33,000 exchanges/s, ~26 µs of
# server CPU each on this VM, loopback TCP of both directions included) fill the server's core
# at ~900,000 connections and the connect phase stalls (measured 2026-12-02).
HEARTBEAT_MS=${HEARTBEAT_MS:-120000}
PORT=${PORT:-17090}
ADMIN_PORT=${ADMIN_PORT:-17091}
MIN_AVAIL_MIB=${MIN_AVAIL_MIB:-3072}
CONNECT_WINDOW=${CONNECT_WINDOW:-2048}
SOURCE_ADDRS=${SOURCE_ADDRS:-127.0.0.2-127.0.0.250}
OUT=${OUT:-"$ROOT/target/bench/million-$N-$(date +%Y%m%d-%H%M%S)"}
export RINGPORT_AUTH_SECRET=${RINGPORT_AUTH_SECRET:-bench-secret-0123456789abcdef0123456789}
export RINGPORT_BENCH_SECRET=$RINGPORT_AUTH_SECRET
mkdir -p "$OUT"
SERVERS=ringport
BENCH_PID=
WATCH_PID=
IN=()
cleanup() {
    [[ -n "$WATCH_PID" ]] && kill "$WATCH_PID" 2>/dev/null || true
    [[ -n "$BENCH_PID" ]] && kill "$BENCH_PID" 2>/dev/null || true
    stop_server
    [[ -n "$NETNS" ]] && ip netns del "$NETNS" 2>/dev/null || true
}
trap cleanup EXIT

log() { echo "$*" | tee -a "$OUT/run.log"; }
avail_mib() { awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ksoftirqd_ticks() {
    local pid
    pid=$(pgrep -x "ksoftirqd/$SERVER_CPU" | head -1)
    [[ -n "$pid" ]] && cpu_ticks "$pid" || echo 0
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
now_us() { echo $(($(date +%s%N) / 1000)); }

# check_sysctl KEY WANT CMP: reports KEY against WANT ("ge": first field >= WANT); sets it with
# SYSCTL=1.
check_sysctl() {
    local key=$1 want=$2 have
    have=$(sysctl -n "$key" 2>/dev/null | awk '{print $1}') || { log "  $key: not present"; return 0; }
    if ((have >= ${want%% *})); then
        log "  $key = $(sysctl -n "$key" | tr '\t' ' ') (ok, need >= ${want%% *})"
    elif [[ "${SYSCTL:-0}" == 1 ]]; then
        sysctl -qw "$key=$want" && log "  $key set to $want (was $have)"
    else
        log "  $key = $have: too low for $N connections (need $want); rerun with SYSCTL=1 to set it"
    fi
}

log "# bench-million: N=$N, hold ${HOLD}s, heartbeat ${HEARTBEAT_MS} ms, server core $SERVER_CPU, bench core $CLIENT_CPU"
log "started $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
log "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"
log "kernel settings:"
lo=$(sysctl -n net.ipv4.ip_local_port_range | awk '{print $1}')
hi=$(sysctl -n net.ipv4.ip_local_port_range | awk '{print $2}')
log "  net.ipv4.ip_local_port_range = $lo $hi ($((hi - lo + 1)) ports per source address; the bench spreads over $SOURCE_ADDRS)"
check_sysctl net.core.somaxconn 4096
check_sysctl fs.file-max $((N * 2 + 100000))
# tcp_mem (pages) bounds the memory of data queued in TCP buffers: idle connections queue
# nothing, but a broadcast queues one small segment on each of N sockets at once (one page
# each at worst).
tcp_max=$(sysctl -n net.ipv4.tcp_mem | awk '{print $3}')
if ((tcp_max < N)); then
    if [[ "${SYSCTL:-0}" == 1 ]]; then
        sysctl -qw net.ipv4.tcp_mem="$N $N $((N * 2))"
        log "  net.ipv4.tcp_mem set to $N $N $((N * 2)) pages (was max $tcp_max)"
    else
        log "  net.ipv4.tcp_mem max $tcp_max pages < $N (one per connection for a broadcast): rerun with SYSCTL=1 to set it"
    fi
else
    log "  net.ipv4.tcp_mem = $(sysctl -n net.ipv4.tcp_mem | tr '\t' ' ') pages (ok, need >= $N)"
fi
if [[ -e /proc/sys/net/netfilter/nf_conntrack_max ]]; then
    check_sysctl net.netfilter.nf_conntrack_max $((N * 2 + 100000))
    log "  (nf_conntrack_count = $(sysctl -n net.netfilter.nf_conntrack_count 2>/dev/null || echo '?'): connections are tracked, and the max matters, only if a netfilter rule uses conntrack)"
else
    log "  nf_conntrack: not loaded (nothing to size)"
fi
avail=$(avail_mib)
need=$((N * 10 / 1024 + 1024 * 2))
((avail >= need)) || die "only $avail MiB available; $N loopback pairs need about $need MiB (kernel ~9.7 KB per pair, plus both processes)"

build
if [[ -n "$NETNS" ]]; then
    command -v ip >/dev/null || die "ip (iproute2) is needed for NETNS (or run with NETNS=)"
    ehash=262144
    while ((ehash < 2 * N)); do ehash=$((ehash * 2)); done
    # Read when a namespace is created: set it first, then create the namespace.
    sysctl -qw net.ipv4.tcp_child_ehash_entries="$ehash" || die "cannot set net.ipv4.tcp_child_ehash_entries"
    ip netns del "$NETNS" 2>/dev/null || true
    ip netns add "$NETNS" || die "cannot create network namespace $NETNS"
    sysctl -qw net.ipv4.tcp_child_ehash_entries=0
    IN=(ip netns exec "$NETNS")
    "${IN[@]}" ip link set lo up
    "${IN[@]}" sysctl -qw net.core.somaxconn=4096
    log "network namespace $NETNS: established hash $("${IN[@]}" sysctl -n net.ipv4.tcp_ehash_entries) buckets (host: $(sysctl -n net.ipv4.tcp_ehash_entries)), port range $("${IN[@]}" sysctl -n net.ipv4.ip_local_port_range | tr '\t' ' ')"
fi
# wait_port_in PORT: wait_port inside the namespace.
wait_port_in() {
    local i
    for i in $(seq 100); do
        if "${IN[@]}" bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}
# One worker on one core; 64 direct-descriptor tables of up to RLIMIT_NOFILE each per shard.
"${IN[@]}" taskset -c "$SERVER_CPU" "$RELEASE/ringport" serve --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    --workers 1 --log-level warn \
    --set "engine.max_connections_per_shard=$((N + 1000))" --set engine.max_descriptor_tables=64 \
    --set "protocol.heartbeat_interval_ms=$HEARTBEAT_MS" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
wait_port_in "$PORT" && wait_port_in "$ADMIN_PORT" || die "ringport serve did not listen (see $OUT/server.log)"
log "server pid $SERVER_PID, RSS $(rss_kib "$SERVER_PID") KiB before any connection"

# The bench holds the connections for the connect phase + HOLD + the broadcast's time; it is
# given generous time and stopped by this script after the broadcast.
"${IN[@]}" timeout $((HOLD + 2400)) taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" idle --target "127.0.0.1:$PORT" \
    --admin "127.0.0.1:$ADMIN_PORT" --connections "$N" --rooms 1 --source-addrs "$SOURCE_ADDRS" \
    --connect-window "$CONNECT_WINDOW" --warmup 0 --duration $((HOLD + 60)) \
    --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" --report "$OUT/bench" --json \
    >"$OUT/idle.json" 2>"$OUT/bench.log" &
BENCH_PID=$!
log "bench pid $BENCH_PID: $(tr '\0' ' ' </proc/$BENCH_PID/cmdline 2>/dev/null || true)"

# Memory guard: stop everything when the machine runs short.
(
    while sleep 1; do
        a=$(avail_mib)
        if ((a < MIN_AVAIL_MIB)); then
            echo "MemAvailable $a MiB < $MIN_AVAIL_MIB MiB: stopping the run" >>"$OUT/run.log"
            kill "$BENCH_PID" "$SERVER_PID" 2>/dev/null
            exit 0
        fi
    done
) &
WATCH_PID=$!

# Connect phase: poll the server's ready count (ringport_connections_open{state="active"}).
active() {
    "${IN[@]}" curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk '/^ringport_connections_open\{state="active"\}/ {print int($2)}'
}
t0=$(date +%s)
last=0
stalled=0
while :; do
    sleep 5
    kill -0 "$BENCH_PID" 2>/dev/null || die "the bench exited during the connect phase (see $OUT/bench.log, $OUT/run.log)"
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited during the connect phase (see $OUT/server.log, $OUT/run.log)"
    n=$(active || echo 0)
    n=${n:-0}
    log "  $(($(date +%s) - t0)) s: $n active, server RSS $(rss_kib "$SERVER_PID") KiB, available $(avail_mib) MiB, load $(cut -d' ' -f1 /proc/loadavg)"
    ((n >= N)) && break
    if ((n <= last)); then stalled=$((stalled + 1)); else stalled=0; fi
    ((stalled >= 12)) && die "no progress for 60 s at $n of $N connections (see $OUT/bench.log)"
    last=$n
done
connect_secs=$(($(date +%s) - t0))
rss_full=$(rss_kib "$SERVER_PID")
log "all $N active after ${connect_secs} s; server RSS $rss_full KiB"

log "holding ${HOLD} s with heartbeats"
hold_cpu0=$(cpu_ticks "$SERVER_PID")
sleep "$HOLD"
hold_cpu1=$(cpu_ticks "$SERVER_PID")
n=$(active || echo 0)
log "after the hold: $n active; server CPU over the hold $(((hold_cpu1 - hold_cpu0)))0 ms ($(awk -v t=$((hold_cpu1 - hold_cpu0)) -v h="$HOLD" 'BEGIN {printf "%.1f", t / h}')% of a core)"

# The broadcast: server CPU (process + its core's ksoftirqd) from just before the request to
# 10 s later, less the idle rate measured over the 10 s before it.
idle0=$(cpu_ticks "$SERVER_PID")
sirq0=$(ksoftirqd_ticks)
sleep 10
idle1=$(cpu_ticks "$SERVER_PID")
sirq1=$(ksoftirqd_ticks)
sent_us=$(now_us)
code=$("${IN[@]}" curl -s -o "$OUT/broadcast.json" -w '%{http_code}' --max-time 30 -X POST \
    -H 'content-type: application/json' -d '{"payload":"one million"}' \
    "http://127.0.0.1:$ADMIN_PORT/v1/broadcast?wait=delivered") || code=000
answered_us=$(now_us)
sleep 10
b1=$(cpu_ticks "$SERVER_PID")
bs1=$(ksoftirqd_ticks)
log "broadcast: HTTP $code after $(((answered_us - sent_us) / 1000)) ms: $(cat "$OUT/broadcast.json" 2>/dev/null)"
idle_ticks=$(((idle1 - idle0) + (sirq1 - sirq0)))
window_ticks=$(((b1 - idle1) + (bs1 - sirq1)))
log "server CPU over the 10 s after the broadcast: ${window_ticks}0 ms (idle 10 s before it: ${idle_ticks}0 ms; the broadcast's own: $(((window_ticks - idle_ticks)))0 ms)"

# The bench ends at its --duration (HOLD + 60 s after its connect phase) and writes its report.
log "waiting for the bench to finish its run (its --duration) and write its report"
for _ in $(seq $((HOLD + 120))); do
    kill -0 "$BENCH_PID" 2>/dev/null || break
    sleep 1
done
kill -0 "$BENCH_PID" 2>/dev/null && { kill "$BENCH_PID"; log "the bench did not finish in time; killed"; }
wait "$BENCH_PID" 2>/dev/null || log "the bench exited with an error (see $OUT/bench.log)"
BENCH_PID=

if [[ -s "$OUT/idle.json" ]]; then
    python3 - "$OUT/idle.json" "$sent_us" "$N" "$rss_full" <<'EOF' | tee -a "$OUT/run.log"
import json, sys
r = json.load(open(sys.argv[1]))
sent_us, n, rss_full = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
run, g = r["run"], r["gateway"]
c = g["counters"]
s = run.get("server") or {}
last = c.get("last_push_unix_us", 0)
print(f"bench: peak ready {run['peak_connections']}, connect failures {run['connect_failed']} {run['connect_errors']}, "
      f"unexpected closes {run['closed_unexpectedly']}, server closes {c['server_closes']}")
print(f"bench: connect phase {run['connect_secs']:.1f} s ({run['peak_connections'] / max(run['connect_secs'], 1e-9):.0f} ready/s on average), "
      f"pacer window {c.get('connect_window')} at the end, cut {c.get('window_cuts')} times")
print(f"bench: heartbeats {c['pings_sent']} PINGs sent, {c['pongs_received']} PONGs back, {c['server_pings']} server PINGs answered")
print(f"broadcast: {c['pushes']} deliveries of {n}; last delivery {(last - sent_us) / 1000:.0f} ms after the request" if last else "broadcast: no delivery seen")
before = s.get("rss_before_kib")
if before:
    print(f"server RSS: {before} KiB before, {rss_full} KiB with {n} ready: {(rss_full - before) * 1024 / n:.0f} bytes per connection")
EOF
fi
# The script's own measurements (the broadcast's time and CPU, RSS with N ready) go into the
# bench's summary.md too, under its numbers and charts.
if [[ -f "$OUT/bench/summary.md" ]]; then
    {
        printf '\n## Measured by bench-million.sh (N=%s)\n\n```text\n' "$N"
        grep -E '^(started|network namespace|all [0-9]+ active|after the hold|broadcast|server CPU over|bench:|server RSS)' "$OUT/run.log" || true
        printf '```\n'
    } >>"$OUT/bench/summary.md"
fi
log "finished $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg); output in $OUT"
