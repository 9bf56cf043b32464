"""Markdown table of alignment runs over seeds: python3 tools/align_table.py WORK_DIR (see align_table.sh).

WORK_DIR holds one tools/align_seeds.sh folder per algorithm; each row gives the mean of its
seeds' figures and, with several seeds, their range."""
import json
import os
import statistics
import sys

from align_seeds import COLUMNS, figures

ROWS = [
    ("rloo", "rloo (default)"),
    ("reinforce", "reinforce"),
    ("reinforce-baseline", "reinforce-baseline"),
    ("scst", "scst"),
    ("grpo", "grpo"),
    ("ppo", "ppo"),
    ("ablation", "rloo without content reward, KL and anchor (ablation)"),
]


def seeds(folder):
    """Figures and alignment wall times of the seeds evaluated, 0, 1, ... in order."""
    runs = []
    while True:
        p = os.path.join(folder, f"seed{len(runs)}")
        if not os.path.exists(p + ".eval.json") or os.path.getsize(p + ".eval.json") == 0:
            return runs
        secs = float(open(p + ".time").read().split()[-1])
        runs.append((figures(json.load(open(p + ".eval.json"))), secs))


def cell(values):
    mean = round(statistics.mean(values), 3) + 0.0
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}–{max(values):.3f})"


def main():
    work = sys.argv[1]
    print("| run | seeds | " + " | ".join(COLUMNS) + " | align wall s |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    base = None
    for name, label in ROWS:
        folder = os.path.join(work, name)
        runs = seeds(folder)
        if base is None and os.path.exists(os.path.join(folder, "base.eval.json")):
            base = figures(json.load(open(os.path.join(folder, "base.eval.json"))))
            print("| base (no alignment) | – | " + " | ".join(cell([v]) for v in base) + " | – |")
        if not runs:
            continue
        columns = list(zip(*(f for f, _ in runs)))
        wall = statistics.median(s for _, s in runs)
        print(f"| {label} | {len(runs)} | " + " | ".join(cell(list(c)) for c in columns) + f" | {wall:.0f} |")


if __name__ == "__main__":
    main()
