#!/usr/bin/env python3
"""Write a captioner folder at real scale with random weights: ViT-B/16 at 224 px (86M
parameters) + GPT-2 124M with cross-attention, in transformers' VisionEncoderDecoder layout,
with GPT-2's real tokenizer. For start-up, memory and speed measurements at the scale users
work at (docs/performance.md); nothing here is committed.

    python3 tools/make_scale_model.py OUT [--ranks PATH/r50k_base.tiktoken]

GPT-2's byte-pair ranks are read from the `tiktoken-rs` crate's source (r50k_base: 50,000
merges, vocabulary 50,257), found in the cargo registry unless `--ranks` names the file
(`cargo fetch` a project depending on tiktoken-rs to get it). The tokenizer is checked on
"A cat sits on a mat." -> 32, 3797, 10718, 319, 257, 2603, 13.

Needs: torch, transformers (5.x), tokenizers, safetensors.
"""
import argparse
import base64
import glob
import json
import os

import sys

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import GPT2Config, GPT2LMHeadModel, VisionEncoderDecoderModel, ViTConfig, ViTModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import bytes_to_unicode  # noqa: E402

EOS = 50256
CHECK = ("A cat sits on a mat.", [32, 3797, 10718, 319, 257, 2603, 13])


def find_ranks():
    pattern = os.path.expanduser("~/.cargo/registry/src/*/tiktoken-rs-*/assets/r50k_base.tiktoken")
    found = sorted(glob.glob(pattern))
    if not found:
        raise SystemExit(f"no r50k_base.tiktoken under {pattern}: fetch the tiktoken-rs crate or pass --ranks")
    return found[-1]


def merge_parts(ranks, token, max_rank):
    """The two pieces byte-pair encoding joins last to make `token` (ranks below `max_rank`)."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[1]):
                best = (i, r)
        if best is None:
            break
        i = best[0]
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    return parts


def gpt2_tokenizer(ranks_path):
    ranks = {}
    with open(ranks_path, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    enc = bytes_to_unicode()
    text = lambda b: "".join(enc[x] for x in b)
    vocab = {text(b): r for b, r in ranks.items()}
    vocab["<|endoftext|>"] = EOS
    merges = []
    for b, r in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(b) == 1:
            continue
        parts = merge_parts(ranks, b, r)
        assert len(parts) == 2, (b, parts)
        merges.append((text(parts[0]), text(parts[1])))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    ids = tok.encode(CHECK[0]).ids
    assert ids == CHECK[1], f"tokenizer mismatch: {ids}"
    assert tok.get_vocab_size() == 50257
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--ranks", help="r50k_base.tiktoken (default: from the cargo registry)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tok = gpt2_tokenizer(args.ranks or find_ranks())
    tok.save(os.path.join(args.out, "tokenizer.json"))

    torch.manual_seed(args.seed)
    enc = ViTModel(ViTConfig(image_size=224, patch_size=16))
    dec_cfg = GPT2Config(add_cross_attention=True, is_decoder=True, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS)
    dec = GPT2LMHeadModel(dec_cfg)
    model = VisionEncoderDecoderModel(encoder=enc, decoder=dec).eval()
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = cfg.pad_token_id = cfg.eos_token_id = EOS
    model.save_pretrained(args.out)
    pre = {
        "do_resize": True, "size": {"height": 224, "width": 224}, "resample": 2,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "image_processor_type": "ViTImageProcessor",
    }
    with open(os.path.join(args.out, "preprocessor_config.json"), "w") as f:
        json.dump(pre, f, indent=2)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: {n / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
