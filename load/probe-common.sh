# Sourced by the probes (load/readmodel-probe.sh, load/tail-probe.sh): a work directory
# $W, private Redis servers and a fresh giftstream in it, all gone when the probe exits.
# Load runs send more ids than the shipped index holds (4M: 10 minutes at ~7k events/s):
# a 32M-id index, so that a run of a few million events at full rate is not answered
# UNAVAILABLE (backpressure) part-way. ~120 B per id touched.
LOAD_INDEX_SED='s/^idempotency_entries_max = .*/idempotency_entries_max = 33554432/'
W=$(mktemp -d)
RP="" RP2="" SP=""
cleanup() {
  local p
  for p in "$SP" "$RP" "$RP2"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  rm -rf "$W"
}
trap cleanup EXIT

# Starts redis-server on port $1 (AOF everysec, data in $W/redis-$1, extra arguments in
# REDIS_ARGS, e.g. README's journal policy "--auto-aof-rewrite-percentage 400
# --auto-aof-rewrite-min-size 2gb") and waits until it answers; a command prefix may
# follow (e.g. nice -n 19). Prints its pid.
probe_redis_pid() {
  local port=$1
  shift
  # The previous run's Redis may still be exiting.
  while redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.2; done
  mkdir -p "$W/redis-$port"
  "$@" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly yes \
    --appendfsync everysec --dir "$W/redis-$port" ${REDIS_ARGS:-} >"$W/redis-$port.log" 2>&1 &
  local pid=$!
  until redis-cli -p "$port" ping >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$W/redis-$port.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$pid"
}

# The journal's Redis on port $1; sets RP.
probe_redis() {
  RP=$(probe_redis_pid "$1")
}

# Starts `$1 serve` against the Redis on port $2, with the sed expression $3 applied to
# config/giftstream.toml, and waits until it is ready (HTTP 8080); sets SP.
probe_serve() {
  sed -e "$LOAD_INDEX_SED" -e "${3:-}" config/giftstream.toml >"$W/giftstream.toml"
  GIFTSTREAM_CONFIG="$W/giftstream.toml" GIFTSTREAM_REDIS_URL="redis://127.0.0.1:$2" \
    GIFTSTREAM_DATA_DIR="$W/data" RUST_LOG=warn "$1" serve >"$W/serve.log" 2>&1 &
  SP=$!
  until curl -sf http://127.0.0.1:8080/readyz >/dev/null; do
    kill -0 "$SP" 2>/dev/null || { cat "$W/serve.log"; exit 1; }
    sleep 0.1
  done
}

# CPU time (user + system, reaped children included) of process $1, in clock ticks.
probe_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
