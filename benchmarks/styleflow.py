"""StyleFlow benchmark: how well attribute edits through the conditional flow hit the requested class,
and how much they move the classifier's other heads, beside steps of the same length along the shipped
InterFaceGAN direction of that class (where the model ships one) and along a random direction.

Trains a flow on the model's seeded prior samples (or loads one with --flow), then for sampled latents
(another seed) and every class of every head the flow is conditioned on, edits the subjects not already
in that class to it. Per edit, measured by the model's classifier on the rendered images:

- gain: the target class's probability after minus before;
- hit: share of edited images the classifier puts in the target class;
- held: total-variation change of the class probabilities of the other heads the flow is conditioned on
  (the attributes the edit holds), averaged;
- other: the same over every other classifier head (unconditioned ones too);
- pixel MSE: mean squared pixel change on [-1, 1];
- |dw|: length of the step in W (the baselines take steps of the same length per subject).
Each row is the mean over the targets (classes).

    python benchmarks/styleflow.py --model fashion32 --steps 150 --num-samples 1000 --hidden 128 --ode-steps 4
    python benchmarks/styleflow.py --model emoji64 --steps 150 --num-samples 1000 --hidden 128 --ode-steps 4
    python benchmarks/styleflow.py --model fashion32 --steps 600 --num-samples 5000   # the train-flow defaults
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from ganinv.editing import load_direction, safe_file_stem
from ganinv.editing.interfacegan import classifier_outputs
from ganinv.editing.styleflow import label_latents, load_styleflow, save_styleflow, styleflow_edit, train_styleflow
from ganinv.models.prior import sample_prior
from ganinv.models.registry import load_model


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits.float(), dim=1)


@torch.no_grad()
def _measure(G, classifier, w: torch.Tensor, batch_size: int = 128) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({head: class probabilities}, images) of the renders of w [N, w_dim]."""
    probs: dict[str, list[torch.Tensor]] = {}
    images = []
    for start in range(0, len(w), batch_size):
        img = G.synthesis(w[start:start + batch_size].unsqueeze(1).expand(-1, G.num_ws, -1), noise_mode="const")
        for head, logits in classifier_outputs(classifier, img).items():
            probs.setdefault(head, []).append(_probabilities(logits))
        images.append(img)
    return {h: torch.cat(v) for h, v in probs.items()}, torch.cat(images)


def _scores(before, after, head: str, target: int, held: list[str]) -> dict:
    (p0, img0), (p1, img1) = before, after
    change = {h: 0.5 * (p1[h] - p0[h]).abs().sum(1) for h in p0 if h != head}
    held_change = [change[h] for h in held if h != head]
    return {"gain": float((p1[head][:, target] - p0[head][:, target]).mean()),
            "hit": float((p1[head].argmax(1) == target).float().mean()),
            "other": float(torch.stack(list(change.values())).mean()) if change else None,
            "held": float(torch.stack(held_change).mean()) if held_change else None,
            "pixel_mse": float((img1 - img0).square().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fashion32")
    parser.add_argument("--flow", default=None, help="Evaluate this trained flow instead of training one.")
    parser.add_argument("--save-flow", default=None, help="Folder to save the trained flow in.")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--ode-steps", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--head", action="append", default=None, help="Heads to condition on (default: all small).")
    parser.add_argument("--num-subjects", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    G, classifier = model.G, model.classifier
    training = None
    if args.flow:
        flow = load_styleflow(args.flow)
    else:
        started = time.perf_counter()
        flow, info = train_styleflow(model, heads=args.head, num_samples=args.num_samples, steps=args.steps,
                                     batch_size=args.batch_size, hidden=args.hidden, num_steps=args.ode_steps,
                                     learning_rate=args.learning_rate)
        training = {"steps": args.steps, "num_samples": args.num_samples, "hidden": args.hidden,
                    "ode_steps": args.ode_steps, "seconds": round(time.perf_counter() - started, 1),
                    "heldout_ll_per_dim_before": info.heldout_before, "heldout_ll_per_dim_after": info.heldout_after}
        print(json.dumps(training))
        if args.save_flow:
            save_styleflow(args.save_flow, flow, {"model": model.name, "training": training})
    w = sample_prior(G, args.num_subjects, seed=777)[:, 0]
    attributes = label_latents(G, classifier, flow.heads, w)
    before_all = _measure(G, classifier, w)
    rows: dict[str, list[dict]] = {"styleflow": [], "styleflow, the interfacegan targets": [],
                                   "interfacegan (same step length)": [], "random (same step length)": []}
    gen = torch.Generator().manual_seed(0)
    per_target = []
    held = list(flow.heads)
    for head, classes in flow.heads.items():
        for target, name in enumerate(classes):
            keep = before_all[0][head].argmax(1) != target
            if int(keep.sum()) < 2:
                continue
            w_k = w[keep]
            before = ({h: p[keep] for h, p in before_all[0].items()}, before_all[1][keep])
            (edited,), _ = styleflow_edit(flow, w_k, [(head, target)], attributes=attributes[keep])
            step = edited - w_k
            length = step.norm(dim=1, keepdim=True)
            result = {"head": head, "target": name, "subjects": int(keep.sum()), "dw": float(length.mean())}
            result["styleflow"] = _scores(before, _measure(G, classifier, edited), head, target, held)
            rows["styleflow"].append(result["styleflow"])
            random = torch.randn(step.shape, generator=gen)
            random = random / random.norm(dim=1, keepdim=True) * length
            result["random"] = _scores(before, _measure(G, classifier, w_k + random), head, target, held)
            rows["random (same step length)"].append(result["random"])
            direction_name = safe_file_stem(f"interfacegan_{head}_{name}_vs_rest")
            if direction_name in model.directions:
                direction, _ = load_direction(direction_name, model=model)
                unit = direction.vectors[0] / direction.vectors[0].norm()
                result["interfacegan"] = _scores(before, _measure(G, classifier, w_k + unit * length), head, target,
                                                 held)
                rows["interfacegan (same step length)"].append(result["interfacegan"])
                rows["styleflow, the interfacegan targets"].append(result["styleflow"])
            per_target.append(result)
            print(json.dumps(result))

    def mean(items, key):
        values = [r[key] for r in items if r[key] is not None]
        return sum(values) / len(values) if values else None

    summary = {name: {key: mean(items, key) for key in ("gain", "hit", "other", "held", "pixel_mse")}
               | {"targets": len(items)}
               for name, items in rows.items() if items}
    print("| edit | targets | gain | hit | held | other | pixel MSE |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, s in summary.items():
        held_text, other = ("–" if s[k] is None else f"{s[k]:.3f}" for k in ("held", "other"))
        print(f"| {name} | {s['targets']} | {s['gain']:.3f} | {s['hit']:.2f} | {held_text} | {other} | "
              f"{s['pixel_mse']:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": model.name, "training": training, "summary": summary, "per_target": per_target,
                       "num_subjects": args.num_subjects, "threads": args.threads,
                       "machine": platform.machine(), "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
