#!/usr/bin/env bash
# The GPU checklist, in one command that ends inside its time budget:
#   1. the device tests (tests/test_device.py: every network, loss, method and trainer on the device,
#      float32 and float16, against the CPU);
#   2. speed (benchmarks/gpu_speed.py): generator throughput at 256 px (paper256 widths), float32 and float16,
#      batch 1/16/64, beside the official code when --official-repo is given; encoder, PTI and Clone
#      seconds per image on the embedded emoji64;
#   3. with the time that is left, emoji64 training at wider networks (resuming from --resume-from when
#      given), then the run's checkpoint packed into parts that fit the transfer limits
#      (scripts/pack_run.py), plus its sample grid and stats; or, with --init SNAPSHOT, the run that snapshot
#      belongs to continued at its own network settings (batch 64), its newest snapshot handed back as a
#      float16 model folder (snapshot/) that `ganinv train --init` continues from; --widen-to BASE,MAX
#      continues it at channel_base BASE and channel_max MAX instead (`ganinv train --widen`: the CPU run's
#      learning kept, the new channels fresh; the handed-back snapshot must stay under 16 MB, e.g. 4096,192).
# Everything lands in --out (default $OUT, else ./gpu_out), in at most 8 files (what a lent machine hands
# back): log.txt, gpu_speed.json, samples.png, packed/pack.json and up to 4 packed/checkpoint.partNN (with
# --init: snapshot/card.json and snapshot/model.safetensors instead of packed/). Runs from
# the repository root with the package on PYTHONPATH (no install needed).
#
#   bash scripts/gpu_check.sh --device cuda --budget 530 --data .gpu/emoji --official-repo .gpu/stylegan3
#   bash scripts/gpu_check.sh --device cuda --budget 530 --data .gpu/emoji --official-repo .gpu/stylegan3 \
#       --init checkpoints/emoji64-run [--widen-to 4096,192]
#   bash scripts/gpu_check.sh --device cpu --dry-run --data DATASET --out /tmp/gpu_dry   # the suite's check
# --steps tests,speed,train (the default) picks the steps to run.
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda; budget=530; out="${OUT:-./gpu_out}"; data=.gpu/emoji; official=""; resume_from=""; init=""; widen_to=""; steps=tests,speed,train; dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2;;
    --budget) budget="$2"; shift 2;;
    --out) out="$2"; shift 2;;
    --data) data="$2"; shift 2;;
    --official-repo) official="$2"; shift 2;;
    --resume-from) resume_from="$2"; shift 2;;
    --init) init="$2"; shift 2;;
    --widen-to) widen_to="$2"; shift 2;;
    --steps) steps="$2"; shift 2;;
    --dry-run) dry=1; shift;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2;;
  esac
done
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
log() { echo "[gpu_check $(( $(date +%s) - start ))s] $*" | tee -a "$out/log.txt"; }
rm -f "$out/log.txt"
want() { case ",$steps," in *",$1,"*) return 0;; *) return 1;; esac; }
if [ -n "$init" ] && [ -n "$resume_from" ]; then echo "gpu_check.sh: --init and --resume-from exclude each other" >&2; exit 2; fi
if [ -n "$widen_to" ] && { [ -z "$init" ] || ! [[ "$widen_to" =~ ^[0-9]+,[0-9]+$ ]]; }; then
  echo "gpu_check.sh: --widen-to takes BASE,MAX (two integers) and needs --init" >&2; exit 2
fi
if [ -n "$init" ] && [ ! -f "$init/card.json" ]; then echo "gpu_check.sh: --init $init: no card.json there" >&2; exit 2; fi

log "device=$device budget=${budget}s dry_run=$dry out=$out"
{ "$PY" -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } 2>&1 | tee -a "$out/log.txt"

# 1. Device tests.
if [ "$dry" = 1 ]; then tests_budget=120; selection=(-k "generator_and_discriminator or each_loss"); else tests_budget=150; selection=(); fi
if want tests; then
log "device tests"
GANINV_TEST_DEVICES="$device" timeout "$tests_budget" "$PY" -m pytest -q -p no:cacheprovider tests/test_device.py "${selection[@]}" > "$out/step.log" 2>&1
echo "tests exit=$?" >> "$out/step.log"; cat "$out/step.log" >> "$out/log.txt"; tail -n 2 "$out/step.log"
fi

# 2. Speed.
if want speed; then
log "speed"
if [ "$dry" = 1 ]; then
  bench=(--batches 1 --precisions fp32 --repeats 1 --min-seconds 0 --methods encoder --num-images 1)
else
  bench=(--batches 1,16,64 --repeats 5 --min-seconds 0.5 --methods encoder,pti,clone --num-images 5)
fi
# The official plugins build in a child process during the inversion rows, for at most 150 s (then their
# reference path is timed); each row is saved as it is measured.
[ -n "$official" ] && bench+=(--official-repo "$official" --official-build-seconds 150)
timeout $(( $(left) > 420 ? 240 : $(left) - 25 )) "$PY" benchmarks/gpu_speed.py --device "$device" "${bench[@]}" \
  --json "$out/gpu_speed.json" > "$out/step.log" 2>&1
echo "speed exit=$?" >> "$out/step.log"; cat "$out/step.log" >> "$out/log.txt"; tail -n 2 "$out/step.log"
fi

# 3. Training with what is left (SIGTERM makes the trainer save its checkpoint and stop). With a short budget
# the speed step above takes it all and there is no training. channel_max 192 keeps the packed checkpoint
# under the transfer limit (at 256 it was 77 MB even reduced).
run="${TMPDIR:-/tmp}/ganinv_gpu_run"
rm -rf "$run"  # the script's own scratch run: a warm machine's earlier call must not be resumed by accident
if [ -n "$resume_from" ]; then
  log "unpacking $resume_from"
  "$PY" scripts/pack_run.py unpack "$resume_from" "$run" || exit 1
fi
if [ -n "$init" ]; then
  # The snapshot's own network settings, R1 weight, learning rate and augmentation, from its card.
  read -r -a widths < <("$PY" -c '
import json, sys
s = json.load(open(sys.argv[1] + "/card.json"))["training_settings"]
flags = {"--z-dim": s["z_dim"], "--w-dim": s["w_dim"], "--mapping-layers": s["mapping_layers"],
         "--channel-base": s["channel_base"], "--channel-max": s["channel_max"], "--lr": s["g_learning_rate"],
         "--augment": s["augment"] or "none"}
if s.get("r1_gamma") is not None:
    flags["--gamma"] = s["r1_gamma"]
print(" ".join(f"{k} {v}" for k, v in flags.items()))' "$init") || { log "cannot read $init/card.json"; exit 1; }
  widths+=(--init "$init" --snapshot-networks)
  if [ -n "$widen_to" ]; then widths+=(--channel-base "${widen_to%,*}" --channel-max "${widen_to#*,}" --widen); fi
  if [ "$dry" = 1 ]; then widths+=(--batch 8 --max-steps 3); else widths+=(--batch 64 --snapshot-kimg 50); fi
elif [ "$dry" = 1 ]; then
  widths=(--batch 8 --z-dim 16 --w-dim 16 --mapping-layers 2 --channel-base 128 --channel-max 16 --max-steps 3)
else
  widths=(--batch 64 --z-dim 256 --w-dim 256 --mapping-layers 4 --channel-base 8192 --channel-max 192 --snapshot-kimg 50)
fi
train_seconds=$(( $(left) - 45 ))
if ! want train; then
  log "training not asked for"
elif [ "$train_seconds" -gt 20 ]; then
  log "training for up to ${train_seconds}s"
  timeout --signal=TERM --kill-after=30 "$train_seconds" "$PY" -m ganinv train --data "$data" --outdir "$run" \
    --device "$device" --quiet "${widths[@]}" > "$out/step.log" 2>&1
  echo "train exit=$?" >> "$out/step.log"; cat "$out/step.log" >> "$out/log.txt"; tail -n 2 "$out/step.log"
  if [ -f "$run/checkpoint.pt" ]; then
    { echo "stats (last 5):"; tail -n 5 "$run/stats.jsonl"; } >> "$out/log.txt" 2>&1
    if [ -n "$init" ]; then
      newest=$(ls -d "$run"/snapshots/kimg* 2>/dev/null | sort | tail -n 1)
      [ -n "$newest" ] && "$PY" -m ganinv convert "$newest" "$out/snapshot" --fp16 >> "$out/log.txt" 2>&1 \
        || log "no snapshot to hand back"
    else
      "$PY" scripts/pack_run.py pack "$run" "$out/packed" --part-mb 15 --max-total-mb 52 >> "$out/log.txt" 2>&1 \
        || log "packing failed"
    fi
    [ -f "$run/samples_latest.png" ] && cp "$run/samples_latest.png" "$out/samples.png"
  fi
else
  log "no time left for training"
fi
rm -f "$out/step.log"
log "done"
