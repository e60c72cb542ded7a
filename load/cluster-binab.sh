#!/bin/bash
# A/B of two giftstream binaries on the README's two-node cluster (six redis-servers on
# 7100-7105, nodes on 7071/8081 and 7072/8082): zipf closed loop 10 s per run, runs
# alternated, fresh data each run. Usage: bash load/cluster-binab.sh BIN_A BIN_B [ROUNDS]
# (BIN_A_SED: a sed script applied to config/cluster.toml for BIN_A, e.g. to drop a key
# an older build does not know). Prints each run's rate and corrected batch latency.
set -u
cd "$(dirname "$0")/.."
BIN_A=$1; BIN_B=$2; ROUNDS=${3:-2}
run() { bin=$1; cfg=$2; label=$3
  rm -rf /tmp/gsrc /tmp/gs-a /tmp/gs-b
  bash load/redis-cluster.sh start /tmp/gsrc 7100 >/dev/null 2>&1
  for n in a:7071:8081 b:7072:8082; do IFS=: read name tcp http <<<"$n"
    GIFTSTREAM_CONFIG=$cfg GIFTSTREAM_CLUSTER_NODE=$name GIFTSTREAM_TCP_ADDR=127.0.0.1:$tcp GIFTSTREAM_HTTP_ADDR=127.0.0.1:$http \
    GIFTSTREAM_DATA_DIR=/tmp/gs-$name setsid $bin serve > /tmp/gs-$name.log 2>&1 &
  done
  sleep 4
  r=$(target/release/giftload run load/scenarios/zipf.toml --cluster config/cluster.toml --http 127.0.0.1:8081 --mode closed --duration 10 2>&1 | grep -E "achieved|corrected" | tr -s ' ' | tr '\n' ' ')
  echo "$label: $r"
  pkill -TERM -f "giftstream serve"; sleep 3; pkill -9 -f "giftstream serve" 2>/dev/null
  bash load/redis-cluster.sh stop /tmp/gsrc >/dev/null 2>&1
}
sed "${BIN_A_SED:-}" config/cluster.toml > /tmp/cluster-binab-a.toml
for i in $(seq "$ROUNDS"); do
  run "$BIN_A" /tmp/cluster-binab-a.toml "A $BIN_A #$i"
  run "$BIN_B" config/cluster.toml "B $BIN_B #$i"
done
