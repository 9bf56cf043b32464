#!/usr/bin/env python3
"""Checks that transformers opens a captioner directory written by stylecap and computes the
same logits stylecap wrote next to it (`stylecap_logits.safetensors`, see the usage below);
and that PEFT opens the LoRA adapter folder stylecap wrote in `OUT_DIR/lora` over it, with
the logits of base + adapters.

    cargo run --release --example export_for_transformers -- OUT_DIR
    python3 tools/check_transformers_opens.py OUT_DIR
"""
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import VisionEncoderDecoderModel



def max_diff(model, folder):
    ref = load_file(f"{folder}/stylecap_logits.safetensors")
    with torch.no_grad():
        logits = model(pixel_values=ref["pixel_values"],
                       decoder_input_ids=ref["decoder_input_ids"].long()).logits
    return (logits - ref["logits"]).abs().max().item()


path = sys.argv[1]
model = VisionEncoderDecoderModel.from_pretrained(path).eval()
diff = max_diff(model, path)
print(f"transformers opened {path}; max |logits - stylecap logits| = {diff:.2e}")
ok = diff <= 1e-4
if os.path.isdir(f"{path}/lora"):
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(model, f"{path}/lora").eval()
    diff = max_diff(adapted, f"{path}/lora")
    print(f"PEFT opened {path}/lora; max |logits - stylecap logits| = {diff:.2e}")
    ok = ok and diff <= 1e-4
sys.exit(0 if ok else 1)
