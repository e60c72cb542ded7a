# Sourced by the probes (load/readmodel-probe.sh, load/tail-probe.sh): a work directory
# $W, a private Redis and a fresh giftstream in it, all gone when the probe exits.
W=$(mktemp -d)
RP="" SP=""
cleanup() {
  [ -n "$SP" ] && kill "$SP" 2>/dev/null && wait "$SP" 2>/dev/null || true
  [ -n "$RP" ] && kill "$RP" 2>/dev/null && wait "$RP" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

# Starts redis-server on port $1 (AOF everysec, data in $W) and waits until it answers;
# sets RP.
probe_redis() {
  # The previous run's Redis may still be exiting.
  while redis-cli -p "$1" ping >/dev/null 2>&1; do sleep 0.2; done
  redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly yes \
    --appendfsync everysec --dir "$W" >"$W/redis.log" 2>&1 &
  RP=$!
  until redis-cli -p "$1" ping >/dev/null 2>&1; do
    kill -0 "$RP" 2>/dev/null || { cat "$W/redis.log"; exit 1; }
    sleep 0.1
  done
}

# Starts `$1 serve` against the Redis on port $2, with the sed expression $3 applied to
# config/giftstream.toml, and waits until it is ready (HTTP 8080); sets SP.
probe_serve() {
  sed -e "${3:-}" config/giftstream.toml >"$W/giftstream.toml"
  GIFTSTREAM_CONFIG="$W/giftstream.toml" GIFTSTREAM_REDIS_URL="redis://127.0.0.1:$2" \
    GIFTSTREAM_DATA_DIR="$W/data" RUST_LOG=warn "$1" serve >"$W/serve.log" 2>&1 &
  SP=$!
  until curl -sf http://127.0.0.1:8080/readyz >/dev/null; do
    kill -0 "$SP" 2>/dev/null || { cat "$W/serve.log"; exit 1; }
    sleep 0.1
  done
}
