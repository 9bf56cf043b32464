"""Markdown table of alignment runs: python3 tools/align_table.py DEMO_DIR WORK_DIR (see align_table.sh)."""
import json
import os
import sys

demo, work = sys.argv[1], sys.argv[2]


def styled(e):
    return [x for x in e["styles"] if x["style"] != "factual"]


def row(name, e, secs, steps, skipped):
    s = styled(e)
    avg = lambda k: sum(x[k] for x in s) / len(s)
    acc = [x["style_accuracy"] for x in s]
    fact = [x for x in e["styles"] if x["style"] == "factual"][0]
    return (
        f"| {name} | {avg('style_accuracy'):.3f} (min {min(acc):.2f}) | {avg('content_fidelity'):.3f} "
        f"| {fact['content_fidelity']:.3f} | {avg('kl_to_base'):.2f} | {avg('base_perplexity'):.2f} "
        f"| {avg('distinct2'):.3f} | {secs} | {steps} | {skipped} |"
    )


def metrics(d):
    rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    steps = [r for r in rows if "validation" not in r]
    last = steps[-1] if steps else {}
    return last.get("step", 0), sum(r.get("skipped", 0) for r in steps), last.get("elapsed_s", 0.0)


ev = json.load(open(os.path.join(demo, "eval.json")))
print("| run | judge style acc (5 styles) | content (styled) | content (factual) | KL to base | base ppl | distinct-2 | align wall s | steps | skipped batches |")
print("|---|---|---|---|---|---|---|---|---|---|")
print(row("base (no alignment)", ev["base"], "–", "–", "–"))
st, sk, el = metrics(os.path.join(demo, "align"))
print(row("rloo (default; the demo's run)", ev["aligned"], f"{el:.0f}", st, sk))
for n in ["reinforce", "reinforce-baseline", "scst", "grpo", "ppo", "ablation"]:
    p = os.path.join(work, n)
    if not os.path.exists(p + ".eval.json") or os.path.getsize(p + ".eval.json") == 0:
        continue
    st, sk, _ = metrics(p)
    secs = float(open(p + ".time").read().split()[-1])
    label = "rloo without content reward, KL and anchor (ablation)" if n == "ablation" else n
    print(row(label, json.load(open(p + ".eval.json")), f"{secs:.0f}", st, sk))
