#!/usr/bin/env bash
# A Redis master failover under load (BENCHMARKS.md "Scale-out"): a fresh local Redis
# Cluster (load/redis-cluster.sh, ports 7100-7105), the two nodes of config/cluster.toml
# with redis.wait_replicas = WAIT, giftload uniform open loop at 50k events/s for 20 s;
# after 10 s the master holding node a's journal is SIGKILLed, and restarted 5 s later
# (it rejoins as a replica). Then each node's audit: every acknowledged event journaled?
#   bash load/failover.sh 0   |   bash load/failover.sh 1
# Uses /tmp/gsrc, /tmp/gs-a, /tmp/gs-b; leaves config/cluster.toml's wait_replicas at 0.
set -uo pipefail
W=${1:?WAIT replicas: 0 or 1}
cd /work/main
pkill -f "giftstream serve"; sleep 1
bash load/redis-cluster.sh stop /tmp/gsrc >/dev/null; sleep 1; rm -rf /tmp/gsrc /tmp/gs-a /tmp/gs-b
bash load/redis-cluster.sh start /tmp/gsrc 7100 >/dev/null
sed -i "s/^wait_replicas = .*/wait_replicas = $W/" config/cluster.toml
for n in a:7071:8081 b:7072:8082; do IFS=: read name tcp http <<<"$n"; GIFTSTREAM_CONFIG=config/cluster.toml GIFTSTREAM_CLUSTER_NODE=$name GIFTSTREAM_TCP_ADDR=127.0.0.1:$tcp GIFTSTREAM_HTTP_ADDR=127.0.0.1:$http GIFTSTREAM_DATA_DIR=/tmp/gs-$name nohup target/release/giftstream serve > /tmp/gs-$name.log 2>&1 & done
sleep 3
timeout 120 target/release/giftload run load/scenarios/uniform.toml --cluster config/cluster.toml --http 127.0.0.1:8081 --mode open --rate 50000 --duration 20 --quiet --out /tmp/gl-fo --json /tmp/gl-fo.json > /tmp/gl-fo.txt 2>&1 &
GL=$!
sleep 10
M=""
for p in 7100 7101 7102 7103 7104 7105; do [ "$(redis-cli -p $p exists 'giftstream:{ledger-a}:journal')" = "1" ] && M=$p; done
echo "killing master $M at $(date +%T.%N)"
kill -9 $(cat /tmp/gsrc/$M/redis.pid)
sleep 5
redis-server --port $M --bind 127.0.0.1 --dir /tmp/gsrc/$M --daemonize yes --pidfile /tmp/gsrc/$M/redis.pid --logfile /tmp/gsrc/$M/redis.log --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 --appendonly yes --appendfsync always --save ''
wait $GL
tail -n 12 /tmp/gl-fo.txt
sleep 2
for n in a b; do
  curl -s localhost:808$([ $n = a ] && echo 1 || echo 2)/metrics | grep -E "^giftstream_commits_total|^giftstream_events_total" | head -3
done
kill -TERM $(pgrep -f "giftstream serve"); sleep 3
for n in a b; do
  echo "audit $n:"; GIFTSTREAM_CONFIG=config/cluster.toml GIFTSTREAM_CLUSTER_NODE=$n GIFTSTREAM_DATA_DIR=/tmp/gs-$n target/release/giftstream audit 2>&1 | grep -E "^journal|twice|^audit"
done
sed -i "s/^wait_replicas = .*/wait_replicas = 0/" config/cluster.toml
bash load/redis-cluster.sh stop /tmp/gsrc
