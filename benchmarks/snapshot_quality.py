"""Score a training run's snapshots (and any model folders) in one shape embedding, against one floor.

Each generator's prior samples (psi=1, const noise, seed 0) are compared with the training split in the
SimCLR shape embedding of `--embedding-model` (default emoji64's `embedding/`): Fréchet distance (FD),
FD / floor and precision/recall (k=3), with the held-out split as the floor, exactly as
`benchmarks/quality.py` measures one model (same reference set, same seed, as many samples per set as the
floor set). All sets are embedded in one call, so the numbers of the snapshots and of the shipped model
are directly comparable. A snapshot is better when its FD is lower and its precision and recall are
higher, by more than the spread over `--sample-seeds` (different prior samples of the same generator).

    python benchmarks/snapshot_quality.py --data /work/runs/emoji-data --models emoji64 \
        --run /work/runs/emoji64 --sample-seeds 0,1,2 --threads 1 --json /work/runs/emoji64/quality.json

`--run RUN` adds every `RUN/snapshots/kimgNNNNNN/` (written by `ganinv train --snapshot-networks`), or
every n-th with `--every n` (the newest always).

`--recall-by` adds recall counted over kinds of reference image (which kinds the samples cover), from the
dataset's labels: `group` (a row per value of that label field) or `NAME=FIELD:VALUE+VALUE` (one row for
the union of those values), comma-separated. Hands and objects on emoji64:

    --recall-by "group,hands=subgroup:hands+hand-fingers-open+hand-fingers-partial+hand-single-finger+hand-fingers-closed+hand-prop"
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ganinv.data.dataset import images_to_tensor, load_dataset
from ganinv.metrics.quality import DEFAULT_K, measure_quality
from ganinv.models.registry import load_generator, load_model
from ganinv.train.quality import generate_samples


def snapshot_folders(run_dir: str | Path, every: int = 1) -> list[Path]:
    """The run's snapshot model folders, oldest first: every `every`-th, and always the newest."""
    folders = sorted(p for p in (Path(run_dir) / "snapshots").glob("kimg*") if (p / "card.json").is_file())
    chosen = folders[::every]
    if folders and folders[-1] not in chosen:
        chosen.append(folders[-1])
    return chosen


def group_masks(records: list[dict], spec: str) -> dict[str, np.ndarray]:
    """Bool masks over `records` from a `--recall-by` spec (see the module docstring), in spec order; a
    FIELD item gives a row per value, most frequent first."""
    masks: dict[str, np.ndarray] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, equals, rest = item.partition("=")
        if equals:
            field, colon, values = rest.partition(":")
            wanted = {v for v in values.split("+") if v}
            if not colon or not field or not wanted or not name:
                raise SystemExit(f"--recall-by: {item!r} is not NAME=FIELD:VALUE+VALUE")
            groups = {name: wanted}
        else:
            field = item
            counts = Counter(str(record[field]) for record in records if field in record)
            groups = {value: {value} for value in sorted(counts, key=lambda v: (-counts[v], v))}
        if not any(field in record for record in records):
            raise SystemExit(f"--recall-by: no label field {field!r} in the dataset's records")
        for row, values in groups.items():
            if row in masks:
                raise SystemExit(f"--recall-by: row {row!r} appears twice")
            mask = np.array([str(record.get(field)) in values for record in records], dtype=bool)
            if not mask.any():
                raise SystemExit(f"--recall-by: no reference image has {field} in {sorted(values)}")
            masks[row] = mask
    return masks


def _mean_row(rows: list[dict]) -> dict:
    """Numbers of several sample seeds: the mean of each, with its standard deviation as `KEY_sd`."""
    out = {}
    for key, value in rows[0].items():
        if isinstance(value, dict):
            out[key] = _mean_row([r[key] for r in rows])
            continue
        out[key] = float(np.mean([r[key] for r in rows]))
        if len(rows) > 1:
            out[f"{key}_sd"] = float(np.std([r[key] for r in rows], ddof=1))
    return out


def score(models: list[str], data: str | Path, *, embedding_model: str = "emoji64", num_eval: int = 2000,
          num_reference: int = 10000, seed: int = 0, sample_seeds: tuple[int, ...] = (0,),
          k: int = DEFAULT_K, recall_by: str | None = None) -> dict:
    """{"floor": ..., "sets": {model: {frechet_distance, fd_ratio, precision, recall, ...}}, ...}: each
    number is the mean over the sample seeds, with its standard deviation (`*_sd`) when there are several."""
    embedding = load_model(embedding_model).embedding
    if embedding is None:
        raise SystemExit(f"{embedding_model}: no embedding/ in this model folder")
    train_arr, train_records = load_dataset(data, "train")
    held_arr, _ = load_dataset(data, "heldout")
    count = min(num_eval, len(held_arr))
    # The reference of benchmarks/quality.py: the same seeded permutation, minus the images it holds back.
    order = np.random.RandomState(seed).permutation(len(train_arr))
    chosen = np.sort(order[count:count + min(num_reference, len(train_arr) - count)])
    reference = train_arr[chosen]
    masks = group_masks([train_records[i] for i in chosen], recall_by) if recall_by else None
    evaluated = {}
    for name in models:
        G = load_generator(name)
        for sample_seed in sample_seeds:
            evaluated[(name, sample_seed)] = generate_samples(G, count, seed=sample_seed, truncation_psi=1.0)
    result = measure_quality(embedding, reference, images_to_tensor(held_arr[:count]), evaluated, k=k,
                             reference_groups=masks)
    if masks is not None:
        result["counts"]["groups"] = {name: int(mask.sum()) for name, mask in masks.items()}
    per_seed = result.pop("sets")
    result["sets"] = {}
    for name in models:
        row = _mean_row([per_seed[(name, sample_seed)] for sample_seed in sample_seeds])
        card_path = Path(name) / "card.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else load_model(name).card
        row["kimg"] = card.get("images_seen_kimg")
        result["sets"][name] = row
    result["sample_seeds"] = list(sample_seeds)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the dataset folder (train and held-out splits)")
    parser.add_argument("--models", default="emoji64", help="comma list of model names or folders")
    parser.add_argument("--run", default=None, help="also every snapshot in RUN/snapshots/")
    parser.add_argument("--every", type=int, default=1, help="with --run: every n-th snapshot (and the newest)")
    parser.add_argument("--embedding-model", default="emoji64")
    parser.add_argument("--num-eval", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="the reference set's seed (as benchmarks/quality.py)")
    parser.add_argument("--sample-seeds", default="0", help="comma list: each model's samples per seed, "
                        "numbers averaged (with their standard deviation)")
    parser.add_argument("--recall-by", default=None, help="recall by kind of reference image: comma list of "
                        "label fields and NAME=FIELD:VALUE+VALUE rows (module docstring)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    if args.run:
        models += [str(p) for p in snapshot_folders(args.run, args.every)]
    sample_seeds = tuple(int(v) for v in args.sample_seeds.split(",") if v)
    result = score(models, args.data, embedding_model=args.embedding_model, num_eval=args.num_eval, seed=args.seed,
                   sample_seeds=sample_seeds, recall_by=args.recall_by)
    floor = result["floor"]
    print(f"shape embedding of {args.embedding_model}; {result['counts']['evaluated']} images per set, reference "
          f"{result['counts']['reference']} training images")
    print("| model | kimg | FD | FD / floor | precision | recall |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| held-out real (floor) | | {floor['frechet_distance']:.4g} | 1 | {floor['precision']:.3f} | "
          f"{floor['recall']:.3f} |")
    def cell(row: dict, key: str, digits: int) -> str:
        sd = row.get(f"{key}_sd")
        return f"{row[key]:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")

    for name, row in result["sets"].items():
        print(f"| {name} | {row['kimg']} | {cell(row, 'frechet_distance', 3)} | {cell(row, 'fd_ratio', 3)} | "
              f"{cell(row, 'precision', 3)} | {cell(row, 'recall', 3)} |")
    if args.recall_by:
        names = list(result["sets"])
        print("\nrecall by kind of reference image (reference images of that kind covered by the samples)")
        print("| kind | reference images | held-out real | " + " | ".join(names) + " |")
        print("| --- | ---: | ---: |" + " ---: |" * len(names))
        for group, n in result["counts"]["groups"].items():
            cells = [cell(result["sets"][name]["recall_by_group"], group, 2) for name in names]
            print(f"| {group} | {n} | {floor['recall_by_group'][group]:.2f} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
