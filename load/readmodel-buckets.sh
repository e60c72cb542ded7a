#!/bin/bash
# What spreading the read model over hash-tagged buckets changes on a Redis Cluster
# (BENCHMARKS.md "Read model in buckets"): one giftstream node owning all 16 partitions
# (config/cluster.toml's settings) over a fresh six-process Redis Cluster (ports
# 7100-7105, AOF always; node on 7071/8081), driven by giftload's $SCENARIO (default
# uniform, the read model's worst case) closed loop for $SECONDS_PER_RUN s, once per
# bucket count, counts alternated over ROUNDS (RATE=N: open loop at N events/s).
#   bash load/readmodel-buckets.sh [ROUNDS] [BUCKET_COUNTS...]   (default: 2 rounds of 1 16)
# A count may name the projectors too: 16/2 = 16 buckets written by 2 projectors.
# Prints per run: giftload's achieved rate; events projected into the read model per
# second during the load; the read model's lag (events) when the load stops; and each
# Redis master's CPU seconds (user + sys, INFO cpu) during the run. DRAIN=S: then S s
# without load, and the rate the projector catches up at (and the masters' CPU).
set -u
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}; shift || true
COUNTS=("${@:-1 16}"); COUNTS=(${COUNTS[@]})
SCENARIO=${SCENARIO:-uniform}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
BIN=${GIFTSTREAM_BIN:-target/release/giftstream}
ADMIN=dev-admin-token-0001
# RATE=N: open loop at N events/s instead of closed loop.
LOOP=$([ -n "${RATE:-}" ] && echo "--mode open --rate $RATE" || echo "--mode closed")

config() { b=${1%/*}; p=1; [ "$1" != "$b" ] && p=${1#*/}; out=$2
  sed -e '/^nodes = \[/,/^\]/d' -e '/^buckets = /d' -e '/^projectors = /d' config/cluster.toml > "$out"
  awk -v b="$b" -v p="$p" '{print} /^\[read_model\]/ {print "buckets = " b "\nprojectors = " p}
    /^settle_interval_ms/ {print "nodes = [\n  { name = \"n0\", tcp_addr = \"127.0.0.1:7071\", http_addr = \"127.0.0.1:8081\", partitions = \"0-15\" },\n]"}' \
    "$out" > "$out.tmp" && mv "$out.tmp" "$out"
}

projected() { curl -s -H "authorization: Bearer $ADMIN" 127.0.0.1:8081/metrics |
  awk '$1 == "giftstream_read_model_events_total" {n = $2} END {print n + 0}'; }
cpu() { for p in 7100 7101 7102 7103 7104 7105; do
    redis-cli -p "$p" info cpu | tr -d '\r' |
      awk -F: -v p="$p" '/^used_cpu_(user|sys):/ {s += $2} END {printf "%s=%.2f ", p, s}'
  done; }
masters() { for p in 7100 7101 7102 7103 7104 7105; do
    redis-cli -p "$p" role | head -1 | grep -q master && printf "%s " "$p"; done; }

run() { label=$1; b=${1%/*}; cfg=/tmp/rmb-${b}.toml
  config "$label" "$cfg"
  pkill -f "redis-server 127.0.0.1:710[0-5]"; sleep 0.5
  rm -rf /tmp/rmb-rc /tmp/rmb-data
  bash load/redis-cluster.sh start /tmp/rmb-rc 7100 >/dev/null 2>&1
  GIFTSTREAM_CONFIG=$cfg GIFTSTREAM_CLUSTER_NODE=n0 GIFTSTREAM_DATA_DIR=/tmp/rmb-data \
    GIFTSTREAM_TCP_ADDR=127.0.0.1:7071 GIFTSTREAM_HTTP_ADDR=127.0.0.1:8081 \
    setsid "$BIN" serve > /tmp/rmb-node.log 2>&1 &
  for _ in $(seq 300); do curl -sf 127.0.0.1:8081/healthz >/dev/null 2>&1 && break; sleep 0.2; done
  before_cpu=$(cpu); before=$(projected); t0=$(date +%s.%N)
  r=$(target/release/giftload run "load/scenarios/$SCENARIO.toml" --cluster "$cfg" --http 127.0.0.1:8081 \
      $LOOP --duration "$SECONDS_PER_RUN" 2>&1 | grep -E "achieved" | tr -s ' ')
  t1=$(date +%s.%N); after=$(projected); after_cpu=$(cpu)
  seq=""
  for i in $(seq 0 $((b - 1))); do
    tag=$([ "$b" = 1 ] && echo "{ledger}" || echo "{rm-$i}")
    s=$(redis-cli -c -p 7100 GET "giftstream:$tag:rm:seq:n0")
    seq=$(( ${seq:-${s:-0}} < ${s:-0} ? ${seq:-${s:-0}} : ${s:-0} ))
  done
  top=$(redis-cli -c -p 7100 XREVRANGE "giftstream:{ledger-n0}:journal" + - COUNT 1 | head -1 | cut -d- -f1)
  rate=$(echo "$before $after $t0 $t1" | awk '{printf "%.0f", ($2 - $1) / ($4 - $3)}')
  used=$(paste <(echo "$before_cpu" | tr ' ' '\n') <(echo "$after_cpu" | tr ' ' '\n') |
    awk -F'[=\t]' -v m=" $(masters)" 'NF == 4 && index(m, " " $1 " ") {printf "%s:%.1f ", $1, $4 - $2}')
  drain=""
  if [ -n "${DRAIN:-}" ]; then
    # The load has stopped: how fast the projector catches up with the cores free.
    c0=$(projected); d0=$(date +%s.%N); cpu0=$(cpu); sleep "$DRAIN"
    c1=$(projected); d1=$(date +%s.%N); cpu1=$(cpu)
    dused=$(paste <(echo "$cpu0" | tr ' ' '\n') <(echo "$cpu1" | tr ' ' '\n') |
      awk -F'[=\t]' -v m=" $(masters)" 'NF == 4 && index(m, " " $1 " ") {printf "%s:%.1f ", $1, $4 - $2}')
    drain=" | then idle ${DRAIN} s: projected $(echo "$c0 $c1 $d0 $d1" | awk '{printf "%.0f", ($2 - $1) / ($4 - $3)}') events/s, master CPU s: $dused"
  fi
  echo "$label buckets: $r | projected $rate events/s | lag at the end $((${top:-0} - seq)) events | master CPU s: $used$drain"
  pkill -TERM -f "$BIN serve"
  for _ in $(seq 100); do pgrep -f "$BIN serve" >/dev/null || break; sleep 0.1; done
  pkill -9 -f "$BIN serve" 2>/dev/null
  bash load/redis-cluster.sh stop /tmp/rmb-rc >/dev/null 2>&1
  sleep 1
}

for round in $(seq "$ROUNDS"); do
  for b in "${COUNTS[@]}"; do run "$b"; done
done
