#!/usr/bin/env bash
# The real-scale benchmark (ViT-B/16 224 px + GPT-2 124M), stylecap against PyTorch on this
# machine with the same thread count, one after the other:
#   - `stylecap bench --preset vit-b16-gpt2` and `tools/bench_torch.py --preset vit-b16-gpt2`
#     (training step, greedy generation, alignment step, peak RSS after training);
#   - the whole `stylecap caption` process against a PyTorch script that imports transformers,
#     loads the same folder and generates (start-up included), medians of RUNS.
# The captioner folder (random weights, GPT-2's tokenizer) is written by
# tools/make_scale_model.py to DIR unless it exists.
#   tools/bench_scale.sh [THREADS] [RUNS] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
runs=${2:-3}
dir=${3:-${TMPDIR:-/tmp}/stylecap-vit-b16-gpt2}
cargo build --release --quiet
[ -f "$dir/model.safetensors" ] || python3 tools/make_scale_model.py "$dir"
image="$dir/picture.png"
[ -f "$image" ] || python3 -c "
from PIL import Image; import random; random.seed(0)
Image.frombytes('RGB', (320, 240), bytes(random.randrange(256) for _ in range(320 * 240 * 3))).save('$image')"
cat > "$dir/caption_torch.py" <<'PY'
import sys, torch
from PIL import Image
from transformers import PreTrainedTokenizerFast, VisionEncoderDecoderModel, ViTImageProcessor
torch.set_num_threads(int(sys.argv[3]))
model = VisionEncoderDecoderModel.from_pretrained(sys.argv[1]).eval()
proc = ViTImageProcessor.from_pretrained(sys.argv[1])
tok = PreTrainedTokenizerFast(tokenizer_file=sys.argv[1] + "/tokenizer.json")
pixels = proc(images=Image.open(sys.argv[2]).convert("RGB"), return_tensors="pt").pixel_values
with torch.inference_mode():
    out = model.generate(pixel_values=pixels, max_new_tokens=32, min_new_tokens=32, do_sample=False, num_beams=1)
print(tok.decode(out[0, 1:]))
PY
wall() { # median wall time of RUNS runs of a command
  local times=()
  for _ in $(seq "$runs"); do
    local t0 t1
    t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc)")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'
}
ours=$(./target/release/stylecap --threads "$threads" bench --preset vit-b16-gpt2 --runs "$runs" --json)
theirs=$(python3 tools/bench_torch.py --preset vit-b16-gpt2 --threads "$threads" --runs "$runs" --json 2>/dev/null)
caption_ours=$(wall ./target/release/stylecap --threads "$threads" caption --model "$dir" --image "$image")
caption_theirs=$(wall python3 "$dir/caption_torch.py" "$dir" "$image" "$threads")
python3 - "$ours" "$theirs" "$caption_ours" "$caption_theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
a["caption_s"], b["caption_s"] = float(sys.argv[3]), float(sys.argv[4])
print(f"{'':44s}{'stylecap':>10s}{'PyTorch':>10s}{'ratio':>8s}")
for key, label in [("train_step_s", "training step (8 + 8 rows x 32 tokens), s"),
                   ("peak_rss_after_train_mib", "peak RSS after training, MiB"),
                   ("generate_s", "greedy 32 tokens, 8 pictures, s"),
                   ("rl_step_s", "alignment step (8 x 4 samples), s"),
                   ("caption_s", "caption, whole process, s"),
                   ("rss_before_model_mib", "RSS before the model, MiB")]:
    print(f"{label:44s}{a[key]:10.3f}{b[key]:10.3f}{a[key] / b[key]:7.2f}x")
print(f"threads {a['threads']}, medians of {a['runs']} runs; reference: {b['framework']}")
PY
