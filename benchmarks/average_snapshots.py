"""Average the weights of a run's last snapshots into one model folder (checkpoint averaging).

Averaging a GAN generator's weights over the last part of training, on top of the exponential moving
average G_ema already is, can lower FID (Yazıcı, Foo, Winkler, Yap, Piliouras & Chandrasekhar, "The Unusual
Effectiveness of Averaging in GAN Training", ICLR 2019). This script forms the uniform average of the
G_ema (and D) weights of the `--count` newest snapshot folders up to `--upto` kimg, and writes it as a
model folder that `benchmarks/snapshot_quality.py` scores beside the snapshots themselves:

    python benchmarks/average_snapshots.py --run RUN --count 16 --upto 536 --out AVG/avg16
    python benchmarks/snapshot_quality.py --data DATA/emoji --models RUN/snapshots/kimg000536,AVG/avg16 \
        --sample-seeds 0,1,2,3,4 --num-eval 415

The snapshots must share one architecture (one run); each is read and checked as any model folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ganinv.models.checkpoints import save_native
from ganinv.train.trainer import read_snapshot


def average_snapshots(folders: list[Path], out: Path) -> Path:
    """Write the uniform average of the snapshots' G and D weights (float64 sums) to `out`; buffers that
    are not floating point (none in StyleGAN2) and the card's counters come from the newest (the last)."""
    if not folders:
        raise SystemExit("no snapshot to average")
    sums: dict[str, dict[str, torch.Tensor]] = {}
    for folder in folders:  # each read once; G, D and card are the newest's when the loop ends
        G, D, card = read_snapshot(folder)
        for name, net in (("G", G), ("D", D)):
            state = net.state_dict()
            total = sums.setdefault(name, {k: torch.zeros_like(v, dtype=torch.float64) for k, v in state.items()})
            if state.keys() != total.keys() or any(state[k].shape != total[k].shape for k in state):
                raise SystemExit(f"{folder}: its {name} has another architecture than {folders[0]}")
            for k, v in state.items():
                total[k] += v.double()
    with torch.no_grad():
        for name, net in (("G", G), ("D", D)):
            for k, v in net.state_dict().items():
                if v.is_floating_point():
                    v.copy_(sums[name][k] / len(folders))
    card = {key: card[key] for key in ("training_settings", "images_seen_kimg", "training_steps", "training_hours",
                                       "label_names") if key in card}
    card["averaged_snapshots"] = [f.name for f in folders]
    return save_native(out, G, D, card=card)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a run folder with snapshots/kimgNNNNNN/")
    parser.add_argument("--count", type=int, required=True, help="how many of the newest snapshots")
    parser.add_argument("--upto", type=float, default=None, help="only snapshots at or below this kimg")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.count < 1:
        raise SystemExit("--count must be at least 1")
    folders = sorted(p for p in (args.run / "snapshots").glob("kimg*") if (p / "card.json").is_file())
    if args.upto is not None:
        folders = [p for p in folders if int(p.name[4:]) <= args.upto]
    if len(folders) < args.count:
        raise SystemExit(f"{args.run}: {len(folders)} snapshots there, --count asks for {args.count}")
    out = average_snapshots(folders[-args.count:], args.out)
    print(f"{out}: the average of {', '.join(p.name for p in folders[-args.count:])}")
    return out


if __name__ == "__main__":
    main()
