#!/usr/bin/env bash
# Regenerate the JSON behind docs/benchmarks.md's figures, and the figures (docs/img/*.png).
#
# Run from the repository root on an otherwise idle machine (timings are wall clock), with the bench
# extra installed:  pip install -e ".[bench]"
# About 13 minutes on a 2-core CPU: each command's share is noted beside it. The commands are those of
# the tables the figures sit beside (docs/benchmarks.md), restricted where noted to keep the total short.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA=docs/data
IMG=docs/img
mkdir -p "$DATA" "$IMG"

# Time vs PSNR per method on emoji64's three held-out benchmark images (0, 207, 414): optimize (W+,
# 300 steps), PTI, Clone stopping at 35 dB or 60 s. ~3 min.
$PY benchmarks/inversion.py --model emoji64 --num-heldout 3 --threads 2 --variants optimize,pti,clone \
    --set clone.max_seconds=60 --json "$DATA/inversion_emoji64.json" --plot "$IMG/inversion_emoji64.png"

# Time vs PSNR of Clone's defaults and the paper's settings on fashion32 (the time-vs-PSNR table's
# fashion32 rows). ~3.5 min.
$PY benchmarks/clone_sweep.py --model fashion32 --images 0,999,1999 --config '{}' --config '{"preset": "paper"}' \
    --json "$DATA/clone_sweep_fashion32.json" --plot "$IMG/clone_sweep_fashion32.png"

# Distortion-editability scatter on fashion32 (the editability table's command). ~4 min.
$PY benchmarks/editability.py --model fashion32 --num-heldout 6 --threads 1 \
    --json "$DATA/editability_fashion32.json" --plot "$IMG/editability_fashion32.png"

# Generator throughput, ganinv against the official implementation's code path. ~2.5 min.
$PY benchmarks/generator_speed.py --threads 2 --compare \
    --json "$DATA/generator_speed.json" --plot "$IMG/generator_speed.png"

# Every figure again from the saved JSON (what to run after editing benchmarks/plots.py).
$PY benchmarks/plots.py "$DATA" --outdir "$IMG"
