"""Generator throughput (images/second) at batch 1 and 16, median of several runs, with peak memory.

Two configurations: the 32 px fixture configuration (z/w 128, 2 mapping layers, channel_base 1024,
channel_max 48) and a 256 px one with the paper256 widths (z/w 512, 8 mapping layers, channel_base 16384,
channel_max 512); noise_mode const, float32.

Besides ganinv's default code path, `--compare` times the same network on the code path of the official
implementation's CPU fallback (grouped "fused" modulated convolution at every batch size and a 2-D FIR
filter for resampling), interleaved run by run, and prints the ratio; the official implementation's own
CPU numbers measured once with its code (2 threads) are printed beside for reference.

    python benchmarks/generator_speed.py --threads 2 --compare
    python benchmarks/generator_speed.py --threads 2 --compare --json docs/data/generator_speed.json --plot speed.png
    python benchmarks/generator_speed.py --device cuda        # on a GPU machine
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ganinv.models import layers, stylegan2
from ganinv.models.stylegan2 import Generator

CONFIGS = {
    "32px": dict(z_dim=128, c_dim=0, w_dim=128, img_resolution=32, img_channels=3,
                 mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=1024, channel_max=48)),
    "256px": dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                  mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=16384, channel_max=512)),
}
# The official stylegan2-ada-pytorch code on its CPU path, 2 threads, measured once on the same kind of machine (img/s).
OFFICIAL_CPU = {("32px", 1): 119.0, ("32px", 16): 566.0, ("256px", 1): 3.2, ("256px", 16): 1.5}


def reference_bias_act(x, b=None, act="linear", gain=None, clamp=None, owned=False):
    """bias_act as the official CPU fallback ('ref' implementation) computes it: one new tensor per step."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == 1 else 1 for i in range(x.ndim)])
    fn, default_gain = layers._ACTIVATIONS[act]
    x = fn(x)
    gain = default_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


@contextmanager
def official_code_path():
    """Run our network the way the official CPU fallback does: 2-D FIR, 1x1 convolutions by conv2d, fused
    modconv always, bias, noise and activation as separate steps with the reference bias_act (our folded,
    in-place epilogue off)."""
    saved = layers.FAST_PATHS, layers.bias_act, stylegan2.bias_act, stylegan2.FOLD_EPILOGUE
    layers.FAST_PATHS = False
    layers.bias_act = stylegan2.bias_act = reference_bias_act
    stylegan2.FOLD_EPILOGUE = False
    try:
        yield True
    finally:
        layers.FAST_PATHS, layers.bias_act, stylegan2.bias_act, stylegan2.FOLD_EPILOGUE = saved


def time_once(G, batch: int, device, fused, min_seconds: float = 0.0) -> float:
    """Images/s of mapping + synthesis at this batch, over as many forwards as fill `min_seconds`."""
    z = torch.randn(batch, G.z_dim, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    count = 0
    with torch.no_grad():
        while True:
            ws = G.mapping(z, None)
            G.synthesis(ws, noise_mode="const", fused_modconv=fused)
            count += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            if time.perf_counter() - start >= min_seconds:
                break
    return batch * count / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--configs", default="32px,256px")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--compare", action="store_true", help="also time the official code path (A/B)")
    parser.add_argument("--min-seconds", type=float, default=0.5,
                        help="each timing sample repeats the forward pass for at least this long")
    parser.add_argument("--json", default=None, help="write results to this JSON file")
    parser.add_argument("--plot", default=None, help="draw images/s per configuration into this PNG "
                                                     "(benchmarks/plots.py, needs matplotlib)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.configs.split(","):
        torch.manual_seed(0)
        G = Generator(**CONFIGS[name]).eval().to(device)
        for batch in [int(b) for b in args.batches.split(",")]:
            repeats = args.repeats if not (name == "256px" and batch == 16 and device.type == "cpu") else max(3, args.repeats // 2)
            ours, ref = [], []
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            time_once(G, batch, device, None)  # warm-up
            if args.compare:
                with official_code_path():
                    time_once(G, batch, device, True)
            for _ in range(repeats):
                ours.append(time_once(G, batch, device, None, args.min_seconds))
                if args.compare:
                    with official_code_path():
                        ref.append(time_once(G, batch, device, True, args.min_seconds))
            peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda"
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            row = {"config": name, "batch": batch, "device": str(device), "threads": args.threads,
                   "img_per_s": statistics.median(ours), "min": min(ours), "max": max(ours),
                   "peak_mem_mib": round(peak, 1), "peak_kind": "cuda allocated" if device.type == "cuda" else "process max RSS",
                   "official_cpu_quoted": OFFICIAL_CPU.get((name, batch))}
            if args.compare:
                row["official_path_img_per_s"] = statistics.median(ref)
                row["ratio_vs_official_path"] = statistics.median(o / r for o, r in zip(ours, ref))
            if row["official_cpu_quoted"] and device.type == "cpu":
                row["ratio_vs_quoted"] = row["img_per_s"] / row["official_cpu_quoted"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    header = f"{'config':7} {'batch':>5} {'img/s (median)':>15} {'min-max':>15} {'peak MiB':>9}"
    if args.compare:
        header += f" {'official path':>14} {'ratio':>6}"
    header += f" {'quoted official':>16} {'ratio':>6}"
    print(header)
    for r in rows:
        line = (f"{r['config']:7} {r['batch']:>5} {r['img_per_s']:>15.2f} {r['min']:>7.2f}-{r['max']:<7.2f} "
                f"{r['peak_mem_mib']:>9.0f}")
        if args.compare:
            line += f" {r['official_path_img_per_s']:>14.2f} {r['ratio_vs_official_path']:>6.2f}"
        q = r.get("official_cpu_quoted")
        line += f" {q if q else '-':>16} {r.get('ratio_vs_quoted', float('nan')):>6.2f}"
        print(line)
    data = {"benchmark": "generator_speed", "device": str(device), "threads": args.threads,
            "machine": platform.machine(), "torch": torch.__version__, "compare": args.compare,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    if args.plot:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from plots import plot_generator_speed
        plot_generator_speed(data, args.plot)


if __name__ == "__main__":
    main()
