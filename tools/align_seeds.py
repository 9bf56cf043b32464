"""Seed spread of alignment runs: python3 tools/align_seeds.py WORK_DIR N (see align_seeds.sh)."""
import json
import os
import statistics
import sys

COLUMNS = [
    "judge style acc (mean of styles)",
    "lowest style's acc",
    "content (styled)",
    "content (factual)",
    "repetition (styled)",
    "distinct-2 (styled)",
    "KL to base",
    "base perplexity",
]


def figures(e):
    styled = [x for x in e["styles"] if x["style"] != "factual"]
    factual = [x for x in e["styles"] if x["style"] == "factual"]
    mean = lambda k: sum(x[k] for x in styled) / len(styled)
    return [
        mean("style_accuracy"),
        min(x["style_accuracy"] for x in styled),
        mean("content_fidelity"),
        factual[0]["content_fidelity"] if factual else float("nan"),
        mean("repetition_rate"),
        mean("distinct2"),
        mean("kl_to_base"),
        mean("base_perplexity"),
    ]


def line(name, values, extra=""):
    return f"| {name} | " + " | ".join(f"{round(v, 3) + 0.0:.3f}" for v in values) + f" | {extra} |"


def main():
    work, n = sys.argv[1], int(sys.argv[2])
    rows = []
    print("| run | " + " | ".join(COLUMNS) + " | align wall s |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    base = os.path.join(work, "base.eval.json")
    if os.path.exists(base):
        print(line("base", figures(json.load(open(base))), "–"))
    for seed in range(n):
        p = os.path.join(work, f"seed{seed}")
        if not os.path.exists(p + ".eval.json") or os.path.getsize(p + ".eval.json") == 0:
            continue
        values = figures(json.load(open(p + ".eval.json")))
        rows.append(values)
        secs = float(open(p + ".time").read().split()[-1])
        print(line(f"seed {seed}", values, f"{secs:.0f}"))
    if len(rows) > 1:
        columns = list(zip(*rows))
        print(line(f"mean of {len(rows)}", [statistics.mean(c) for c in columns]))
        print(line("min", [min(c) for c in columns]))
        print(line("max", [max(c) for c in columns]))
        print(line("standard deviation", [statistics.stdev(c) for c in columns]))


if __name__ == "__main__":
    main()
