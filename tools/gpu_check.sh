#!/usr/bin/env bash
# One-shot GPU check, run on a lent GPU machine with the wgpu build carried in .gl/ (see the
# README's Speed section): the fixture caption on the GPU must equal the CPU's tokens; then
# the benchmark (training step, RL step, greedy generation) on the GPU, stylecap wgpu vs
# PyTorch CUDA, and on the machine's CPU cores at 2 and all threads, each against PyTorch.
set -u
if [ -z "${BIN:-}" ] && [ -f .gl/stylecap.gz ]; then gunzip -c .gl/stylecap.gz > /tmp/stylecap && chmod +x /tmp/stylecap; fi
BIN=${BIN:-/tmp/stylecap}
OUT=${OUT:-/tmp/gpu_check}
RUNS=${RUNS:-10}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
nvidia-smi -L
nproc
m=tests/fixtures/vit_gpt2
run() { echo "+ $*"; timeout 200 "$@"; echo "exit $?"; }
run "$BIN" --device cpu caption --model $m --image $m/image.png --greedy --max-new-tokens 16 --json | tee "$OUT/cpu_caption.txt"
run "$BIN" --device wgpu caption --model $m --image $m/image.png --greedy --max-new-tokens 16 --json | tee "$OUT/gpu_caption.txt"
run "$BIN" --device wgpu bench --runs "$RUNS" --json | tee "$OUT/stylecap_wgpu.txt"
run python3 tools/bench_torch.py --device cuda --runs "$RUNS" --json 2>/dev/null | tee "$OUT/torch_cuda.txt"
CPU_RUNS=${CPU_RUNS:-5}
for n in 2 $(nproc); do
  run "$BIN" --threads "$n" bench --runs "$CPU_RUNS" --json | tee -a "$OUT/stylecap_cpu.txt"
  run python3 tools/bench_torch.py --threads "$n" --runs "$CPU_RUNS" --json 2>/dev/null | tee -a "$OUT/torch_cpu.txt"
done
