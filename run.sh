#!/bin/bash
# usage: run.sh BIN N  -> prints total Ir of the server process
BIN=$1; N=$2; P=$((4900 + RANDOM % 50))
cd /tmp/cg
valgrind --tool=callgrind --callgrind-out-file=/tmp/cg/out.$$ $BIN serve --io-backend epoll --workers 1 --listen 127.0.0.1:$((P+100)) --admin 127.0.0.1:$P > /tmp/cg/srv.$$ 2>&1 &
VP=$!
for i in $(seq 300); do curl -sf 127.0.0.1:$P/healthz >/dev/null && break; sleep 0.2; done
python3 /tmp/cg/push.py $N $P >&2
kill -INT $VP; wait $VP
grep -E "^summary" /tmp/cg/out.$$* | awk '{s+=$2} END {print s}'
cat /tmp/cg/out.$$* > /tmp/cg/last.out; rm -f /tmp/cg/out.$$* /tmp/cg/srv.$$
