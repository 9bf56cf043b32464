#!/bin/bash
# Trains several supervised configurations side by side, THREADS threads each, and prints
# each run's validation curve, test/compositional content fidelity and error breakdown.
# For machines with many cores (e.g. the lent GPU machine's 16):
#   tools/sweep.sh BIN_DIR OUT THREADS CONFIG.json...
# BIN_DIR holds `stylecap` and `content_errors` (examples/content_errors.rs). LIMIT (seconds,
# default 3600) stops a run that is still training; its curve so far is still printed.
set -u
limit=${LIMIT:-3600}
bin=$1; out=$2; threads=$3; shift 3
mkdir -p "$out"
for cfg in "$@"; do
  name=$(basename "$cfg" .json)
  (
    start=$(date +%s)
    timeout "$limit" "$bin/stylecap" --threads "$threads" train --out "$out/$name" --config "$cfg" \
      > "$out/$name.log" 2>&1
    echo "exit $? after $(( $(date +%s) - start )) s" >> "$out/$name.log"
    "$bin/content_errors" "$out/$name/model" 200 > "$out/$name.errors" 2>&1
    rm -rf "$out/$name/checkpoint"
  ) &
done
wait
for cfg in "$@"; do
  name=$(basename "$cfg" .json)
  echo "== $name: $(cat "$cfg")"
  tail -n 1 "$out/$name.log"
  python3 - "$out/$name" <<'PY'
import json, sys
run = sys.argv[1]
try:
    for line in open(f"{run}/metrics.jsonl"):
        d = json.loads(line)
        if "content_fidelity" in d:
            print(f"  step {d['step']:5} {d['split']:13} content {d['content_fidelity']:.3f} loss {d['loss']:.3f}")
    e = json.load(open(f"{run}/eval.json"))
    print(f"  {e['seconds']:.0f} s:", ", ".join(f"{x['split']} {x['content_fidelity']:.3f}" for x in e["evals"][-2:]))
except Exception as err:
    print("  ", err)
PY
  grep -E "F1|kind ranked" "$out/$name.errors"
done
