#!/usr/bin/env python3
"""PyTorch reference for `stylecap bench`: the same captioner (ViT 64x64 patch 8 d=192 4 layers
+ GPT-2 4 layers d=256 4 heads vocab 8192 with cross-attention) built with transformers,
timed the same way: median of --runs training steps (forward + backward + AdamW with the
gradient norm clipped to 1, batch 16 x 64 tokens: `stylecap train`'s step), of greedy
generation of 32 tokens (batch 16, KV cache), and of an alignment step (sample 4 captions of 32
tokens per image for 16 images, score them under a frozen reference, RLOO advantages with the
KL in the reward, one policy-gradient update with clipped AdamW: `stylecap align`'s step with
a synthetic reward and no supervised anchor, as `stylecap bench` times it), after --warmup runs.

    python3 tools/bench_torch.py --threads 2 [--preset vit-b16-gpt2] [--json]

`--preset vit-b16-gpt2` builds ViT-B/16 at 224 px + GPT-2 124M with cross-attention and times
8 pictures + 8 style rows (blank pictures) of 32 tokens per training step, and 8 pictures
for generation and the alignment step, 3 runs after 1 warm-up.
"""
import argparse
import copy
import json
import resource
import statistics
import time

import torch
from transformers.modeling_outputs import BaseModelOutput
from transformers import GPT2Config, GPT2LMHeadModel, VisionEncoderDecoderModel, ViTConfig, ViTModel


# Model and workload per preset, as `stylecap bench --preset` (src/bench.rs).
PRESETS = {
    "small": dict(image=64, patch=8, vit_d=192, vit_layers=4, vit_heads=4, vocab=8192, positions=128,
                  gpt_d=256, gpt_layers=4, gpt_heads=4, start=0,
                  runs=10, warmup=2, batch=16, style_rows=0, tokens=64, new_tokens=32, samples=4),
    # ViT-B/16 at 224 px + GPT-2 124M with cross-attention.
    "vit-b16-gpt2": dict(image=224, patch=16, vit_d=768, vit_layers=12, vit_heads=12, vocab=50257,
                         positions=1024, gpt_d=768, gpt_layers=12, gpt_heads=12, start=50256,
                         runs=3, warmup=1, batch=8, style_rows=8, tokens=32, new_tokens=32, samples=4),
}


def build(p):
    vit = ViTConfig(image_size=p["image"], patch_size=p["patch"], hidden_size=p["vit_d"],
                    num_hidden_layers=p["vit_layers"], num_attention_heads=p["vit_heads"],
                    intermediate_size=4 * p["vit_d"],
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    s = p["start"]
    gpt2 = GPT2Config(vocab_size=p["vocab"], n_positions=p["positions"], n_embd=p["gpt_d"],
                      n_layer=p["gpt_layers"], n_head=p["gpt_heads"],
                      add_cross_attention=True, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=s, eos_token_id=s, pad_token_id=s)
    model = VisionEncoderDecoderModel(encoder=ViTModel(vit, add_pooling_layer=False),
                                      decoder=GPT2LMHeadModel(gpt2))
    model.config.decoder_start_token_id = s
    model.config.pad_token_id = s
    return model


def median(xs):
    """The median of the timed runs; 0 for a part not timed (`--only`)."""
    return statistics.median(xs) if xs else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    for flag in ("runs", "warmup", "batch", "tokens", "new-tokens", "samples"):
        ap.add_argument(f"--{flag}", type=int, help="default: the preset's")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--only", action="append", choices=["train", "align", "generate"],
                    help="time only these parts (repeatable; default: all)")
    ap.add_argument("--lora-rank", type=int, default=0,
                    help="alignment trains PEFT LoRA adapters of this rank on the decoder's attention "
                         "projections (alpha = 2 x rank), the reference being the base without them")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="the training step recomputes each block in its backward pass "
                         "(transformers' gradient_checkpointing_enable)")
    ap.add_argument("--count-flops", action="store_true",
                    help="also count one training step's and one generation's floating-point "
                         "operations (torch.utils.flop_counter, matrix products and attention), "
                         "outside the timed runs, for a share of the device's peak")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32",
                    help="weights and activations of the generation (as `stylecap --dtype`); "
                         "f16 and bf16 need --only generate")
    ap.add_argument("--mixed-precision", choices=["f32", "f16", "bf16"], default="f32",
                    help="the training and alignment steps under torch.autocast in this type, f16 "
                         "with a GradScaler (as `stylecap bench --mixed-precision`)")
    ap.add_argument("--beams", type=int, default=1, choices=range(1, 17), metavar="1..16",
                    help="time generation by beam search with this many beams (as `stylecap bench "
                         "--beams`; length penalty 1) instead of greedy decoding")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.dtype != "f32" and a.only != ["generate"]:
        ap.error("--dtype f16/bf16 times generation only: add --only generate")
    dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
    dtype = dtypes[a.dtype]
    p = PRESETS[a.preset]
    for key in ("runs", "warmup", "batch", "tokens", "new_tokens", "samples"):
        if getattr(a, key) is None:
            setattr(a, key, p[key])
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    mixed = a.mixed_precision != "f32"
    autocast = lambda: torch.autocast(dev.type, dtype=dtypes[a.mixed_precision], enabled=mixed)
    scaler = torch.amp.GradScaler(dev.type, enabled=a.mixed_precision == "f16")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = build(p).to(dev)
    b, side, vocab, start = a.batch, p["image"], p["vocab"], p["start"]
    pixels = torch.randn(b, 3, side, side, device=dev)
    # The style rows: a blank (white) picture each, as stylecap shows style texts.
    rows = b + p["style_rows"]
    train_pixels = torch.cat([pixels, torch.ones(p["style_rows"], 3, side, side, device=dev)])
    ids = torch.tensor([[start] + [((i * 131 + j * 17) % (vocab - 1) + 1) for j in range(a.tokens - 1)]
                        for i in range(rows)], device=dev)
    targets = torch.cat([ids[:, 1:], torch.zeros(rows, 1, dtype=torch.long, device=dev)], 1)
    wants = lambda part: not a.only or part in a.only
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    train = []
    for i in range(a.warmup + a.runs if wants("train") else 0):
        t = time.perf_counter()
        with autocast():
            logits = model(pixel_values=train_pixels, decoder_input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        sync()
        if i >= a.warmup:
            train.append(time.perf_counter() - t)
    peak_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # Alignment step: as `stylecap bench` (RLOO with the KL in the reward, a synthetic reward).
    if a.lora_rank and wants("align"):
        from peft import LoraConfig, get_peft_model

        del opt
        targets = r"decoder\.transformer\.h\.\d+\.(attn|crossattention)\.(c_attn|q_attn|c_proj)"
        model = get_peft_model(model, LoraConfig(r=a.lora_rank, lora_alpha=2 * a.lora_rank, lora_dropout=0.0,
                                                 target_modules=targets, fan_in_fan_out=True))
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4, weight_decay=0.01)
        reference = None
    elif wants("align"):
        # The reference is a frozen copy of the decoder side; the encoder, frozen in both, is
        # shared.
        encoder, model.encoder = model.encoder, None
        reference = copy.deepcopy(model).eval()
        model.encoder = reference.encoder = encoder
        for q in reference.parameters():
            q.requires_grad_(False)
    # As `stylecap align` at its defaults: the encoder is frozen (the policy's is the
    # reference's), so the pictures are encoded once per step.
    for q in model.encoder.parameters():
        q.requires_grad_(False)

    def reference_logits(**kw):
        if reference is not None:
            return reference(**kw).logits
        with model.disable_adapter():
            return model(**kw).logits

    rl, phases = [], []
    k = a.samples
    for i in range(a.warmup + a.runs if wants("align") else 0):
        t = time.perf_counter()
        model.eval()
        with torch.no_grad(), autocast():
            enc = model.encoder(pixel_values=pixels).last_hidden_state
            out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=enc), do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                 max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, num_return_sequences=k,
                                 output_scores=True, return_dict_in_generate=True)
            seqs = out.sequences[:, 1:]
            old_lp = torch.stack(out.scores, 1).float().log_softmax(-1).gather(2, seqs.unsqueeze(2)).squeeze(2)
            sync()
            sampled = time.perf_counter() - t
            inputs = out.sequences[:, :-1]
            enc_rows = enc.repeat_interleave(k, 0)
            ref_lp = reference_logits(encoder_outputs=BaseModelOutput(last_hidden_state=enc_rows),
                                      decoder_input_ids=inputs).float().log_softmax(-1)
            ref_lp = ref_lp.gather(2, seqs.unsqueeze(2)).squeeze(2)
            sync()
            scored = time.perf_counter() - t
            reward = (seqs < vocab // 2).float().mean(1) - 0.05 * (old_lp - ref_lp).sum(1)
            r = reward.view(-1, k)
            adv = (r - (r.sum(1, keepdim=True) - r) / (k - 1)).reshape(-1, 1)
        model.train()
        with autocast():
            logits = model(encoder_outputs=BaseModelOutput(last_hidden_state=enc_rows),
                           decoder_input_ids=inputs).logits
        logp = logits.float().log_softmax(-1).gather(2, seqs.unsqueeze(2)).squeeze(2)
        loss = -(logp * adv).sum() / logp.numel()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], 1.0)
        scaler.step(opt)
        scaler.update()
        sync()
        if i >= a.warmup:
            rl.append(time.perf_counter() - t)
            phases.append((sampled, scored - sampled, rl[-1] - scored))

    model.eval()
    model.to(dtype)
    pixels = pixels.to(dtype)
    gen = []
    with torch.inference_mode():
        for i in range(a.warmup + a.runs if wants("generate") else 0):
            t = time.perf_counter()
            out = model.generate(pixel_values=pixels, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                 do_sample=False, num_beams=a.beams, length_penalty=1.0)
            sync()
            assert out.shape[1] == a.new_tokens + 1
            if i >= a.warmup:
                gen.append(time.perf_counter() - t)
    flops = {}
    if a.count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        model.train()
        with FlopCounterMode(display=False) as fc:
            logits = model(pixel_values=train_pixels, decoder_input_ids=ids).logits
            torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).backward()
        flops["train_step_flop"] = fc.get_total_flops()
        model.zero_grad(set_to_none=True)
        model.eval()
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            model.generate(pixel_values=pixels, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                           do_sample=False, num_beams=a.beams, length_penalty=1.0)
        flops["generate_flop"] = fc.get_total_flops()
    res = {"framework": f"PyTorch {torch.__version__} + transformers ({a.device})", "dtype": a.dtype, "mixed_precision": a.mixed_precision, "preset": a.preset,
           "threads": a.threads, "runs": a.runs,
           "train_step_s": median(train), "generate_s": median(gen), "beams": a.beams, "rl_step_s": median(rl),
           "rl_sample_s": median([p[0] for p in phases]), "rl_reference_s": median([p[1] for p in phases]),
           "rl_update_s": median([p[2] for p in phases]), "peak_rss_after_train_mib": peak_train, "rss_before_model_mib": rss_before,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **flops}
    if a.json:
        print(json.dumps(res))
    else:
        print(f"{res['framework']}, {a.threads} threads, median of {a.runs} runs")
        print(f"  train step (fwd+bwd+AdamW), {b} pictures + {p['style_rows']} style rows x {a.tokens} tokens: "
              f"{res['train_step_s']:.3f} s")
        decoding = "greedy generation" if a.beams == 1 else f"beam search ({a.beams} beams)"
        print(f"  {decoding}, batch {b} x {a.new_tokens} tokens, KV cache: {res['generate_s']:.3f} s")
        print(f"  RL step ({b} images x {k} samples, reference scoring, update): {res['rl_step_s']:.3f} s")
        if rl:
            print(f"    of which sampling {res['rl_sample_s']:.3f} s, reference {res['rl_reference_s']:.3f} s, "
                  f"update {res['rl_update_s']:.3f} s")
        print(f"  peak RSS after the training steps: {peak_train:.0f} MiB ({rss_before:.0f} MiB before the model)")
        print(f"  peak RSS of the whole run: {res['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
