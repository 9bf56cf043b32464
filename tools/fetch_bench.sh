#!/usr/bin/env bash
# Benchmark of `stylecap data fetch` against img2dataset (if installed: pip install
# img2dataset) on the same URL list, served from loopback: N URLs cycling over a folder of
# JPEGs, 64 parallel downloads, resize to 224 px (center crop). Not a test.
# Usage: tools/fetch_bench.sh IMAGE_DIR [N]
set -euo pipefail
cd "$(dirname "$0")/.."
images=$(realpath "$1") n=${2:-2000}
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
(cd "$images" && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
mapfile -t files < <(ls "$images" | grep -i '\.jpe\?g$' | sort)
{
  echo -e "url\tcaption"
  for i in $(seq 0 $((n - 1))); do
    f=${files[$((i % ${#files[@]}))]}
    echo -e "http://127.0.0.1:$port/$f?copy=$i\tpicture number $i"
  done
} > "$work/list.tsv"
cargo build --release --quiet
echo "== stylecap data fetch ($n URLs over ${#files[@]} images, 64 parallel, 224 px)"
start=$(date +%s.%N)
target/release/stylecap data fetch --quiet --input "$work/list.tsv" --out "$work/stylecap" \
  --allow-private --parallel 64 --size 224 --resize center-crop --near-duplicate-bits -1 >/dev/null
end=$(date +%s.%N)
echo "stylecap: $(echo "$n / ($end - $start)" | bc -l | xargs printf '%.1f') records/s ($(echo "$end - $start" | bc) s)"
if command -v img2dataset >/dev/null 2>&1; then
  echo "== img2dataset (2 processes x 32 threads, 224 px, center crop)"
  start=$(date +%s.%N)
  img2dataset --url_list "$work/list.tsv" --input_format tsv --url_col url --caption_col caption \
    --output_folder "$work/i2d" --output_format files --processes_count 2 --thread_count 32 \
    --image_size 224 --resize_mode center_crop --disable_all_reencoding False \
    --enable_wandb False >/dev/null 2>&1
  end=$(date +%s.%N)
  ok=$(find "$work/i2d" -name '*.jpg' | wc -l)
  echo "img2dataset: $(echo "$n / ($end - $start)" | bc -l | xargs printf '%.1f') records/s ($(echo "$end - $start" | bc) s, $ok images written)"
else
  echo "img2dataset not installed; pip install img2dataset to compare"
fi
