"""Markdown table of alignment runs over seeds: python3 tools/align_table.py WORK_DIR (see align_table.sh).

WORK_DIR holds one tools/align_seeds.sh folder per algorithm; each row gives the mean of its
seeds' figures and, with several seeds, their range."""
import json
import os
import statistics
import sys

from align_seeds import COLUMNS, figures, runs

ROWS = [
    ("rloo", "rloo (default)"),
    ("reinforce", "reinforce"),
    ("reinforce-baseline", "reinforce-baseline"),
    ("scst", "scst"),
    ("grpo", "grpo"),
    ("ppo", "ppo"),
    ("ablation", "rloo without content reward, KL and anchor (ablation)"),
]


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
        found = runs(folder)
        if base is None and os.path.exists(os.path.join(folder, "base.eval.json")):
            base = figures(json.load(open(os.path.join(folder, "base.eval.json"))))
            print("| base (no alignment) | – | " + " | ".join(cell([v]) for v in base) + " | – |")
        if not found:
            continue
        columns = list(zip(*(f for f, _ in found)))
        wall = statistics.median(s for _, s in found)
        print(f"| {label} | {len(found)} | " + " | ".join(cell(list(c)) for c in columns) + f" | {wall:.0f} |")


if __name__ == "__main__":
    main()
