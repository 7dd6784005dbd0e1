"""Encoder benchmark: speed and quality of the `encoder` method, and how fast `hybrid` reaches optimize.

On held-out images (never training images), CPU, batch 1, the thread count named:
  1. encoder inference ms/image (median) for 1..N ReStyle passes: the network passes alone, and the whole
     `encoder` method call (input checks included, model load excluded);
  2. PSNR / SSIM of the encoder (per pass count) next to `optimize` in W at 100 steps, the quality floor
     the encoder is held to (with its default noise optimization, and with noise off; PSNR with
     the noise reset to the constant maps is shown too), and `optimize` with its shipped defaults;
  3. `hybrid` (In-domain inversion): steps and seconds (encoder start included) until each image reaches
     the PSNR optimize-W-100 reached on it, against optimize's 100 steps and its seconds; plus the
     `hybrid` defaults' own PSNR and time.
`--optimize-variants optimize-defaults --skip-hybrid` measures only the encoder against `optimize` with
its defaults (W+, 300 steps), the reference an encoder is ultimately compared with.
Tables give the median (and mean) over images with the count.

    python benchmarks/encoder.py --model MODEL_FOLDER --data /work/datasets/fashion32 --num-images 100 \
        --num-optimize 20 --json out/encoder.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from ganinv.inversion import METHODS
from ganinv.inversion.base import frozen_copy
from ganinv.models.encoder import load_encoder, restyle
from ganinv.metrics import compute_metrics
from ganinv.models.registry import load_model


def summary(values, keep_inf: bool = False) -> dict:
    """Median and mean over images; with keep_inf, 'never reached' (inf) counts in the median (the mean
    is then over the finite values only)."""
    values = [float(v) for v in values if v is not None and not np.isnan(v) and (keep_inf or np.isfinite(v))]
    finite = [v for v in values if np.isfinite(v)]
    if not values:
        return {"median": None, "mean": None, "count": 0}
    return {"median": statistics.median(values), "mean": statistics.fmean(finite) if finite else None,
            "count": len(values)}


def fmt(stat: dict, digits: int = 2) -> str:
    if stat["median"] is None:
        return "n/a"
    mean = "n/a" if stat["mean"] is None else f"{stat['mean']:.{digits}f}"
    return f"{stat['median']:.{digits}f} (mean {mean}, n={stat['count']})"


def heldout_images(model, data_dir: str | None, offset: int | None, count: int) -> tuple[torch.Tensor, int]:
    """`count` held-out images from `offset`; None: from 1000, or from 64 (past the trainer's monitored
    images) when the split is smaller."""
    if data_dir is not None:
        from ganinv.data.dataset import images_to_tensor, load_dataset
        images, _ = load_dataset(data_dir, "heldout")
    elif model.heldout is None:
        sys.exit("the model ships no held-out images: pass --data DATASET_FOLDER")
    else:
        images = model.heldout
    if offset is None:
        offset = 1000 if len(images) >= 1000 + count else 64
    if offset + count > len(images):
        sys.exit(f"the held-out split has {len(images)} images: --offset {offset} --num-images {count} "
                 "does not fit")
    chosen = images[offset:offset + count]
    return (images_to_tensor(chosen) if data_dir is not None else chosen), offset


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model name or folder (its encoder/ is used)")
    parser.add_argument("--encoder", default=None, help="encoder folder (default: the model's encoder/)")
    parser.add_argument("--data", default=None, help="dataset folder; held-out split (default: the model's heldout)")
    parser.add_argument("--offset", type=int, default=None,
                        help="first held-out index used (default 1000, or 64 for splits under 1000 + "
                             "--num-images images; the encoder trainer monitors the first 64)")
    parser.add_argument("--num-images", type=int, default=100, help="images for encoder speed and quality")
    parser.add_argument("--num-optimize", type=int, default=20, help="images for optimize and hybrid (slow)")
    parser.add_argument("--passes", default="1,2,3", help="ReStyle pass counts to measure")
    parser.add_argument("--hybrid-max-steps", type=int, default=200)
    parser.add_argument("--optimize-variants", default="optimize-w100,optimize-w100-no-noise,optimize-defaults",
                        help="optimize rows measured (optimize-defaults is W+ at 300 steps)")
    parser.add_argument("--skip-hybrid", action="store_true", help="leave out the hybrid measurements")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    encoder = load_encoder(args.encoder) if args.encoder else model.encoder
    if encoder is None:
        sys.exit(f"{args.model} has no encoder/: pass --encoder DIR")
    G = frozen_copy(model.G)
    D = frozen_copy(model.D) if model.D is not None else None
    encoder.check_generator(G)
    images, args.offset = heldout_images(model, args.data, args.offset, args.num_images)
    passes = [int(p) for p in args.passes.split(",")]
    report: dict = {"model": model.name, "model_sha256": model.sha256, "generator_card": {
        k: model.card.get(k) for k in ("name", "description", "images_seen_kimg")},
        "encoder_card": {k: encoder.card.get(k) for k in ("name", "training", "heldout_eval", "parameters")},
        "device": "cpu", "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "num_images": len(images),
        "heldout_offset": args.offset}
    print(f"model {model.name}; {len(images)} held-out images from index {args.offset}; CPU, "
          f"{torch.get_num_threads()} thread(s); load average {os.getloadavg()[0]:.2f}")

    # 1. Speed at batch 1.
    speed = {}
    with torch.no_grad():
        for _ in range(5):
            restyle(G, encoder, images[:1], max(passes))
        for count in passes:
            network = []
            method = []
            for i in range(min(len(images), 50)):
                x = images[i:i + 1]
                network.append(median_ms(lambda: restyle(G, encoder, x, count), 3))
                method.append(median_ms(lambda: METHODS["encoder"].run(G, x, encoder=encoder, iterations=count), 1))
            speed[count] = {"network_ms": summary(network), "method_ms": summary(method)}
            print(f"encoder, {count} pass(es): {fmt(speed[count]['network_ms'])} ms (network passes), "
                  f"{fmt(speed[count]['method_ms'])} ms (method call)")
    report["speed_ms_batch1"] = speed

    # 2. Quality: encoder passes on all images; optimize W 100 on the first num_optimize.
    quality = {}
    with torch.no_grad():
        for count in passes:
            ws, _ = restyle(G, encoder, images, count)
            metrics = compute_metrics(G.synthesis(ws, noise_mode="const"), images)
            quality[f"encoder-{count}"] = {"psnr": summary(metrics["psnr"]), "ssim": summary(metrics["ssim"]),
                                           "psnr_first": summary(metrics["psnr"][:args.num_optimize]),
                                           "ssim_first": summary(metrics["ssim"][:args.num_optimize])}
    subset = images[:args.num_optimize]
    variants = {"optimize-w100": dict(space="w", num_steps=100),
                "optimize-w100-no-noise": dict(space="w", num_steps=100, optimize_noise=False),
                "optimize-defaults": dict()}
    chosen = [name for name in args.optimize_variants.split(",") if name]
    unknown = sorted(set(chosen) - set(variants))
    if unknown:
        sys.exit(f"unknown --optimize-variants {', '.join(unknown)}; available: {', '.join(variants)}")
    variants = {name: variants[name] for name in chosen}
    per_image_psnr = {}
    for name, settings in variants.items():
        psnr, psnr_const, ssim, seconds = [], [], [], []
        for i in range(len(subset)):
            x = subset[i:i + 1]
            started = time.perf_counter()
            out = METHODS["optimize"].run(G, x, D=D, seed=args.seed, **settings)
            seconds.append(time.perf_counter() - started)
            with torch.no_grad():
                rec = G.synthesis(out.ws, noise_mode="const", noise=out.noise)
                m = compute_metrics(rec, x)
                psnr_const.append(compute_metrics(G.synthesis(out.ws, noise_mode="const"), x)["psnr"][0])
            psnr.append(m["psnr"][0])
            ssim.append(m["ssim"][0])
        per_image_psnr[name] = psnr
        quality[name] = {"psnr": summary(psnr), "ssim": summary(ssim), "psnr_const_noise": summary(psnr_const),
                         "seconds": summary(seconds)}
    report["quality"] = quality
    print(f"\nquality (median (mean, n)); encoder rows also on the first {len(subset)} images (= optimize's):")
    for name, row in quality.items():
        extra = ""
        if "psnr_first" in row:
            extra = f" | first {len(subset)}: PSNR {fmt(row['psnr_first'])}, SSIM {fmt(row['ssim_first'], 4)}"
        if "psnr_const_noise" in row:
            extra = f" | PSNR const noise {fmt(row['psnr_const_noise'])} | seconds {fmt(row['seconds'])}"
        print(f"  {name:24s} PSNR {fmt(row['psnr'])}  SSIM {fmt(row['ssim'], 4)}{extra}")

    if not args.skip_hybrid:
        # 3. Hybrid: steps and seconds to reach optimize's PSNR, per image.
        hybrid = {}
        for reference, psnrs in per_image_psnr.items():
            steps_needed, seconds_needed = [], []
            for i in range(len(subset)):
                x = subset[i:i + 1]
                started = time.perf_counter()
                out = METHODS["hybrid"].run(G, x, D=D, encoder=encoder, seed=args.seed,
                                            num_steps=args.hybrid_max_steps, target_psnr=psnrs[i])
                elapsed = time.perf_counter() - started
                # The check runs before each update, so "at step k" means k updates were needed.
                if out.stop_reason.startswith("reached target_psnr"):
                    steps_needed.append(int(out.stop_reason.rsplit(" ", 1)[1]))
                    seconds_needed.append(elapsed)
                else:
                    steps_needed.append(float("inf"))
                    seconds_needed.append(float("inf"))
            hybrid[reference] = {"steps": summary(steps_needed, keep_inf=True),
                                 "seconds": summary(seconds_needed, keep_inf=True),
                                 "reached": int(sum(np.isfinite(steps_needed))), "count": len(subset),
                                 "max_steps": args.hybrid_max_steps,
                                 "optimize_seconds": quality[reference]["seconds"]}
            print(f"\nhybrid to reach {reference} PSNR: {hybrid[reference]['reached']}/{len(subset)} reached within "
                  f"{args.hybrid_max_steps} steps; steps {fmt(hybrid[reference]['steps'], 1)}, seconds "
                  f"{fmt(hybrid[reference]['seconds'])} (optimize: {variants[reference].get('num_steps', METHODS['optimize'].defaults['num_steps'])} "
                  f"steps, {fmt(quality[reference]['seconds'])} s)")
        defaults = {"psnr": [], "ssim": [], "seconds": []}
        for i in range(len(subset)):
            x = subset[i:i + 1]
            started = time.perf_counter()
            out = METHODS["hybrid"].run(G, x, D=D, encoder=encoder, seed=args.seed)
            defaults["seconds"].append(time.perf_counter() - started)
            with torch.no_grad():
                m = compute_metrics(G.synthesis(out.ws, noise_mode="const"), x)
            defaults["psnr"].append(m["psnr"][0])
            defaults["ssim"].append(m["ssim"][0])
        hybrid["defaults"] = {k: summary(v) for k, v in defaults.items()}
        hybrid["defaults"]["settings"] = dict(METHODS["hybrid"].defaults)
        print(f"hybrid defaults ({METHODS['hybrid'].defaults['num_steps']} steps): PSNR {fmt(hybrid['defaults']['psnr'])}, "
              f"SSIM {fmt(hybrid['defaults']['ssim'], 4)}, seconds {fmt(hybrid['defaults']['seconds'])}")
        report["hybrid"] = hybrid
    report["load_average_end"] = os.getloadavg()
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
