#!/usr/bin/env bash
# Rerun the emoji64 tables of docs/benchmarks.md that depend on its generator, after a new emoji64 ships
# (scripts/rebuild_model.py): inversion, editability, encoder, direction finders and sample quality, with
# the commands those sections give. Run from the repository root on an otherwise idle machine (the
# tables report wall-clock seconds), with the bench extra installed:  pip install -e ".[bench]"
#
#   DATA=data/emoji64 bash benchmarks/emoji64_tables.sh [OUT]      # OUT defaults to out/emoji64_tables
#
# DATA is the folder `ganinv data emoji` built. Each table's JSON goes to OUT; the inversion figure, the
# finders' and the quality JSON go to docs/ directly (docs/benchmarks.md draws from them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-out/emoji64_tables}
DATA=${DATA:?set DATA to the dataset folder of ganinv data emoji}
mkdir -p "$OUT"

# Inversion on emoji64: 3 held-out emoji and 3 photos; optimize W+, PTI, Clone (35 dB or 60 s) and Clone
# with the paper's settings.
$PY benchmarks/inversion.py --model emoji64 --num-heldout 3 --photos --threads 2 \
    --variants optimize,pti,clone,clone-paper --set clone.max_seconds=60 --set clone-paper.max_seconds=60 \
    --json "$OUT/inversion.json" --plot docs/img/inversion_emoji64.png

# Editability: 6 held-out "People & Body" emoji, the skin-tone and gender InterFaceGAN directions.
$PY benchmarks/editability.py --model emoji64 --heldout-where "group=People & Body" \
    --directions interfacegan_skin_tone_1-2_vs_4-5,interfacegan_gender_man_vs_woman --num-heldout 6 \
    --threads 2 --methods optimize-w,optimize,encoder,hybrid,pti,clone --set clone.max_seconds=60 \
    --json "$OUT/editability.json"

# Encoder: 100 held-out images, optimization on the first 20.
$PY benchmarks/encoder.py --model emoji64 --num-images 100 --num-optimize 20 --threads 2 --json "$OUT/encoder.json"

# Direction finders, target vs other attributes. The trained finders' directions (voynov_all,
# steerability_all, found by the rebuild with these settings on these weights) are measured, not retrained.
$PY benchmarks/finders.py --model emoji64 --threads 2 --reuse src/ganinv/assets/emoji64/directions \
    --json docs/data/finders_emoji64.json

# Sample quality in the shape embedding (the card's shape_quality).
$PY benchmarks/quality.py --model emoji64 --data "$DATA" --json docs/data/quality_emoji64.json
