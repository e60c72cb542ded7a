#!/usr/bin/env bash
# A local Redis Cluster for trying giftstream's scale-out by hand: six redis-servers on
# loopback (3 masters + 3 replicas), AOF on (appendfsync always), data under DIR.
#   bash load/redis-cluster.sh start [DIR] [FIRST_PORT]   (default /tmp/giftstream-rc 7100)
#   bash load/redis-cluster.sh stop  [DIR]
set -euo pipefail
cmd=${1:?start or stop}
dir=${2:-/tmp/giftstream-rc}
first=${3:-7100}
case "$cmd" in
start)
  mkdir -p "$dir"
  nodes=()
  for i in 0 1 2 3 4 5; do
    port=$((first + i))
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/$port" --daemonize yes \
      --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --appendonly yes --appendfsync always --save ''
    nodes+=("127.0.0.1:$port")
  done
  for port in $(seq "$first" $((first + 5))); do
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
  done
  if ! redis-cli -p "$first" cluster info | grep -q 'cluster_state:ok'; then
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  fi
  until redis-cli -p "$first" cluster info | grep -q 'cluster_state:ok'; do sleep 0.2; done
  echo "Redis Cluster up: ${nodes[*]}"
  echo "seed URL: redis://127.0.0.1:$first"
  ;;
stop)
  for pid in "$dir"/*/redis.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  echo "stopped (data left in $dir)"
  ;;
*) echo "usage: $0 start|stop [DIR] [FIRST_PORT]" >&2; exit 2 ;;
esac
