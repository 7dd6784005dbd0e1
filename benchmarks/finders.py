"""Every direction finder side by side: how much an edit changes its attribute, and how much the rest.

For each finder in `ganinv.editing.FINDERS` the script finds directions on the model (supervised finders
on each of the model's classifier heads' first attributes), then edits `--num-samples` seeded prior
latents by +/- `--strength` along each component and asks the model's classifier what changed: per head
the total-variation distance between its class distributions before and after (0 = untouched, 1 =
entirely different). The target head is the attribute a supervised direction was fit on, and for
unsupervised ones the head the component changes most. Reported per finder (median over components):
the target head's change, the mean change of the other heads, their ratio (selectivity: higher = more
disentangled) and the mean absolute pixel change. Steerability walks are also measured against the
transformation they were asked for (image registration; `ganinv.editing.measure_walk`).

    python benchmarks/finders.py --model fashion32 --json out/finders_fashion32.json
    python benchmarks/finders.py --model emoji64 --finders sefa,ganspace,voynov --num 8
    python benchmarks/finders.py --model fashion32 --finders voynov,steerability --save out/dirs
    python benchmarks/finders.py --model emoji64 --reuse src/ganinv/assets/emoji64/directions

`--reuse DIR` measures a direction saved in DIR (a model's directions/ folder, or an earlier `--save`)
instead of finding it again, when one there was found on these weights by the same finder with every
setting this script would ask for (the trained finders are seeded, so it is the direction a new search
would return); its "find s" is then n/a.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from ganinv.editing import FINDERS, Direction, find_directions, measure_walk, sample_prior_ws
from ganinv.editing.interfacegan import classifier_heads
from ganinv.models.registry import load_model


def edited_images(model, direction, ws: torch.Tensor, strength: float, index: int) -> torch.Tensor:
    with torch.no_grad():
        if direction.space == "s":  # StyleSpace edits offset the styles, not ws
            offsets = direction.style_offsets(strength, index=index)
            return model.G.synthesis(ws, noise_mode="const", style_offsets=offsets).clamp(-1, 1)
        return model.G.synthesis(direction.apply(ws, strength, index=index), noise_mode="const").clamp(-1, 1)


def head_changes(model, ws: torch.Tensor, after: torch.Tensor) -> tuple[dict[str, float], float]:
    """Per classifier head, the mean total-variation distance between its class distributions on the
    original latents' images and `after`; and the mean absolute pixel change."""
    with torch.no_grad():
        before = model.G.synthesis(ws, noise_mode="const").clamp(-1, 1)
        a, b = model.classifier(before), model.classifier(after)
    changes = {head: float(0.5 * (a[head].softmax(1) - b[head].softmax(1)).abs().sum(1).mean()) for head in a}
    return changes, float((after - before).abs().mean())


def finder_settings(name: str, model, args) -> list[dict]:
    spec = FINDERS[name]
    base = {"num_std_samples": 5000}
    if "num" in spec.defaults:
        base["num"] = args.num
    if name == "voynov":
        base.update(steps=args.voynov_steps, num=max(args.num, 2))
    if name == "steerability":
        base.update(steps=args.steerability_steps)
    if not spec.needs_labels:
        return [base]
    heads = classifier_heads(model)
    out = []
    for head, classes in heads.items():
        if len(classes) < 2:
            continue
        if len(classes) == 2:
            attribute = f"{head}:{classes[1]}"
        else:
            attribute = f"{head}:{classes[0]}"
        out.append({**base, "attribute": attribute})
    return out[:args.max_attributes]


def saved_direction(folder: Path | None, name: str, settings: dict, model) -> Direction | None:
    """A direction in `folder` found by finder `name` on `model`'s weights with every one of `settings`."""
    if folder is None:
        return None
    for path in sorted(folder.glob("*.json")):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or meta.get("format") != "ganinv-direction" or meta.get("method") != name:
            continue
        recorded = meta.get("settings") or {}
        if model.sha256 is None or (meta.get("model") or {}).get("sha256") != model.sha256:
            continue
        if all(recorded.get(key) == value for key, value in settings.items()):
            return Direction.load(path)
    return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion32")
    parser.add_argument("--finders", default=",".join(FINDERS))
    parser.add_argument("--num", type=int, default=6, help="components per unsupervised finder")
    parser.add_argument("--strength", type=float, default=2.0)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--max-attributes", type=int, default=3, help="attributes per supervised finder")
    parser.add_argument("--voynov-steps", type=int, default=800)
    parser.add_argument("--steerability-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--save", default=None, metavar="DIR",
                        help="also save every direction found (NAME.json + NAME.safetensors) into DIR")
    parser.add_argument("--reuse", default=None, type=Path, metavar="DIR",
                        help="measure directions saved in DIR with the same finder, settings and weights "
                             "instead of finding them again")
    args = parser.parse_args(argv)
    if args.reuse is not None and not args.reuse.is_dir():
        raise SystemExit(f"--reuse {args.reuse}: not a folder")
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if model.classifier is None:
        raise SystemExit(f"model {model.name} has no classifier to measure edits with")
    ws = sample_prior_ws(model.G, args.num_samples, seed=1234)
    rows, walks = [], []
    for name in args.finders.split(","):
        for settings in finder_settings(name, model, args):
            direction = saved_direction(args.reuse, name, settings, model)
            seconds = None
            if direction is None:
                started = time.perf_counter()
                direction = find_directions(name, model, **settings)
                seconds = time.perf_counter() - started
            else:
                print(f"{name}: measuring the saved {direction.name} (found on these weights with these settings)")
            if args.save:
                direction.save(args.save)
            for index in range(len(direction)):
                changes = {}
                pixels = []
                for sign in (-1.0, 1.0):
                    delta, pixel = head_changes(model, ws, edited_images(model, direction, ws, sign * args.strength,
                                                                         index))
                    pixels.append(pixel)
                    for head, value in delta.items():
                        changes[head] = changes.get(head, 0.0) + value / 2
                attribute = direction.settings.get("attribute")
                target = str(attribute).split(":")[0] if attribute else max(changes, key=changes.get)
                others = [v for h, v in changes.items() if h != target]
                # A classifier with one head has no other attributes to hold: no selectivity then.
                other = statistics.mean(others) if others else None
                rows.append({"finder": name, "direction": direction.name, "component": index,
                             "label": direction.label(index), "target_head": target,
                             "target_change": changes[target], "other_change": other,
                             "selectivity": None if other is None else changes[target] / max(other, 1e-6),
                             "pixel_change": statistics.mean(pixels), "find_seconds": seconds})
            if name == "steerability":
                for index, kind in enumerate(direction.labels):
                    walks.extend(measure_walk(model.G, direction, index, kind, num_samples=16))
    print(f"\n{model.name}: edits of {args.num_samples} prior samples at strength +/-{args.strength} "
          f"(total-variation change of the classifier's heads; median over components)")
    print(f"{'finder':13} {'comps':>5} {'target':>7} {'others':>7} {'select.':>8} {'pixels':>7} {'find s':>7}")
    summary = []
    for name in dict.fromkeys(r["finder"] for r in rows):
        mine = [r for r in rows if r["finder"] == name]
        entry = {"finder": name, "components": len(mine),
                 **{key: (None if any(r[key] is None for r in mine) else statistics.median(r[key] for r in mine))
                    for key in ("target_change", "other_change", "selectivity", "pixel_change")},
                 "find_seconds": (None if any(r["find_seconds"] is None for r in mine)
                                  else statistics.median(r["find_seconds"] for r in mine))}
        summary.append(entry)
        other = "n/a" if entry["other_change"] is None else f"{entry['other_change']:.3f}"
        select = "n/a" if entry["selectivity"] is None else f"{entry['selectivity']:.2f}"
        found = "n/a" if entry["find_seconds"] is None else f"{entry['find_seconds']:.1f}"
        print(f"{name:13} {entry['components']:5d} {entry['target_change']:7.3f} {other:>7} "
              f"{select:>8} {entry['pixel_change']:7.3f} {found:>7}")
    if walks:
        print("\nsteerability: requested vs achieved transformation (median over samples)")
        for w in walks:
            print(f"  {w['transformation']:10} alpha {w['alpha']:+.1f}: requested {w['requested']:+.3f} "
                  f"achieved {w['achieved_median']:+.3f} (|error| {w['abs_error_median']:.3f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "model": model.name, "strength": args.strength, "num_samples": args.num_samples,
            "threads": args.threads, "machine": platform.processor() or platform.machine(),
            "summary": summary, "rows": rows, "walks": walks}, indent=1))


if __name__ == "__main__":
    main()
