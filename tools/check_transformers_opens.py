#!/usr/bin/env python3
"""Checks that transformers opens a captioner directory written by stylecap and computes the
same logits stylecap wrote next to it (`stylecap_logits.safetensors`, see the usage below).

    cargo run --release --example export_for_transformers -- OUT_DIR
    python3 tools/check_transformers_opens.py OUT_DIR
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import VisionEncoderDecoderModel

path = sys.argv[1]
model = VisionEncoderDecoderModel.from_pretrained(path).eval()
ref = load_file(f"{path}/stylecap_logits.safetensors")
with torch.no_grad():
    logits = model(pixel_values=ref["pixel_values"], decoder_input_ids=ref["decoder_input_ids"].long()).logits
diff = (logits - ref["logits"]).abs().max().item()
print(f"transformers opened {path}; max |logits - stylecap logits| = {diff:.2e}")
sys.exit(0 if diff <= 1e-4 else 1)
