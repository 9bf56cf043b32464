#!/usr/bin/env python3
"""Build the tiny Hugging Face fixtures that stylecap's parity tests load.

Developers run this (CI does not): `python3 tools/make_fixtures.py`.
Needs: torch, transformers (5.x), peft, tokenizers, safetensors, numpy, pillow.

Each fixture directory holds what transformers' `save_pretrained` writes
(`config.json`, `model.safetensors`, and where relevant `tokenizer.json`,
`preprocessor_config.json`) plus `reference.safetensors`: the inputs fed to
transformers and the outputs it produced, which the Rust tests must reproduce.
"""
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoImageProcessor,
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTModel,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
torch.set_grad_enabled(False)

SENTENCES = [
    "a red car parked beside a tall house",
    "two birds fly over the dark tower at night",
    "a small boat floats on the grey sea under the moon",
    "the yellow sun shines above a green tree",
    "a black cat sits near the lamp post in the rain",
    "snow falls on the mountain and the purple flower",
] * 4


def fresh(name):
    path = os.path.join(ROOT, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def test_image(size=40):
    """A deterministic non-square-friendly RGB pattern, saved as PNG."""
    y, x = np.mgrid[0:size, 0:size + 8]
    r = (x * 7 + y * 3) % 256
    g = (x * x + y * 5) % 256
    b = ((x // 5 + y // 7) % 2) * 200 + 30
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8), "RGB")


def write_preprocessor(path, size, mean, std, crop=None, resample=2):
    cfg = {
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "rescale_factor": 1 / 255,
        "image_mean": mean,
        "image_std": std,
        "resample": resample,
    }
    if crop is None:
        cfg["size"] = {"height": size, "width": size}
        cfg["image_processor_type"] = "ViTImageProcessor"
    else:
        cfg["size"] = {"shortest_edge": size}
        cfg["do_center_crop"] = True
        cfg["crop_size"] = {"height": crop, "width": crop}
        cfg["image_processor_type"] = "CLIPImageProcessor"
    with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def reference_pixels(path, img):
    """What transformers' PIL image processor makes of `img`, as configured in `path`."""
    processor = AutoImageProcessor.from_pretrained(path, backend="pil")
    return processor(img, return_tensors="pt").pixel_values


def make_tokenizer(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer)
    tok.save(os.path.join(path, "tokenizer.json"))
    return tok


def vit_config(hidden=32):
    return ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=hidden,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=2 * hidden,
        initializer_range=0.2,
    )


def gpt2_config(vocab, cross):
    return GPT2Config(
        vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=4,
        add_cross_attention=cross, initializer_range=0.2,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )


def make_vit():
    torch.manual_seed(1)
    path = fresh("vit")
    model = ViTModel(vit_config()).eval()
    model.save_pretrained(path)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    write_preprocessor(path, 32, mean, std)
    img = test_image()
    img.save(os.path.join(path, "image.png"))
    pixels = reference_pixels(path, img)
    random_pixels = torch.randn(2, 3, 32, 32)
    out = model(pixel_values=random_pixels)
    save_file(
        {
            "image_pixels": pixels.contiguous(),
            "pixel_values": random_pixels.contiguous(),
            "last_hidden_state": out.last_hidden_state.contiguous(),
            "pooler_output": out.pooler_output.contiguous(),
        },
        os.path.join(path, "reference.safetensors"),
    )


def make_clip():
    torch.manual_seed(2)
    path = fresh("clip_vision")
    cfg = CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, projection_dim=16,
        initializer_factor=5.0,
    )
    model = CLIPVisionModel(cfg).eval()
    model.save_pretrained(path)
    mean = [0.48145466, 0.4578275, 0.40821073]
    std = [0.26862954, 0.26130258, 0.27577711]
    write_preprocessor(path, 36, mean, std, crop=32, resample=3)
    img = test_image()
    img.save(os.path.join(path, "image.png"))
    pixels = reference_pixels(path, img)
    random_pixels = torch.randn(2, 3, 32, 32)
    out = model(pixel_values=random_pixels)
    save_file(
        {
            "image_pixels": pixels.contiguous(),
            "pixel_values": random_pixels.contiguous(),
            "last_hidden_state": out.last_hidden_state.contiguous(),
            "pooler_output": out.pooler_output.contiguous(),
        },
        os.path.join(path, "reference.safetensors"),
    )


def gpt2_inputs(vocab):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, vocab, (2, 10), generator=g)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0  # right padding on the second row
    ids[1, 7:] = 0
    return ids, mask


def greedy(model, prompt, steps, **kw):
    out = model.generate(
        prompt, max_new_tokens=steps, do_sample=False, num_beams=1,
        attention_mask=torch.ones_like(prompt), **kw,
    )
    return out[:, prompt.shape[1]:]


def make_gpt2(cross):
    torch.manual_seed(4 if cross else 5)
    name = "gpt2_cross" if cross else "gpt2"
    path = fresh(name)
    vocab = 96
    model = GPT2LMHeadModel(gpt2_config(vocab, cross)).eval()
    model.save_pretrained(path)
    ids, mask = gpt2_inputs(vocab)
    tensors = {"input_ids": ids.int(), "attention_mask": mask.int()}
    kw = {}
    if cross:
        enc = torch.randn(2, 17, 32)
        tensors["encoder_hidden_states"] = enc
        kw["encoder_hidden_states"] = enc
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, **kw)
    tensors["logits"] = out.logits.contiguous()
    tensors["last_hidden_state"] = out.hidden_states[-1].contiguous()
    prompt = ids[:, :3]
    tensors["prompt"] = prompt.int().contiguous()
    tensors["generated"] = greedy(model, prompt, 12, **kw).int().contiguous()
    save_file(tensors, os.path.join(path, "reference.safetensors"))


def make_vit_gpt2():
    """A VisionEncoderDecoderModel whose encoder (24 wide) and decoder (32 wide)
    differ, so transformers adds `enc_to_dec_proj`."""
    torch.manual_seed(6)
    path = fresh("vit_gpt2")
    tok = make_tokenizer(path)
    vocab = tok.get_vocab_size()
    eos = tok.token_to_id("<|endoftext|>")
    enc = ViTModel(vit_config(hidden=24))
    dec_cfg = gpt2_config(vocab, True)
    dec_cfg.bos_token_id = dec_cfg.eos_token_id = dec_cfg.pad_token_id = eos
    dec = GPT2LMHeadModel(dec_cfg)
    model = VisionEncoderDecoderModel(encoder=enc, decoder=dec).eval()
    model.config.decoder_start_token_id = eos
    model.config.pad_token_id = eos
    model.config.eos_token_id = eos
    model.generation_config.decoder_start_token_id = eos
    model.generation_config.pad_token_id = eos
    model.generation_config.eos_token_id = eos
    model.save_pretrained(path)
    mean, std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    write_preprocessor(path, 32, mean, std)
    img = test_image()
    img.save(os.path.join(path, "image.png"))
    pixels = reference_pixels(path, img)
    random_pixels = torch.randn(1, 3, 32, 32)
    pixel_values = torch.cat([pixels, random_pixels])
    dec_ids = torch.tensor([[eos] + tok.encode(SENTENCES[0]).ids[:7],
                            [eos] + tok.encode(SENTENCES[1]).ids[:7]])
    out = model(pixel_values=pixel_values, decoder_input_ids=dec_ids)
    gen = model.generate(pixel_values=pixel_values, max_new_tokens=16, do_sample=False, num_beams=1)
    beams = model.generate(pixel_values=pixel_values[:1], max_new_tokens=8, do_sample=False,
                           num_beams=3, num_return_sequences=1, length_penalty=1.0,
                           early_stopping=True)
    logits = out.logits
    top2 = logits.topk(2, dim=-1).values
    print("vit_gpt2 smallest top-2 logit margin:", float((top2[..., 0] - top2[..., 1]).min()))
    print("vit_gpt2 greedy:", gen.tolist())
    save_file(
        {
            "image_pixels": pixels.contiguous(),
            "pixel_values": pixel_values.contiguous(),
            "decoder_input_ids": dec_ids.int(),
            "encoder_last_hidden_state": out.encoder_last_hidden_state.contiguous(),
            "logits": logits.contiguous(),
            "generated": gen[:, 1:].int().contiguous(),
            "beam_generated": beams[:, 1:].int().contiguous(),
        },
        os.path.join(path, "reference.safetensors"),
    )
    PreTrainedTokenizerFast(tokenizer_object=tok)  # check transformers accepts the tokenizer


def make_bert():
    """A tiny BertModel with a WordPiece tokenizer ([CLS] ... [SEP]), as MiniLM ships."""
    torch.manual_seed(6)
    path = fresh("bert")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(SENTENCES, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    tok.save(os.path.join(path, "tokenizer.json"))
    vocab = tok.get_vocab_size()
    config = BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, initializer_range=0.2, pad_token_id=0,
    )
    model = BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(path)
    texts = ["A red car parked beside a tall house!", "snow falls"]
    enc = [tok.encode(t).ids for t in texts]
    width = max(len(e) for e in enc)
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    out = model(input_ids=ids, attention_mask=mask)
    save_file(
        {
            "input_ids": ids.int(),
            "attention_mask": mask.int(),
            "last_hidden_state": out.last_hidden_state.contiguous(),
        },
        os.path.join(path, "reference.safetensors"),
    )
    with open(os.path.join(path, "texts.json"), "w") as f:
        json.dump(texts, f)


def bytes_to_unicode():
    """GPT-2's byte-to-character table (byte -> character, in GPT-2's order), which byte-level
    BPE vocabularies (GPT-2's, CLIP's) are spelt in."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_tokenizer(path, max_length):
    """A tiny CLIP tokenizer built offline: every byte alone and word-final (`</w>`), merges
    learnt from SENTENCES by counting pairs, and the start/end tokens last as in OpenAI's."""
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    words = {}
    for s in SENTENCES:
        for w in s.split():
            symbols = tuple(w[:-1]) + (w[-1] + "</w>",)
            words[symbols] = words.get(symbols, 0) + 1
    merges = []
    for _ in range(40):
        pairs = {}
        for symbols, n in words.items():
            for p in zip(symbols, symbols[1:]):
                pairs[p] = pairs.get(p, 0) + n
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(best)
        vocab.setdefault(best[0] + best[1], len(vocab))
        merged = {}
        for symbols, n in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    tok.save_pretrained(path)
    for extra in ["tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"]:
        if extra != "tokenizer_config.json" and os.path.exists(os.path.join(path, extra)):
            os.remove(os.path.join(path, extra))
    return tok


def make_clip_model():
    """A CLIPModel (text and vision towers of different widths, both projected to 16) with
    its tokenizer and image processor; the reference holds transformers' features of two
    pictures and some captions, and the CLIPScore / RefCLIPScore they give."""
    torch.manual_seed(7)
    path = fresh("clip_model")
    max_length = 16
    tok = clip_tokenizer(path, max_length)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    bos = tok.convert_tokens_to_ids("<|startoftext|>")
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=max_length, bos_token_id=bos,
            eos_token_id=eos, pad_token_id=eos, initializer_factor=3.0,
        ),
        vision_config=dict(
            image_size=32, patch_size=8, hidden_size=24, intermediate_size=48,
            num_hidden_layers=2, num_attention_heads=4, initializer_factor=3.0,
        ),
        projection_dim=16,
        initializer_factor=3.0,
    )
    model = CLIPModel(cfg).eval()
    model.save_pretrained(path)
    # OpenAI's folders give `size` as one number: CLIP's processor reads it as the short side.
    cfg = {
        "do_resize": True, "size": 36, "resample": 3, "do_center_crop": True, "crop_size": 32,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "CLIPImageProcessor",
    }
    with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    img = test_image()
    img.save(os.path.join(path, "image.png"))
    other = img.transpose(Image.Transpose.ROTATE_90).resize((50, 44))
    other.save(os.path.join(path, "image2.png"))
    processor = AutoImageProcessor.from_pretrained(path, backend="pil")
    pixels = processor([img, other], return_tensors="pt").pixel_values
    captions = [
        "a red car parked beside a tall house",
        "Two BIRDS fly over the dark tower, at night!",
        "the yellow sun shines above a green tree and a small boat floats on the grey sea",
        "snow",
        "a black cat's 2 lamps",
    ]
    references = [
        ["a red car near a house", "a tall house"],
        ["birds above a tower"],
        [],
        ["snow falls on the mountain", "a purple flower", "the moon"],
        ["a cat in the rain"],
    ]
    enc = tok(captions, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    image_embeds = model.get_image_features(pixel_values=pixels).pooler_output
    text_embeds = model.get_text_features(
        input_ids=enc.input_ids, attention_mask=enc.attention_mask).pooler_output
    flat = [r for rs in references for r in rs]
    ref_enc = tok(flat, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ref_embeds = model.get_text_features(
        input_ids=ref_enc.input_ids, attention_mask=ref_enc.attention_mask).pooler_output
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)
    cos = unit(text_embeds) @ unit(image_embeds).T  # [captions, images]
    clip_s = 2.5 * cos.clamp(min=0)
    # RefCLIPScore (Hessel et al. 2021): the harmonic mean of CLIP-S and the caption's best
    # reference cosine (at least 0); caption i is scored against picture i % 2.
    # clip_score holds CLIP-S of every caption with each picture.
    ref_cos = unit(text_embeds) @ unit(ref_embeds).T
    refclip, at = [], 0
    for i, rs in enumerate(references):
        c = float(clip_s[i, i % 2])
        if rs:
            r = max(float(ref_cos[i, at:at + len(rs)].max()), 0.0)
            refclip.append(2 * c * r / (c + r) if c + r > 0 else 0.0)
        else:
            refclip.append(float("nan"))  # undefined without references
        at += len(rs)
    print("clip_model input ids:", enc.input_ids.tolist())
    print("clip_model cosines:", cos.tolist())
    print("clip_model RefCLIP-S:", refclip)
    save_file(
        {
            "image_pixels": pixels.contiguous(),
            "image_embeds": image_embeds.contiguous(),
            "input_ids": enc.input_ids.int().contiguous(),
            "attention_mask": enc.attention_mask.int().contiguous(),
            "text_embeds": text_embeds.contiguous(),
            "clip_score": clip_s.contiguous(),
            "ref_clip_score": torch.tensor(refclip),
        },
        os.path.join(path, "reference.safetensors"),
    )
    with open(os.path.join(path, "texts.json"), "w") as f:
        json.dump({"captions": captions, "references": references}, f, indent=1)
    for name in os.listdir(path):
        os.chmod(os.path.join(path, name), 0o644)


# The decoder projections stylecap's LoRA targets: self- and cross-attention, and the MLP.
LORA_TARGETS = r".*decoder\.transformer\.h\.\d+\.(attn|crossattention|mlp)\.(c_attn|q_attn|c_proj|c_fc)"


def make_vit_gpt2_lora():
    """A PEFT LoRA adapter (rank 4, alpha 8) on the `vit_gpt2` fixture's decoder, with random
    A and B (so the adapter changes the logits), saved as PEFT saves it; the reference holds
    the logits of base + adapter and of the merged model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(7)
    base_path = os.path.join(ROOT, "vit_gpt2")
    path = fresh("vit_gpt2_lora")
    model = VisionEncoderDecoderModel.from_pretrained(base_path).eval()
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=LORA_TARGETS, fan_in_fan_out=True,
        lora_dropout=0.0, bias="none", init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config).eval()
    peft_model.save_pretrained(path)
    with open(os.path.join(path, "adapter_config.json")) as f:
        saved = json.load(f)
    # The base is the fixture next to this one, wherever the repository is checked out.
    saved["base_model_name_or_path"] = "../vit_gpt2"
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(saved, f, indent=2)
    from safetensors.torch import load_file
    inputs = load_file(os.path.join(base_path, "reference.safetensors"))
    pixel_values, dec_ids = inputs["pixel_values"], inputs["decoder_input_ids"].long()
    logits = peft_model(pixel_values=pixel_values, decoder_input_ids=dec_ids).logits
    merged = peft_model.merge_and_unload()
    merged_logits = merged(pixel_values=pixel_values, decoder_input_ids=dec_ids).logits
    print("vit_gpt2_lora max |adapter effect|:", float((logits - inputs["logits"]).abs().max()))
    save_file({"logits": logits.contiguous(), "merged_logits": merged_logits.contiguous()},
              os.path.join(path, "reference.safetensors"))
    os.remove(os.path.join(path, "README.md"))  # PEFT's model card template
    for name in os.listdir(path):
        os.chmod(os.path.join(path, name), 0o644)


MAKERS = {
    "vit": lambda: make_vit(),
    "clip": lambda: make_clip(),
    "gpt2": lambda: make_gpt2(cross=False),
    "gpt2_cross": lambda: make_gpt2(cross=True),
    "vit_gpt2": lambda: make_vit_gpt2(),
    "vit_gpt2_lora": lambda: make_vit_gpt2_lora(),
    "bert": lambda: make_bert(),
    "clip_model": lambda: make_clip_model(),
}

if __name__ == "__main__":
    import sys

    # With names, only those fixtures are rebuilt (e.g. `make_fixtures.py bert`).
    for name in sys.argv[1:] or list(MAKERS):
        MAKERS[name]()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ROOT) for f in fs)
    print(f"fixtures written to {os.path.normpath(ROOT)}: {total / 1e6:.2f} MB")
