#!/usr/bin/env bash
# Scale-out figures (a benchmark, not a test): TPC-H through volley-bench on
# a cluster of hosts made of network namespaces, each executor pinned to a
# core of its own (taskset):
#   1. one executor (core 0) against two (cores 0 and 1): the speedup;
#   2. the two-executor namespace cluster with shaped links (netem latency
#      where the kernel has it, tbf bandwidth always) against the same two
#      executors on loopback: the cost of the network.
# Every run also checks Volley's rows against single-node DataFusion's
# (volley-bench does). Needs root, iproute2 and the release binaries:
#
#   cargo build --release --bins
#   target/release/volley-bench gen --sf 1 --out /tmp/tpch-sf1
#   sudo benchmarks/scale_out.sh /tmp/tpch-sf1 [ITERATIONS] [QUERIES]
#
# QUERIES is comma-separated (default: all 22). Set VOLLEY_BIN for another
# directory of binaries, SHAPE_DELAY_MS and SHAPE_RATE for the links.
set -euo pipefail

DATA=$(realpath "${1:?usage: scale_out.sh DATA_DIR [ITERATIONS] [QUERIES]}")
ITERATIONS=${2:-3}
QUERIES=${3:-}
BIN=$(realpath "${VOLLEY_BIN:-$(dirname "$0")/../target/release}")
DELAY_MS=${SHAPE_DELAY_MS:-5}
RATE=${SHAPE_RATE:-1gbit}
SUBNET=10.202.0
WORK=$(mktemp -d /tmp/volley-scale-out.XXXXXX)
PIDS=()

for b in volley volley-scheduler volley-executor volley-bench; do
    [ -x "$BIN/$b" ] || { echo "no $BIN/$b: cargo build --release --bins" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "scale_out.sh creates network namespaces: run it as root" >&2; exit 2; }

stop_processes() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_processes
    for ns in vs-hub vs-scheduler vs-client vs-executor-1 vs-executor-2; do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Hosts: namespaces on one bridge.
ip netns add vs-hub
ip netns exec vs-hub ip link add br0 type bridge
ip netns exec vs-hub ip link set br0 up
i=0
for host in scheduler client executor-1 executor-2; do
    ns=vs-$host
    ip netns add "$ns"
    ip netns exec vs-hub ip link add "port$i" type veth peer name eth0 netns "$ns"
    ip netns exec vs-hub ip link set "port$i" master br0
    ip netns exec vs-hub ip link set "port$i" up
    ip netns exec "$ns" ip addr add "$SUBNET.$((10 + i))/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    ip netns exec "$ns" ip link set lo up
    i=$((i + 1))
done
SCHEDULER_ADDR=$SUBNET.10
SHAPED=()
for host in executor-1 executor-2; do
    if ip netns exec "vs-$host" tc qdisc add dev eth0 root netem delay "${DELAY_MS}ms" rate "$RATE" 2>/dev/null; then
        SHAPED+=("netem delay ${DELAY_MS}ms rate $RATE")
    else
        ip netns exec "vs-$host" tc qdisc add dev eth0 root tbf rate "$RATE" burst 256kb latency 50ms
        SHAPED+=("tbf rate $RATE (no netem in this kernel: no added latency)")
    fi
done

# Credentials, as a real cluster has them.
cd "$WORK"
"$BIN/volley" secret generate cluster.secret >/dev/null
"$BIN/volley" users add bench --role admin --users users > bench.token
"$BIN/volley" certs generate tls \
    --hosts "$SUBNET.10,$SUBNET.11,$SUBNET.12,$SUBNET.13,127.0.0.1,localhost" >/dev/null
export VOLLEY_TOKEN_FILE=$WORK/bench.token VOLLEY_TLS_CA=$WORK/tls/ca.pem
TLS=(--tls-cert tls/node.pem --tls-key tls/node-key.pem)
SECRET=(--cluster-secret-file cluster.secret)

# in_ns NS CMD...: runs CMD in namespace NS, or here when NS is empty; it
# replaces the calling (sub)shell, so `in_ns ... &` leaves $! the process.
in_ns() {
    local ns=$1
    shift
    if [ -n "$ns" ]; then exec ip netns exec "$ns" "$@"; else exec "$@"; fi
}

# run NAME EXECUTORS NAMESPACED: starts a cluster, runs volley-bench, stops it.
run() {
    local name=$1 executors=$2 namespaced=$3
    local sched_ns="" client_ns="" bind="127.0.0.1:0" url
    if [ "$namespaced" = yes ]; then
        sched_ns=vs-scheduler
        client_ns=vs-client
        bind="$SCHEDULER_ADDR:50050"
    fi
    in_ns "$sched_ns" "$BIN/volley-scheduler" --bind "$bind" --users users "${SECRET[@]}" \
        "${TLS[@]}" --allow-path "$DATA" > "$name.scheduler.out" 2> "$name.scheduler.log" &
    PIDS+=($!)
    local scheduler=$!
    until url=$(grep -o 'https://[0-9.:]*' "$name.scheduler.out" 2>/dev/null); do
        kill -0 "$scheduler" 2>/dev/null || { cat "$name.scheduler.log" >&2; exit 1; }
        sleep 0.1
    done
    for e in $(seq 1 "$executors"); do
        local exec_ns="" exec_bind=127.0.0.1:0
        if [ "$namespaced" = yes ]; then exec_ns=vs-executor-$e; exec_bind=0.0.0.0:50060; fi
        in_ns "$exec_ns" taskset -c "$((e - 1))" "$BIN/volley-executor" --scheduler "$url" \
            --bind "$exec_bind" --slots 1 --work-dir "$WORK/$name-work-$e" "${SECRET[@]}" \
            "${TLS[@]}" --tls-ca tls/ca.pem --allow-path "$DATA" \
            > "$name.executor-$e.out" 2> "$name.executor-$e.log" &
        PIDS+=($!)
    done
    (in_ns "$client_ns" "$BIN/volley" executors wait --count "$executors" --scheduler "$url" >/dev/null)
    local queries=()
    [ -n "$QUERIES" ] && queries=(--queries "$QUERIES")
    (in_ns "$client_ns" "$BIN/volley-bench" tpch --data "$DATA" --iterations "$ITERATIONS" \
        --executors "$executors" --slots 1 --scheduler "$url" "${queries[@]}" \
        --output "$WORK/$name.json" > "$WORK/$name.txt")
    stop_processes
}

echo "data: $DATA ($(find "$DATA/lineitem" -name '*.parquet' | wc -l) files per large table)"
echo "executor links: ${SHAPED[*]}"
run one-executor 1 yes
run two-executors 2 yes
run two-executors-loopback 2 no

python3 - "$WORK" <<'EOF'
import json, statistics, sys
work = sys.argv[1]
def totals(name):
    runs = json.load(open(f"{work}/{name}.json"))
    volley = sum(statistics.median(r["volley_ms"]) for r in runs)
    datafusion = sum(statistics.median(r["datafusion_ms"]) for r in runs)
    return volley, datafusion, len(runs)
one, df_one, n = totals("one-executor")
two, df_two, _ = totals("two-executors")
loop, df_loop, _ = totals("two-executors-loopback")
print(f"TPC-H, {n} queries, sum of per-query medians:")
print(f"  1 executor (core 0), namespaces:        Volley {one/1000:8.2f} s  (DataFusion, 1 partition,  {df_one/1000:8.2f} s)")
print(f"  2 executors (cores 0, 1), namespaces:   Volley {two/1000:8.2f} s  (DataFusion, 2 partitions, {df_two/1000:8.2f} s)")
print(f"  2 executors (cores 0, 1), loopback:     Volley {loop/1000:8.2f} s  (DataFusion, 2 partitions, {df_loop/1000:8.2f} s)")
print(f"speedup, 2 executors over 1:              {one/two:.2f}x")
print(f"namespaces with shaped links / loopback:  {two/loop:.2f}x")
EOF
