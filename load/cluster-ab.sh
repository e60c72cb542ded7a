#!/usr/bin/env bash
# One node vs two nodes, side by side (BENCHMARKS.md "Scale-out"): for each round and
# scenario, a closed-loop giftload run against (A) one `giftstream serve` on one
# redis-server (port 6392, AOF always) and (B) the two nodes of config/cluster.toml on a
# six-process Redis Cluster (load/redis-cluster.sh, ports 7100-7105, AOF always), each on
# fresh data. Everything shares the machine's cores.
#   bash load/cluster-ab.sh [ROUNDS] [SECONDS]     (default 2 rounds of 15 s)
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
secs=${2:-15}
bin=target/release
stop_all() {
  pkill -f "giftstream serve" 2>/dev/null; sleep 1
  bash load/redis-cluster.sh stop /tmp/gsab-rc >/dev/null 2>&1
  redis-cli -p 6392 shutdown nosave >/dev/null 2>&1; sleep 1
  rm -rf /tmp/gsab-rc /tmp/gsab-*
}
rate() { grep -oE "achieved [0-9]+ events/s" | grep -oE "[0-9]+"; }
printf "round\tscenario\tone_node\ttwo_nodes\n"
for r in $(seq "$rounds"); do
  for s in uniform zipf hot-creator; do
    stop_all
    mkdir -p /tmp/gsab-1
    redis-server --port 6392 --bind 127.0.0.1 --dir /tmp/gsab-1 --appendonly yes \
      --appendfsync always --save '' --daemonize yes >/dev/null
    sleep 0.5
    GIFTSTREAM_REDIS_URL=redis://127.0.0.1:6392 GIFTSTREAM_DATA_DIR=/tmp/gsab-1/data \
      "$bin/giftstream" serve >/tmp/gsab-1.log 2>&1 &
    sleep 2
    one=$("$bin/giftload" run "load/scenarios/$s.toml" --mode closed --duration "$secs" --quiet \
      --out /tmp/gsab-report 2>&1 | rate)
    stop_all
    bash load/redis-cluster.sh start /tmp/gsab-rc 7100 >/dev/null
    for n in a:7071:8081 b:7072:8082; do IFS=: read -r name tcp http <<<"$n"
      GIFTSTREAM_CONFIG=config/cluster.toml GIFTSTREAM_CLUSTER_NODE=$name \
      GIFTSTREAM_TCP_ADDR=127.0.0.1:$tcp GIFTSTREAM_HTTP_ADDR=127.0.0.1:$http \
      GIFTSTREAM_DATA_DIR=/tmp/gsab-$name "$bin/giftstream" serve >/tmp/gsab-$name.log 2>&1 &
    done
    sleep 2
    two=$("$bin/giftload" run "load/scenarios/$s.toml" --cluster config/cluster.toml \
      --http 127.0.0.1:8081 --mode closed --duration "$secs" --quiet --out /tmp/gsab-report 2>&1 | rate)
    printf "%s\t%s\t%s\t%s\n" "$r" "$s" "$one" "$two"
  done
done
stop_all
