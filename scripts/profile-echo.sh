#!/usr/bin/env bash
# Where an echo server's CPU goes: one server under `ringport-bench echo`, profiled on its core.
#
#   scripts/profile-echo.sh                       # ringport and tokio, 50 and 1000 connections
#   SERVERS="ringport" CONNS="1000" scripts/profile-echo.sh
#   RINGPORT_BIN=/tmp/ringport-old SERVERS=ringport scripts/profile-echo.sh   # another build
#
# For each server and connection count: the server pinned to $SERVER_CPU, the pinned client
# running $DURATION s of 512-byte depth-1 echo; after a few seconds of load, 3 s of `perf stat`
# on the server's core (system calls, io_uring tracepoints: task work added and run, requests
# submitted, CQ overflows, failures), the TCP segment counters (`nstat`) over the same 3 s, and
# then 4 s of `perf record -e cpu-clock -g` on that core. Everything on the core is counted,
# so the client's loopback receive processing that runs there is in it, as it is in the
# server's CPU figures. The report prints the server's CPU per message (ksoftirqd included)
# and, from the profile, microseconds per message by category (kernel network stack, io_uring,
# syscall entry and fd lookup, epoll, scheduler, IRQ-restore points, the server's own code).
# The profile's overhead raises every figure by about a fifth; compare runs of this script
# with each other, not with scripts/bench-echo.sh. Needs `perf` and `nstat` (iproute2).
set -euo pipefail
source "$(dirname "$0")/bench-common.sh"

SERVERS=${SERVERS:-"ringport tokio"}
CONNS=${CONNS:-"50 1000"}
DURATION=${DURATION:-12}
PORT=${PORT:-17391}
RINGPORT_BIN=${RINGPORT_BIN:-$RELEASE/ringport}
OUT=${OUT:-"$ROOT/target/bench/profile-echo-$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$OUT"
command -v perf >/dev/null || die "perf is needed"
command -v nstat >/dev/null || die "nstat (iproute2) is needed"
export NSTAT_HISTORY="$OUT/.nstat"
trap stop_server EXIT

EVENTS='syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,io_uring:io_uring_task_add,io_uring:io_uring_local_work_run,io_uring:io_uring_task_work_run,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_cqring_wait,io_uring:io_uring_cqe_overflow,io_uring:io_uring_req_failed,io_uring:io_uring_poll_arm,io_uring:io_uring_queue_async_work'

echo "# profile-echo: servers=[$SERVERS] conns=[$CONNS] duration=${DURATION}s server-cpu=$SERVER_CPU client-cpu=$CLIENT_CPU, results in $OUT"
for conns in $CONNS; do
    for server in $SERVERS; do
        dir="$OUT/$server-c$conns"
        mkdir -p "$dir"
        case $server in
        ringport | ringport-epoll)
            backend=auto
            [[ $server == ringport-epoll ]] && backend=epoll
            taskset -c "$SERVER_CPU" "$RINGPORT_BIN" serve --app echo --listen "127.0.0.1:$PORT" --workers 1 \
                --io-backend "$backend" >"$dir/server.log" 2>&1 &
            SERVER_PID=$!
            comm=ringport-shard
            ;;
        tokio)
            taskset -c "$SERVER_CPU" "$RELEASE/tokio-echo" --listen "127.0.0.1:$PORT" --threads 1 >"$dir/server.log" 2>&1 &
            SERVER_PID=$!
            comm=tokio-echo
            ;;
        *) die "unknown server $server" ;;
        esac
        wait_port "$PORT" || die "$server did not listen on $PORT"
        echo "# $server conns=$conns load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$dir/load.txt"
        bench echo --target "127.0.0.1:$PORT" --connections "$conns" --size 512 --depth 1 \
            --duration "$DURATION" --warmup 1 --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" --json >"$dir/bench.json" &
        bench_pid=$!
        sleep 3
        # nstat inside each window: its data segments (one each way per echoed message) count
        # the messages of that very window, which the profiler slows down.
        perf stat -e "$EVENTS" -a -C "$SERVER_CPU" -x, -o "$dir/stat.txt" -- \
            sh -c "nstat -n >/dev/null; sleep 3; nstat >'$dir/nstat.txt'" >/dev/null 2>&1 || true
        perf record -e cpu-clock -g -C "$SERVER_CPU" -o "$dir/perf.data" -- \
            sh -c "nstat -n >/dev/null; sleep 4; nstat >'$dir/nstat-record.txt'" >/dev/null 2>&1 || true
        wait "$bench_pid" || die "bench failed (see $dir)"
        stop_server
        python3 - "$dir" "$comm" <<'PY'
import json, re, subprocess, sys
d, comm = sys.argv[1], sys.argv[2]
r = json.load(open(f"{d}/bench.json"))["runs"][0]
rate = r["messages_per_sec"]
print(f"  msgs/s {rate:.0f}  server cpu us/msg {r['server']['cpu_us_per_message']:.2f} (ksoftirqd {r['server']['softirq_cpu_secs']:.2f} s)")
stat = {}
for line in open(f"{d}/stat.txt"):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].isdigit():
        stat[f[2]] = int(f[0])
def nstat(path):
    segs = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 2 and f[1].isdigit():
            segs[f[0]] = int(f[1])
    return segs
segs = nstat(f"{d}/nstat.txt")
# Messages in the window: data segments sent by both ends, two per echoed message.
msgs3 = segs.get("TcpExtTCPOrigDataSent", 0) / 2 or rate * 3
print(f"  messages in the perf stat window {msgs3:.0f}; per message (whole core): " + "  ".join(f"{k.split(':')[1]}={v / msgs3:.3f}" for k, v in stat.items() if v))
print(f"  TCP segments out per message (both ends): {segs.get('TcpOutSegs', 0) / msgs3:.3f}, pure ACKs {segs.get('TcpExtTCPPureAcks', 0) / msgs3:.4f}")
out = subprocess.run(["perf", "report", "-i", f"{d}/perf.data", "--no-children", "--sort", "comm,dso,sym", "-g", "none",
                      "-q", "-n", "--percent-limit", "0"], capture_output=True, text=True).stdout
freq = 4000  # perf record's default cpu-clock frequency
msgs4 = nstat(f"{d}/nstat-record.txt").get("TcpExtTCPOrigDataSent", 0) / 2 or rate * 4
cats = {}
for line in out.splitlines():
    m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)", line)
    if not m or not m.group(2).startswith(comm):
        continue
    us = int(m.group(1)) / freq / msgs4 * 1e6
    sym = m.group(5).strip()
    if m.group(4) != "k":
        c = "own code+libs"
    elif re.match(r"_*io_|io_uring|llist|tctx", sym):
        c = "io_uring"
    elif "syscall" in sym or sym in ("fdget", "fput", "sock_from_file", "entry_SYSCALL_64"):
        c = "syscall+fd"
    elif sym.startswith("ep_") or "epoll" in sym or sym in ("sock_poll", "tcp_poll"):
        c = "epoll"
    elif re.search(r"schedule|switch|wake|enqueue|dequeue|update_curr|pick_next|idle", sym):
        c = "scheduler"
    elif sym == "_raw_spin_unlock_irqrestore":
        c = "irqrestore"
    else:
        c = "net stack+other"
    cats[c] = cats.get(c, 0) + us
print(f"  profile, us/msg: total {sum(cats.values()):.2f}  " + "  ".join(f"{k} {v:.2f}" for k, v in sorted(cats.items(), key=lambda x: -x[1])))
PY
    done
done
