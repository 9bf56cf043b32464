#!/usr/bin/env python3
"""Writes a `data synth` folder's manifests again without their scene graphs.

    tools/strip_scenes.py SYNTH_FOLDER

For each split (train, val, test, compositional) writes SYNTH_FOLDER/plain-SPLIT.jsonl with
only {"id", "image", "captions"} per line: a caption dataset like any user's, whose hidden
ground truth (the scene graphs in SPLIT.jsonl) can still judge what a captioner trained on it
writes (`stylecap eval --data SYNTH_FOLDER`).
"""
import json
import sys
from pathlib import Path

folder = Path(sys.argv[1])
for split in ["train", "val", "test", "compositional"]:
    src = folder / f"{split}.jsonl"
    if not src.exists():
        continue
    with open(src) as f, open(folder / f"plain-{split}.jsonl", "w") as out:
        for line in f:
            r = json.loads(line)
            out.write(json.dumps({k: r[k] for k in ("id", "image", "captions")}) + "\n")
    print(f"{folder / f'plain-{split}.jsonl'}")
