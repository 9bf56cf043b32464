#!/usr/bin/env bash
# Seed spread of one alignment setting: from a finished demo folder (its base, critic and
# judge), align with seeds 0..N-1 (seed 0 at default settings is the demo's own alignment),
# evaluate each run and the base with the judge on IMAGES test pictures (default 200, the
# whole test split), and print one row per seed with the mean, min, max and standard
# deviation of each column. Extra arguments go to `stylecap align` (e.g. --algo grpo). A
# default alignment takes 1 to 2.5 minutes on 2 cores; finished seeds are not run again.
# Usage: tools/align_seeds.sh DEMO_DIR WORK_DIR N [align flags...]
# STYLECAP=path runs that binary instead of building this checkout's (a copy keeps long runs
# apart from edits to the source).
set -euo pipefail
cd "$(dirname "$0")/.."
demo=$(realpath "$1") work=$2 n=$3
shift 3
images=${IMAGES:-200}
mkdir -p "$work"
if [ -n "${STYLECAP:-}" ]; then
  bin=$(realpath "$STYLECAP")
else
  cargo build --release --quiet
  bin=$PWD/target/release/stylecap
fi
for ((seed = 0; seed < n; seed++)); do
  name=seed$seed
  if [ ! -s "$work/$name.eval.json" ]; then
    rm -rf "$work/$name"
    /usr/bin/time -f "%e" -o "$work/$name.time" "$bin" align --base "$demo/base" \
      --critic "$demo/critic" --out "$work/$name" --seed "$seed" --quiet "$@" \
      > "$work/$name.log" 2>&1
    "$bin" eval --model "$work/$name" --base "$demo/base" --judge "$demo/judge" \
      --images "$images" --json > "$work/$name.eval.json.tmp"
    mv "$work/$name.eval.json.tmp" "$work/$name.eval.json"
  fi
  echo "done: $name" >&2
done
if [ ! -s "$work/base.eval.json" ]; then
  "$bin" eval --model "$demo/base" --base "$demo/base" --judge "$demo/judge" \
    --images "$images" --json > "$work/base.eval.json.tmp"
  mv "$work/base.eval.json.tmp" "$work/base.eval.json"
fi
python3 tools/align_seeds.py "$work" "$n"
