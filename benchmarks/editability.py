"""Editability benchmark: the distortion-editability trade-off, per inversion method.

Inverts held-out images (never seen in training) with each method, then edits every result along the
model's shipped InterFaceGAN directions and asks the model's classifier what changed
(`ganinv.editing.measure_edit`): the attribute's log-odds change at each strength, the share of images
carried across the classifier's decision, the pixel change, and how much the other classifier heads
move. The same edits on sampled latents (prior samples) are the reference: `ratio` = the change on
inverted latents / the change on sampled latents at the same strength (1 = as editable as the GAN's own
samples). Distortion is each method's reconstruction PSNR on the same images.

    python benchmarks/editability.py --model fashion32 --num-heldout 6
    python benchmarks/editability.py --methods optimize-w,optimize,encoder --directions interfacegan_class_Bag_vs_rest
    python benchmarks/editability.py --results-dir out/inverted   # reuse saved inversions on a rerun
    python benchmarks/editability.py --model emoji64 --heldout-where "group=People & Body" \
        --directions interfacegan_skin_tone_1-2_vs_4-5,interfacegan_gender_man_vs_woman
    python benchmarks/editability.py --model fashion32 --json docs/data/editability_fashion32.json --plot scatter.png

`--plot` (benchmarks/plots.py, needs matplotlib) draws the trade-off: each method's reconstruction PSNR
against its editability ratio at the report strength.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inversion import VARIANTS, parse_overrides  # noqa: E402

from ganinv.editing import Latent, editability_ratio, load_direction, measure_edit, sample_prior_ws  # noqa: E402
from ganinv.inversion import invert  # noqa: E402
from ganinv.inversion.base import InversionResult  # noqa: E402
from ganinv.metrics import format_metric  # noqa: E402
from ganinv.models.registry import load_model  # noqa: E402


def _median(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return statistics.median(values) if values else None


def _mean(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return statistics.fmean(values) if values else None


def inverted_results(model, variant: str, images, args) -> list[InversionResult]:
    method, settings = VARIANTS.get(variant, (variant, {}))
    settings = {**settings, **parse_overrides(args.set).get(variant, {})}
    results = []
    for i, (name, target) in enumerate(images):
        cached = Path(args.results_dir) / variant / name if args.results_dir else None
        if cached is not None and (cached / "report.json").exists():
            results.append(InversionResult.load(cached, model=model))
            continue
        result = invert(model, target, method, seed=args.seed, **settings)
        if cached is not None:
            result.save(cached)
        print(f"  {variant} {name}: PSNR {result.metrics['psnr'][0]:.2f} dB in {result.seconds:.1f} s",
              file=sys.stderr, flush=True)
        results.append(result)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--methods", default="optimize-w,optimize,pti,clone,encoder,hybrid,multicode",
                        help=f"inversion variants (see benchmarks/inversion.py: {', '.join(VARIANTS)})")
    parser.add_argument("--directions", default=None,
                        help="comma list of direction names (default: every shipped interfacegan_* direction)")
    parser.add_argument("--num-heldout", type=int, default=6)
    parser.add_argument("--heldout-where", action="append", default=[], metavar="FIELD=VALUE",
                        help="only held-out images whose label FIELD equals VALUE (repeatable; e.g. "
                             "'group=People & Body' so skin-tone and gender edits have a subject)")
    parser.add_argument("--num-samples", type=int, default=64, help="sampled latents for the reference")
    parser.add_argument("--strengths", default="-3,-2,-1,1,2,3")
    parser.add_argument("--report-strength", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", default=None, help="save inversions here and reuse them on a rerun")
    parser.add_argument("--set", action="append", default=[], metavar="VARIANT.KEY=VALUE",
                        help="override a variant's setting, e.g. clone.max_seconds=60")
    parser.add_argument("--json", default=None, help="write every direction's rows and the summary here")
    parser.add_argument("--plot", default=None, help="draw the distortion-editability scatter into this PNG "
                                                     "(needs matplotlib)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    G = model.G
    if model.classifier is None:
        raise SystemExit(f"model {model.name} ships no classifier: editability needs one to measure attributes")
    if model.heldout is None:
        raise SystemExit(f"model {model.name} ships no held-out images")
    names = args.directions.split(",") if args.directions else \
        [n for n in model.directions if n.startswith("interfacegan_")]
    if not names:
        raise SystemExit(f"model {model.name} has no InterFaceGAN directions; give --directions")
    directions = [load_direction(name, model=model)[0] for name in names]
    labels = model.heldout_labels
    pool = np.arange(len(model.heldout))
    for condition in args.heldout_where:
        field, sep, value = condition.partition("=")
        if not sep:
            raise SystemExit(f"--heldout-where wants FIELD=VALUE, got {condition!r}")
        if labels is None:
            raise SystemExit(f"model {model.name} ships no held-out labels to filter on")
        pool = np.array([i for i in pool if str(labels[i].get(field)) == value], dtype=int)
        if len(pool) == 0:
            raise SystemExit(f"no held-out image has {field}={value!r}")
    picks = np.linspace(0, len(pool) - 1, min(args.num_heldout, len(pool))).astype(int)
    idx = pool[picks]
    images = [(f"heldout{i}", model.heldout[i:i + 1]) for i in idx]

    sources: dict[str, object] = {"sampled": Latent(ws=sample_prior_ws(G, args.num_samples, seed=args.seed + 1000),
                                                   G=G, label="sampled")}
    distortion: dict[str, dict] = {"sampled": {}}
    for variant in args.methods.split(","):
        print(f"inverting {len(images)} held-out images with {variant}", file=sys.stderr, flush=True)
        results = inverted_results(model, variant, images, args)
        sources[variant] = results
        distortion[variant] = {"psnr": _median([r.metrics["psnr"][0] for r in results]),
                               "seconds": _median([r.seconds for r in results])}

    rows = []
    for direction in directions:
        attribute = direction.settings.get("attribute")
        if not attribute:
            print(f"skipping {direction.name}: it names no classifier attribute", file=sys.stderr)
            continue
        reference = None
        for label, source in sources.items():
            m = measure_edit(source, direction, model.classifier, attribute, args.strengths, model=model, label=label)
            if label == "sampled":
                reference = m
            ratio = editability_ratio(m, reference)
            rows.append({"direction": direction.name, "attribute": attribute, "source": label,
                         "psnr": distortion[label].get("psnr"), "seconds": distortion[label].get("seconds"),
                         "ratio": ratio, **m.to_dict()})
    s = args.report_strength
    print()
    print(f"model {model.name} ({G.img_resolution}px), {len(images)} held-out images, {args.num_samples} sampled "
          f"latents, strengths {args.strengths} (prior std), report at +/-{s:g}; threads {args.threads}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    header = (f"{'source':12} {'PSNR':>6} {'d+':>7} {'d-':>7} {'ratio+':>6} {'ratio-':>6} {'flip+':>5} "
              f"{'flip-':>5} {'pixMSE+':>8} {'other+':>6}")

    def cells(row):
        plus, minus = row["strengths"].index(s), row["strengths"].index(-s)
        return (row["score_change"][plus], row["score_change"][minus], row["ratio"][plus], row["ratio"][minus],
                row["flip_rate"][plus], row["flip_rate"][minus], row["pixel_mse"][plus], row["other_change"][plus])

    for direction in dict.fromkeys(r["direction"] for r in rows):
        print(f"\n{direction}  (d = log-odds change the classifier sees; ratio = d / d on sampled latents)")
        print(header)
        for row in (r for r in rows if r["direction"] == direction):
            dp, dm, rp, rm, fp, fm, mse, other = cells(row)
            print(f"{row['source']:12} {format_metric(row['psnr'], 2):>6} {format_metric(dp, 2):>7} "
                  f"{format_metric(dm, 2):>7} {format_metric(rp, 2):>6} {format_metric(rm, 2):>6} "
                  f"{format_metric(fp, 2):>5} {format_metric(fm, 2):>5} {format_metric(mse, 4):>8} "
                  f"{format_metric(other, 3):>6}")
    summary = []
    print(f"\nsummary over {len(set(r['direction'] for r in rows))} directions (median of per-direction values)")
    print(f"{'source':12} {'PSNR':>6} {'s/img':>6} {'ratio+':>6} {'ratio-':>6} {'flip+':>5} {'flip-':>5} "
          f"{'pixMSE+':>8} {'other+':>6}")
    for label in sources:
        sel = [cells(r) for r in rows if r["source"] == label]
        entry = {"source": label, "psnr": distortion[label].get("psnr"), "seconds": distortion[label].get("seconds"),
                 "ratio_plus": _median([c[2] for c in sel]), "ratio_minus": _median([c[3] for c in sel]),
                 "flip_plus": _median([c[4] for c in sel]), "flip_minus": _median([c[5] for c in sel]),
                 "pixel_mse_plus": _median([c[6] for c in sel]), "other_plus": _median([c[7] for c in sel]),
                 "score_change_plus": _median([c[0] for c in sel])}
        summary.append(entry)
        print(f"{label:12} {format_metric(entry['psnr'], 2):>6} {format_metric(entry['seconds'], 1):>6} "
              f"{format_metric(entry['ratio_plus'], 2):>6} {format_metric(entry['ratio_minus'], 2):>6} "
              f"{format_metric(entry['flip_plus'], 2):>5} {format_metric(entry['flip_minus'], 2):>5} "
              f"{format_metric(entry['pixel_mse_plus'], 4):>8} {format_metric(entry['other_plus'], 3):>6}")
    data = {"benchmark": "editability", "model": model.name, "images": [n for n, _ in images],
            "heldout_where": args.heldout_where, "overrides": args.set, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "torch": torch.__version__, "strengths": args.strengths,
            "report_strength": s, "rows": rows, "summary": summary, "heldout_labels_known": labels is not None,
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1, default=str) + "\n")
    if args.plot:
        from plots import plot_editability
        plot_editability(data, args.plot)

if __name__ == "__main__":
    main()
