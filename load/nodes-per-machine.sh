#!/bin/bash
# What running several giftstream nodes on one machine costs: the same 16 partitions
# owned by 1, 2 or 4 nodes, all on this machine over a fresh six-process Redis Cluster
# (ports 7100-7105; nodes on 7071.. / 8081..), driven by giftload's zipf (or $SCENARIO)
# closed loop for $SECONDS_PER_RUN s; counts alternated over ROUNDS.
#   bash load/nodes-per-machine.sh [ROUNDS] [COUNTS...]   (default: 2 rounds of 1 2 4)
# Prints each run's achieved rate and the read model's lag at its end.
set -u
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}; shift || true
COUNTS=("${@:-1 2 4}"); COUNTS=(${COUNTS[@]})
SCENARIO=${SCENARIO:-zipf}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
BIN=${GIFTSTREAM_BIN:-target/release/giftstream}
BUCKETS=$(awk '/^buckets = / {print $3}' config/cluster.toml); BUCKETS=${BUCKETS:-1}

config() { n=$1; out=$2
  sed '/^nodes = \[/,/^\]/d' config/cluster.toml > "$out"
  # Append the nodes table to [cluster] (it is the last key of that table).
  per=$((16 / n)); lines=""
  for i in $(seq 0 $((n - 1))); do
    lo=$((i * per)); hi=$((lo + per - 1))
    lines="$lines  { name = \"n$i\", tcp_addr = \"127.0.0.1:$((7071 + i))\", http_addr = \"127.0.0.1:$((8081 + i))\", partitions = \"$lo-$hi\" },\n"
  done
  awk -v nodes="nodes = [\n$lines]" '{print} /^settle_interval_ms/ {printf "%s\n", nodes}' "$out" > "$out.tmp" && mv "$out.tmp" "$out"
}

run() { n=$1; cfg=/tmp/npm-$n.toml
  config "$n" "$cfg"
  rm -rf /tmp/npm-rc /tmp/npm-data-*
  bash load/redis-cluster.sh start /tmp/npm-rc 7100 >/dev/null 2>&1
  for i in $(seq 0 $((n - 1))); do
    GIFTSTREAM_CONFIG=$cfg GIFTSTREAM_CLUSTER_NODE=n$i GIFTSTREAM_TCP_ADDR=127.0.0.1:$((7071 + i)) \
    GIFTSTREAM_HTTP_ADDR=127.0.0.1:$((8081 + i)) GIFTSTREAM_DATA_DIR=/tmp/npm-data-$i \
      setsid "$BIN" serve > /tmp/npm-node-$i.log 2>&1 &
  done
  for i in $(seq 0 $((n - 1))); do
    until curl -sf "127.0.0.1:$((8081 + i))/healthz" >/dev/null 2>&1; do sleep 0.2; done
  done
  r=$(target/release/giftload run "load/scenarios/$SCENARIO.toml" --cluster "$cfg" --http 127.0.0.1:8081 \
      --mode closed --duration "$SECONDS_PER_RUN" 2>&1 | grep -E "achieved" | tr -s ' ')
  lag=""
  for i in $(seq 0 $((n - 1))); do
    # The read model is at the least of its buckets' seq (config/cluster.toml's buckets).
    seq=""
    for b in $(seq 0 $((BUCKETS - 1))); do
      tag=$([ "$BUCKETS" = 1 ] && echo "{ledger}" || echo "{rm-$b}")
      s=$(redis-cli -c -p 7100 GET "giftstream:$tag:rm:seq:n$i"); s=${s:-0}
      seq=$(( ${seq:-$s} < s ? ${seq:-$s} : s ))
    done
    top=$(redis-cli -c -p 7100 XREVRANGE "giftstream:{ledger-n$i}:journal" + - COUNT 1 | head -1 | cut -d- -f1)
    lag="$lag n$i:$((${top:-0} - ${seq:-0}))"
  done
  echo "$n nodes: $r | read-model lag (events):$lag"
  pkill -TERM -f "$BIN serve"
  for _ in $(seq 100); do pgrep -f "$BIN serve" >/dev/null || break; sleep 0.1; done
  pkill -9 -f "$BIN serve" 2>/dev/null
  bash load/redis-cluster.sh stop /tmp/npm-rc >/dev/null 2>&1
}

for round in $(seq "$ROUNDS"); do
  for n in "${COUNTS[@]}"; do run "$n"; done
done
