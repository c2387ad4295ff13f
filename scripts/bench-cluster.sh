#!/usr/bin/env bash
# B7: the B1 workload (one-step operator tasks end to end) on a local cluster of 1 and
# of 3 replicas (scripts/cluster.sh: PostgreSQL + nats-server + a TCP balancer), release
# build. The operator's session attaches through the balancer to one replica; the task
# calls spread over 4 connections per replica, so with 3 replicas about 2 tasks in 3 run
# on a replica other than the one holding the operator's stream (their frames cross
# NATS). Prints a table: rates and latencies of B1's rows, and the CPU all replicas
# spent per task (they share this box's cores: overhead, not scaling).
#
#   scripts/bench-cluster.sh [seconds per B1 row, default 4]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_ROW="${1:-4}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
WORK="$(mktemp -d /tmp/mse-b7.XXXXXX)"
CLUSTER="$WORK/cluster"
cleanup() {
  MSE_CLUSTER_DIR="$CLUSTER" bash "$REPO/scripts/cluster.sh" down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cd "$REPO"
cargo build --release --quiet --bin mse-grpc
export MSE_GRPC_BIN="$TARGET_DIR/release/mse-grpc"

# utime + stime of every replica, in clock ticks.
replica_ticks() {
  local total=0 pid _
  for f in "$CLUSTER"/pids/r*.pid; do
    read -r pid _ <"$f"
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

for n in 1 3; do
  echo "bench-cluster: $n replica(s)…" >&2
  MSE_CLUSTER_DIR="$CLUSTER" MSE_CLUSTER_REPLICAS="$n" bash scripts/cluster.sh up >/dev/null
  port="$(sed -n 's/^BALANCER_PORT=//p' "$CLUSTER/cluster.env")"
  before="$(replica_ticks)"
  cargo bench --quiet --bench swarm -- --only B1 --seconds "$SECONDS_PER_ROW" \
    --target "127.0.0.1:$port" --connections $((4 * n)) --out "$WORK/b7-$n.json" >/dev/null
  after="$(replica_ticks)"
  echo "$n $((after - before))" >"$WORK/ticks-$n"
  MSE_CLUSTER_DIR="$CLUSTER" bash scripts/cluster.sh down >/dev/null
done

python3 - "$WORK" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
work, hz = sys.argv[1], float(sys.argv[2])
print("| replicas | B1 row | in flight | tasks/s | p50 ms | p99 ms |")
print("|---|---|---|---|---|---|")
cpu = {}
for n in (1, 3):
    rows = [r for r in json.load(open(f"{work}/b7-{n}.json"))["rows"] if r["id"] == "B1"]
    tasks = sum(int(r["note"].split()[0]) for r in rows)
    ticks = int(open(f"{work}/ticks-{n}").read().split()[1])
    cpu[n] = (ticks / hz * 1000 / tasks, tasks)
    for r in rows:
        door = "WebSocket" if "WebSocket" in r["scenario"] else "gRPC"
        print(f"| {n} | operator over {door} | {r['in_flight']} | {r['ops_per_sec']:,.0f} "
              f"| {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} |")
print()
print("| replicas | tasks (all B1 rows) | CPU ms per task, all replicas | per replica |")
print("|---|---|---|---|")
for n, (ms, tasks) in cpu.items():
    print(f"| {n} | {tasks:,} | {ms:.2f} | {ms / n:.2f} |")
EOF
