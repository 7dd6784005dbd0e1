"""Generator speed against the CPU's dense-convolution roofline: paper256 widths, batch 1, float32.

The useful work of StyleGAN2's synthesis network (Karras et al., CVPR 2020) is its 3x3 modulated
convolutions; everything else (modulation, demodulation, FIR up-sampling, noise, bias, activation, toRGB)
is overhead that a perfect implementation would hide. The roofline here is what this CPU's dense 3x3
convolution (PyTorch's `F.conv2d`, oneDNN, the same thread count) achieves at exactly the generator's
shapes: for every synthesis layer a plain convolution with the same input channels, output channels and
input size (an up-sampling layer's stride-2 transposed convolution does the same multiply-adds as a 3x3
convolution at its input size), timed in NCHW and channels-last layouts, the faster one counted.

    T_roof  = sum over layers of the dense convolution's time
    FLOPs   = sum over layers of 2 * C_in * C_out * 9 * H_in * W_in
    fraction = T_roof / T_generator  (= achieved FLOP/s / roofline FLOP/s)

The generator is timed as `G.synthesis(ws)` (noise_mode const, no_grad), interleaved sample by sample with
the dense convolutions so that load on a shared machine affects both alike; medians over `--repeats`.

    python benchmarks/roofline.py --threads 2
    python benchmarks/roofline.py --threads 2 --per-layer --json docs/data/roofline.json
    python benchmarks/roofline.py --threads 1 --clock cpu   # on a busy machine: CPU time, not wall clock

`--clock cpu` times with the process's CPU time instead of the wall clock: on a machine shared with other
jobs a single-threaded run then counts only its own work (with several threads, time spent waiting at
a parallel region's barrier still counts), so the fraction stays comparable between busy and quiet minutes.
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

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generator_speed import CONFIGS  # noqa: E402  (the same 256 px configuration as the speed benchmark)

from ganinv.models.stylegan2 import Generator, SynthesisLayer  # noqa: E402


def conv_shapes(G) -> list[dict]:
    """(name, C_in, C_out, H_in) of every 3x3 synthesis layer, in order, and its multiply-add FLOPs."""
    out = []
    for res, block in G.synthesis.blocks():
        for name in block.layer_names():
            layer = getattr(block, name)
            if not isinstance(layer, SynthesisLayer):
                continue
            size = res // layer.up
            kh, kw = layer.weight.shape[2:]
            out.append(dict(name=f"b{res}.{name}", in_channels=layer.in_channels, out_channels=layer.out_channels,
                            size=size, up=layer.up,
                            flops=2 * layer.in_channels * layer.out_channels * kh * kw * size * size))
    return out


class DenseConv:
    """A plain 3x3 convolution at one layer's shape, in the faster of the two layouts."""

    def __init__(self, shape: dict, generator: torch.Generator):
        c_in, c_out, size = shape["in_channels"], shape["out_channels"], shape["size"]
        self.x = torch.randn(1, c_in, size, size, generator=generator)
        self.w = torch.randn(c_out, c_in, 3, 3, generator=generator)
        self.x_cl = self.x.contiguous(memory_format=torch.channels_last)
        self.w_cl = self.w.contiguous(memory_format=torch.channels_last)
        self.layout = None

    def run(self, layout: str | None = None) -> None:
        layout = layout or self.layout
        if layout == "channels_last":
            F.conv2d(self.x_cl, self.w_cl, padding=1)
        else:
            F.conv2d(self.x, self.w, padding=1)

    def choose_layout(self, repeats: int = 5) -> None:
        best = {}
        for layout in ("nchw", "channels_last"):
            self.run(layout)
            best[layout] = min(_seconds(lambda: self.run(layout)) for _ in range(repeats))
        self.layout = min(best, key=best.get)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _seconds(fn) -> float:
    start = _clock()
    fn()
    return _clock() - start


def layer_times(G, ws) -> dict[str, float]:
    """Seconds spent inside each SynthesisLayer's forward during one synthesis call (hooks)."""
    times, starts, handles = {}, {}, []
    for name, layer, _ in G.synthesis.style_layers():
        if not isinstance(layer, SynthesisLayer):
            continue
        handles.append(layer.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, _clock())))
        handles.append(layer.register_forward_hook(
            lambda m, a, o, n=name: times.__setitem__(n, _clock() - starts[n])))
    try:
        G.synthesis(ws, noise_mode="const")
    finally:
        for h in handles:
            h.remove()
    return times


def measure(threads: int = 2, repeats: int = 9, config: str = "256px", per_layer: bool = False,
            seed: int = 0, clock: str = "wall") -> dict:
    global _clock
    _clock = CLOCKS[clock]
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    G = Generator(**CONFIGS[config]).eval()
    shapes = conv_shapes(G)
    generator = torch.Generator().manual_seed(seed)
    dense = [DenseConv(s, generator) for s in shapes]
    total_flops = sum(s["flops"] for s in shapes)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=generator), None)
        for d in dense:
            d.choose_layout()
        for _ in range(2):  # warm-up (weight caches, allocator)
            G.synthesis(ws, noise_mode="const")
        gen, roof, per_dense, per_gen = [], [], [], []
        for _ in range(repeats):
            gen.append(_seconds(lambda: G.synthesis(ws, noise_mode="const")))
            times = [_seconds(d.run) for d in dense]
            per_dense.append(times)
            roof.append(sum(times))
            if per_layer:
                per_gen.append(layer_times(G, ws))
    t_gen, t_roof = statistics.median(gen), statistics.median(roof)
    result = dict(benchmark="roofline", config=config, batch=1, threads=threads, repeats=repeats, clock=clock,
                  machine=platform.machine(), processor=platform.processor() or None, torch=torch.__version__,
                  time=time.strftime("%Y-%m-%d %H:%M:%S"), load_average=os.getloadavg()[0],
                  gflops_per_image=total_flops / 1e9,
                  generator_ms=t_gen * 1e3, roofline_ms=t_roof * 1e3,
                  generator_img_per_s=1 / t_gen, roofline_img_per_s=1 / t_roof,
                  achieved_gflops=total_flops / t_gen / 1e9, roofline_gflops=total_flops / t_roof / 1e9,
                  fraction=t_roof / t_gen,
                  fraction_pairs_median=statistics.median(r / g for r, g in zip(roof, gen)))
    if per_layer:
        rows = []
        for i, s in enumerate(shapes):
            d_ms = statistics.median(t[i] for t in per_dense) * 1e3
            g_ms = statistics.median(t[s["name"]] for t in per_gen) * 1e3
            rows.append(dict(s, dense_layout=dense[i].layout, dense_ms=d_ms, layer_ms=g_ms))
        result["layers"] = rows
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--config", default="256px", choices=sorted(CONFIGS))
    parser.add_argument("--per-layer", action="store_true", help="also time each synthesis layer (hooks)")
    parser.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                        help="wall clock, or the process's CPU time (robust on a shared machine at 1 thread)")
    parser.add_argument("--json", default=None, help="write the result to this JSON file")
    args = parser.parse_args(argv)
    result = measure(args.threads, args.repeats, args.config, args.per_layer, clock=args.clock)
    if "layers" in result:
        print(f"{'layer':10} {'C_in':>5} {'C_out':>5} {'H_in':>5} {'up':>3} {'GFLOP':>6} {'dense ms':>9} "
              f"{'layout':>13} {'layer ms':>9} {'ratio':>6}")
        for r in result["layers"]:
            print(f"{r['name']:10} {r['in_channels']:>5} {r['out_channels']:>5} {r['size']:>5} {r['up']:>3} "
                  f"{r['flops'] / 1e9:>6.2f} {r['dense_ms']:>9.2f} {r['dense_layout']:>13} {r['layer_ms']:>9.2f} "
                  f"{r['dense_ms'] / r['layer_ms']:>6.2f}")
        print()
    print(f"{args.config} batch 1, {args.threads} threads, {args.clock} clock, load {result['load_average']:.2f}: "
          f"{result['gflops_per_image']:.2f} GFLOP/image of 3x3 convolution")
    print(f"generator  {result['generator_ms']:8.1f} ms  {result['generator_img_per_s']:5.2f} img/s  "
          f"{result['achieved_gflops']:6.1f} GFLOP/s")
    print(f"roofline   {result['roofline_ms']:8.1f} ms  {result['roofline_img_per_s']:5.2f} img/s  "
          f"{result['roofline_gflops']:6.1f} GFLOP/s (dense 3x3 conv at the same shapes)")
    print(f"fraction of roofline: {result['fraction']:.3f} (median of pairs {result['fraction_pairs_median']:.3f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
