"""Latent-domain benchmark: do inverted codes lie where the GAN's own w lie?

Inverts held-out images (the model's `heldout.npz`, images the GAN never saw) with each method, turns
each code into one w vector (the mean over layers of w+, or layer 0 with --reduce first) and compares
those with prior w = mapping(z), as In-Domain GAN Inversion (Zhu et al., ECCV 2020) and e4e (Tov et al.,
SIGGRAPH 2021) do when they ask whether codes stay "in domain":

- Fréchet distance in W against a large prior sample (ganinv.metrics.latent_overlap.frechet_distance),
  and the same in the prior's first `--pca-dims` principal components: with fewer inverted codes than
  w_dim the full-W value is dominated by small-sample bias (a set with little spread scores low), the
  low-dimensional one much less so;
- classifier two-sample test: 5-fold held-out accuracy of a logistic regression telling the inverted w
  from as many prior w (0.5 = indistinguishable, 1.0 = separated);
- a picture: the 2-D PCA projection (fitted on prior w) of prior and inverted w, one panel per method.

A row "prior (same count)" scores a fresh prior sample of the same size as the inverted set: the
small-sample floor of both numbers. Methods run with quick settings (fewer steps than their defaults;
`QUICK` below), since only where the codes land is measured, not reconstruction quality.

    python benchmarks/latent_domain.py --model fashion32 --num-images 64 --plot docs/img/latent_domain_fashion32.png
    python benchmarks/latent_domain.py --model emoji64 --num-images 32 --methods optimize-w,optimize,encoder,hybrid
    python benchmarks/latent_domain.py --model fashion32 --encoder in-domain=runs/enc-indomain/encoder
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ganinv.inversion import invert
from ganinv.metrics.latent_overlap import fit_pca, frechet_distance, latent_vectors, project, two_sample_accuracy
from ganinv.models.encoder import load_encoder
from ganinv.models.prior import sample_prior
from ganinv.models.registry import load_model

# name -> (method, quick settings).
QUICK = {
    "optimize-w": ("optimize", dict(space="w", optimize_noise=False, num_steps=100)),
    "optimize": ("optimize", dict(num_steps=100)),
    "encoder": ("encoder", dict()),
    "hybrid": ("hybrid", dict()),
    "pti": ("pti", dict(pivot_steps=100, num_steps=10)),
    "clone": ("clone", dict(h_steps=100, num_steps=10)),
}
PRIOR_ROW = "prior (same count)"


def invert_codes(model, images: torch.Tensor, methods: dict[str, tuple[str, dict]], *, seed: int = 0,
                 encoders: dict | None = None, log=None) -> dict[str, dict]:
    """{name: {"ws": [N, num_ws, w_dim], "seconds": s, "psnr_median": p}} for each method (and for the
    "encoder" method once per extra encoder in `encoders`, name -> Encoder, as "encoder:<name>")."""
    runs = [(name, method, settings, None) for name, (method, settings) in methods.items()]
    for label, enc in (encoders or {}).items():
        runs.append((f"encoder:{label}", "encoder", {}, enc))
    codes = {}
    for name, method, settings, enc in runs:
        bundle = model
        if enc is not None:
            bundle = copy.copy(model)
            bundle.encoder = enc
        started = time.perf_counter()
        result = invert(bundle, images, method, seed=seed, **settings)
        codes[name] = {"ws": result.ws, "seconds": time.perf_counter() - started,
                       "psnr_median": float(np.median(result.metrics["psnr"]))}
        if log:
            log(f"{name}: {codes[name]['seconds']:.1f} s, median PSNR {codes[name]['psnr_median']:.2f}")
    return codes


def overlap_rows(codes: dict[str, dict], prior_ws: torch.Tensor, *, reduce: str = "mean",
                 null_ws: torch.Tensor | None = None, seed: int = 0, pca_dims: int = 8) -> dict[str, dict]:
    """Overlap numbers per method against `prior_ws` [M, num_ws, w_dim]; with `null_ws` (a fresh prior
    sample the size of the inverted sets) a first row scoring it the same way."""
    prior = latent_vectors(prior_ws, reduce)
    pca = fit_pca(prior, pca_dims)
    rows = {}
    named = ([(PRIOR_ROW, null_ws)] if null_ws is not None else []) + [(k, v["ws"]) for k, v in codes.items()]
    for name, ws in named:
        vectors = latent_vectors(ws, reduce)
        rows[name] = {"frechet_distance": frechet_distance(vectors, prior),
                      "frechet_distance_pca": frechet_distance(project(vectors, pca), project(prior, pca)),
                      "two_sample_accuracy": two_sample_accuracy(vectors, prior, seed=seed), "count": len(vectors)}
    return rows


def draw_projection(codes: dict[str, dict], prior_ws: torch.Tensor, path: str | Path, *, reduce: str = "mean",
                    title: str = "", rows: dict | None = None) -> Path:
    """One panel per method: prior w (grey) and inverted w (colour) on the first two principal
    components of the prior w."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prior = latent_vectors(prior_ws, reduce)
    pca = fit_pca(prior)
    prior_xy = project(prior, pca)
    names = list(codes)
    columns = min(4, len(names))
    lines = -(-len(names) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 3.2 * lines), squeeze=False,
                                sharex=True, sharey=True)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        xy = project(latent_vectors(codes[name]["ws"], reduce), pca)
        ax.scatter(prior_xy[:, 0], prior_xy[:, 1], s=3, c="0.75", label="prior w", rasterized=True)
        ax.scatter(xy[:, 0], xy[:, 1], s=9, c="tab:red", label="inverted")
        caption = name
        if rows and name in rows:
            caption += (f"\nFD {rows[name]['frechet_distance']:.1f} (PCs {rows[name]['frechet_distance_pca']:.1f}), "
                        f"C2ST {rows[name]['two_sample_accuracy']:.2f}")
        ax.set_title(caption, fontsize=9)
    axes.flat[0].legend(fontsize=7, loc="upper right")
    figure.suptitle(title or "inverted vs prior w (PCA of prior w)", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def format_table(rows: dict[str, dict], codes: dict[str, dict]) -> str:
    lines = ["| method | n | Fréchet distance in W | FD in prior PCs | two-sample accuracy | median PSNR | seconds |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        extra = codes.get(name, {})
        psnr = f"{extra['psnr_median']:.2f}" if extra else "-"
        seconds = f"{extra['seconds']:.0f}" if extra else "-"
        lines.append(f"| {name} | {row['count']} | {row['frechet_distance']:.2f} | "
                     f"{row['frechet_distance_pca']:.2f} | {row['two_sample_accuracy']:.3f} | {psnr} | {seconds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion32")
    parser.add_argument("--num-images", type=int, default=64, help="held-out images inverted")
    parser.add_argument("--methods", default=",".join(QUICK), help=f"comma list of {', '.join(QUICK)}")
    parser.add_argument("--encoder", action="append", default=[], metavar="NAME=DIR",
                        help="also run the encoder method with this encoder folder (repeatable)")
    parser.add_argument("--num-prior", type=int, default=2000, help="prior w for the reference and the PCA")
    parser.add_argument("--reduce", default="mean", choices=("mean", "first"), help="w+ to one w")
    parser.add_argument("--pca-dims", type=int, default=8, help="prior principal components for the second FD")
    parser.add_argument("--plot", default=None, help="write the PCA picture here (PNG)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--steps", type=int, default=None,
                        help="override the quick step counts (optimize, hybrid, PTI's pivot, Clone's h(x))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = sorted(set(args.methods.split(",")) - set(QUICK))
    if unknown:
        parser.error(f"unknown methods {unknown}; available: {', '.join(QUICK)}")
    methods = {k: QUICK[k] for k in args.methods.split(",")}
    if args.steps:
        steps = {"optimize": "num_steps", "hybrid": "num_steps", "pti": "pivot_steps", "clone": "h_steps"}
        methods = {k: (m, {**s, **({steps[m]: args.steps} if m in steps else {})}) for k, (m, s) in methods.items()}
    model = load_model(args.model)
    if model.heldout is None:
        parser.error(f"{args.model} has no held-out images")
    images = model.heldout[:args.num_images]
    encoders = {}
    for item in args.encoder:
        label, _, folder = item.partition("=")
        encoders[label] = load_encoder(folder)
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    codes = invert_codes(model, images, methods, seed=args.seed,
                         encoders=encoders, log=log)
    with torch.no_grad():
        prior_ws = sample_prior(model.G, args.num_prior, seed=args.seed + 1).cpu()
        null_ws = sample_prior(model.G, len(images), seed=args.seed + 2).cpu()
    rows = overlap_rows(codes, prior_ws, reduce=args.reduce, null_ws=null_ws, seed=args.seed, pca_dims=args.pca_dims)
    print(format_table(rows, codes))
    if args.plot:
        shown = {PRIOR_ROW: {"ws": null_ws}, **codes}
        draw_projection(shown, prior_ws, args.plot, reduce=args.reduce, rows=rows,
                        title=f"{args.model}: inverted held-out vs prior w (PCA of prior w, {args.reduce} over layers)")
        log(f"wrote {args.plot}")
    report = {"model": args.model, "num_images": len(images), "reduce": args.reduce, "num_prior": args.num_prior,
              "pca_dims": args.pca_dims, "command": " ".join(sys.argv),
              "settings": methods, "rows": rows,
              "methods": {k: {"seconds": v["seconds"], "psnr_median": v["psnr_median"]} for k, v in codes.items()},
              "machine": platform.platform(), "threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d")}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
