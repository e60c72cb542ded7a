#!/usr/bin/env bash
# End-to-end sweeps for BENCHMARKS.md "How cost grows": giftload -> giftstream -> a
# private Redis (AOF appendfsync everysec, read model on), one fresh server and an empty
# Redis per point, so no point inherits another's journal.
#   knee      open loop, uniform, offered 25k..400k events/s (KNEE_RATES): latency percentiles
#   batch     closed loop, uniform, events per batch 10..5000: events/s
#   interval  closed loop, uniform, commit.interval_ms 1..50: events/s and p99
#   binab     two server binaries side by side (BIN_A, BIN_B; e.g. before/after a
#             change): closed loop per scenario, then open loop at BINAB_RATE, alternated
#   cpu       closed loop per scenario: CPU microseconds per event of giftload,
#             giftstream and Redis, and how busy the two cores were
#   snapshot  what snapshots cost the ack latency: open loop at 150k events/s, 1M users,
#             read model off, by fork (copy_pages_in_child on / off), from the replica,
#             and no snapshots
#   aof       closed loop on a Redis with its default AOF rewrites, then on one that
#             does not rewrite during the run: events/s, latency, Redis CPU
#   readmodel open loop, uniform at 50k and 100k events/s: latency and projected
#             events/s with read_model.ops_per_write_max 4096..64, and with it off
# Writes target/sweep/{knee,batch,interval}.tsv and draws them into load/results/.
# Run from the repository root after `cargo build --release --workspace`:
#   bash load/sweep.sh [knee|batch|interval]...   (about 3 minutes each)
set -euo pipefail

PORT=${SWEEP_REDIS_PORT:-6392}
SECONDS_PER_POINT=${SWEEP_SECONDS:-10}
# Load runs send more ids than the shipped index holds (4M: 10 minutes at ~7k events/s):
# a 32M-id index, so that a run of a few million events at full rate is not answered
# UNAVAILABLE (backpressure) part-way. ~120 B per id touched.
LOAD_INDEX_SED='s/^idempotency_entries_max = .*/idempotency_entries_max = 33554432/'
OUT=target/sweep
mkdir -p "$OUT" load/results
WORK=$(mktemp -d)
REDIS_PID=""
SERVE_PID=""
# The server binary (binab alternates two).
BIN=${GIFTSTREAM_BIN:-target/release/giftstream}
cleanup() {
  if [ -n "$SERVE_PID" ]; then
    kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null || true
  fi
  if [ -n "$REDIS_PID" ]; then
    # Waited for, so that a sweep started next finds the port free.
    kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# (Re)starts the sweep's Redis on an empty directory; extra redis-server arguments in
# SWEEP_REDIS_ARGS (every sweep; e.g. README's recommended journal Redis:
# "--auto-aof-rewrite-percentage 400 --auto-aof-rewrite-min-size 2gb") and "$@".
redis_start() {
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID"
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK/redis"
  mkdir -p "$WORK/redis"
  redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly yes \
    --appendfsync everysec --dir "$WORK/redis" ${SWEEP_REDIS_ARGS:-} "$@" >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  until redis-cli -p "$PORT" ping >/dev/null 2>&1; do
    if ! kill -0 "$REDIS_PID" 2>/dev/null; then
      echo "redis-server did not start:" >&2
      tail -3 "$WORK/redis.log" >&2
      REDIS_PID=""
      return 1
    fi
    sleep 0.1
  done
}
redis_start

# Starts giftstream on an empty Redis with commit.interval_ms = $1 and the sed
# expression $2 (if any) applied to config/giftstream.toml.
serve() {
  redis-cli -p "$PORT" flushall >/dev/null
  sed -e "/^\[commit\]/,/^\[/ s/^interval_ms = .*/interval_ms = $1/" -e "$LOAD_INDEX_SED" -e "${2:-}" config/giftstream.toml >"$WORK/giftstream.toml"
  rm -rf "$WORK/data"
  GIFTSTREAM_CONFIG="$WORK/giftstream.toml" GIFTSTREAM_REDIS_URL="redis://127.0.0.1:$PORT" \
    GIFTSTREAM_DATA_DIR="$WORK/data" RUST_LOG="${SERVE_LOG:-warn}" "$BIN" serve \
    >"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  until curl -sf http://127.0.0.1:8080/readyz >/dev/null 2>&1; do sleep 0.1; done
}

stop() {
  kill -TERM "$SERVE_PID"
  wait "$SERVE_PID" || true
  SERVE_PID=""
}

# One giftload run; prints "achieved p50 p99 p99.9" (events/s, ms).
load() {
  target/release/giftload run "load/scenarios/${SCENARIO:-uniform}.toml" --quiet --json "$WORK/run.json" \
    --out "$WORK/report" "$@" >/dev/null
  python3 - "$WORK/run.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
l = s["latency_us"]
print(f'{s["achieved_rate"]:.0f}\t{l["p50"]/1000:.2f}\t{l["p99"]/1000:.2f}\t{l["p999"]/1000:.2f}')
EOF
}

knee() {
  printf 'offered events/s\tp50 ms\tp99 ms\tp99.9 ms\n' >"$OUT/knee.tsv"
  printf 'offered events/s\tachieved events/s\n' >"$OUT/knee-rate.tsv"
  for rate in ${KNEE_RATES:-25000 50000 100000 150000 200000 250000 300000 350000 400000}; do
    serve 1
    read -r achieved p50 p99 p999 < <(load --mode open --rate "$rate" --duration "$SECONDS_PER_POINT")
    stop
    echo "knee: offered $rate achieved $achieved p50 $p50 p99 $p99 p99.9 $p999"
    printf '%s\t%s\t%s\t%s\n' "$rate" "$p50" "$p99" "$p999" >>"$OUT/knee.tsv"
    printf '%s\t%s\n' "$rate" "$achieved" >>"$OUT/knee-rate.tsv"
  done
  target/release/giftload plot "$OUT/knee.tsv" --out load/results/growth-knee.png \
    --title "uniform, open loop: ack latency against offered load" --y "ms (corrected, log10)" --log-y
}

batch() {
  printf 'events per batch\tevents/s\tp99 ms\n' >"$OUT/batch.tsv"
  for b in 10 50 100 500 1000 5000; do
    serve 1
    read -r achieved p50 p99 p999 < <(load --mode closed --batch "$b" --duration "$SECONDS_PER_POINT")
    stop
    echo "batch: $b achieved $achieved p99 $p99"
    printf '%s\t%s\t%s\n' "$b" "$achieved" "$p99" >>"$OUT/batch.tsv"
  done
  cut -f1,2 "$OUT/batch.tsv" >"$OUT/batch-rate.tsv"
  target/release/giftload plot "$OUT/batch-rate.tsv" --out load/results/growth-batch.png \
    --title "uniform, closed loop (4 x 16 in flight): throughput against batch size" \
    --y "events/s" --log-x
}

interval() {
  printf 'commit interval ms\tevents/s\tp99 ms\n' >"$OUT/interval.tsv"
  for i in 1 2 5 10 20 50; do
    serve "$i"
    read -r achieved p50 p99 p999 < <(load --mode closed --duration "$SECONDS_PER_POINT")
    stop
    echo "interval: $i ms achieved $achieved p99 $p99"
    printf '%s\t%s\t%s\n' "$i" "$achieved" "$p99" >>"$OUT/interval.tsv"
  done
  cut -f1,2 "$OUT/interval.tsv" >"$OUT/interval-rate.tsv"
  target/release/giftload plot "$OUT/interval-rate.tsv" --out load/results/growth-interval.png \
    --title "uniform, closed loop: throughput against commit interval" --y "events/s" --log-x
}

# Projected events (giftstream_read_model_events_total) of the running server.
projected() {
  curl -s http://127.0.0.1:8080/metrics |
    awk '/^giftstream_read_model_events_total/ {print $2} END {print 0}' | head -1
}

# The read model's lag in seconds (giftstream_read_model_lag_seconds) right now.
lag() {
  curl -s http://127.0.0.1:8080/metrics |
    awk '/^giftstream_read_model_lag_seconds/ {print $2} END {print 0}' | head -1
}

readmodel() {
  printf 'setting\toffered events/s\tp50 ms\tp99 ms\tp99.9 ms\tprojected events/s\n' >"$OUT/readmodel.tsv"
  for setting in "ops_per_write_max = 4096" "ops_per_write_max = 1024" \
    "ops_per_write_max = 256" "ops_per_write_max = 64" "enabled = false"; do
    for rate in 50000 100000; do
      serve 1 "s/^${setting%% =*} = .*/$setting/"
      read -r achieved p50 p99 p999 < <(load --mode open --rate "$rate" --duration "$SECONDS_PER_POINT")
      local events
      events=$(projected)
      stop
      local per_s
      per_s=$(python3 -c "print(round(float('$events') / ($SECONDS_PER_POINT + 4)))")
      echo "readmodel: $setting at $rate: p50 $p50 p99 $p99 p99.9 $p999, projected $per_s events/s"
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$setting" "$rate" "$p50" "$p99" "$p999" "$per_s" >>"$OUT/readmodel.tsv"
    done
  done
}

# Side by side: config settings A and B ($AB_A, $AB_B, default the read-model write
# sizes 4096 and 256) alternated $AB_ROUNDS times at $AB_RATE events/s, open loop (or
# closed loop with AB_MODE=closed: maximum throughput).
ab() {
  local a=${AB_A:-ops_per_write_max = 4096} b=${AB_B:-ops_per_write_max = 256}
  local mode=(--mode open --rate "${AB_RATE:-100000}")
  [ "${AB_MODE:-open}" = closed ] && mode=(--mode closed)
  printf 'round\tsetting\tevents/s\tp50 ms\tp99 ms\tp99.9 ms\tprojected events/s\n' >"$OUT/ab.tsv"
  for round in $(seq "${AB_ROUNDS:-3}"); do
    for setting in "$a" "$b"; do
      serve 1 "s/^${setting%% =*} = .*/$setting/"
      read -r achieved p50 p99 p999 < <(load "${mode[@]}" --duration "$SECONDS_PER_POINT")
      local events per_s lag_s
      events=$(projected)
      lag_s=$(lag)
      stop
      per_s=$(python3 -c "print(round(float('$events') / ($SECONDS_PER_POINT + 4)))")
      echo "ab: round $round $setting: $achieved events/s, p50 $p50 p99 $p99 p99.9 $p999, projected $per_s events/s, read model lag at the end $lag_s s"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$setting" "$achieved" "$p50" "$p99" "$p999" "$per_s" >>"$OUT/ab.tsv"
    done
  done
}

# Two server binaries side by side: per round, per scenario, closed loop with BIN_A then
# BIN_B; then open loop (uniform) at BINAB_RATE (default 150000) for both
# (BINAB_SCENARIOS: which of "uniform zipf hot-creator open" to run). BIN_A_SED /
# BIN_B_SED: a sed expression for that binary's config (e.g. delete a setting an older
# binary does not know: BIN_A_SED='/^lease_ms/d'). Also reports the read model at the
# end of each run: events projected per event accepted, and its lag (s).
binab() {
  printf 'round\tbinary\tscenario\tmode\tevents/s\tp50 ms\tp99 ms\tp99.9 ms\tprojected share\tlag s\n' >"$OUT/binab.tsv"
  for round in $(seq "${AB_ROUNDS:-2}"); do
    for scenario in ${BINAB_SCENARIOS:-uniform zipf hot-creator open}; do
      for bin in "$BIN_A" "$BIN_B"; do
        local edit=${BIN_B_SED:-}
        [ "$bin" = "$BIN_A" ] && edit=${BIN_A_SED:-}
        BIN=$bin serve 1 "$edit"
        local mode=(--mode closed) sc=$scenario
        [ "$scenario" = open ] && mode=(--mode open --rate "${BINAB_RATE:-150000}") && sc=uniform
        read -r achieved p50 p99 p999 < <(SCENARIO=$sc load "${mode[@]}" --duration "$SECONDS_PER_POINT")
        local events lag_s share
        events=$(projected)
        lag_s=$(lag)
        stop
        share=$(python3 -c "print(round(float('$events') / max(1.0, float('$achieved') * $SECONDS_PER_POINT), 3))")
        echo "binab: round $round $bin $scenario: $achieved events/s, p50 $p50 p99 $p99 p99.9 $p999, read model: projected $share of the events, lag $lag_s s"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$bin" "$sc" "${mode[1]}" "$achieved" "$p50" "$p99" "$p999" "$share" "$lag_s" >>"$OUT/binab.tsv"
      done
    done
  done
}

# The headline: `giftload compare` (closed loop) of giftstream and the Redis-Lua
# baseline on the same Redis, per scenario, a fresh server and an empty Redis each
# (HEADLINE_SED: a sed expression applied to the config, e.g. an earlier default).
headline() {
  printf 'scenario\tgiftstream events/s\tredis-lua events/s\tratio\n' >"$OUT/headline.tsv"
  for scenario in uniform zipf hot-creator; do
    serve 1 "${HEADLINE_SED:-}"
    target/release/giftload compare "load/scenarios/$scenario.toml" --mode closed \
      --duration "$SECONDS_PER_POINT" --redis "redis://127.0.0.1:$PORT" --quiet \
      --json "$WORK/compare.json" --out "$WORK/report-$scenario" >/dev/null
    stop
    local row
    row=$(python3 - "$WORK/compare.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
g, l = c["giftstream"]["achieved_rate"], c["baseline"]["achieved_rate"]
print(f'{g:.0f}\t{l:.0f}\t{c["ratio"]:.2f}')
EOF
)
    echo "headline: $scenario: $row"
    printf '%s\t%s\n' "$scenario" "$row" >>"$OUT/headline.tsv"
  done
}

# CPU per event, per process: closed loop per scenario (CPU_SED: a sed expression for
# the config, e.g. the read model off); the CPU time giftload, giftstream and Redis each
# spent over the run (giftload's from /usr/bin/time, the others' from /proc/<pid>/stat,
# with their reaped children: snapshot writers, AOF rewrites)
# divided by the events giftstream applied in it (giftstream_events_total, the funding
# recharges included). Their sum bounds what two cores can carry: 2 s of CPU per second.
ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
applied() {
  curl -sf http://127.0.0.1:8080/metrics |
    awk '/^giftstream_events_total/ {s += $2} END {printf "%d", s}'
}
cpu() {
  printf 'scenario\tevents/s\tgiftload us/event\tgiftstream us/event\tredis us/event\ttotal us/event\tbusy of 2 cores\n' >"$OUT/cpu.tsv"
  for scenario in uniform zipf hot-creator; do
    serve 1 "${CPU_SED:-}"
    local s0 r0 e0 t0 s1 r1 e1 t1
    s0=$(ticks "$SERVE_PID"); r0=$(ticks "$REDIS_PID"); e0=$(applied); t0=$(date +%s.%N)
    /usr/bin/time -f '%U %S' -o "$WORK/time" target/release/giftload run \
      "load/scenarios/$scenario.toml" --mode closed --duration "$SECONDS_PER_POINT" --quiet \
      --json "$WORK/run.json" --out "$WORK/report" >/dev/null
    s1=$(ticks "$SERVE_PID"); r1=$(ticks "$REDIS_PID"); e1=$(applied); t1=$(date +%s.%N)
    stop
    local row
    row=$(python3 - "$WORK/run.json" "$WORK/time" "$s0" "$s1" "$r0" "$r1" "$e0" "$e1" "$t0" "$t1" <<'EOF'
import json, os, sys
run, timef = sys.argv[1], sys.argv[2]
s0, s1, r0, r1, e0, e1 = (int(float(x)) for x in sys.argv[3:9])
t0, t1 = float(sys.argv[9]), float(sys.argv[10])
hz = os.sysconf("SC_CLK_TCK")
load_s = sum(float(x) for x in open(timef).read().split()[-2:])
serve_s, redis_s = (s1 - s0) / hz, (r1 - r0) / hz
events = e1 - e0
us = [x / events * 1e6 for x in (load_s, serve_s, redis_s)]
busy = (load_s + serve_s + redis_s) / (t1 - t0) / 2
rate = json.load(open(run))["achieved_rate"]
print(f"{rate:.0f}\t{us[0]:.3f}\t{us[1]:.3f}\t{us[2]:.3f}\t{sum(us):.3f}\t{busy:.0%}")
EOF
)
    echo "cpu: $scenario: $row"
    printf '%s\t%s\n' "$scenario" "$row" >>"$OUT/cpu.tsv"
  done
}

# Every second's p99 of giftload's run ($2, its --json) as one series labelled $1,
# appended to $WORK/series; series_plot writes them side by side to $1 (a TSV) and draws
# them into $2 titled $3.
series_add() {
  python3 - "$1" "$2" "$WORK/series" <<'PY'
import json, sys
label, run, series = sys.argv[1:]
s = json.load(open(run))
p99 = ",".join(f"{i['second']}:{i['p99_us'] / 1000:.1f}" for i in s["intervals"])
open(series, "a").write(f"{label}\t{p99}\n")
PY
}
series_plot() {
  python3 - "$WORK/series" "$1" <<'PY'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
series = [(label, dict(p.split(":") for p in points.split(","))) for label, points in rows]
seconds = sorted({int(s) for _, points in series for s in points})
with open(sys.argv[2], "w") as out:
    out.write("second\t" + "\t".join(label for label, _ in series) + "\n")
    for sec in seconds:
        out.write(f"{sec}\t" + "\t".join(points.get(str(sec), "") for _, points in series) + "\n")
PY
  target/release/giftload plot "$1" --out "$2" --title "$3" --y "p99 ms"
}

# What snapshots cost the ack latency (BENCHMARKS.md "Snapshots at 1M wallets: the
# copy-on-write storm"): open loop at RATE (150000) events/s for SNAPSHOT_SECONDS (30),
# SCENARIO (uniform) with USERS (1000000) funded users, read model off. RUNS lists a
# round's runs as `how:snapshot.events` (0 = no snapshots), `how` being `true` or
# `false` (snapshot.method = "fork" with that copy_pages_in_child) or `replica`
# (snapshot.method = "replica"); ROUNDS (2) rounds alternated. Prints latency
# percentiles, the cuts (forks), the snapshot writes, the forked child's peak private
# memory (Private_Dirty, sampled every 0.1 s), the server's peak RSS and the replica's
# lag at the end; writes every second's p99 to snapshot-p99.tsv and draws it.
snapshot() {
  : >"$WORK/series"
  sed "s/^users = .*/users = ${USERS:-1000000}/" "load/scenarios/${SCENARIO:-uniform}.toml" \
    >"$WORK/scenario.toml"
  for round in $(seq "${ROUNDS:-2}"); do
    for run in ${RUNS:-true:1500000 false:1500000 true:0}; do
      copy=${run%%:*} events=${run##*:} method=fork
      if [ "$copy" = replica ]; then method=replica copy=true; fi
      SERVE_LOG=info serve 1 "s/^events = 10000000$/events = $events/;
        s/^copy_pages_in_child = true$/copy_pages_in_child = $copy/;
        s/^method = \"fork\"$/method = \"$method\"/;
        /^\[read_model\]/,/^\[/ s/^enabled = true/enabled = false/"
      echo 0 >"$WORK/child"
      (
        peak=0
        while kill -0 "$SERVE_PID" 2>/dev/null; do
          for child in $(pgrep -P "$SERVE_PID"); do
            kb=$(awk '/^Private_Dirty/ {print $2}' "/proc/$child/smaps_rollup" 2>/dev/null || true)
            if [ -n "$kb" ] && [ "$kb" -gt "$peak" ]; then peak=$kb; echo "$peak" >"$WORK/child"; fi
          done
          sleep 0.1
        done
      ) &
      sampler=$!
      target/release/giftload run "$WORK/scenario.toml" --mode open --rate "${RATE:-150000}" \
        --duration "${SNAPSHOT_SECONDS:-30}" --quiet --json "$WORK/run.json" --out "$WORK/report" \
        >"$WORK/giftload.log" 2>&1 || { cat "$WORK/giftload.log"; return 1; }
      cuts=$(curl -s http://127.0.0.1:8080/metrics |
        awk '/^giftstream_snapshot_cut_seconds_sum/ {s=$2} /^giftstream_snapshot_cut_seconds_count/ {n=$2}
             END {if (n) printf "%d, avg %.0f ms", n, s / n * 1000; else printf "none"}')
      lag=$(curl -s http://127.0.0.1:8080/metrics |
        awk '/^giftstream_snapshot_replica_lag_events/ {printf "%d", $2}')
      rss=$(awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$SERVE_PID/status")
      stop
      wait "$sampler" 2>/dev/null
      writes=$(grep "snapshot written" "$WORK/serve.log" | sed 's/.*seconds=\([0-9.]*\).*/\1/' |
        awk '{printf "%s%.1f", (NR > 1 ? " " : ""), $1}' || true)
      local label="fork, copy_pages_in_child=$copy"
      [ "$method" = replica ] && label="replica"
      [ "$events" = 0 ] && label="no snapshots"
      python3 - "$WORK/run.json" "$round" "$label" "$events" "$cuts" "${writes:-none}" \
        "$(cat "$WORK/child")" "$rss" "${lag:-none}" <<'PY'
import json, sys
run, rnd, label, events, cuts, writes, child, rss, lag = sys.argv[1:]
s = json.load(open(run))
l = s["latency_us"]
worst = max(s["intervals"], key=lambda i: i["p99_us"])
print(f"round {rnd} {label} snapshot.events={events}: "
      f"{s['achieved_rate']:.0f} events/s, p50 {l['p50']/1000:.2f} p99 {l['p99']/1000:.2f} "
      f"p99.9 {l['p999']/1000:.2f} max {l['max']/1000:.0f} ms, worst second's p99 "
      f"{worst['p99_us']/1000:.0f} ms; cuts {cuts}; writes (s) {writes}; "
      f"child's private memory {int(child)/1024:.0f} MB; server peak RSS {rss} MB; "
      f"replica lag at the end {lag} events")
PY
      series_add "$label (round $round)" "$WORK/run.json"
    done
  done

  series_plot "$OUT/snapshot-p99.tsv" load/results/snapshot-p99.png \
    "p99 ack latency per second, 1M wallets, ${RATE:-150000} gifts/s, a snapshot every 1.5M events"
}

# What Redis's own AOF rewrites cost (BENCHMARKS.md "Redis's AOF rewrites"): per round,
# a closed loop (or an open loop at AOF_RATE events/s) of SCENARIO (uniform) with the
# read model off (AOF_SED: another config
# edit), on a fresh Redis with its default rewrite policy (a rewrite whenever the AOF
# doubled past 64 MB), then on one that never rewrites during the run
# (auto-aof-rewrite-percentage 0); ROUNDS (2) rounds alternated. Prints events/s,
# latency, the rewrites Redis made and the CPU seconds Redis and its children used; in
# an open loop, also draws every second's p99 (load/results/aof-p99.png).
aof() {
  printf 'round\tredis\tevents/s\tp50 ms\tp99 ms\tp99.9 ms\taof rewrites\tredis cpu s\n' >"$OUT/aof.tsv"
  : >"$WORK/series"
  for round in $(seq "${ROUNDS:-2}"); do
    for policy in default no-rewrite; do
      if [ "$policy" = default ]; then
        SWEEP_REDIS_ARGS="" redis_start
      else
        SWEEP_REDIS_ARGS="" redis_start --auto-aof-rewrite-percentage 0
      fi
      serve 1 "${AOF_SED:-/^\[read_model\]/,/^\[/ s/^enabled = true/enabled = false/}"
      local r0 r1 rewrites
      r0=$(ticks "$REDIS_PID")
      local mode=(--mode closed)
      [ -n "${AOF_RATE:-}" ] && mode=(--mode open --rate "$AOF_RATE")
      read -r achieved p50 p99 p999 < <(load "${mode[@]}" --duration "$SECONDS_PER_POINT")
      r1=$(ticks "$REDIS_PID")
      rewrites=$(redis-cli -p "$PORT" info persistence | tr -d '\r' | awk -F: '/^aof_rewrites:/ {print $2}')
      stop
      local cpu_s
      cpu_s=$(awk -v t="$((r1 - r0))" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz}')
      echo "aof: round $round $policy: $achieved events/s, p50 $p50 p99 $p99 p99.9 $p999, $rewrites rewrites, Redis CPU ${cpu_s} s"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$policy" "$achieved" "$p50" "$p99" "$p999" "$rewrites" "$cpu_s" >>"$OUT/aof.tsv"
      series_add "$policy (round $round: $rewrites rewrites)" "$WORK/run.json"
    done
  done
  redis_start
  if [ -n "${AOF_RATE:-}" ]; then
    series_plot "$OUT/aof-p99.tsv" load/results/aof-p99.png \
      "p99 ack latency per second, ${SCENARIO:-uniform} at $AOF_RATE events/s: Redis's AOF rewrites"
  fi
}

for sweep in "${@:-knee batch interval}"; do
  for s in $sweep; do "$s"; done
done
