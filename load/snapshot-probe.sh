#!/usr/bin/env bash
# One run of what a snapshot costs the ack latency (BENCHMARKS.md "Snapshots from a
# replica"): a fresh Redis (AOF everysec) on port 7301 and a fresh server (read model
# off, a snapshot every 1.5M events) with snapshot.method = METHOD (`fork`, `replica`,
# or `none` = no snapshots), 1M funded users, then `uniform` open loop at RATE events/s
# for 30 s. Prints the latency percentiles, every second's p99, the snapshot writes,
# the peak RSS of the server and of its children (the replica), their CPU ticks, the
# fork cuts and Redis's command times. BIN (target/release/giftstream) is the server.
# Run from the repository root after `cargo build --release --workspace`; alternate
# METHODs between runs: usage: bash load/snapshot-probe.sh METHOD RATE
set -u
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
M=$1; RATE=$2; EV=1500000; if [ "$M" = none ]; then M=fork; EV=0; fi
pkill -f "redis-server 127.0.0.1:7301"; sleep 0.5
rm -rf $W/redis $W/data; mkdir -p $W/redis
redis-server --port 7301 --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec --dir $W/redis --logfile $W/redis.log --daemonize yes
sleep 0.5
sed -e 's/^idempotency_entries_max = .*/idempotency_entries_max = 33554432/' -e "s/^events = 10000000$/events = $EV/" -e "s/^method = \"fork\"$/method = \"$M\"/" -e '/^\[read_model\]/,/^\[/ s/^enabled = true/enabled = false/' config/giftstream.toml > $W/gs.toml
sed "s/^users = .*/users = 1000000/" load/scenarios/uniform.toml > $W/scenario.toml
GIFTSTREAM_CONFIG=$W/gs.toml GIFTSTREAM_REDIS_URL=redis://127.0.0.1:7301 GIFTSTREAM_DATA_DIR=$W/data GIFTSTREAM_TCP_ADDR=127.0.0.1:7371 GIFTSTREAM_HTTP_ADDR=127.0.0.1:8371 RUST_LOG=info ${BIN:-target/release/giftstream} serve > $W/serve.log 2>&1 &
SP=$!
until curl -sf http://127.0.0.1:8371/readyz >/dev/null 2>&1; do sleep 0.1; done
R0=$(awk '{print $3, $10}' /proc/diskstats | awk '$1=="vda"{print $2}')
redis-cli -p 7301 config resetstat >/dev/null
target/release/giftload run $W/scenario.toml --tcp 127.0.0.1:7371 --http 127.0.0.1:8371 --mode open --rate $RATE --duration 30 --quiet --json $W/run.json --out $W/rep > $W/load.log 2>&1
W1=$(awk '$3=="vda"{print $10}' /proc/diskstats)
for c in $(pgrep -P $SP); do echo "child $c cpu ticks: $(awk '{print $14+$15}' /proc/$c/stat) $(grep VmHWM /proc/$c/status)"; done
echo "server $(grep VmHWM /proc/$SP/status)"
curl -s http://127.0.0.1:8371/metrics | grep -E "^giftstream_snapshot_replica_lag_events|^giftstream_snapshot_cut_seconds_(sum|count)"
echo "server cpu ticks: $(awk '{print $14+$15+$16+$17}' /proc/$SP/stat)"
redis-cli -p 7301 info commandstats | grep -E "xadd|xrange|eval|fcall" 
redis-cli -p 7301 info cpu | grep used_cpu_
grep -c "taking too long" $W/redis.log
python3 -c "
import json; s=json.load(open('$W/run.json')); l=s['latency_us']
print('$M $EV', s['achieved_rate'], 'p50', l['p50']/1000, 'p99', l['p99']/1000, 'p999', l['p999']/1000)
print(' '.join(f\"{i['p99_us']/1000:.0f}\" for i in s['intervals']))"
grep "snapshot written" $W/serve.log | sed 's/.*\(seconds=[0-9.]*\).*/\1/' | tr '\n' ' '; echo
kill $SP; wait $SP
redis-cli -p 7301 shutdown nosave
