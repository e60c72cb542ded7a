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
W=$(mktemp -d)
RP="" SP=""
cleanup() {
  [ -n "$SP" ] && kill "$SP" 2>/dev/null && wait "$SP" 2>/dev/null || true
  [ -n "$RP" ] && kill "$RP" 2>/dev/null && wait "$RP" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
# The previous run's Redis may still be exiting.
while redis-cli -p 6395 ping >/dev/null 2>&1; do sleep 0.2; done
redis-server --port 6395 --bind 127.0.0.1 --save '' --appendonly yes \
  --appendfsync everysec --dir "$W" >"$W/redis.log" 2>&1 &
RP=$!
until redis-cli -p 6395 ping >/dev/null 2>&1; do
  kill -0 "$RP" 2>/dev/null || { cat "$W/redis.log"; exit 1; }
  sleep 0.1
done
sed -e "${3:-}" config/giftstream.toml >"$W/giftstream.toml"
GIFTSTREAM_CONFIG="$W/giftstream.toml" GIFTSTREAM_REDIS_URL=redis://127.0.0.1:6395 \
  GIFTSTREAM_DATA_DIR="$W/data" RUST_LOG=warn "$BIN" serve >"$W/serve.log" 2>&1 &
SP=$!
until curl -sf http://127.0.0.1:8080/readyz >/dev/null; do
  kill -0 "$SP" 2>/dev/null || { cat "$W/serve.log"; exit 1; }
  sleep 0.1
done
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
