#!/usr/bin/env bash
# Per-algorithm alignment table: from a finished demo folder (its base, critic and judge),
# align with each algorithm at default settings, plus an RLOO ablation without the content
# reward, KL and supervised anchor, each with seeds 0..SEEDS-1 (tools/align_seeds.sh),
# evaluate every run with the judge on the 200 test pictures, and print a markdown table of
# each row's mean and range over its seeds. 15 to 20 minutes a seed on 2 cores.
# Usage: tools/align_table.sh DEMO_DIR WORK_DIR [SEEDS (default 3)]
# STYLECAP=path runs that binary (see tools/align_seeds.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
demo=$1 work=$2 seeds=${3:-3}
mkdir -p "$work"
for algo in rloo reinforce reinforce-baseline scst grpo ppo; do
  tools/align_seeds.sh "$demo" "$work/$algo" "$seeds" --algo "$algo" > /dev/null
done
tools/align_seeds.sh "$demo" "$work/ablation" "$seeds" --algo rloo --w-content 0 --beta 0 \
  --target-kl 0 --ptx-coef 0 > /dev/null
python3 tools/align_table.py "$work"
