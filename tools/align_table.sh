#!/usr/bin/env bash
# Per-algorithm alignment table (issue 5): from a finished demo folder (its base, critic and
# judge), align with each algorithm at default settings, plus an RLOO ablation without the
# content reward, KL and supervised anchor, evaluate each with the judge on 100 test pictures, and print a
# markdown table. The demo's own alignment is the RLOO row. About 20 minutes on 2 cores.
# Usage: tools/align_table.sh DEMO_DIR [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
demo=$(realpath "$1") work=${2:-$(mktemp -d)}
mkdir -p "$work"
cargo build --release --quiet
bin=$PWD/target/release/stylecap
run() { # name, align flags...
  local name=$1; shift
  if [ ! -s "$work/$name.eval.json" ]; then
    rm -rf "$work/$name"
    /usr/bin/time -f "%e" -o "$work/$name.time" "$bin" align --base "$demo/base" \
      --critic "$demo/critic" --out "$work/$name" --quiet "$@" > "$work/$name.log" 2>&1
    "$bin" eval --model "$work/$name" --base "$demo/base" --judge "$demo/judge" \
      --images 100 --json > "$work/$name.eval.json"
  fi
  echo "done: $name" >&2
}
run reinforce --algo reinforce
run reinforce-baseline --algo reinforce-baseline
run scst --algo scst
run grpo --algo grpo
run ppo --algo ppo
run ablation --algo rloo --w-content 0 --beta 0 --target-kl 0 --ptx-coef 0
python3 tools/align_table.py "$demo" "$work"
