#!/usr/bin/env bash
# How often half precision changes a captioner's greedy captions (docs/performance.md, "Half
# precision"): `stylecap caption --greedy` of the first N pictures of a folder, in each style
# given, with --dtype f32, f16 and bf16 (one process per caption: burn fixes a device's float
# type once per process), then the share of captions identical to f32's and the largest
# log-probability difference of the identical ones.
#   tools/dtype_agree.sh MODEL IMAGE_DIR [N [STYLES]]     e.g. runs/plain/align synth/images/test 50 factual,gothic,noir
set -euo pipefail
model=$1; images=$2; n=${3:-50}; styles=${4:-}
bin=${BIN:-target/release/stylecap}
work=$(mktemp -d)
mapfile -t files < <(ls "$images" | grep -iE '\.(png|jpe?g)$' | sort | head -n "$n")
for d in f32 f16 bf16; do
  for f in "${files[@]}"; do
    for s in ${styles//,/ }; do
      "$bin" --threads "${THREADS:-2}" --dtype $d caption --model "$model" --image "$images/$f" --style "$s" --greedy --json
    done
    [ -n "$styles" ] || "$bin" --threads "${THREADS:-2}" --dtype $d caption --model "$model" --image "$images/$f" --greedy --json
  done > "$work/$d.jsonl"
done
python3 - "$work" <<'PY'
import json, pathlib, sys
w = pathlib.Path(sys.argv[1])
rows = {d: [json.loads(l) for l in open(w / f"{d}.jsonl")] for d in ("f32", "f16", "bf16")}
for d in ("f16", "bf16"):
    pairs = list(zip(rows["f32"], rows[d]))
    same = [(a, b) for a, b in pairs if a["token_ids"] == b["token_ids"]]
    lp = max((abs(x - y) for a, b in same for x, y in zip(a["logprobs"], b["logprobs"])), default=0.0)
    print(f"{d}: {len(same)}/{len(pairs)} captions identical to f32's; their log-probabilities within {lp:.3g}")
PY
rm -rf "$work"
