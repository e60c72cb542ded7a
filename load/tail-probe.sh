#!/usr/bin/env bash
# One open-loop run against a fresh giftstream on an empty private Redis (AOF everysec),
# then where its ack tail sits: giftload's percentiles, the server's own histograms
# (commit duration, read to ack written, read-model write time) as cumulative shares per
# bucket, the Redis time of journal appends and read-model scripts, the read model's
# progress at the end, and the CPU seconds each process spent during the run.
#   [BIN=…] [SC=uniform] [RATE=150000] [DUR=10] [SED='sed expression for the config'] \
#     [RM_NICE=19] [REDIS_ARGS='extra redis-server arguments'] bash load/tail-probe.sh
# RM_NICE=n: the read model goes to a second private Redis started at nice n
# (read_model.url), and its projector threads run at read_model.nice = n (README, "On
# one machine, give the read model what the acks leave").
# Ports: Redis 6396 (and 6397), giftstream 8080/7070. Run from the repository root after
# `cargo build --release --workspace`.
set -euo pipefail
BIN=${BIN:-target/release/giftstream} RATE=${RATE:-150000} SC=${SC:-uniform}
# shellcheck source=load/probe-common.sh
source "$(dirname "$0")/probe-common.sh"
probe_redis 6396
RM_SED=""
if [ -n "${RM_NICE:-}" ]; then
  RP2=$(probe_redis_pid 6397 nice -n "$RM_NICE")
  RM_SED="/^\[read_model\]/,/^\[/ { s|^url = .*|url = \"redis://127.0.0.1:6397\"|; s/^nice = .*/nice = $RM_NICE/ }"
fi
probe_serve "$BIN" 6396 "${RM_SED:-}${RM_SED:+;} ${SED:-}"
cpu() { echo "$(probe_ticks "$SP") $(probe_ticks "$RP") $([ -n "$RP2" ] && probe_ticks "$RP2" || echo 0)"; }
read -r s0 r0 q0 < <(cpu)
/usr/bin/time -f "%U %S" -o "$W/giftload.time" target/release/giftload run "load/scenarios/$SC.toml" \
  --quiet --json "$W/run.json" --out "$W/report" --mode open --rate "$RATE" --duration "${DUR:-10}" >/dev/null
read -r s1 r1 q1 < <(cpu)
curl -s http://127.0.0.1:8080/metrics >"$W/metrics.txt"
read -r gu gs <"$W/giftload.time"
python3 - "$W/run.json" "$W/metrics.txt" <<PY
import json, re, sys
s = json.load(open(sys.argv[1]))
l = s["latency_us"]
print(f'giftload: {s["achieved_rate"]:.0f}/s p50 {l["p50"]/1000:.2f} p99 {l["p99"]/1000:.2f} p99.9 {l["p999"]/1000:.2f} ms')
hz = 100
print(f'cpu s during the run: giftload {$gu + $gs:.2f}, giftstream {($s1 - $s0) / hz:.2f}, '
      f'journal Redis {($r1 - $r0) / hz:.2f}, read-model Redis {($q1 - $q0) / hz:.2f}')
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
for port in 6396 ${RM_NICE:+6397}; do
  redis-cli -p "$port" info commandstats | grep -E 'cmdstat_(evalsha|xadd|xrange):' | sed "s/^/redis $port: /" || true
  # Forks: AOF rewrites (each copies the dataset's page tables and stalls Redis briefly).
  redis-cli -p "$port" info stats | grep -E '^total_forks:' | sed "s/^/redis $port: /" || true
done
