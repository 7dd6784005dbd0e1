"""Clone settings sweep: PSNR, steps and locality reached within a time cap, per setting and image.

Clone (Feng et al., "Near Perfect GAN Inversion") is run from the model's default start h(x) on
held-out images (or the inversion benchmark's photos), once per `--config` (a JSON object of clone
settings over the defaults), each capped at `--max-seconds`. One JSON line per run on stdout, so runs can be compared or plotted; `psnr_at`
is the time-vs-PSNR trade-off: the best PSNR the tuning had reached by each of `--marks` seconds
(wall clock from the call, h(x) included; PSNR of the step's own reconstruction). With several
images (or `--repeat`), a last line per config gives the medians; `ms_per_step` includes h(x), so
compare it between configs at the same `num_steps`. `--fd-samples N` adds `fd`: the Fréchet distance
between the shipped classifier's features of N prior samples of the tuned generator and of the model's
real images (the same for the untouched generator is printed first): whether G+ still makes realistic
images away from the target. With the locality gate on (the default), `fd` is the gated generator's
and `fd_ungated` that of G+'s weights alone; `--band-samples N` looks at N latents half-way through
the gate, where G and G+ are blended (change from G and, with `--fd-samples`, Fréchet distance of G,
gated and ungated G+ there). `--json PATH` writes every run with its (seconds, PSNR) samples and the
medians; `--plot PATH.png` draws time vs PSNR from them (benchmarks/plots.py, needs matplotlib).

    python benchmarks/clone_sweep.py --model emoji64 --images 0 --config '{}' --config '{"adv_every": 4}'
    python benchmarks/clone_sweep.py --model fashion32 --images 0,999,1999 --config '{}' \
        --config '{"preset": "paper"}' --json docs/data/clone_sweep_fashion32.json --plot time_psnr.png
    python benchmarks/clone_sweep.py --model emoji64 --images 0,207,414 --config '{}' --config '{"preset": "paper"}'
    python benchmarks/clone_sweep.py --model emoji64 --images 207 --repeat 3 --config '{"num_steps": 300}' \
        --config '{"num_steps": 300, "adv_every": 8, "global_every": 16}'
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark modules (inversion, plots)

import ganinv  # noqa: E402
from ganinv.data.io import to_uint8  # noqa: E402
from ganinv.metrics import psnr  # noqa: E402
from ganinv.models.local import ungated  # noqa: E402


def _median_reached(values):
    """Median of a mark over runs, a run that never reached it counting as later than any (None if the
    median run did not reach it)."""
    value = statistics.median(float("inf") if v is None else v for v in values)
    return None if value == float("inf") else value


def _as_saved(images: torch.Tensor) -> torch.Tensor:
    """Images as an 8-bit PNG stores them, read back into [-1, 1]."""
    return torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def _max_or_none(values):
    values = list(values)
    return round(max(values), 2) if values else None


def _median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _frechet_to_real(model, num_samples: int, seed: int):
    """G -> Fréchet distance of the classifier features of G's prior samples to the model's real images."""
    from ganinv.train.quality import classifier_features, frechet_distance, generate_samples
    real_features = classifier_features(model.classifier, model.real_images)

    def fd_of(G=None, images=None) -> float:
        samples = generate_samples(G, num_samples, seed=seed) if images is None else images
        return round(frechet_distance(classifier_features(model.classifier, samples), real_features), 2)
    return fd_of


@torch.no_grad()
def _band(model, result, fd_of, num_samples: int, seed: int) -> dict:
    """Latents half-way through the locality gate (weight 0.5: on the segment from the pivot to each of
    `num_samples` prior latents, where the gate blends G and G+), rendered by G, the gated G+ and the
    ungated G+: mean |change| from G and the Fréchet distance to the real images of each."""
    from ganinv.models.local import gate_distance
    gated = result.G_tuned
    G = model.G
    z = torch.randn([num_samples, G.z_dim], generator=torch.Generator().manual_seed(seed))
    prior = G.mapping(z, None, update_w_avg=False)
    pivot = result.ws[:1]
    halfway = (gated.synthesis.inner_radius + gated.synthesis.outer_radius) / 2
    fraction = (halfway / gate_distance(prior, pivot)).clamp(max=1).float().view(-1, 1, 1)
    ws = pivot + fraction * (prior - pivot)
    images = {name: torch.cat([net.synthesis(ws[i:i + 50]).clamp(-1, 1) for i in range(0, num_samples, 50)])
              for name, net in (("base", G), ("gated", gated), ("ungated", gated.tuned_generator))}
    out = {"band_gate_median": round(float(gated.synthesis.gate(ws).median()), 3)}
    for name in ("gated", "ungated"):
        out[f"band_change_{name}"] = round(float((images[name] - images["base"]).abs().mean()), 4)
    if fd_of is not None:
        for name, value in images.items():
            out[f"band_fd_{name}"] = fd_of(images=value)
    return out


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model name or folder (its held-out images are used)")
    parser.add_argument("--images", default="0",
                        help="comma list of held-out indices and scikit-image photo names (astronaut, coffee, chelsea)")
    parser.add_argument("--config", action="append", default=[], help="JSON object of clone settings (repeatable)")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--target-psnr", type=float, default=35.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--band-samples", type=int, default=0,
                        help="N latents half-way through the locality gate: change from G and (with --fd-samples) "
                             "Fréchet distance, for G, the gated and the ungated G+")
    parser.add_argument("--fd-samples", type=int, default=0,
                        help="prior samples for the Fréchet distance of G+ (needs the model's classifier and "
                             "real images)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every config this many times per image, interleaved (for fair ms_per_step)")
    parser.add_argument("--marks", default="10,20,30,45,60", help="comma list of seconds for psnr_at")
    parser.add_argument("--psnr-marks", default="35,40,45,50",
                        help="comma list of dB for step_at and seconds_at: the first tuning step (counted from 0) "
                             "and the time at which the reconstruction reached each (load-independent: steps)")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="seconds of the traces: wall clock, or the process's CPU time (with --threads 1 "
                             "it counts only this run's work on a machine shared with other jobs; "
                             "--max-seconds stays wall clock)")
    parser.add_argument("--json", default=None, help="write the runs (with their time, PSNR samples) here")
    parser.add_argument("--plot", default=None, help="draw time vs PSNR into this PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = []
    for text in args.config or ["{}"]:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            sys.exit(f"--config {text!r} is not JSON: {e}")
        if not isinstance(config, dict):
            sys.exit(f"--config {text!r} must be a JSON object of clone settings")
        configs.append(config)
    model = ganinv.load_model(args.model)
    indices = [int(i) if i.strip().isdigit() else i.strip() for i in args.images.split(",")]
    targets = {}
    photo_names = [i for i in indices if isinstance(i, str)]
    if photo_names:
        from inversion import natural_photos  # the inversion benchmark's photos, resized the same way
        photos = dict(natural_photos(model.G.img_resolution, model.G.img_channels))
        unknown = [name for name in photo_names if name not in photos]
        if unknown:
            sys.exit(f"unknown images {unknown}: expected held-out indices or one of {sorted(photos)}")
        targets.update({name: photos[name] for name in photo_names})
    held = [i for i in indices if isinstance(i, int)]
    if held and model.heldout is None:
        sys.exit(f"{args.model} ships no held-out images")
    bad = [i for i in held if not 0 <= i < len(model.heldout)]
    if bad:
        sys.exit(f"held-out indices {bad} out of range (the model has {len(model.heldout)})")
    targets.update({i: model.heldout[i:i + 1] for i in held})
    marks = sorted(float(m) for m in args.marks.split(","))
    psnr_marks = sorted(float(m) for m in args.psnr_marks.split(","))
    fd_of = None
    if args.fd_samples:
        if model.classifier is None or model.real_images is None:
            sys.exit(f"--fd-samples needs {args.model}'s classifier and real images; it ships "
                     f"{'no classifier' if model.classifier is None else 'no real images'}")
        fd_of = _frechet_to_real(model, args.fd_samples, args.seed + 1)
        print(json.dumps({"generator": "untouched", "fd": fd_of(model.G), "fd_samples": args.fd_samples}), flush=True)
    rows = []
    for index in indices:
        target = targets[index]
        for config in [c for _ in range(max(1, args.repeat)) for c in configs]:
            settings = {"target_psnr": args.target_psnr, "max_seconds": args.max_seconds, **config}
            samples = []  # (seconds since the call, PSNR) of each tuning step
            clock = time.perf_counter if args.clock == "wall" else time.process_time
            started = clock()

            def track(info, samples=samples, started=started):
                if info.stage == "clone" and info.psnr is not None:
                    samples.append((clock() - started, info.psnr))
                return None

            result = ganinv.invert(model, target, "clone", seed=args.seed, callback=track, **settings)
            seconds = result.seconds if args.clock == "wall" else clock() - started
            final = float(result.metrics["psnr"][0])
            # What a user gets: reconstruction.png against target.png (both as saved, 8-bit), read back.
            final_8bit = float(psnr(_as_saved(result.reconstruction), _as_saved(target)).mean())
            if result.stop_reason.startswith("PSNR"):
                samples.append((seconds, final))  # the step that reached the target ends before its callback
            psnr_at = {f"{m:g}s": _max_or_none(psnr for t, psnr in samples if t <= m) for m in marks}
            clone_steps = [h for h in result.history if h.get("stage") == "clone"]
            step_at, seconds_at = {}, {}
            for m in psnr_marks:
                hit = next((h["step"] for h in clone_steps if h.get("psnr", float("-inf")) >= m), None)
                step_at[f"{m:g}dB"] = hit
                seconds_at[f"{m:g}dB"] = next((round(t, 2) for t, p in samples if p >= m), None)
            locality = result.extras["locality"]
            locality_ungated = result.extras.get("locality_ungated", locality)
            row = {"image": index, "config": config, "psnr": round(final, 2), "psnr_8bit": round(final_8bit, 2),
                   "psnr_at": psnr_at, "step_at": step_at, "seconds_at": seconds_at,
                   "steps": len(result.history), "seconds": round(seconds, 1), "clock": args.clock,
                   "ms_per_step": round(1000 * seconds / max(1, len(result.history)), 1),
                   "prior_change": round(locality["prior_mean_abs_change"], 4),
                   "locality_ratio": round(locality["locality_ratio"], 3),
                   "locality_ratio_ungated": round(locality_ungated["locality_ratio"], 3),
                   "stop_reason": result.stop_reason,
                   "threads": torch.get_num_threads()}
            if fd_of is not None:
                row["fd"] = fd_of(result.G_tuned)
                # G+ without the locality gate (ganinv.models.local): what the tuning did to the whole generator.
                row["fd_ungated"] = fd_of(ungated(result.G_tuned))
            if args.band_samples and ungated(result.G_tuned) is not result.G_tuned:
                row.update(_band(model, result, fd_of, args.band_samples, args.seed + 2))
            print(json.dumps(row), flush=True)
            row["trace"] = [[round(t, 3), round(psnr, 3)] for t, psnr in samples]
            rows.append(row)
    summaries = []
    if len(indices) > 1 or args.repeat > 1:
        for config in configs:
            mine = [r for r in rows if r["config"] == config]
            summary = {"median_of": len(mine), "config": config,
                       "psnr": statistics.median(r["psnr"] for r in mine),
                       "psnr_8bit": statistics.median(r["psnr_8bit"] for r in mine),
                       "seconds": statistics.median(r["seconds"] for r in mine),
                       "psnr_at": {key: _median_or_none(r["psnr_at"][key] for r in mine)
                                   for key in mine[0]["psnr_at"]},
                       "step_at": {key: _median_reached(r["step_at"][key] for r in mine) for key in mine[0]["step_at"]},
                       "seconds_at": {key: _median_reached(r["seconds_at"][key] for r in mine)
                                      for key in mine[0]["seconds_at"]},
                       "steps": statistics.median(r["steps"] for r in mine),
                       "ms_per_step": statistics.median(r["ms_per_step"] for r in mine),
                       "prior_change": statistics.median(r["prior_change"] for r in mine),
                       "locality_ratio": statistics.median(r["locality_ratio"] for r in mine),
                       "locality_ratio_ungated": statistics.median(r["locality_ratio_ungated"] for r in mine)}
            if fd_of is not None:
                summary["fd"] = statistics.median(r["fd"] for r in mine)
                summary["fd_ungated"] = statistics.median(r["fd_ungated"] for r in mine)
            print(json.dumps(summary), flush=True)
            summaries.append(summary)
    if args.json or args.plot:
        data = {"benchmark": "clone_sweep", "model": model.name, "images": indices, "target_psnr": args.target_psnr,
                "max_seconds": args.max_seconds, "marks": marks, "threads": torch.get_num_threads(), "clock": args.clock,
                "machine": platform.machine(), "torch": torch.__version__,
                "time": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows, "summary": summaries}
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
        if args.plot:
            from plots import plot_time_psnr
            plot_time_psnr(data, args.plot)
    return rows


if __name__ == "__main__":
    main()
