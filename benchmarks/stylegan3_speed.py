"""StyleGAN3 generator speed: ganinv's implementation against the official stylegan3 code's CPU path on the
same network (A/B, interleaved run by run, medians), images/second at each batch size.

The official network is built from the repository given with `--official` (a checkout of NVlabs/stylegan3;
nothing of it is copied into ganinv) with random weights; on a CPU its ops take their pure-PyTorch
reference paths. ganinv's generator is built from the same keyword arguments and loads the official
network's state dict by name, and the two outputs are checked to agree before timing.

    python benchmarks/stylegan3_speed.py --official /path/to/stylegan3 --threads 2
    python benchmarks/stylegan3_speed.py --official /path/to/stylegan3 --cfg r --batches 1,8 --repeats 7
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from ganinv.models import stylegan3


def official_generator(repo: Path, kwargs: dict) -> torch.nn.Module:
    sys.path.insert(0, str(repo.resolve()))
    sys.modules.setdefault("requests", types.ModuleType("requests"))  # dnnlib imports it for downloads
    if "pkg_resources" not in sys.modules:
        import packaging.version
        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=packaging.version.parse)
    from training import networks_stylegan3  # noqa: E402  (the official repository)
    return networks_stylegan3.Generator(**kwargs).eval().requires_grad_(False)


def config(cfg: str, resolution: int, channel_base: int, channel_max: int) -> dict:
    kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), channel_base=channel_base, channel_max=channel_max,
                  magnitude_ema_beta=0.5 ** (32 / 20e3), num_fp16_res=4, conv_clamp=256)
    if cfg == "r":
        kwargs.update(conv_kernel=1, use_radial_filters=True, channel_base=channel_base * 2,
                      channel_max=channel_max * 2)
    return kwargs


def time_once(G, ws: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        G.synthesis(ws, noise_mode="const", force_fp32=True)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="checkout of NVlabs/stylegan3")
    parser.add_argument("--cfg", choices=["t", "r"], default="t")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--channel-base", type=int, default=4096)
    parser.add_argument("--channel-max", type=int, default=32)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kwargs = config(args.cfg, args.resolution, args.channel_base, args.channel_max)
    torch.manual_seed(0)
    official = official_generator(args.official, kwargs)
    ours = stylegan3.Generator(**kwargs).eval().requires_grad_(False)
    ours.load_state_dict(official.state_dict())
    z = torch.randn(max(int(b) for b in args.batches.split(",")), 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws_all = official.mapping(z, None)
        reference = official.synthesis(ws_all[:1], force_fp32=True)
        difference = float((reference - ours.synthesis(ws_all[:1])).abs().max())
    print(f"stylegan3-{args.cfg} {args.resolution}px, channel_base {kwargs['channel_base']}, channel_max "
          f"{kwargs['channel_max']}, {args.threads} threads; max |ours - official| = {difference:.2e}")
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        ws = ws_all[:batch]
        time_once(ours, ws), time_once(official, ws)  # warm-up
        times = {"ganinv": [], "official": []}
        for _ in range(args.repeats):
            times["ganinv"].append(time_once(ours, ws))
            times["official"].append(time_once(official, ws))
        rate = {k: batch / statistics.median(v) for k, v in times.items()}
        rows.append({"batch": batch, "ganinv_img_per_s": rate["ganinv"], "official_img_per_s": rate["official"],
                     "ratio": rate["ganinv"] / rate["official"], "repeats": args.repeats})
        print(f"batch {batch:3d}: ganinv {rate['ganinv']:8.3f} img/s, official {rate['official']:8.3f} img/s, "
              f"ratio {rate['ganinv'] / rate['official']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "config": {"cfg": args.cfg, **{k: v for k, v in kwargs.items() if k != "mapping_kwargs"}},
            "threads": args.threads, "max_abs_difference": difference, "machine": platform.platform(),
            "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
