#!/usr/bin/env bash
# One-shot GPU check on a machine with an NVIDIA GPU (docs/testing.md, "On a machine with a
# GPU"; figures in docs/performance.md, "GPU backends"). It takes the `vulkan` build of
# stylecap ($BIN) and its GPU test binary ($TESTS): by default those of
# `cargo build --release --features vulkan --target-dir target/gpu` and
# `cargo test --release --features vulkan --target-dir target/gpu --test gpu --no-run`, or,
# on a lent machine, stripped xz copies carried in .gl/ beside the Vulkan loader packages.
# In order of importance, each step under its own time limit and all within $BUDGET seconds:
#   1. tests/gpu.rs: greedy and beam-search tokens GPU = CPU, sampled log-probabilities =
#      teacher forcing, an RL update's loss and gradients GPU = CPU, the fused ops' device
#      forms = the CPU's;
#   2. the demo's aligned captioner (packed by tools/gpu_pack.sh): greedy captions in every
#      style on the GPU and the CPU, token for token; the small benchmark on the GPU against
#      PyTorch CUDA (FLOPs counted by PyTorch);
#   3. the real-scale preset's training step (ViT-B/16 + GPT-2 124M, random weights) against
#      PyTorch CUDA, then its generation;
#   4. a second process's start-up with the autotune cache the first wrote;
#   5. mixed-precision training in f16 (`--mixed-precision f16`: the small training and
#      alignment steps, the real-scale training step) against PyTorch CUDA under autocast;
#   6. generation in f16 (the fixture's greedy caption, both presets against PyTorch CUDA in
#      f16);
#   7. beam search (4 beams) at the small preset against PyTorch CUDA;
# and a summary with each ratio and the share of the chip's FP32 peak ($PEAK FLOP/s; the
# mixed-precision rows also against its dense f16 peak, $PEAK16).
set -u
# Each step's output goes to a file in $WORK; $OUT gets them as steps.tgz and summary.txt.
OUT=${OUT:-/tmp/gpu_check}
WORK=$(mktemp -d)
DEV=${DEV:-vulkan}
PEAK=${PEAK:-67e12}
PEAK16=${PEAK16:-989e12}
mkdir -p "$OUT"
start=$(date +%s)
if ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
unpack() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2" && chmod +x "$2"; }
if [ -z "${BIN:-}" ] && [ -f .gl/stylecap.xz ]; then unpack .gl/stylecap.xz /tmp/stylecap && BIN=/tmp/stylecap; fi
if [ -z "${TESTS:-}" ] && [ -f .gl/gpu-tests.xz ]; then unpack .gl/gpu-tests.xz /tmp/gpu-tests && TESTS=/tmp/gpu-tests; fi
BIN=${BIN:-target/gpu/release/stylecap}
TESTS=${TESTS:-$(ls -t target/gpu/release/deps/gpu-* 2>/dev/null | grep -v '\.d$' | head -1)}
nvidia-smi -L
export PYTHONUNBUFFERED=1
# Each step runs only if its limit fits in what is left of BUDGET seconds.
BUDGET=${BUDGET:-500}
run() {
  local limit=$1; shift
  local now=$(( $(date +%s) - start ))
  if [ $(( now + limit )) -gt "$BUDGET" ]; then echo "- [$now s] skipped (budget): $*"; return 0; fi
  echo "+ [$now s] $*"; timeout "$limit" "$@"; echo "exit $?"
}
S=$BIN
T="python3 tools/bench_torch.py --device cuda --count-flops --json"
export STYLECAP_TEST_DEVICE=$DEV; run 120 "$TESTS" --ignored --nocapture --test-threads 1 2>&1 | tee "$WORK/tests.txt"
if ! grep -q 'test result: ok' "$WORK/tests.txt" && [ "$DEV" != wgpu ]; then
  # Vulkan's SPIR-V path failed: try wgpu's own choice of compiler and benchmark that instead.
  DEV=wgpu
  export STYLECAP_TEST_DEVICE=$DEV; run 100 "$TESTS" --ignored --nocapture --test-threads 1 2>&1 | tee "$WORK/tests_wgpu.txt"
fi
echo "device: $DEV"
run 30 $S --device $DEV caption --model tests/fixtures/vit_gpt2 --image tests/fixtures/vit_gpt2/image.png --greedy --max-new-tokens 16 --json | tee "$WORK/caption_gpu.txt"
run 30 $S --device cpu caption --model tests/fixtures/vit_gpt2 --image tests/fixtures/vit_gpt2/image.png --greedy --max-new-tokens 16 --json | tee "$WORK/caption_cpu.txt"
# The demo's aligned captioner (tools/gpu_pack.sh packs it with its judge): greedy captions of
# 20 test pictures in every style on the GPU and on the CPU, compared token for token.
if [ -f .gl/demo.tar.xz ]; then
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' .gl/demo.tar.xz "$WORK/demo"
  run 60 $S --device $DEV eval --model "$WORK/demo/align/model" --judge "$WORK/demo/judge" --images 20 --greedy --captions "$WORK/demo_$DEV.jsonl" 2>&1 | tail -4
  run 40 $S --device cpu eval --model "$WORK/demo/align/model" --judge "$WORK/demo/judge" --images 20 --greedy --captions "$WORK/demo_cpu.jsonl" 2>&1 | tail -4
  if [ -f "$WORK/demo_$DEV.jsonl" ] && [ -f "$WORK/demo_cpu.jsonl" ]; then
    python3 tools/captions_agree.py "$WORK/demo_$DEV.jsonl" "$WORK/demo_cpu.jsonl" > "$WORK/demo_agree.txt" 2>&1 || true
  else
    echo "failed: an evaluation wrote no captions (its output is above)" > "$WORK/demo_agree.txt"
  fi
  cat "$WORK/demo_agree.txt"
fi
run 150 $S --device $DEV bench --runs 10 --warmup 3 --data-parallel 1 --json 2>&1 | tee "$WORK/small_gpu.txt"
run 90 $T 2>/dev/null | tee "$WORK/small_torch.txt"
run 150 $S --device $DEV bench --preset vit-b16-gpt2 --only train --runs 5 --warmup 3 --data-parallel 1 --json 2>&1 | tee "$WORK/scale_train_gpu.txt"
run 90 $T --preset vit-b16-gpt2 --only train --only generate --runs 5 --warmup 2 2>/dev/null | tee "$WORK/scale_torch.txt"
run 90 $S --device $DEV bench --preset vit-b16-gpt2 --only generate --runs 3 --warmup 2 --json 2>&1 | tee "$WORK/scale_gen_gpu.txt"
# A second process of the same training step: its start-up (kernel compilation, autotuning)
# with the autotune cache the first one wrote (`persistence`).
run 60 /usr/bin/time -f "second process: %e s" $S --device $DEV bench --only train --runs 1 --warmup 0 --data-parallel 1 --json 2>&1 | tee "$WORK/small_gpu_again.txt"
# Mixed-precision training: the products in f16, weights and optimizer in f32.
run 120 $S --device $DEV bench --mixed-precision f16 --only train --only align --runs 5 --warmup 3 --data-parallel 1 --json 2>&1 | tee "$WORK/small_mp_f16.txt"
run 60 $T --mixed-precision f16 --only train --only align 2>/dev/null | tee "$WORK/small_torch_mp_f16.txt"
run 120 $S --device $DEV bench --preset vit-b16-gpt2 --mixed-precision f16 --only train --runs 5 --warmup 3 --data-parallel 1 --json 2>&1 | tee "$WORK/scale_train_mp_f16.txt"
run 60 $T --preset vit-b16-gpt2 --mixed-precision f16 --only train --runs 5 --warmup 2 2>/dev/null | tee "$WORK/scale_torch_mp_f16.txt"
# Half precision (generation only): the fixture's greedy caption, then the two presets.
run 30 $S --device $DEV --dtype f16 caption --model tests/fixtures/vit_gpt2 --image tests/fixtures/vit_gpt2/image.png --greedy --max-new-tokens 16 --json | tee "$WORK/caption_gpu_f16.txt"
run 90 $S --device $DEV --dtype f16 bench --only generate --runs 10 --warmup 3 --json 2>&1 | tee "$WORK/small_gen_f16.txt"
run 60 python3 tools/bench_torch.py --device cuda --json --dtype f16 --only generate 2>/dev/null | tee "$WORK/small_torch_f16.txt"
run 90 $S --device $DEV --dtype f16 bench --preset vit-b16-gpt2 --only generate --runs 3 --warmup 2 --json 2>&1 | tee "$WORK/scale_gen_f16.txt"
run 60 python3 tools/bench_torch.py --device cuda --json --dtype f16 --preset vit-b16-gpt2 --only generate --runs 5 --warmup 2 2>/dev/null | tee "$WORK/scale_torch_f16.txt"
# Beam search (4 beams): each step's best continuations picked on the device.
run 45 $S --device $DEV bench --only generate --beams 4 --runs 5 --warmup 2 --json 2>&1 | tee "$WORK/small_beams_gpu.txt"
run 45 python3 tools/bench_torch.py --device cuda --json --only generate --beams 4 2>/dev/null | tee "$WORK/small_torch_beams.txt"
run 45 $S --device $DEV bench --runs 5 --warmup 3 --data-parallel 2 --only train --json 2>&1 | tee "$WORK/small_gpu_dp2.txt"
echo "[$(( $(date +%s) - start )) s] done"
python3 - "$WORK" "$PEAK" "$PEAK16" <<'PY' | tee "$OUT/summary.txt"
import json, pathlib, sys
out, peak, peak16 = pathlib.Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
def last_json(name):
    try:
        lines = [l for l in (out / name).read_text().splitlines() if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except FileNotFoundError:
        return None
agree = out / "demo_agree.txt"
said = agree.read_text().splitlines() if agree.exists() else ["not run"]
print("demo captioner, GPU against CPU: " + (said[0] if said else "the comparison printed nothing"))
for preset, ours, torch in [("small", "small_gpu.txt", "small_torch.txt"),
                            ("vit-b16-gpt2", "scale_train_gpu.txt", "scale_torch.txt"),
                            ("vit-b16-gpt2", "scale_gen_gpu.txt", "scale_torch.txt"),
                            ("small mixed f16", "small_mp_f16.txt", "small_torch_mp_f16.txt"),
                            ("vit-b16-gpt2 mixed f16", "scale_train_mp_f16.txt", "scale_torch_mp_f16.txt"),
                            ("small f16", "small_gen_f16.txt", "small_torch_f16.txt"),
                            ("vit-b16-gpt2 f16", "scale_gen_f16.txt", "scale_torch_f16.txt"),
                            ("small 4 beams", "small_beams_gpu.txt", "small_torch_beams.txt")]:
    s, t = last_json(ours), last_json(torch)
    if not s or not t:
        print(f"{preset}: {ours} or {torch} missing")
        continue
    for key, flop in [("train_step_s", "train_step_flop"), ("generate_s", "generate_flop"), ("rl_step_s", None)]:
        if s.get(key) and t.get(key):
            line = f"{preset} {key}: stylecap {s[key]:.4f} s, PyTorch CUDA {t[key]:.4f} s, ratio {s[key] / t[key]:.2f}x"
            if flop and t.get(flop):
                line += f"; {t[flop] / 1e9:.1f} GFLOP: {100 * t[flop] / s[key] / peak:.2f}% vs {100 * t[flop] / t[key] / peak:.2f}% of FP32 peak"
                if "mixed" in preset:
                    line += f", {100 * t[flop] / s[key] / peak16:.2f}% vs {100 * t[flop] / t[key] / peak16:.2f}% of f16 peak"
            print(line)
    if preset == "small" and s.get("rl_step_s"):
        for k in ("rl_sample_s", "rl_reference_s", "rl_update_s"):
            print(f"  {k}: stylecap {s.get(k, 0):.4f} s, PyTorch {t.get(k, 0):.4f} s")
PY
tar czf "$OUT/steps.tgz" -C "$WORK" .
