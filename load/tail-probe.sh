#!/usr/bin/env bash
# One open-loop run against a fresh giftstream on an empty private Redis (AOF everysec),
# then where its ack tail sits: giftload's percentiles, the server's own histograms
# (commit duration, read to ack written, read-model write time) as cumulative shares per
# bucket, the Redis time of journal appends and read-model scripts, and the read model's
# progress at the end.
#   [BIN=…] [SC=uniform] [RATE=150000] [DUR=10] [SED='sed expression for the config'] \
#     bash load/tail-probe.sh
# Ports: Redis 6396, giftstream 8080/7070. Run from the repository root after
# `cargo build --release --workspace`.
set -euo pipefail
BIN=${BIN:-target/release/giftstream} RATE=${RATE:-150000} SC=${SC:-uniform}
# shellcheck source=load/probe-common.sh
source "$(dirname "$0")/probe-common.sh"
probe_redis 6396
probe_serve "$BIN" 6396 "${SED:-}"
target/release/giftload run "load/scenarios/$SC.toml" --quiet --json "$W/run.json" \
  --out "$W/report" --mode open --rate "$RATE" --duration "${DUR:-10}" >/dev/null
curl -s http://127.0.0.1:8080/metrics >"$W/metrics.txt"
python3 - "$W/run.json" "$W/metrics.txt" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1]))
l = s["latency_us"]
print(f'giftload: {s["achieved_rate"]:.0f}/s p50 {l["p50"]/1000:.2f} p99 {l["p99"]/1000:.2f} p99.9 {l["p999"]/1000:.2f} ms')
lines = open(sys.argv[2]).read().splitlines()
for name in ["giftstream_commit_duration_seconds", "giftstream_ingest_duration_seconds",
             "giftstream_read_model_write_seconds"]:
    buckets = [(re.search(r'le="([^"]+)"', x).group(1), float(x.split()[-1]))
               for x in lines if x.startswith(name + "_bucket")]
    if buckets and buckets[-1][1] > 0:
        total = buckets[-1][1]
        print(name, f"n={total:.0f}", " ".join(f"<={le}:{v/total:.4f}" for le, v in buckets))
for x in lines:
    if re.match(r"giftstream_read_model_(events_total|lag_seconds) ", x):
        print(x)
PY
redis-cli -p 6396 info commandstats | grep -E 'cmdstat_(evalsha|xadd|xrange):' || true
