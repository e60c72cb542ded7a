#!/usr/bin/env bash
# Restart after kill -9 under load (BENCHMARKS.md "Ledger lease"): a private Redis (AOF
# everysec), giftstream with snapshots every 1M events, giftload uniform closed loop for
# 10 s, then kill -9 of giftstream and giftload and an immediate restart; prints the
# seconds until /readyz answers 200 and the lease/recovery log lines.
#   bash load/restart.sh [BINARY]        (default target/release/giftstream)
# CFG_SED: a sed expression for the config (e.g. '/^lease_ms/d' for an older binary).
# Uses ports 6395, 8080 and 7070; run from the repository root after a release build.
set -u
BIN=${1:-target/release/giftstream}
PORT=6395
W=$(mktemp -d)
redis-server --port $PORT --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \
  --dir "$W" >/dev/null 2>&1 &
RP=$!
until redis-cli -p $PORT ping >/dev/null 2>&1; do sleep 0.1; done
sed -e 's/^events = 10000000/events = 1000000/' -e 's/^idempotency_entries_max = .*/idempotency_entries_max = 33554432/' ${CFG_SED:+-e "$CFG_SED"} config/giftstream.toml >"$W/g.toml"
start() {
  GIFTSTREAM_CONFIG=$W/g.toml GIFTSTREAM_REDIS_URL=redis://127.0.0.1:$PORT \
    GIFTSTREAM_DATA_DIR=$W/data RUST_LOG=info "$BIN" serve >>"$W/serve.log" 2>&1 &
  SP=$!
}
start
until curl -sf localhost:8080/readyz >/dev/null; do sleep 0.05; done
target/release/giftload run load/scenarios/uniform.toml --mode closed --duration 12 --quiet \
  --out "$W/report" >/dev/null 2>&1 &
LP=$!
sleep 10
kill -9 $SP
kill $LP 2>/dev/null
T0=$(date +%s.%N)
start
until curl -sf localhost:8080/readyz >/dev/null; do sleep 0.02; done
T1=$(date +%s.%N)
echo "ready after $(python3 -c "print(round($T1 - $T0, 2))") s"
grep -E "lease|recovered" "$W/serve.log" | tail -4 | cut -c1-260
kill $SP
wait $SP 2>/dev/null
kill $RP
wait $RP 2>/dev/null
rm -rf "$W"
