"""Retrain the shape embeddings shipped beside the embedded models (`ASSET/embedding/`).

    ganinv data emoji --outdir /tmp/quality_data/emoji
    ganinv data fashion-mnist --outdir /tmp/quality_data/fashion
    python scripts/train_embedding.py --data /tmp/quality_data/emoji --outdir src/ganinv/assets/emoji64/embedding
    python scripts/train_embedding.py --data /tmp/quality_data/fashion --outdir src/ganinv/assets/fashion32/embedding

SimCLR on the dataset's training split (`ganinv.train.embedding`), 1000 steps of 128 image pairs, one CPU
thread, seed 0; the shipped networks were made with exactly these commands (about 18 minutes each on a
shared 2-core CPU, the two run side by side).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
from tqdm import tqdm

from ganinv.train.embedding import train_embedding_on_dataset


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder (ganinv data ...)")
    parser.add_argument("--outdir", required=True, help="where model.safetensors + card.json go")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 leaves the host free)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bar = tqdm(total=args.steps, desc="simclr", mininterval=5, file=sys.stdout)

    def on_step(step: int, total: int, loss: float) -> None:
        bar.update(1)
        if step % 50 == 0 or step == total:
            bar.set_postfix(loss=f"{loss:.3f}")

    card = train_embedding_on_dataset(args.data, args.outdir, steps=args.steps, batch_size=args.batch_size,
                                      learning_rate=args.learning_rate, temperature=args.temperature,
                                      seed=args.seed, on_step=on_step)
    bar.close()
    print(json.dumps({k: card[k] for k in ("view_retrieval_accuracy", "training")}, indent=1))
    return card


if __name__ == "__main__":
    main()
