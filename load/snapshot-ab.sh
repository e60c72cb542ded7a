#!/usr/bin/env bash
# What a snapshot costs the ack latency (BENCHMARKS.md "Snapshots at 1M wallets: the
# copy-on-write storm"): open loop at RATE (150000) gifts/s for DURATION (30) s, the
# scenario SCENARIO (uniform) with USERS (1000000) funded users, read model off, a fresh
# server and an empty Redis (AOF everysec) per run. RUNS lists the runs of a round as
# `copy_pages_in_child:snapshot.events` (0 = no snapshots); ROUNDS rounds, alternated.
# Prints latency percentiles, the cut (fork) times, the snapshot write times and the
# forked child's peak private memory (Private_Dirty, sampled every 0.1 s); writes the
# p99 of every second of every run to target/sweep/snapshot-p99.tsv and draws it into
# load/results/snapshot-p99.png.
# GIFTSTREAM_BIN: the server binary (default target/release/giftstream).
# Run from the repository root after `cargo build --release --workspace`:
#   bash load/snapshot-ab.sh                   (~5 minutes)
set -uo pipefail

PORT=${SNAPSHOT_AB_REDIS_PORT:-6394}
WORK=$(mktemp -d)
REDIS_PID=""
trap '[ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly yes \
  --appendfsync everysec --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
OUT=target/sweep
mkdir -p "$OUT" load/results
: >"$WORK/series"
sed "s/^users = .*/users = ${USERS:-1000000}/" "load/scenarios/${SCENARIO:-uniform}.toml" \
  >"$WORK/scenario.toml"

for round in $(seq "${ROUNDS:-2}"); do
  for run in ${RUNS:-true:1500000 false:1500000 true:0}; do
    copy=${run%%:*} events=${run##*:}
    redis-cli -p "$PORT" flushall >/dev/null
    sed -e "s/^events = 10000000$/events = $events/" \
      -e "s/^copy_pages_in_child = true$/copy_pages_in_child = $copy/" \
      -e '/^\[read_model\]/,/^\[/ s/^enabled = true/enabled = false/' \
      config/giftstream.toml >"$WORK/giftstream.toml"
    rm -rf "$WORK/data"
    GIFTSTREAM_CONFIG="$WORK/giftstream.toml" GIFTSTREAM_REDIS_URL="redis://127.0.0.1:$PORT" \
      GIFTSTREAM_DATA_DIR="$WORK/data" RUST_LOG=info "${GIFTSTREAM_BIN:-target/release/giftstream}" serve \
      >"$WORK/serve.log" 2>&1 &
    server=$!
    until curl -sf http://127.0.0.1:8080/readyz >/dev/null 2>&1; do sleep 0.1; done
    echo 0 >"$WORK/child"
    (
      peak=0
      while kill -0 "$server" 2>/dev/null; do
        for child in $(pgrep -P "$server"); do
          kb=$(awk '/^Private_Dirty/ {print $2}' "/proc/$child/smaps_rollup" 2>/dev/null)
          if [ -n "$kb" ] && [ "$kb" -gt "$peak" ]; then peak=$kb; echo "$peak" >"$WORK/child"; fi
        done
        sleep 0.1
      done
    ) &
    sampler=$!
    target/release/giftload run "$WORK/scenario.toml" --mode open --rate "${RATE:-150000}" \
      --duration "${DURATION:-30}" --quiet --json "$WORK/run.json" --out "$WORK/report" \
      >"$WORK/giftload.log" 2>&1 || { cat "$WORK/giftload.log"; exit 1; }
    cuts=$(curl -s http://127.0.0.1:8080/metrics |
      awk '/^giftstream_snapshot_cut_seconds_sum/ {s=$2} /^giftstream_snapshot_cut_seconds_count/ {n=$2}
           END {if (n) printf "%d, avg %.0f ms", n, s / n * 1000; else printf "none"}')
    kill -TERM "$server"
    wait "$server"
    wait "$sampler" 2>/dev/null
    writes=$(grep "snapshot written" "$WORK/serve.log" | sed 's/.*seconds=\([0-9.]*\).*/\1/' |
      awk '{printf "%s%.1f", (NR > 1 ? " " : ""), $1}')
    python3 - "$WORK/run.json" "$round" "$copy" "$events" "$cuts" "${writes:-none}" \
      "$(cat "$WORK/child")" "$WORK/series" <<'PY'
import json, sys
run, rnd, copy, events, cuts, writes, child, series = sys.argv[1:]
s = json.load(open(run))
l = s["latency_us"]
worst = max(s["intervals"], key=lambda i: i["p99_us"])
print(f"round {rnd} copy_pages_in_child={copy} snapshot.events={events}: "
      f"{s['achieved_rate']:.0f} events/s, p50 {l['p50']/1000:.2f} p99 {l['p99']/1000:.2f} "
      f"p99.9 {l['p999']/1000:.2f} max {l['max']/1000:.0f} ms, worst second's p99 "
      f"{worst['p99_us']/1000:.0f} ms; cuts {cuts}; writes (s) {writes}; "
      f"child's private memory {int(child)/1024:.0f} MB")
label = "no snapshots" if events == "0" else f"copy_pages_in_child={copy}"
p99 = ",".join(f"{i['second']}:{i['p99_us'] / 1000:.1f}" for i in s["intervals"])
open(series, "a").write(f"{label} (round {rnd})\t{p99}\n")
PY
  done
done

python3 - "$WORK/series" "$OUT/snapshot-p99.tsv" <<'PY'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
series = [(label, dict(p.split(":") for p in points.split(","))) for label, points in rows]
seconds = sorted({int(s) for _, points in series for s in points})
with open(sys.argv[2], "w") as out:
    out.write("second\t" + "\t".join(label for label, _ in series) + "\n")
    for sec in seconds:
        out.write(f"{sec}\t" + "\t".join(points.get(str(sec), "") for _, points in series) + "\n")
PY
target/release/giftload plot "$OUT/snapshot-p99.tsv" --out load/results/snapshot-p99.png \
  --title "p99 ack latency per second, 1M wallets, 150k gifts/s, a snapshot every 1.5M events" \
  --y "p99 ms"
