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
    "excess repetition (styled)",
    "distinct-2 (styled)",
    "KL to base",
    "base perplexity",
]


def figures(e):
    styled = [x for x in e["styles"] if x["style"] != "factual"]
    factual = [x for x in e["styles"] if x["style"] == "factual"]
    # Evaluations from before a metric existed give NaN for it.
    mean = lambda k: sum(x.get(k, float("nan")) for x in styled) / len(styled)
    return [
        mean("style_accuracy"),
        min(x["style_accuracy"] for x in styled),
        mean("content_fidelity"),
        factual[0]["content_fidelity"] if factual else float("nan"),
        mean("repetition_rate"),
        mean("excess_repetition_rate"),
        mean("distinct2"),
        mean("kl_to_base"),
        mean("base_perplexity"),
    ]


def line(name, values, extra=""):
    return f"| {name} | " + " | ".join(f"{round(v, 3) + 0.0:.3f}" for v in values) + f" | {extra} |"


def runs(folder):
    """Each evaluated seed's figures and alignment wall time, seeds 0, 1, ... in order."""
    found = []
    while True:
        p = os.path.join(folder, f"seed{len(found)}")
        if not os.path.exists(p + ".eval.json") or os.path.getsize(p + ".eval.json") == 0:
            return found
        secs = float(open(p + ".time").read().split()[-1])
        found.append((figures(json.load(open(p + ".eval.json"))), secs))


def main():
    work, n = sys.argv[1], int(sys.argv[2])
    print("| run | " + " | ".join(COLUMNS) + " | align wall s |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    base = os.path.join(work, "base.eval.json")
    if os.path.exists(base):
        print(line("base", figures(json.load(open(base))), "–"))
    found = runs(work)[:n]
    for seed, (values, secs) in enumerate(found):
        print(line(f"seed {seed}", values, f"{secs:.0f}"))
    if len(found) > 1:
        columns = list(zip(*(values for values, _ in found)))
        print(line(f"mean of {len(found)}", [statistics.mean(c) for c in columns]))
        print(line("min", [min(c) for c in columns]))
        print(line("max", [max(c) for c in columns]))
        print(line("standard deviation", [statistics.stdev(c) for c in columns]))


if __name__ == "__main__":
    main()
