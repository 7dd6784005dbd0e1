"""Throughput of many inversions (images/second), side by side in one run on the same images:

  - one process, one image per call (`ganinv.invert` in a loop);
  - one process, all images as one batch tensor (`ganinv.invert(model, batch)`);
  - `invert_many(..., engine="local")`: the batch engine in this process (files, manifest, result folders);
  - `invert_many(..., engine="ray")` with 1 and with 2 workers on a local Ray cluster;
and the overhead per image that the engine and Ray add over the plain loop. Each configuration is timed
`--repeats` times in rotating order; medians are reported.

    python benchmarks/throughput.py --model emoji64 --method optimize --num-steps 50 --images 8 --threads 2
    python benchmarks/throughput.py --method encoder --images 32 --batches 1,4,16,32   # images/s vs batch size
    python benchmarks/throughput.py --method pti --num-steps 20 --images 8 --batches 1,4,8 --engines loop

`--batches` also reports how far each batch size's per-image ws and renderings (each target with its own
tuned generator, for PTI) lie from those of the first size: a batch should change the speed, not the results.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ganinv.batch import invert_many
from ganinv.data.io import save_image
from ganinv.inversion import invert
from ganinv.models.registry import load_model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="emoji64")
    parser.add_argument("--method", default="optimize")
    parser.add_argument("--num-steps", type=int, default=50, help="the method's step setting (if it has one)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batches", default=None, help="also time in-process batches of these sizes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default="loop,batch,local,ray1,ray2")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ganinv.inversion import METHODS
    spec = METHODS[args.method]
    settings = {spec.step_setting: args.num_steps} if spec.step_setting else {}
    model = load_model(args.model)
    images = model.heldout[:args.images]
    work = Path(tempfile.mkdtemp(prefix="ganinv-throughput-"))
    files = []
    for i, image in enumerate(images):
        files.append(save_image(image, work / "in" / f"{i:03d}.png"))
    ray_started = False

    def run_engine(name: str) -> float:
        nonlocal ray_started
        out = work / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        if name == "loop":
            for i in range(len(images)):
                invert(model, images[i:i + 1], args.method, **settings)
        elif name == "batch":
            invert(model, images, args.method, **settings)
        elif name == "local":
            invert_many(files, args.model, out, args.method, settings=settings, threads_per_worker=args.threads,
                        progress=False)
        else:
            import ray
            if not ray_started:
                ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
                ray_started = True
            workers = int(name.removeprefix("ray"))
            invert_many(files, args.model, out, args.method, settings=settings, engine="ray",
                        num_workers=workers, threads_per_worker=max(1, args.threads // workers), progress=False)
        return len(images) / (time.perf_counter() - started)

    engines = args.engines.split(",")
    rates = {name: [] for name in engines}
    for repeat in range(args.repeats):
        order = engines[repeat % len(engines):] + engines[:repeat % len(engines)]
        for name in order:
            rates[name].append(run_engine(name))
            print(json.dumps({"engine": name, "repeat": repeat, "img_per_s": round(rates[name][-1], 3)}), flush=True)
    rows = [{"engine": name, "img_per_s": statistics.median(values), "runs": len(values)}
            for name, values in rates.items()]
    loop = statistics.median(rates["loop"]) if "loop" in rates else None
    for row in rows:
        if loop:
            row["ratio_vs_loop"] = row["img_per_s"] / loop
            row["overhead_ms_per_image"] = 1000 * (1 / row["img_per_s"] - 1 / loop)
    batch_rows = []
    if args.batches:
        reference = None  # the first batch size's per-image ws and reconstructions
        for size in [int(b) for b in args.batches.split(",")]:
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                results = [invert(model, images[first:first + size], args.method, **settings)
                           for first in range(0, len(images), size)]
                times.append(len(images) / (time.perf_counter() - started))
            ws = torch.cat([r.ws for r in results])
            # Each target's own rendering (PTI results of a batch hold one tuned generator per target).
            renders = torch.cat([r.render() for r in results])
            row = {"batch": size, "img_per_s": statistics.median(times)}
            if reference is None:
                reference = (ws, renders)
            else:
                row["max_abs_diff_ws"] = float((ws - reference[0]).abs().max())
                row["max_abs_diff_render"] = float((renders - reference[1]).abs().max())
            batch_rows.append(row)
            print(json.dumps(batch_rows[-1]), flush=True)
    print(f"\n{args.method} on {len(images)} {args.model} held-out images, {args.threads} threads, "
          f"median of {args.repeats}")
    for row in rows:
        extra = (f"  x{row['ratio_vs_loop']:.2f} vs loop, {row['overhead_ms_per_image']:+.0f} ms/image"
                 if "ratio_vs_loop" in row else "")
        print(f"  {row['engine']:6} {row['img_per_s']:8.3f} img/s{extra}")
    for row in batch_rows:
        same = (f"  max |diff| vs batch {batch_rows[0]['batch']}: ws {row['max_abs_diff_ws']:.1e}, "
                f"render {row['max_abs_diff_render']:.1e}" if "max_abs_diff_ws" in row else "")
        print(f"  batch {row['batch']:3d} {row['img_per_s']:8.3f} img/s{same}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "method": args.method, "settings": settings, "images": len(images),
            "threads": args.threads, "machine": platform.processor() or platform.machine(),
            "engines": rows, "batches": batch_rows}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
