"""Restoration benchmark: inpainting, colorization and super-resolution through inversion vs simple baselines.

Held-out images of an embedded model (never seen in training) are the ground truth. Each is degraded
(a hole, its luminance, a box-downsampled copy; ganinv.inversion.degradation), restored by each
inversion method with `degradation=` (short settings, below) and by a simple baseline, and the PSNR of the
*restored region* against the ground truth is reported: the hole's pixels for inpainting, the whole
image for colorization and super-resolution. Baselines: OpenCV's inpainting (`cv2.inpaint`, Telea,
radius 3; needs the `bench` extra's opencv-python-headless), bicubic upsampling (PIL), and the gray
image copied into every colour channel.

    python benchmarks/restoration.py --model emoji64 --num-heldout 3
    python benchmarks/restoration.py --model fashion32 --num-heldout 3 --tasks inpaint,super_resolution
    python benchmarks/restoration.py --model emoji64 --methods optimize,multicode --set multicode.codes=4 --json out.json

Settings are short (CPU minutes): `SHORT` lists them; `--set METHOD.KEY=VALUE` changes one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inversion import parse_overrides  # noqa: E402

from ganinv.data.io import to_pil, to_uint8  # noqa: E402
from ganinv.inversion import invert  # noqa: E402
from ganinv.inversion.degradation import Colorize, Inpaint, SuperResolution  # noqa: E402
from ganinv.models.registry import load_model  # noqa: E402

#: Short settings per method (the methods' defaults run 2-10x longer).
SHORT = {
    "optimize": dict(num_steps=100),
    "multicode": dict(num_steps=100),
    "pti": dict(pivot_steps=100, num_steps=50),
    "clone": dict(h_steps=100, num_steps=200),
}
TASKS = ("inpaint", "colorize", "super_resolution")


def hole_mask(resolution: int) -> torch.Tensor:
    """[1, 1, R, R]: 1 = known, a centred square hole of half the side (a quarter of the pixels)."""
    mask = torch.ones(1, 1, resolution, resolution)
    lo, hi = resolution // 4, resolution - resolution // 4
    mask[..., lo:hi, lo:hi] = 0
    return mask


def psnr(image: torch.Tensor, truth: torch.Tensor, region: torch.Tensor) -> float:
    """PSNR over the pixels where `region` [1, 1, H, W] is True (all channels)."""
    diff = (image.clamp(-1, 1) - truth).square()
    mse = diff[region.expand_as(diff)].mean()
    return float(10 * torch.log10(4 / mse.clamp_min(1e-12)))


def baseline(task: str, truth: torch.Tensor, degradation, observation: torch.Tensor) -> tuple[str, torch.Tensor]:
    """(name, restored image [1, C, R, R]) of the simple baseline for `task`."""
    resolution = truth.shape[-1]
    if task == "inpaint":
        import cv2

        image = to_uint8(truth)[0]  # [H, W, C]
        hole = (degradation.mask[0, 0].numpy() < 0.5).astype(np.uint8) * 255
        image = np.where(hole[..., None] > 0, 0, image).astype(np.uint8)  # the baseline never sees the hole
        filled = cv2.inpaint(np.ascontiguousarray(image), hole, 3, cv2.INPAINT_TELEA)
        filled = filled[..., None] if filled.ndim == 2 else filled
        return "cv2.inpaint (Telea)", torch.from_numpy(filled).permute(2, 0, 1)[None].float() / 127.5 - 1
    if task == "colorize":
        return "gray copied to RGB", observation.clone()
    from PIL import Image

    small = to_pil(observation[0])
    up = small.resize((resolution, resolution), Image.BICUBIC)
    array = np.asarray(up, dtype=np.uint8)
    array = array[..., None] if array.ndim == 2 else array
    return "bicubic upsampling", torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="emoji64")
    parser.add_argument("--num-heldout", type=int, default=3)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--methods", default=",".join(SHORT))
    parser.add_argument("--factor", type=int, default=4, help="super-resolution factor")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    G = model.G
    if model.heldout is None:
        raise SystemExit(f"{model.name} has no held-out images")
    idx = np.linspace(0, len(model.heldout) - 1, min(args.num_heldout, len(model.heldout))).astype(int)
    overrides = parse_overrides(args.set)
    tasks = [t for t in args.tasks.split(",") if t != "colorize" or G.img_channels == 3]
    rows = []
    for task in tasks:
        if task == "inpaint":
            degradation = Inpaint(hole_mask(G.img_resolution))
            region = degradation.mask < 0.5
        elif task == "colorize":
            degradation, region = Colorize(), torch.ones(1, 1, G.img_resolution, G.img_resolution, dtype=torch.bool)
        elif task == "super_resolution":
            degradation = SuperResolution(args.factor)
            region = torch.ones(1, 1, G.img_resolution, G.img_resolution, dtype=torch.bool)
        else:
            raise SystemExit(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        for i in idx:
            truth = model.heldout[i:i + 1].float().cpu()
            observation = degradation.observe(truth, G)
            name, restored = baseline(task, truth, degradation, observation)
            rows.append({"task": task, "image": f"heldout{i}", "restorer": name, "psnr": psnr(restored, truth, region),
                         "seconds": None})
            print(json.dumps(rows[-1]), flush=True)
            for method in args.methods.split(","):
                settings = {**SHORT.get(method, {}), **overrides.get(method, {})}
                result = invert(model, observation, method, degradation=degradation, seed=args.seed,
                                device=args.device, **settings)
                rows.append({"task": task, "image": f"heldout{i}", "restorer": method,
                             "psnr": psnr(result.reconstruction, truth, region), "seconds": result.seconds,
                             "observed_psnr": result.metrics["psnr"][0], "settings": settings})
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "settings"}), flush=True)
    print()
    print(f"model {model.name} ({G.img_resolution}px), {len(idx)} held-out images, device {args.device}, "
          f"threads {args.threads}, {platform.machine()}, torch {torch.__version__}")
    print(f"{'task':17} {'restorer':22} {'n':>2} {'PSNR med':>8} {'(mean)':>7} {'s/img med':>9}")
    table = []
    for task in tasks:
        for restorer in dict.fromkeys(r["restorer"] for r in rows if r["task"] == task):
            sel = [r for r in rows if r["task"] == task and r["restorer"] == restorer]
            values = [r["psnr"] for r in sel]
            seconds = [r["seconds"] for r in sel if r["seconds"] is not None]
            entry = {"task": task, "restorer": restorer, "n": len(sel), "psnr_median": statistics.median(values),
                     "psnr_mean": statistics.fmean(values),
                     "seconds_median": statistics.median(seconds) if seconds else None}
            table.append(entry)
            sec = f"{entry['seconds_median']:.1f}" if seconds else "-"
            print(f"{task:17} {restorer:22} {len(sel):>2} {entry['psnr_median']:>8.2f} {entry['psnr_mean']:>7.2f} "
                  f"{sec:>9}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"benchmark": "restoration", "model": model.name, "rows": rows,
                                               "table": table, "threads": args.threads, "device": args.device,
                                               "time": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")


if __name__ == "__main__":
    main()
