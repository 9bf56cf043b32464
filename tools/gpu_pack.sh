#!/usr/bin/env bash
# Packs what tools/gpu_check.sh needs on a lent GPU machine that has a GPU driver but no Rust
# toolchain and no network: stripped xz copies of the `vulkan` build's binary and of its GPU
# test binary, the Vulkan loader's Debian package (libvulkan1) and the demo's aligned
# captioner with its judge, into .gl/ (ignored by git; the device tool carries it with
# `carry: [".gl"]`).
#   tools/gpu_pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --features vulkan --target-dir target/gpu
cargo test --release --features vulkan --target-dir target/gpu --test gpu --no-run
tests=$(ls -t target/gpu/release/deps/gpu-* | grep -v '\.d$' | head -1)
rm -rf .gl && mkdir .gl
tmp=$(mktemp)
strip -o "$tmp" target/gpu/release/stylecap && xz -T0 -6 -c "$tmp" > .gl/stylecap.xz
strip -o "$tmp" "$tests" && xz -T0 -6 -c "$tmp" > .gl/gpu-tests.xz
rm -f "$tmp"
(cd .gl && apt-get download libvulkan1)
# The demo's aligned captioner and its judge, whose GPU captions gpu_check.sh compares with
# the CPU's (`stylecap demo`: about 7.5 minutes on 2 cores; an interrupted one continues).
target/gpu/release/stylecap demo --out target/gpu/demo --quiet
tar cJf .gl/demo.tar.xz -C target/gpu/demo align/model judge
du -sh .gl/*
