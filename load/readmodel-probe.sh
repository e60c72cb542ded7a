#!/usr/bin/env bash
# The Redis read model under load, sampled: one giftstream binary, one scenario, closed
# loop (or open loop at $RATE events/s) for 10 s against a private Redis (AOF
# everysec), then 10 s idle; every 2 s prints
# events accepted, events projected into the read model, and its lag; at the end the
# Redis command statistics of the read model's writes.
#   bash load/readmodel-probe.sh [BINARY] [SCENARIO] [CONFIG_SED]
# e.g. bash load/readmodel-probe.sh target/release/giftstream hot-from-start
# CONFIG_SED: a sed expression for config/giftstream.toml (an older binary may need a
# newer key deleted). Ports: Redis 6395, giftstream 8080/7070.
set -euo pipefail
BIN=${1:-target/release/giftstream}
SCENARIO=${2:-hot-from-start}
# shellcheck source=load/probe-common.sh
source "$(dirname "$0")/probe-common.sh"
probe_redis 6395
probe_serve "$BIN" 6395 "${3:-}"
MODE=(--mode closed)
[ -n "${RATE:-}" ] && MODE=(--mode open --rate "$RATE")
target/release/giftload run "load/scenarios/$SCENARIO.toml" --quiet "${MODE[@]}" \
  --duration 10 --out "$W/report" --json "$W/run.json" >/dev/null &
LP=$!
printf 's\taccepted\tprojected\tlag s\n'
for t in 2 4 6 8 10 12 14 16 18 20; do
  sleep 2
  curl -s http://127.0.0.1:8080/metrics | awk -v t="$t" '
    /^giftstream_events_total/ && /outcome="accepted"/ { a += $2 }
    /^giftstream_read_model_events_total/ { p = $2 }
    /^giftstream_read_model_lag_seconds/ { l = $2 }
    END { printf "%s\t%d\t%d\t%s\n", t, a, p, l }'
done
wait "$LP"
python3 -c "import json; s = json.load(open('$W/run.json')); l = s['latency_us']; print('giftload achieved', round(s['achieved_rate']), 'events/s, ack p50', l['p50'] / 1000, 'ms, p99', l['p99'] / 1000, 'ms')"
redis-cli -p 6395 info commandstats | grep -E 'evalsha|zadd|zincrby|zrem|hset|hincrby|xadd' || true
