"""Faces benchmark: detection on a real group photo, time per photo, paste-back exactness and seam, and
identity similarity of reconstructions per inversion method.

  1. Detection: recall and precision of `ganinv.faces.detect` against the ground-truth face boxes of the
     1927 Solvay conference photograph (Debian `visp-images-data`: faces/1280px-Solvay_conference_1927.png
     and ground_truth_detection.txt, 30 faces), at IoU >= 0.5, at IoU >= 0.3 and by centres (each box's
     centre inside the other box); for the HOG detector at upsample 0/1/2 (and the CNN detector with --cnn),
     plus the detection scores of true and false detections.
  2. Time per photo (warm, model files loaded once, median of --repeats): detection, 68 landmarks and
     FFHQ alignment of every face at --size, on the 1280-pixel-wide photo, with the thread count named.
  3. Paste-back: for every face of the group photo and the astronaut, the aligned crop pasted back
     unchanged (an identity edit): max |difference| outside the blend mask (must be 0), PSNR inside the
     mask and on the seam band (0 < mask < 1), with and without colour matching.
  4. Identity: cosine similarity of dlib face descriptors between each aligned face crop (at the model's
     resolution) and its reconstruction, per method with quick settings, plus reference values (another
     person's face; a flat grey image). With emoji64 these are reconstructions by an emoji model, not a
     face model: they measure how much of a face an emoji generator keeps.

    OMP_NUM_THREADS=2 python benchmarks/faces.py --model emoji64 --num-faces 30 --json out/faces.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from ganinv import faces as F

FACES_DIR = Path("/usr/share/visp-images-data/ViSP-images/faces")
PHOTO = FACES_DIR / "1280px-Solvay_conference_1927.png"
TRUTH = FACES_DIR / "ground_truth_detection.txt"

QUICK = {"optimize": {"num_steps": 100}, "encoder": {}, "pti": {"pivot_steps": 100, "num_steps": 50},
         "clone": {"h_steps": 50, "num_steps": 300, "target_psnr": 30.0}}


def ground_truth(path: Path = TRUTH) -> list[tuple[float, float, float, float]]:
    """ViSP's file: 'detection_K' then four 'row column' corners per face -> (x0, y0, x1, y1)."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    boxes, i = [], 0
    while i < len(lines):
        if lines[i][0].startswith("detection"):
            corners = [(float(c), float(r)) for r, c in lines[i + 1:i + 5]]
            xs, ys = [c[0] for c in corners], [c[1] for c in corners]
            boxes.append((min(xs), min(ys), max(xs), max(ys)))
            i += 5
        else:
            i += 1
    return boxes


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def centres_match(a, b) -> bool:
    def inside(p, box):
        return box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]
    return inside(((a[0] + a[2]) / 2, (a[1] + a[3]) / 2), b) and inside(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2), a)


def match(boxes, truth, criterion) -> list[int | None]:
    """Greedy one-to-one matching (detections in score order): the truth index each detection matched."""
    used, out = set(), []
    for box in boxes:
        best = None
        for j, t in enumerate(truth):
            if j not in used and criterion(box, t) and (best is None or iou(box, t) > iou(box, truth[best])):
                best = j
        if best is not None:
            used.add(best)
        out.append(best)
    return out


def detection_table(image, truth, configs) -> list[dict]:
    rows = []
    criteria = {"iou>=0.5": lambda a, b: iou(a, b) >= 0.5, "iou>=0.3": lambda a, b: iou(a, b) >= 0.3,
                "centres": centres_match}
    for detector, upsample in configs:
        start = time.perf_counter()
        faces = F.detect(image, detector=detector, upsample=upsample)
        seconds = time.perf_counter() - start
        faces = sorted(faces, key=lambda f: -f.score)
        boxes = [f.box for f in faces]
        row = {"detector": detector, "upsample": upsample, "detections": len(faces), "seconds": seconds}
        for name, criterion in criteria.items():
            matched = match(boxes, truth, criterion)
            tp = sum(m is not None for m in matched)
            row[name] = {"recall": tp / len(truth), "precision": tp / max(1, len(boxes))}
        matched = match(boxes, truth, criteria["centres"])
        row["scores_true"] = sorted(round(f.score, 3) for f, m in zip(faces, matched) if m is not None)
        row["scores_false"] = sorted(round(f.score, 3) for f, m in zip(faces, matched) if m is None)
        rows.append(row)
    return rows


def time_per_photo(image, size: int, repeats: int) -> dict:
    F.align_faces(image, size)  # warm: model files loaded
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        found = F.align_faces(image, size)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "runs": times, "faces": len(found), "size": size,
            "photo": f"{image.shape[1]}x{image.shape[0]}"}


def psnr(a, b, where) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2)[where].mean())
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def paste_back_table(photos: dict[str, np.ndarray], size: int) -> dict:
    out = {}
    for color_match in (True, False):
        max_outside, inside, seam = 0, [], []
        for image in photos.values():
            for crop, alignment, _ in F.align_faces(image, size):
                pasted, mask = F.paste_back(image, crop, alignment, color_match=color_match, return_mask=True)
                max_outside = max(max_outside, int(np.abs(pasted.astype(int) - image)[mask == 0].max(initial=0)))
                inside.append(psnr(pasted, image, mask > 0))
                seam.append(psnr(pasted, image, (mask > 0) & (mask < 1)))
        out["color_match" if color_match else "no_color_match"] = {
            "faces": len(inside), "max_abs_diff_outside": max_outside,
            "psnr_inside_median": statistics.median(inside), "psnr_seam_median": statistics.median(seam),
            "psnr_inside_min": min(inside), "psnr_seam_min": min(seam)}
    return out


def to_tensor(crop: np.ndarray, channels: int) -> torch.Tensor:
    from ganinv.cli.align import crop_to_target
    return crop_to_target(crop, channels)


def identity_table(model_name: str, crops: list[np.ndarray], methods: list[str], seed: int) -> dict:
    import ganinv
    from ganinv.metrics import face_identity, psnr as psnr_metric
    model = ganinv.load_model(model_name)
    G = model.G
    targets = torch.cat([to_tensor(c, G.img_channels) for c in crops])
    rows = {}
    grey = torch.zeros_like(targets[:1])
    rows["reference: flat grey image"] = [face_identity(grey, targets[i:i + 1])[0] for i in range(len(targets))]
    rows["reference: another person"] = [face_identity(targets[(i + 1) % len(targets)][None], targets[i:i + 1])[0]
                                         for i in range(len(targets))]
    table = {name: {"median": statistics.median(v), "mean": statistics.fmean(v), "count": len(v)}
             for name, v in rows.items()}
    for method in methods:
        identity, psnrs, seconds = [], [], []
        for i in range(len(targets)):
            target = targets[i:i + 1]
            start = time.perf_counter()
            result = ganinv.invert(model, target, method, seed=seed, **QUICK[method])
            seconds.append(time.perf_counter() - start)
            identity.append(face_identity(result.reconstruction, target)[0])
            psnrs.append(float(psnr_metric(result.reconstruction.clamp(-1, 1), target)[0]))
        table[method] = {"median": statistics.median(identity), "mean": statistics.fmean(identity),
                         "count": len(identity), "psnr_median": statistics.median(psnrs),
                         "seconds_median": statistics.median(seconds), "settings": QUICK[method]}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="emoji64")
    parser.add_argument("--size", type=int, default=256, help="alignment size for the timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-faces", type=int, default=30,
                        help="faces for the identity table (astronaut first); 0 skips the table")
    parser.add_argument("--methods", default="optimize,encoder,pti,clone")
    parser.add_argument("--cnn", action="store_true", help="also measure dlib's CNN detector (slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    from ganinv.faces.detection import as_rgb_uint8
    from skimage.data import astronaut
    group = as_rgb_uint8(PHOTO)
    truth = ground_truth()
    configs = [("hog", 0), ("hog", 1), ("hog", 2)] + ([("cnn", 1)] if args.cnn else [])
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
              "threads": threads, "photo": str(PHOTO), "ground_truth_faces": len(truth),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip()}
    F.detect(group[:200, :200])  # load the model files once, outside every timing
    report["detection"] = detection_table(group, truth, configs)
    print(json.dumps(report["detection"], indent=1))
    report["time_per_photo"] = time_per_photo(group, args.size, args.repeats)
    print(json.dumps(report["time_per_photo"]))
    photos = {"solvay": group, "astronaut": astronaut()}
    report["paste_back"] = paste_back_table(photos, 256)
    print(json.dumps(report["paste_back"], indent=1))
    import ganinv
    resolution = ganinv.load_model(args.model).G.img_resolution
    crops = [c for c, _, _ in F.align_faces(photos["astronaut"], resolution)]
    crops += [c for c, _, _ in F.align_faces(group, resolution)]
    crops = crops[:args.num_faces]
    methods = [m for m in args.methods.split(",") if m]
    if args.num_faces == 0:
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
        return
    report["identity"] = {"model": args.model, "resolution": resolution,
                          "table": identity_table(args.model, crops, methods, args.seed)}
    print(json.dumps(report["identity"], indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
