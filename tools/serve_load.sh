#!/usr/bin/env bash
# Load benchmark of `stylecap serve`: 64 clients for 30 s against the same model with
# dynamic batching on, then off; with SLOW > 0, a third run with batching on and SLOW more
# connections sending their body at 1 byte/s.
# Usage: tools/serve_load.sh MODEL_DIR IMAGE [CLIENTS] [SECONDS] [SLOW]
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 image=$2 clients=${3:-64} seconds=${4:-30} slow=${5:-0}
modes=(on off)
[ "$slow" -gt 0 ] && modes+=(slow)
bin=${CARGO_TARGET_DIR:-target}/release
cargo build --release --quiet --example serve_load
cargo build --release --quiet
for mode in "${modes[@]}"; do
  extra=() n_slow=0
  [ "$mode" = slow ] && n_slow=$slow
  [ "$mode" = slow ] && mode=on
  [ "$mode" = off ] && extra=(--no-batching)
  log=$(mktemp)
  "$bin"/stylecap serve --model "$model" --addr 127.0.0.1:0 "${extra[@]}" 2>"$log" &
  pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
  url=$(grep -o "http://[0-9.:]*" "$log" | head -1)
  echo "== dynamic batching $mode, $n_slow slow clients ($url, server pid $pid)"
  "$bin"/examples/serve_load "$url" "$image" "$clients" "$seconds" "$pid" "$n_slow"
  kill -TERM "$pid"; wait "$pid" || true
  rm -f "$log"
done
