"""Reconstruction benchmark: every inversion method on held-out images (and natural photos), side by side.

For each method (and named variants, e.g. Clone's paper settings) and each image: PSNR, SSIM, MSE on
[-1, 1] at the generator's resolution, seconds per image at batch 1 (the method's own initialization
included, model load excluded), stop reason, and for tuning methods the locality of the tuned generator
(mean |G+(z) - G(z)| over 64 prior samples and its ratio to the change at the pivot; with PTI/Clone's
locality gate on, the default, the ratio of the tuned weights alone is printed beside it as
"(ungated)"). Tables give the
median and mean over images with the count. LPIPS is printed only with genuine weights (--lpips-dir).

    python benchmarks/inversion.py --model fashion32 --num-heldout 8 --photos
    python benchmarks/inversion.py --variants optimize,pti,clone,clone-paper --json out/inversion.json
    python benchmarks/inversion.py --model emoji64 --num-heldout 3 --variants optimize,pti,clone --plot time_psnr.png

Every run records the PSNR each step reported with its time since the call (`trace` in the JSON), so
`--plot` (benchmarks/plots.py, needs matplotlib) draws time vs PSNR per method.
    python benchmarks/inversion.py --results-dir out/inverted   # then benchmarks/editability.py --results-dir out/inverted
    python benchmarks/inversion.py --model emoji64 --variants optimize-w+,multicode --num-heldout 3 --photos
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ganinv.data.io import load_image
from ganinv.inversion import invert
from ganinv.metrics import format_metric
from ganinv.models.registry import load_model

_OLD_OBJECTIVE = dict(laplacian_weight=0.1, band_weights=(), frozen_params=())

# name -> (method, settings). Defaults are the methods' shipped defaults (never weakened here).
VARIANTS = {
    "optimize-w": ("optimize", dict(space="w", optimize_noise=False)),
    "optimize": ("optimize", dict()),
    "pti": ("pti", dict()),
    "clone": ("clone", dict(target_psnr=35.0)),
    "clone-distill": ("clone", dict(global_loss="distillation", global_every=1, global_learning_rate=2e-3,
                                    target_psnr=35.0)),
    "clone-local": ("clone", dict(target_psnr=35.0, locality_weight=1.0)),
    "clone-from-optimize": ("clone", dict(target_psnr=35.0, init_from="optimize")),  # h(x) = optimize, not the encoder
    # Earlier Clone defaults, spelled out, so docs/history.md's comparisons rerun as they were measured
    # (until 2026-11-23 Clone tuned every block on MSE + 0.1 * L_recon; the fused-Adam fix of f21942d stays).
    "clone-spaced": ("clone", dict(target_psnr=35.0, learning_rate=5e-3, adv_every=4, global_every=8,
                                   **_OLD_OBJECTIVE)),  # 2nd defaults
    "clone-before": ("clone", dict(target_psnr=35.0, learning_rate=5e-3, adv_every=1, global_every=4,
                                   **_OLD_OBJECTIVE)),  # 1st defaults
    "clone-dense": ("clone", dict(target_psnr=35.0, learning_rate=1e-2, adv_every=8, global_every=16,
                                  **_OLD_OBJECTIVE)),  # 3rd defaults (86269a7)
    "clone-before-bands": ("clone", dict(target_psnr=35.0, learning_rate=1e-2,
                                         **_OLD_OBJECTIVE)),  # 4th defaults (41fa06a)
    "clone-all-blocks": ("clone", dict(target_psnr=35.0, frozen_params=())),  # every block tuned (before f3b42a6)
    "pti-before": ("pti", dict(learning_rate=1e-3)),  # PTI's learning rate before 86269a7
    "clone-paper": ("clone", dict(preset="paper", target_psnr=35.0, max_seconds=120.0)),
    "clone-untimed": ("clone", dict()),
    "encoder": ("encoder", dict()),
    "hybrid": ("hybrid", dict()),
    "optimize-w+": ("optimize", dict(optimize_noise=False)),  # W+ without noise maps: multicode's baseline
    "multicode": ("multicode", dict()),
}


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """--set VARIANT.KEY=VALUE items -> {variant: {key: value}} (values parsed as JSON when they are)."""
    overrides: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        variant, dot, setting = key.partition(".")
        if not sep or not dot or not variant or not setting:
            raise SystemExit(f"--set {item!r}: expected VARIANT.KEY=VALUE, e.g. clone.max_seconds=60")
        try:
            overrides.setdefault(variant, {})[setting] = json.loads(value)
        except json.JSONDecodeError:
            overrides.setdefault(variant, {})[setting] = value
    return overrides


def natural_photos(resolution: int, channels: int) -> list[tuple[str, torch.Tensor]]:
    try:
        from skimage import data
    except ImportError:
        print("scikit-image not installed: skipping natural photos (pip install scikit-image)", file=sys.stderr)
        return []
    out = []
    for name in ("astronaut", "coffee", "chelsea"):
        arr = getattr(data, name)()
        from PIL import Image
        out.append((name, load_image(Image.fromarray(arr), resolution, channels)))
    return out


def summarize(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return None, None
    return statistics.median(values), statistics.fmean(values)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--variants", default="optimize-w,optimize,pti,clone,clone-paper,multicode")
    parser.add_argument("--num-heldout", type=int, default=8)
    parser.add_argument("--photos", action="store_true", help="add scikit-image's astronaut/coffee/chelsea")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="VARIANT.KEY=VALUE",
                        help="override a variant's setting, e.g. clone.p=0.25")
    parser.add_argument("--lpips-dir", default=None)
    parser.add_argument("--json", default=None, help="write every run (with its time, PSNR samples) and the table")
    parser.add_argument("--plot", default=None, help="draw time vs PSNR per method into this PNG (needs matplotlib)")
    parser.add_argument("--results-dir", default=None,
                        help="save each result as DIR/VARIANT/IMAGE (benchmarks/editability.py can reuse them)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    G = model.G
    images: list[tuple[str, str, torch.Tensor]] = []
    if model.heldout is not None and args.num_heldout > 0:
        # Evenly spaced held-out images (never training images).
        idx = np.linspace(0, len(model.heldout) - 1, min(args.num_heldout, len(model.heldout))).astype(int)
        for i in idx:
            images.append(("heldout", f"heldout{i}", model.heldout[i:i + 1]))
    if args.photos:
        images += [("photo", name, t) for name, t in natural_photos(G.img_resolution, G.img_channels)]
    if not images:
        raise SystemExit("no images: the model has no held-out set and --photos was not given")
    overrides = parse_overrides(args.set)
    rows = []
    for variant in args.variants.split(","):
        method, settings = VARIANTS.get(variant, (variant, {}))
        settings = {**settings, **overrides.get(variant, {})}
        for group, name, target in images:
            trace = []  # [seconds since the call, PSNR, stage] of each step that reported a PSNR
            started = time.perf_counter()

            def record(info, trace=trace, started=started):
                if info.psnr is not None:
                    trace.append([round(time.perf_counter() - started, 3), round(float(info.psnr), 3), info.stage])
                return None

            result = invert(model, target, method, seed=args.seed, device=args.device, callback=record,
                            metrics=("ssim", "psnr_const_noise"),
                            compute_lpips=args.lpips_dir is not None, lpips_dir=args.lpips_dir, **settings)
            if not trace or trace[-1][1] < result.metrics["psnr"][0]:  # a final step that stopped the run
                trace.append([round(result.seconds, 3), round(float(result.metrics["psnr"][0]), 3), "result"])
            if args.results_dir:
                result.save(f"{args.results_dir}/{variant}/{name}")
            loc = result.extras.get("locality") or {}
            ungated = result.extras.get("locality_ungated") or loc
            row = {"variant": variant, "method": method, "group": group, "image": name,
                   "psnr": result.metrics["psnr"][0], "ssim": (result.metrics.get("ssim") or [None])[0],
                   "mse": result.metrics["mse"][0], "seconds": result.seconds,
                   "psnr_const_noise": (result.metrics.get("psnr_const_noise") or [None])[0],
                   "lpips_alex": (result.metrics.get("lpips_alex") or [None])[0],
                   "prior_change": loc.get("prior_mean_abs_change"), "locality_ratio": loc.get("locality_ratio"),
                   "locality_ratio_ungated": ungated.get("locality_ratio"),
                   "stop_reason": result.stop_reason, "settings": {k: v for k, v in result.settings.items()
                                                                     if k != "preview_every"},
                   "trace": trace}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("settings", "trace")}), flush=True)
    print()
    print(f"model {model.name} ({G.img_resolution}px), device {args.device}, threads {args.threads}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"{'variant':14} {'images':12} {'n':>2} {'PSNR med':>8} {'(mean)':>7} {'SSIM med':>8} {'MSE med':>9} "
          f"{'s/img med':>9} {'prior chg':>9} {'loc ratio':>9} {'(ungated)':>9} {'LPIPS':>6}")
    table = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        for group in dict.fromkeys(r["group"] for r in rows):
            sel = [r for r in rows if r["variant"] == variant and r["group"] == group]
            if not sel:
                continue
            psnr_med, psnr_mean = summarize([r["psnr"] for r in sel])
            entry = {"variant": variant, "group": group, "n": len(sel), "psnr_median": psnr_med,
                     "psnr_mean": psnr_mean, "ssim_median": summarize([r["ssim"] for r in sel])[0],
                     "mse_median": summarize([r["mse"] for r in sel])[0],
                     "seconds_median": summarize([r["seconds"] for r in sel])[0],
                     "prior_change_median": summarize([r["prior_change"] for r in sel])[0],
                     "locality_ratio_median": summarize([r["locality_ratio"] for r in sel])[0],
                     "locality_ratio_ungated_median": summarize([r["locality_ratio_ungated"] for r in sel])[0],
                     "lpips_median": summarize([r["lpips_alex"] for r in sel])[0],
                     "settings": sel[0]["settings"]}
            table.append(entry)
            print(f"{variant:14} {group:12} {len(sel):>2} {format_metric(psnr_med, 2):>8} "
                  f"{format_metric(psnr_mean, 2):>7} {format_metric(entry['ssim_median'], 4):>8} "
                  f"{format_metric(entry['mse_median'], 5):>9} {format_metric(entry['seconds_median'], 1):>9} "
                  f"{format_metric(entry['prior_change_median'], 4):>9} "
                  f"{format_metric(entry['locality_ratio_median'], 3):>9} "
                  f"{format_metric(entry['locality_ratio_ungated_median'], 3):>9} {format_metric(entry['lpips_median'], 3):>6}")
    data = {"benchmark": "inversion", "model": model.name, "device": args.device, "threads": args.threads,
            "machine": platform.machine(), "torch": torch.__version__, "rows": rows, "table": table,
            "target_psnr": VARIANTS["clone"][1].get("target_psnr") if "clone" in args.variants.split(",") else None,
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1, default=str) + "\n")
    if args.plot:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from plots import plot_time_psnr
        plot_time_psnr(data, args.plot)


if __name__ == "__main__":
    main()
