"""What the public call costs over the method itself: `ganinv.invert(model, x, method=...)` against the
method's own `run` and against one render of the same generator, at batch 1.

Absolute times drift on a shared machine, so the three are measured interleaved in one run (each round
runs each of them once, in a rotating order) and the script prints medians and their ratios:

  - method: `METHODS[name].run(G, x, ...)` (for `encoder`: its ReStyle passes and the final render);
  - public: `ganinv.invert(model, x, method=name)` (checks, the method, metrics, the result object);
  - render: `G.synthesis(ws)` under no_grad at batch 1.

Target for `encoder`: public / render <= 3.2 and public within 15% of the method.

    taskset -c 0 python benchmarks/public_call.py --model emoji64 --method encoder --rounds 60 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

import ganinv
from ganinv.inversion import METHODS
from ganinv.models.registry import load_model


def _time_ms(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def measure(model, images: torch.Tensor, method: str, rounds: int, warmup: int = 5) -> dict:
    """Interleaved medians (ms) of the bare method, the public call and one render, and their ratios."""
    spec = METHODS[method]
    G = model.G
    kwargs = {"encoder": model.encoder} if spec.needs_encoder else {}
    with torch.no_grad():
        ws = G.mapping.w_avg.reshape(1, 1, -1).repeat(1, G.num_ws, 1)

    def bare(x):
        return lambda: spec.run(G, x, D=model.D, real_images=model.real_images, **kwargs)

    def public(x):
        return lambda: ganinv.invert(model, x, method=method)

    def render(_x):
        def run():
            with torch.no_grad():
                G.synthesis(ws, noise_mode="const")
        return run

    candidates = {"method": bare, "public": public, "render": render}
    for i in range(warmup):
        for make in candidates.values():
            make(images[i % len(images)][None])()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        x = images[r % len(images)][None]
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(_time_ms(candidates[name](x)))
    medians = {name: statistics.median(values) for name, values in times.items()}

    def paired(a: str, b: str) -> float:
        # Ratios within a round first: the load of a shared machine drifts less within one round.
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    return {"median_ms": medians,
            "public_over_method": medians["public"] / medians["method"],
            "public_over_render": medians["public"] / medians["render"],
            "method_over_render": medians["method"] / medians["render"],
            "paired": {"public_over_method": paired("public", "method"),
                       "public_over_render": paired("public", "render"),
                       "method_over_render": paired("method", "render")},
            "rounds": rounds}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="emoji64")
    parser.add_argument("--method", default="encoder")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--num-images", type=int, default=10, help="held-out images cycled through")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if args.method not in METHODS:
        parser.error(f"unknown method {args.method!r}; available: {', '.join(METHODS)}")
    source = model.heldout if model.heldout is not None else model.real_images
    if source is None:
        parser.error(f"model {model.name} ships no held-out or real images")
    images = source[:args.num_images].float()
    report = measure(model, images, args.method, args.rounds)
    report.update(model=model.name, method=args.method, threads=torch.get_num_threads(), device="cpu",
                  cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                  load_average=os.getloadavg())
    m = report["median_ms"]
    print(f"{model.name}, {args.method}, batch 1, CPU, {torch.get_num_threads()} thread(s), {args.rounds} interleaved "
          f"rounds; load average {os.getloadavg()[0]:.2f}")
    print(f"  method run   {m['method']:8.2f} ms")
    print(f"  public call  {m['public']:8.2f} ms")
    print(f"  one render   {m['render']:8.2f} ms")
    print(f"  ratio of medians:      public / method {report['public_over_method']:.3f}   public / render "
          f"{report['public_over_render']:.2f}   method / render {report['method_over_render']:.2f}")
    paired = report["paired"]
    print(f"  median of round ratios: public / method {paired['public_over_method']:.3f}   public / render "
          f"{paired['public_over_render']:.2f}   method / render {paired['method_over_render']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
