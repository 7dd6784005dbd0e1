"""Sample-quality benchmark: Fréchet distance and precision/recall in the model's shape embedding.

Every set is compared with the training split (the reference) in the feature space of the model's
`embedding/` (a SimCLR network trained on that split, `ganinv.models.embedding`):

- `heldout (floor)`: real images the GAN and the embedding never saw: what a perfect generator would get;
- `train images held back`: random training images left out of the reference: a second floor, lower
  than the held-out one where the training split holds near-copies of them (emoji64's skin-tone and
  gender variants of one design), which the held-out split by design does not;
- `samples psi=P`: the generator's prior samples at truncation psi P (psi=1 is the plain model);
- `heldout blur:S` / `heldout shuffle:G`: held-out images blurred by S pixels, or cut into a GxG grid of
  patches put back in random order: controlled damage that a feature space that sees shape must notice.

Each evaluated set has as many images as the floor set, because Fréchet distance and recall depend on the
set size. For comparison the Fréchet distance in the dataset classifier's features is computed for the
same sets (`classifier FD ratio`), the space the card's older number used.

    ganinv data emoji --outdir /tmp/quality_data/emoji
    ganinv data fashion-mnist --outdir /tmp/quality_data/fashion
    python benchmarks/quality.py --model emoji64 --data /tmp/quality_data/emoji --json docs/data/quality_emoji64.json
    python benchmarks/quality.py --model fashion32 --data /tmp/quality_data/fashion --json docs/data/quality_fashion32.json

`--write-card` also stores the result as the `shape_quality` field of an embedded model's card.json, with
a summary of the embedding (`embedding`) and a `files` entry for `embedding/`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from ganinv.data.dataset import images_to_tensor, load_dataset
from ganinv.metrics.quality import DEFAULT_K, degrade_images, embed_images, frechet_distance, measure_quality
from ganinv.models.registry import load_model
from ganinv.train.quality import generate_samples
from ganinv.utils import write_json

DEFAULT_PSI = "1.0,0.7,0.5,0.3"
TRAIN_HELD_BACK = "train images held back from the reference"
DEFAULT_DEGRADATIONS = "blur:0.5,blur:1,blur:2,shuffle:2,shuffle:4"
METRIC_NAME = ("Fréchet distance and precision/recall (k=3) in the model's SimCLR shape embedding, "
               "each set against the training split (not FID)")


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip() or None
    except Exception:
        return None


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if model.embedding is None:
        raise SystemExit(f"{args.model}: this model folder has no embedding/ (scripts/train_embedding.py makes one)")
    train_arr, _ = load_dataset(args.data, "train")
    held_arr, _ = load_dataset(args.data, "heldout")
    count = min(args.num_eval, len(held_arr))
    if len(train_arr) < 2 * count:
        raise SystemExit(f"the training split ({len(train_arr)}) is too small to hold back {count} images")
    # A seeded permutation of the training split: the first `count` images are held back from the
    # reference as a second floor (random training images), the next ones are the reference.
    order = np.random.RandomState(args.seed).permutation(len(train_arr))
    reference_count = min(args.num_reference, len(train_arr) - count)
    reference = train_arr[np.sort(order[count:count + reference_count])]
    heldout = images_to_tensor(held_arr[:count])
    evaluated: dict[str, torch.Tensor] = {TRAIN_HELD_BACK: images_to_tensor(train_arr[np.sort(order[:count])])}
    started = time.perf_counter()
    for psi in [float(p) for p in args.psi.split(",") if p]:
        evaluated[f"samples psi={psi:g}"] = generate_samples(model.G, count, seed=args.seed, truncation_psi=psi)
    sample_seconds = time.perf_counter() - started
    for kind in [d for d in args.degrade.split(",") if d]:
        evaluated[f"heldout {kind}"] = degrade_images(heldout, kind, seed=args.seed)
    started = time.perf_counter()
    result = measure_quality(model.embedding, reference, heldout, evaluated, k=args.k)
    metric_seconds = time.perf_counter() - started
    if model.classifier is not None:
        reference_features = embed_images(model.classifier, reference)
        floor = frechet_distance(embed_images(model.classifier, heldout), reference_features)
        result["floor"]["classifier_frechet_distance"] = floor
        for name, images in evaluated.items():
            fd = frechet_distance(embed_images(model.classifier, images), reference_features)
            result["sets"][name]["classifier_fd_ratio"] = fd / floor if floor > 0 else float("inf")
    embedding_card = model.embedding.card
    result.update({
        "metric": METRIC_NAME,
        "model": args.model, "model_sha256": model.sha256,
        "embedding_sha256": embedding_card.get("sha256"),
        "reference": f"{reference_count} training images (seeded choice, seed {args.seed}), disjoint from the "
                     f"{count} held back",
        "floor_set": f"the first {count} held-out images",
        "sampling": {"seed": args.seed, "noise_mode": "const", "count": count},
        "seconds": {"sampling": round(sample_seconds, 1), "metrics": round(metric_seconds, 1)},
        "date": datetime.date.today().isoformat(), "commit": _commit(),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "command": "python benchmarks/quality.py " + " ".join(args.argv),
    })
    return result


def format_table(result: dict) -> str:
    lines = ["| set | FD | FD / floor | precision | recall | classifier FD / floor |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    floor = result["floor"]
    lines.append(f"| held-out real (floor) | {floor['frechet_distance']:.4g} | 1 | {floor['precision']:.3f} | "
                 f"{floor['recall']:.3f} | 1 |")
    for name, row in result["sets"].items():
        classifier = row.get("classifier_fd_ratio")
        lines.append(f"| {name} | {row['frechet_distance']:.4g} | {row['fd_ratio']:.2f} | {row['precision']:.3f} | "
                     f"{row['recall']:.3f} | {'n/a' if classifier is None else f'{classifier:.2f}'} |")
    return "\n".join(lines)


def card_entry(result: dict) -> dict:
    """The compact `shape_quality` card field: the floor, the plain samples (psi=1) and the damaged sets."""
    def rounded(row: dict) -> dict:
        return {k: float(f"{v:.4g}") for k, v in row.items() if isinstance(v, float)}
    return {
        "metric": result["metric"],
        "meaning": "FD: lower is closer to the training images; precision: share of the evaluated images that "
                   "look like training images; recall: share of training images whose kind the set covers. "
                   "Read each number between two references: held-out real images (new designs, the floor a "
                   "generator of new designs is compared with) and training images held back (the same designs: "
                   "where a generator that copied its training images would land). Samples below the floor are "
                   "closer to the training designs than new designs are; nearest_neighbors.png shows whether "
                   "they are copies.",
        "floor_heldout_vs_train": rounded(result["floor"]),
        "train_held_back_vs_train": rounded(result["sets"].get(TRAIN_HELD_BACK, {})),
        "samples_psi1_vs_train": rounded(result["sets"].get("samples psi=1", {})),
        "fd_ratio_samples_to_floor": round(result["sets"].get("samples psi=1", {}).get("fd_ratio", float("nan")), 2),
        "other_sets": {name: rounded(row) for name, row in result["sets"].items()
                       if name not in ("samples psi=1", TRAIN_HELD_BACK)},
        "counts": result["counts"], "k": result["k"], "reference": result["reference"],
        "floor_set": result["floor_set"], "embedding_sha256": result["embedding_sha256"],
        "date": result["date"], "commit": result["commit"], "command": result["command"],
    }


def write_card_field(model_name: str, result: dict) -> Path:
    model = load_model(model_name)
    if model.folder is None:
        raise SystemExit("--write-card needs a model folder")
    path = Path(model.folder) / "card.json"
    card = json.loads(path.read_text())
    embedding = model.embedding.card
    card["embedding"] = {"method": embedding.get("method"), "feature_dim": embedding.get("feature_dim"),
                         "view_retrieval_accuracy": embedding.get("view_retrieval_accuracy"),
                         "training": embedding.get("training"), "sha256": embedding.get("sha256"),
                         "retrain": "python scripts/train_embedding.py --data DATASET --outdir MODEL/embedding"}
    card.setdefault("files", {})["embedding/"] = ("SimCLR shape embedding (model.safetensors + card.json) "
                                                  "whose features define shape_quality")
    card["shape_quality"] = card_entry(result)
    write_json(path, card)
    return path


def main(argv: list[str] | None = None) -> dict:
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="emoji64")
    parser.add_argument("--data", required=True, help="the model's dataset folder (ganinv data ...)")
    parser.add_argument("--num-eval", type=int, default=2000, help="images per evaluated set (capped at held-out)")
    parser.add_argument("--num-reference", type=int, default=10000, help="training images in the reference set")
    parser.add_argument("--psi", default=DEFAULT_PSI, help="truncation psi values for the sample sets")
    parser.add_argument("--degrade", default=DEFAULT_DEGRADATIONS, help="damaged held-out sets (blur:S, shuffle:G)")
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the full result here")
    parser.add_argument("--write-card", action="store_true", help="store the result on the model's card.json")
    args = parser.parse_args(argv)
    args.argv = argv
    result = run(args)
    print(f"{args.model}: {result['metric']}; reference {result['counts']['reference']}, "
          f"{result['counts']['evaluated']} images per set; {result['date']} {result['commit']} {result['machine']}")
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.json), result)
    if args.write_card:
        print("wrote", write_card_field(args.model, result))
    return result


if __name__ == "__main__":
    main()
