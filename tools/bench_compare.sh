#!/usr/bin/env bash
# Runs `stylecap bench` and the PyTorch reference one after the other on this machine with the
# same thread count, and prints both medians and their ratios.
#   tools/bench_compare.sh [THREADS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
runs=${2:-15}
cargo build --release --quiet
ours=$(./target/release/stylecap --threads "$threads" bench --runs "$runs" --json)
theirs=$(python3 tools/bench_torch.py --threads "$threads" --runs "$runs" --json 2>/dev/null)
python3 - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'':34s}{'stylecap':>10s}{'PyTorch':>10s}{'ratio':>8s}")
for key, label in [("train_step_s", "supervised step, s"), ("generate_s", "greedy 32 tokens, s"),
                   ("rl_step_s", "alignment step (16 x 4 samples), s"),
                   ("peak_rss_after_train_mib", "peak RSS after training, MiB"),
                   ("rss_before_model_mib", "RSS before the model, MiB")]:
    print(f"{label:34s}{a[key]:10.3f}{b[key]:10.3f}{a[key] / b[key]:7.2f}x")
print(f"threads {a['threads']}, medians of {a['runs']} runs; reference: {b['framework']}")
PY
