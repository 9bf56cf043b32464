#!/usr/bin/env bash
# Load benchmark of `stylecap serve`: 64 clients for 30 s against the same model with
# dynamic batching on, then off. Usage: tools/serve_load.sh MODEL_DIR IMAGE [CLIENTS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 image=$2 clients=${3:-64} seconds=${4:-30}
cargo build --release --quiet --example serve_load
cargo build --release --quiet
for mode in on off; do
  extra=()
  [ "$mode" = off ] && extra=(--no-batching)
  log=$(mktemp)
  target/release/stylecap serve --model "$model" --addr 127.0.0.1:0 "${extra[@]}" 2>"$log" &
  pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
  url=$(grep -o "http://[0-9.:]*" "$log" | head -1)
  echo "== dynamic batching $mode ($url, server pid $pid)"
  target/release/examples/serve_load "$url" "$image" "$clients" "$seconds" "$pid"
  kill -TERM "$pid"; wait "$pid" || true
  rm -f "$log"
done
