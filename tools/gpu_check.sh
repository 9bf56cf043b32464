#!/usr/bin/env bash
# One-shot GPU check (run on a lent GPU machine with the wgpu build carried as BIN):
# the fixture caption on the GPU must equal the CPU's tokens; then the benchmark on the GPU
# (stylecap wgpu vs PyTorch CUDA) and on the machine's CPU cores, all in one run.
set -u
if [ -z "${BIN:-}" ] && [ -f .gl/stylecap.gz ]; then gunzip -c .gl/stylecap.gz > /tmp/stylecap && chmod +x /tmp/stylecap; fi
BIN=${BIN:-/tmp/stylecap}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
nvidia-smi -L
m=tests/fixtures/vit_gpt2
run() { echo "+ $*"; timeout 200 "$@"; echo "exit $?"; }
run "$BIN" --device cpu caption --model $m --image $m/image.png --greedy --max-new-tokens 16 --json | tee "$OUT/cpu_caption.txt"
run "$BIN" --device wgpu caption --model $m --image $m/image.png --greedy --max-new-tokens 16 --json | tee "$OUT/gpu_caption.txt"
run "$BIN" --device wgpu bench --runs 10 --json | tee "$OUT/stylecap_wgpu.txt"
run python3 tools/bench_torch.py --device cuda --runs 10 --json 2>/dev/null | tee "$OUT/torch_cuda.txt"
n=$(nproc)
run "$BIN" --threads "$n" bench --runs 10 --json | tee "$OUT/stylecap_cpu.txt"
run python3 tools/bench_torch.py --threads "$n" --runs 10 --json 2>/dev/null | tee "$OUT/torch_cpu.txt"
