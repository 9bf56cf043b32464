#!/usr/bin/env python3
"""How far two runs' captions agree: two files of `stylecap eval --captions` (the same
captioner, pictures and styles, e.g. on a GPU and on the CPU), compared line by line.

    tools/captions_agree.py GPU.jsonl CPU.jsonl [--require-identical]

Prints how many captions have identical tokens and the largest log-probability difference
over those; with --require-identical, exits 1 unless every caption is identical (and every
log-probability finite).
"""
import argparse
import json
import math
import sys


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--require-identical", action="store_true",
                    help="exit 1 unless every caption's tokens are identical")
    args = ap.parse_args()
    a, b = rows(args.a), rows(args.b)
    if len(a) != len(b) or any((x["image"], x["style"]) != (y["image"], y["style"]) for x, y in zip(a, b)):
        sys.exit(f"{args.a} and {args.b} do not hold the same pictures and styles "
                 f"({len(a)} and {len(b)} captions)")
    same = [(x, y) for x, y in zip(a, b) if x["token_ids"] == y["token_ids"]]
    # serde_json writes a NaN or infinite log-probability as null.
    bad = sum(1 for x in a + b for p in x["logprobs"] if p is None or not math.isfinite(p))
    worst = max((abs(p - q) for x, y in same for p, q in zip(x["logprobs"], y["logprobs"])
                 if p is not None and q is not None), default=0.0)
    print(f"{len(same)} of {len(a)} captions identical; their log-probabilities within {worst:.2e}"
          + (f"; {bad} log-probabilities not finite" if bad else ""))
    for x, y in zip(a, b):
        if x["token_ids"] != y["token_ids"]:
            print(f"  picture {x['image']}, {x['style']}: {x['caption']!r} / {y['caption']!r}")
    if args.require_identical and (len(same) != len(a) or bad):
        sys.exit(1)


if __name__ == "__main__":
    main()
