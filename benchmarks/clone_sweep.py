"""Clone settings sweep: PSNR, steps and locality reached within a time cap, per setting and image.

Clone (Feng et al., "Near Perfect GAN Inversion") is run from the model's default start h(x) on
held-out images, once per `--config` (a JSON object of clone settings over the defaults), each capped
at `--max-seconds`. One JSON line per run on stdout, so runs can be compared or plotted.

    python benchmarks/clone_sweep.py --model emoji64 --images 0 --config '{}' --config '{"adv_every": 4}'
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

import ganinv


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model name or folder (its held-out images are used)")
    parser.add_argument("--images", default="0", help="comma list of held-out indices")
    parser.add_argument("--config", action="append", default=[], help="JSON object of clone settings (repeatable)")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--target-psnr", type=float, default=35.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
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
    if model.heldout is None:
        sys.exit(f"{args.model} ships no held-out images")
    indices = [int(i) for i in args.images.split(",")]
    bad = [i for i in indices if not 0 <= i < len(model.heldout)]
    if bad:
        sys.exit(f"held-out indices {bad} out of range (the model has {len(model.heldout)})")
    rows = []
    for index in indices:
        target = model.heldout[index:index + 1]
        for config in configs:
            settings = {"target_psnr": args.target_psnr, "max_seconds": args.max_seconds, **config}
            result = ganinv.invert(model, target, "clone", seed=args.seed, **settings)
            locality = result.extras["locality"]
            row = {"image": index, "config": config, "psnr": round(float(result.metrics["psnr"][0]), 2),
                   "steps": len(result.history), "seconds": round(result.seconds, 1),
                   "prior_change": round(locality["prior_mean_abs_change"], 4),
                   "locality_ratio": round(locality["locality_ratio"], 3), "stop_reason": result.stop_reason,
                   "threads": torch.get_num_threads()}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
