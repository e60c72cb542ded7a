#!/usr/bin/env bash
# One open-loop run against a fresh giftstream on an empty private Redis (AOF everysec,
# README's rewrite policy), then where its ack tail sits: giftload's percentiles, the
# server's own histograms (commit duration, read to ack written, read-model write time)
# as cumulative shares per bucket, the Redis time of journal appends and read-model
# scripts, the read model's progress at the end, the CPU seconds each process spent
# during the run, and Redis's own stalls, forks and sizes.
#   [BIN=…] [SC=uniform] [RATE=150000] [DUR=10] [SED='sed expression for the config'] \
#     [RM_NICE=19] [REDIS_ARGS='redis-server arguments'] [PREFILL_MB=2000] \
#     [REWRITE_AT=4] bash load/tail-probe.sh
# PREFILL_MB=n: n MB of filler strings in the journal's Redis before the run
# (DEBUG POPULATE), so that a rewrite has a steady-state dataset to write (on the 2-core
# VM of BENCHMARKS.md, 2 GB held by any process worsens the tail by itself);
# REWRITE_AT=s: BGREWRITEAOF on the journal's Redis s seconds after giftload starts (its
# setup included; the report places the rewrite in the load's seconds). With either,
# the probe also prints every second's p99 and the rewrite's fork and duration.
# RM_NICE=n: the read model goes to a second private Redis started at nice n
# (read_model.url), and its projector threads run at read_model.nice = n (README, "On
# one machine, give the read model what the acks leave").
# Ports: Redis 6396 (and 6397), giftstream 8080/7070. Run from the repository root after
# `cargo build --release --workspace`.
set -euo pipefail
BIN=${BIN:-target/release/giftstream} RATE=${RATE:-150000} SC=${SC:-uniform}
# shellcheck source=load/probe-common.sh
source "$(dirname "$0")/probe-common.sh"
# README's journal policy: no AOF rewrite in a run of a few minutes (REDIS_ARGS="" gives
# Redis's default, a rewrite each time the AOF doubles past 64 MB).
REDIS_ARGS=${REDIS_ARGS-"--auto-aof-rewrite-percentage 400 --auto-aof-rewrite-min-size 2gb"}
[ -n "${PREFILL_MB:-}" ] && REDIS_ARGS="$REDIS_ARGS --enable-debug-command local"
# Redis's own record of every stall of 5 ms or more (LATENCY LATEST, printed at the end).
REDIS_ARGS="$REDIS_ARGS --latency-monitor-threshold 5"
probe_redis 6396
if [ -n "${PREFILL_MB:-}" ]; then
  # 1 KB values; keys outside giftstream's prefix.
  redis-cli -p 6396 debug populate "$((PREFILL_MB * 1000))" filler 1000 >/dev/null
fi
RM_SED=""
if [ -n "${RM_NICE:-}" ]; then
  RP2=$(probe_redis_pid 6397 nice -n "$RM_NICE")
  RM_SED="/^\[read_model\]/,/^\[/ { s|^url = .*|url = \"redis://127.0.0.1:6397\"|; s/^nice = .*/nice = $RM_NICE/ }"
fi
probe_serve "$BIN" 6396 "${RM_SED:-}${RM_SED:+;} ${SED:-}"
cpu() { echo "$(probe_ticks "$SP") $(probe_ticks "$RP") $([ -n "$RP2" ] && probe_ticks "$RP2" || echo 0)"; }
read -r s0 r0 q0 < <(cpu)
if [ -n "${REWRITE_AT:-}" ]; then
  # Seconds from giftload's start (its setup included); the report below places the
  # rewrite in the load's seconds.
  (sleep "$REWRITE_AT"; date +%s.%N >"$W/rewrite.start"
   redis-cli -p 6396 bgrewriteaof >/dev/null
   until redis-cli -p 6396 info persistence | grep -q '^aof_rewrite_in_progress:0'; do sleep 0.02; done
   date +%s.%N >"$W/rewrite.end") &
  RW=$!
fi
/usr/bin/time -f "%U %S" -o "$W/giftload.time" target/release/giftload run "load/scenarios/$SC.toml" \
  --quiet --json "$W/run.json" --out "$W/report" --mode open --rate "$RATE" --duration "${DUR:-10}" >/dev/null
date +%s.%N >"$W/load.end"
[ -n "${RW:-}" ] && wait "$RW"
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
if "${REWRITE_AT:-}${PREFILL_MB:-}":
    print("p99 ms per second:", " ".join(f'{i["p99_us"]/1000:.1f}' for i in s["intervals"]))
    try:
        t = {k: float(open(f"$W/{k}").read()) for k in ["load.end", "rewrite.start", "rewrite.end"]}
        t0 = t["load.end"] - s["measured_s"]
        print(f'rewrite: seconds {t["rewrite.start"] - t0:.1f}-{t["rewrite.end"] - t0:.1f} of the load')
    except FileNotFoundError:
        pass
PY
for port in 6396 ${RM_NICE:+6397}; do
  redis-cli -p "$port" info commandstats | grep -E 'cmdstat_(evalsha|xadd|xrange):' | sed "s/^/redis $port: /" || true
  # Forks: AOF rewrites (each copies the dataset's page tables and stalls Redis briefly).
  redis-cli -p "$port" info stats | grep -E '^total_forks:' | sed "s/^/redis $port: /" || true
  redis-cli -p "$port" latency latest | paste -sd' ' | sed "s/^/redis $port: latency latest (event, at, last ms, max ms): /" || true
  # What a rewrite would write (the dataset) and what the AOF has grown to.
  redis-cli -p "$port" info all | grep -E '^(used_memory|aof_current_size|aof_last_rewrite_time_sec|latest_fork_usec):' |
    tr -d '\r' | tr '\n' ' ' | sed "s/^/redis $port: /;s/ $/\n/" || true
done
