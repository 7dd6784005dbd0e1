"""How much an InterFaceGAN boundary depends on which prior samples were labelled.

InterFaceGAN (Shen et al., "Interpreting the Latent Space of GANs for Semantic Face Editing", CVPR 2020)
fits a linear boundary in W to prior samples labelled by an attribute classifier. With a weak classifier
and a rare attribute, the boundary can follow the particular samples more than the attribute. This
script labels two independent sets of seeded prior samples (seeds 0 and 1, the largest count each) once
with the model's classifier, fits the boundary of every attribute on the first N samples of each set for
every count N, and reports the cosine between the two sets' unit normals (1 = the same direction) and
the held-out accuracy of each fit, with the settings `ganinv directions interfacegan` uses.

    python benchmarks/interfacegan_stability.py --model emoji64 --counts 4000,16000 --threads 1 \\
        --json docs/data/interfacegan_stability_emoji64.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ganinv.editing import FINDERS
from ganinv.editing.interfacegan import (classifier_heads, classify_prior_samples, fit_boundary, labels_from_logits,
                                         parse_attribute)
from ganinv.models.registry import load_model

DEFAULT_ATTRIBUTES = ("gender:man/woman,skin_tone:1,2/4,5,group:People & Body,group:Smileys & Emotion,"
                      "group:Flags,group:Objects")


def _attributes(text: str, heads: dict) -> list[str]:
    """Split 'head:A,B/C,head2:X' on the commas that start a new head (class lists hold commas too)."""
    parts, current = [], ""
    for piece in text.split(","):
        if ":" in piece and piece.split(":", 1)[0].strip() in heads and current:
            parts.append(current)
            current = piece
        else:
            current = f"{current},{piece}" if current else piece
    if current:
        parts.append(current)
    return [p.strip() for p in parts]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="emoji64")
    parser.add_argument("--attributes", default=DEFAULT_ATTRIBUTES, help="comma-separated classifier attributes")
    parser.add_argument("--counts", default="4000,16000", help="numbers of labelled samples to compare")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if model.classifier is None:
        raise SystemExit(f"{args.model}: no classifier to label samples with")
    heads = classifier_heads(model)
    attributes = _attributes(args.attributes, heads)
    specs = {a: parse_attribute(a, heads) for a in attributes}
    counts = sorted(int(c) for c in args.counts.split(","))
    defaults = FINDERS["interfacegan"].defaults
    fits = {}
    for seed in (0, 1):
        start = time.perf_counter()
        ws, logits = classify_prior_samples(model, sorted({spec.head for spec in specs.values()}),
                                            num_samples=counts[-1], seed=seed, batch_size=256)
        print(f"seed {seed}: {counts[-1]} samples labelled in {time.perf_counter() - start:.0f} s", flush=True)
        latents = ws.mean(dim=1)
        for attribute, spec in specs.items():
            labels = labels_from_logits(logits[spec.head], spec)
            for n in counts:
                fits[attribute, n, seed] = fit_boundary(
                    latents[:n], labels[:n], classifier=defaults["classifier"],
                    heldout_fraction=defaults["heldout_fraction"], regularization=defaults["regularization"],
                    seed=defaults["seed"])
    rows = []
    print("| attribute | samples | positives (set 0 / 1) | cosine between the sets | held-out accuracy (0 / 1) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for attribute in attributes:
        for n in counts:
            a, b = fits[attribute, n, 0], fits[attribute, n, 1]
            cosine = float(a.normal.double() @ b.normal.double())
            rows.append({"attribute": attribute, "samples": n, "cosine": cosine,
                         "heldout_accuracy": [a.heldout_accuracy, b.heldout_accuracy],
                         "positives": [a.num_positive, b.num_positive],
                         "negatives": [a.num_negative, b.num_negative]})
            print(f"| {attribute} | {n} | {a.num_positive} / {b.num_positive} | {cosine:.3f} | "
                  f"{a.heldout_accuracy:.3f} / {b.heldout_accuracy:.3f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"model": args.model, "counts": counts, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
