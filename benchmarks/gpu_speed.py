"""Speed on a CUDA device: generator throughput in float32 and float16, and inversion time per image.

Generator: the 256 px paper256 configuration (z/w 512, 8 mapping layers, channel_base 16384, channel_max
512), mapping + synthesis with constant noise, at each batch size, float32 and float16 (the four
highest-resolution blocks in half precision with conv_clamp 256, as the official configs do). With
`--official-repo DIR` (a checkout of NVIDIA's stylegan3 or stylegan2-ada-pytorch repository) the official
`networks_stylegan2.Generator` of the same configuration is timed interleaved with ours, run by run, on its
own code path, and the ratio of medians is printed. The official CUDA plugins are built in a separate
process that starts first and runs while the inversion rows are timed, in a fresh extensions folder (a
build killed half-way leaves a lock that would stall the next one); when it fails or has not finished
within `--official-build-seconds`, the official reference path (its `impl='ref'` code) is timed instead,
and each row names the path. Inversion: seconds per image at batch 1 of the encoder, PTI and Clone with their
defaults on the embedded model's held-out images (model load excluded).

    python benchmarks/gpu_speed.py --device cuda --official-repo .gpu/stylegan3 --json out/gpu_speed.json
    python benchmarks/gpu_speed.py --device cpu --batches 1 --repeats 1 --min-seconds 0 --methods encoder --num-images 1
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ganinv.inversion import invert
from ganinv.models.registry import load_model
from ganinv.models.stylegan2 import Generator
from ganinv.utils import write_json

CONFIG_256 = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                  mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=16384, channel_max=512))
HALF = dict(num_fp16_res=4, conv_clamp=256)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_second(G, batch: int, device: torch.device, min_seconds: float) -> float:
    """Mapping + synthesis at this batch, repeated for at least `min_seconds` (one pass at least)."""
    z = torch.randn(batch, G.z_dim, device=device)
    _sync(device)
    start, count = time.perf_counter(), 0
    with torch.no_grad():
        while True:
            G.synthesis(G.mapping(z, None), noise_mode="const")
            count += 1
            _sync(device)
            if time.perf_counter() - start >= min_seconds:
                break
    return batch * count / (time.perf_counter() - start)


def _register_built_extensions() -> None:
    """Newer PyTorch builds an extension with `cpp_extension.load` without adding it to `sys.modules`, where
    the official `custom_ops.get_plugin` imports it from: register what `load` returns under its name."""
    import torch.utils.cpp_extension as cpp_extension
    if getattr(cpp_extension.load, "_ganinv_registers", False):
        return
    load = cpp_extension.load

    def load_and_register(*args, **kwargs):
        module = load(*args, **kwargs)
        sys.modules.setdefault(kwargs.get("name") or args[0], module)
        return module
    load_and_register._ganinv_registers = True
    cpp_extension.load = load_and_register


OFFICIAL_PATH = {"path": "cuda plugins"}
PLUGINS = ("bias_act", "upfirdn2d")  # the official ops networks_stylegan2 uses


def _official_importable(repo: str) -> None:
    """The official checkout's packages (torch_utils, training) importable, once."""
    root = str(Path(repo).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)


def _use_official_reference_path(repo: str, reason: str) -> None:
    """The official ops' own fallback (their `impl='ref'` code) when their CUDA plugins do not build here."""
    _official_importable(repo)
    for name in PLUGINS:
        module = importlib.import_module(f"torch_utils.ops.{name}")
        module._init = lambda: False
    OFFICIAL_PATH["path"] = f"reference ({reason})"
    print(json.dumps({"official_path": OFFICIAL_PATH["path"]}), flush=True)


def build_official_plugins(repo: str) -> None:
    """Build (or load from the extensions folder) the official plugins the StyleGAN2 generator uses; run in a
    child process by `start_plugin_build`. Raises when a plugin does not build."""
    _official_importable(repo)
    _register_built_extensions()
    for name in PLUGINS:
        if not importlib.import_module(f"torch_utils.ops.{name}")._init():
            raise RuntimeError(f"the official {name} plugin did not build")


def start_plugin_build(repo: str) -> subprocess.Popen:
    """The plugins' build in a child process of its own session (killed as a group), in a fresh extensions
    folder that this process then loads from."""
    os.environ["TORCH_EXTENSIONS_DIR"] = tempfile.mkdtemp(prefix="ganinv_official_ext_")
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--build-official-plugins", repo],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_plugin_build(build: subprocess.Popen, deadline: float) -> str | None:
    """None when the build succeeded by `deadline` (a `time.monotonic()` value), else why not; a build still
    running then is killed with its compilers."""
    try:
        output, _ = build.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(build.pid, signal.SIGKILL)
        build.communicate()
        return "build not finished in time"
    if build.returncode != 0:
        lines = [line for line in output.splitlines() if line.strip()]
        return f"build failed: {lines[-1] if lines else f'exit {build.returncode}'}"[:200]
    return None


def official_generator(repo: str, half: bool):
    """The official implementation's Generator of the same configuration (random weights)."""
    _official_importable(repo)
    _register_built_extensions()
    networks = importlib.import_module("training.networks_stylegan2")
    synthesis = dict(CONFIG_256["synthesis_kwargs"], **(HALF if half else {}))
    return networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                              mapping_kwargs=dict(num_layers=8), **synthesis)


def generator_rows(device: torch.device, batches: list[int], precisions: list[str], repeats: int,
                   min_seconds: float, official_repo: str | None, on_row=None) -> list[dict]:
    """Each row is printed, and passed to `on_row` when given, as soon as it is measured."""
    rows = []
    for precision in precisions:
        half = precision == "fp16"
        torch.manual_seed(0)
        synthesis = dict(CONFIG_256["synthesis_kwargs"], **(HALF if half else {}))
        ours = Generator(**dict(CONFIG_256, synthesis_kwargs=synthesis)).eval().to(device)
        official = official_generator(official_repo, half).eval().to(device) if official_repo else None
        for batch in batches:
            timed = {"ours": [], "official": []}
            nets = {"ours": ours, "official": official}
            images_per_second(ours, batch, device, 0.0)  # warm-up (cuDNN autotune)
            if official is not None:
                try:
                    images_per_second(official, batch, device, 0.0)  # warm-up (plugin build, autotune)
                except Exception as error:  # the plugins' build: compiler, headers, torch version
                    if OFFICIAL_PATH["path"] != "cuda plugins":
                        raise
                    _use_official_reference_path(official_repo, f"plugins failed: {type(error).__name__}: {error}"[:200])
                    images_per_second(official, batch, device, 0.0)
            for _ in range(repeats):
                for name, net in nets.items():
                    if net is not None:
                        timed[name].append(images_per_second(net, batch, device, min_seconds))
            row = {"config": "256px", "precision": precision, "batch": batch, "device": str(device),
                   "img_per_s": statistics.median(timed["ours"])}
            if official is not None:
                row["official_img_per_s"] = statistics.median(timed["official"])
                row["ratio_vs_official"] = statistics.median(o / r for o, r in zip(timed["ours"], timed["official"]))
                row["official_path"] = OFFICIAL_PATH["path"] if device.type == "cuda" else "reference (cpu)"
            rows.append(row)
            print(json.dumps(row), flush=True)
            if on_row is not None:
                on_row(row)
    return rows


def inversion_rows(device: torch.device, model_name: str, methods: list[str], num_images: int) -> list[dict]:
    model = load_model(model_name, device=device)
    images = model.heldout[:num_images].to(device)
    rows = []
    for method in methods:
        if method == "encoder" and model.encoder is None:
            continue
        # Clone as the CPU tables time it: to 35 dB or 60 s (its defaults run up to 3,000 steps).
        settings = dict(target_psnr=35.0, max_seconds=60.0) if method == "clone" else {}
        invert(model, images[:1], method, device=device, **settings)  # warm-up
        seconds, psnr = [], []
        for i in range(len(images)):
            _sync(device)
            start = time.perf_counter()
            result = invert(model, images[i:i + 1], method, device=device, **settings)
            _sync(device)
            seconds.append(time.perf_counter() - start)
            psnr.append(result.metrics["psnr"][0])
        row = {"model": model_name, "method": method, "device": str(device), "images": len(images),
               "seconds_per_image": statistics.median(seconds), "psnr_median": statistics.median(psnr)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--official-repo", default=None, help="checkout of NVIDIA's stylegan3 / stylegan2-ada-pytorch")
    parser.add_argument("--official-build-seconds", type=float, default=150.0,
                        help="how long the official CUDA plugins may take to build, from the start")
    parser.add_argument("--build-official-plugins", metavar="REPO", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="emoji64")
    parser.add_argument("--methods", default="encoder,pti,clone")
    parser.add_argument("--num-images", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.build_official_plugins:
        build_official_plugins(args.build_official_plugins)
        return
    device = torch.device(args.device)
    build, deadline = None, time.monotonic() + args.official_build_seconds
    if args.official_repo and device.type == "cuda":
        build = start_plugin_build(args.official_repo)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` stops us: the build stops too
    try:
        _measure(args, device, build, deadline)
    finally:
        if build is not None and build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)


def _measure(args, device: torch.device, build: subprocess.Popen | None, deadline: float) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()}
    print(json.dumps(info), flush=True)
    report = {"info": info, "generator": [], "inversion": []}

    def save() -> None:  # after each part, so that a run stopped by its time limit keeps what it measured
        if args.json:
            write_json(args.json, report)
    # Inversion first, while the official plugins build.
    report["inversion"] = inversion_rows(device, args.model, [m for m in args.methods.split(",") if m],
                                         args.num_images)
    save()
    if build is not None:
        reason = wait_for_plugin_build(build, deadline)
        if reason is not None:
            _use_official_reference_path(args.official_repo, reason)
    generator_rows(device, [int(b) for b in args.batches.split(",")], args.precisions.split(","), args.repeats,
                   args.min_seconds, args.official_repo,
                   on_row=lambda row: (report["generator"].append(row), save()))


if __name__ == "__main__":
    main()
