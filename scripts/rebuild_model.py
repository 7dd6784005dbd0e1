"""Rebuild an embedded model folder from a newer training run: every part that depends on the generator.

An embedded model (src/ganinv/assets/NAME) is a generator plus parts made for *that* generator: its
encoder, its editing directions and the sample-quality numbers on its card. A newer snapshot of the
generator makes all of them stale (tests/test_assets.py refuses an encoder or a direction made for other
weights). This script rebuilds the folder from a run, taking every setting from the folder it replaces:

1. `export-model`: weights, card, samples.png, nearest_neighbors.png, real/held-out images, the
   classifier copied from the old folder (it depends on the dataset only) and the classifier Fréchet
   numbers; name, description, default flag and the numbers of stored images as on the old card.
2. the shape embedding copied from the old folder (dataset only), and `benchmarks/quality.py
   --write-card` for the card's `shape_quality` in it.
3. the encoder: `ganinv train-encoder` started from the old encoder (`--init-encoder`, all offsets
   active from the first step), with the loss weights and batch sizes of the old encoder's card, for
   `--encoder-minutes`; then `ganinv export-encoder`. Its run folder (`--workdir`, default
   runs/rebuild-NAME) is kept: rerunning the script continues the encoder's training where it stopped.
4. every direction of the old folder found again on the new generator with the settings its JSON records
   (method, layers, number, attribute, sample counts, steps, seed, name), except those `--set
   FINDER.KEY=VALUE` replaces (InterFaceGAN boundaries from 4,000 labelled samples follow the samples
   more than the attribute on emoji64; `benchmarks/interfacegan_stability.py` measures it).

The new folder is assembled beside `--outdir` (OUTDIR.partial) and moved into place only when every step
has succeeded, so a failed or interrupted rebuild leaves the old folder as it was. `--run` must not be
training meanwhile (its checkpoint.pt rolls): stop it, or copy its checkpoint.pt, stats.jsonl and
config.json to a folder of their own and rebuild from that. The old folder may be
the output (`--from M --outdir M --overwrite`). At the end the old and new numbers are printed side by side.

    python scripts/rebuild_model.py --run runs/emoji64 --data data/emoji64 --from src/ganinv/assets/emoji64 \\
        --outdir src/ganinv/assets/emoji64 --overwrite --encoder-minutes 45 --threads 2 \\
        --set interfacegan.num_samples=16000

`--directions-only --from OLD --outdir MODEL` only redoes step 4 into an existing model folder.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ganinv.editing import (FINDERS, classifier_heads, classify_prior_samples, find_directions,
                            find_interfacegan_direction, labels_from_logits, parse_attribute)
from ganinv.models.registry import load_model
from ganinv.train.export import export_model

REPO = Path(__file__).resolve().parent.parent

# Encoder card config key -> train-encoder flag (the settings the CLI exposes).
ENCODER_FLAGS = {
    "batch_real": "--batch-real", "batch_generated": "--batch-generated", "iterations": "--iterations",
    "learning_rate": "--lr", "mse_weight": "--mse-weight", "laplacian_weight": "--laplacian-weight",
    "dfeat_weight": "--dfeat-weight", "similarity_weight": "--similarity-weight",
    "delta_weight": "--delta-weight", "adversarial_weight": "--adversarial-weight", "w_weight": "--w-weight",
    "image_adversarial_weight": "--image-adversarial-weight", "seed": "--seed",
}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: cannot read ({e})") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a JSON object")
    return data


def _run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        raise SystemExit(f"failed (exit {done.returncode}): {' '.join(command)}")


def _ganinv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ganinv", *args]


def _count(npz: Path) -> int | None:
    if not npz.is_file():
        return None
    with np.load(npz, allow_pickle=False) as data:
        return int(data["images"].shape[0])


def export_generator(run: Path, data: Path, old: Path, staging: Path, old_card: dict, args) -> None:
    kwargs = {}
    if (n := _count(old / "real_images.npz")) is not None:
        kwargs["num_real"] = n
    if (n := _count(old / "heldout.npz")) is not None:
        kwargs["max_heldout"] = n
    if args.num_quality_samples is not None:
        kwargs["num_quality_samples"] = args.num_quality_samples
    print(f"export-model: {run} -> {staging}", flush=True)
    export_model(run, data, old / "classifier", staging, name=old_card["name"],
                 description=args.description if args.description is not None else old_card.get("description", ""),
                 default=bool(old_card.get("default", False)),
                 notes=args.notes if args.notes is not None else old_card.get("notes", ""), **kwargs)


def shape_quality(data: Path, old: Path, staging: Path, args) -> None:
    if not (old / "embedding").is_dir():
        print("no embedding/ in the old folder: shape_quality skipped", flush=True)
        return
    shutil.copytree(old / "embedding", staging / "embedding")
    spec = importlib.util.spec_from_file_location("ganinv_quality_benchmark", REPO / "benchmarks" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    argv = ["--model", str(staging), "--data", str(data), "--write-card", "--threads", str(args.threads)]
    if args.quality_num_eval is not None:
        argv += ["--num-eval", str(args.quality_num_eval)]
    print("$ python benchmarks/quality.py", " ".join(argv), flush=True)
    quality.main(argv)


def rebuild_encoder(data: Path, old: Path, staging: Path, workdir: Path, args) -> None:
    if not (old / "encoder").is_dir():
        print("no encoder/ in the old folder: encoder skipped", flush=True)
        return
    config = _read_json(old / "encoder" / "card.json").get("training", {}).get("config", {})
    flags = []
    for key, flag in ENCODER_FLAGS.items():
        if config.get(key) is not None:
            flags += [flag, str(config[key])]
    run = workdir / "encoder-run"
    _run(_ganinv("train-encoder", "--model", str(staging), "--data", str(data), "--outdir", str(run),
                 "--init-encoder", str(old / "encoder"), "--progressive-start", "0", "--progressive-every", "1",
                 "--max-minutes", str(args.encoder_minutes), "--snapshot-every", str(args.encoder_snapshot_every),
                 "--threads", str(args.threads), "--quiet", *flags,
                 *(["--max-steps", str(args.encoder_steps)] if args.encoder_steps is not None else [])))
    _run(_ganinv("export-encoder", str(run), "--model-dir", str(staging), "--overwrite", "--quiet"))


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """--set FINDER.KEY=VALUE (VALUE read as JSON when it parses, else as text) -> {finder: {key: value}}."""
    overrides: dict[str, dict] = {}
    for item in items:
        target, sep, text = item.partition("=")
        finder, dot, key = target.partition(".")
        if not sep or not dot or finder not in FINDERS or key not in FINDERS[finder].defaults:
            raise SystemExit(f"--set {item!r}: expected FINDER.KEY=VALUE with a finder of {', '.join(FINDERS)} "
                             "and one of its settings")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        overrides.setdefault(finder, {})[key] = value
    return overrides


def direction_settings(card: dict, overrides: dict[str, dict] | None = None) -> tuple[str, dict]:
    """(method, settings for find_directions) reproducing the direction a ganinv direction JSON describes,
    with `overrides` ({finder: {key: value}}) replacing what it records."""
    method = card.get("method")
    if method not in FINDERS:
        raise SystemExit(f"direction {card.get('name')!r}: unknown method {method!r}")
    stored = card.get("settings") or {}
    if stored.get("conditioned_on") or stored.get("source_direction"):
        raise SystemExit(f"direction {card.get('name')!r} is conditioned on other directions: rebuild it with "
                         "`ganinv directions interfacegan --condition ...`")
    if "labels" in stored and "attribute" not in stored:
        raise SystemExit(f"direction {card.get('name')!r} was found from user labels, which it does not keep")
    spec = FINDERS[method]
    settings = {key: value for key, value in stored.items() if key in spec.defaults}
    for key, value in settings.items():  # lists the finder took as text ("zoom,shift_x") are stored as lists
        if isinstance(value, list) and isinstance(spec.defaults[key], str):
            settings[key] = ",".join(str(v) for v in value)
    if "attribute" in stored:
        settings["attribute"] = stored["attribute"]
    settings.update((overrides or {}).get(method, {}))
    settings["name"] = card.get("name")
    return method, settings


def _interfacegan_from_shared_samples(model, settings: dict, classified: dict):
    """The InterFaceGAN direction `settings` describe, its prior samples labelled from classifier outputs
    (every head) computed once per (samples, seed, truncation) and kept in `classified`: the same samples
    and labels as `find_directions('interfacegan', ...)` draws, without classifying them again."""
    full = {**FINDERS["interfacegan"].defaults, **settings}
    key = (full["num_samples"], full["seed"], full.get("truncation_psi", 1.0))
    heads = classifier_heads(model)
    spec = parse_attribute(full["attribute"], heads)
    if key not in classified:
        classified[key] = classify_prior_samples(model, sorted(heads), num_samples=key[0], seed=key[1],
                                                 truncation_psi=key[2])
    ws, logits = classified[key]
    fit = {k: v for k, v in full.items() if k not in ("num_samples", "attribute")}
    direction = find_interfacegan_direction(model, ws=ws, labels=labels_from_logits(logits[spec.head], spec),
                                            attribute=full["attribute"], **fit)
    direction.settings["label_source"] = f"classifier head {spec.head}"
    return direction


def rebuild_directions(old: Path, target: Path, overrides: dict[str, dict] | None = None
                       ) -> list[tuple[str, list, list]]:
    """Find every direction of old/directions again on target's generator; returns (name, old scores, new)."""
    files = sorted((old / "directions").glob("*.json")) if (old / "directions").is_dir() else []
    if not files:
        print("no directions in the old folder", flush=True)
        return []
    cards = [_read_json(path) for path in files]
    plans = [(card, *direction_settings(card, overrides)) for card in cards]
    model = load_model(target)
    out = target / "directions"
    out.mkdir(exist_ok=True)
    rows = []
    classified: dict[tuple, tuple] = {}  # InterFaceGAN: one classifier pass per sample set, for every attribute
    for card, method, settings in plans:
        start = time.perf_counter()
        if method == "interfacegan" and "attribute" in settings:
            direction = _interfacegan_from_shared_samples(model, settings, classified)
        else:
            direction = find_directions(method, model, **settings)
        direction.save(out)
        rows.append((direction.name, card.get("scores") or [], list(direction.scores or [])))
        print(f"direction {direction.name} ({method}, {len(direction)} component(s)) "
              f"in {time.perf_counter() - start:.1f} s", flush=True)
    return rows


def _summary(old_card: dict, new_card: dict, rows: list, encoder_psnr: tuple = (None, None)) -> str:
    """Old and new numbers side by side; `encoder_psnr` = (old, new) held-out PSNR of the last pass."""
    def shape(card, key):
        entry = (card.get("shape_quality") or {}).get("samples_psi1_vs_train") or {}
        return entry.get(key)

    def fmt(scores):
        return ", ".join(f"{s:.3g}" for s in scores[:3])

    lines = ["| | old | new |", "| --- | ---: | ---: |",
             f"| kimg | {old_card.get('images_seen_kimg')} | {new_card.get('images_seen_kimg')} |"]
    for key in ("frechet_distance", "precision", "recall"):
        lines.append(f"| shape {key} (samples psi=1) | {shape(old_card, key)} | {shape(new_card, key)} |")
    lines.append(f"| encoder held-out PSNR (last pass) | {encoder_psnr[0]} | {encoder_psnr[1]} |")
    for name, before, after in rows:
        if before or after:
            lines.append(f"| {name} score | {fmt(before)} | {fmt(after)} |")
    return "\n".join(lines)


def _encoder_psnr(folder: Path):
    path = folder / "encoder" / "card.json"
    if not path.is_file():
        return None
    by_pass = (_read_json(path).get("heldout_eval") or {}).get("heldout_psnr_median_by_pass") or []
    return by_pass[-1] if by_pass else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="old", required=True, type=Path, help="the model folder being replaced")
    parser.add_argument("--outdir", required=True, type=Path, help="the model folder to write")
    parser.add_argument("--run", type=Path, help="training run folder (with checkpoint.pt)")
    parser.add_argument("--data", type=Path, help="the dataset folder the run trained on (ganinv data ...)")
    parser.add_argument("--workdir", type=Path, default=None, help="encoder run folder's parent "
                        "(default: runs/rebuild-NAME under the current folder); kept, so a rerun resumes the encoder")
    parser.add_argument("--encoder-minutes", type=float, default=45.0)
    parser.add_argument("--encoder-steps", type=int, default=None, help="stop the encoder after this many "
                        "steps in this session (as well as after --encoder-minutes)")
    parser.add_argument("--encoder-snapshot-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--description", default=None, help="card description (default: the old card's)")
    parser.add_argument("--notes", default=None, help="card notes (default: the old card's)")
    parser.add_argument("--num-quality-samples", type=int, default=None, help="export-model's (default: its own)")
    parser.add_argument("--quality-num-eval", type=int, default=None, help="benchmarks/quality.py --num-eval")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FINDER.KEY=VALUE",
                        help="replace a recorded direction setting, e.g. interfacegan.num_samples=16000 (repeatable)")
    parser.add_argument("--directions-only", action="store_true", help="only redo the directions into OUTDIR")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTDIR")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    old, outdir = args.old, args.outdir
    overrides = parse_overrides(args.overrides)
    if not (old / "card.json").is_file():
        raise SystemExit(f"{old}: not a model folder (no card.json)")
    old_card = _read_json(old / "card.json")
    if args.directions_only:
        if not (outdir / "card.json").is_file():
            raise SystemExit(f"{outdir}: not a model folder (no card.json)")
        if (outdir / "directions").exists() and outdir.resolve() != old.resolve() and not args.overwrite:
            raise SystemExit(f"{outdir}/directions exists: pass --overwrite to replace it")
        rows = rebuild_directions(old, outdir, overrides)
        print(_summary(old_card, _read_json(outdir / "card.json"), rows))
        return 0
    if args.run is None or args.data is None:
        raise SystemExit("--run and --data are required (except with --directions-only)")
    if not (args.run / "checkpoint.pt").is_file():
        raise SystemExit(f"{args.run}: no checkpoint.pt (not a training run folder)")
    if outdir.exists() and not args.overwrite:
        raise SystemExit(f"{outdir} exists: pass --overwrite to replace it")
    staging = outdir.with_name(outdir.name + ".partial")
    workdir = args.workdir or Path("runs") / f"rebuild-{old_card.get('name') or outdir.name}"
    if staging.exists():
        shutil.rmtree(staging)
    workdir.mkdir(parents=True, exist_ok=True)
    old_psnr = _encoder_psnr(old)  # read now: with --from == --outdir the old folder is replaced below

    export_generator(args.run, args.data, old, staging, old_card, args)
    shape_quality(args.data, old, staging, args)
    rebuild_encoder(args.data, old, staging, workdir, args)
    rows = rebuild_directions(old, staging, overrides)

    new_card = _read_json(staging / "card.json")
    encoder_psnr = (old_psnr, _encoder_psnr(staging))
    if outdir.exists():
        retired = outdir.with_name(outdir.name + ".replaced")
        if retired.exists():
            shutil.rmtree(retired)
        outdir.rename(retired)
        staging.rename(outdir)
        shutil.rmtree(retired)
    else:
        staging.rename(outdir)
    print(f"wrote {outdir}")
    print(_summary(old_card, new_card, rows, encoder_psnr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
