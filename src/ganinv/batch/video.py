"""A video file as a batch: frames decoded with PyAV, each inverted starting from the previous frame's
latent, so consecutive results stay on one path through the latent space and each frame needs fewer
steps than a cold start."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import GanInvError
from .manifest import Job, Manifest, file_sha256

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_frames(path: str | os.PathLike, *, every: int = 1, max_frames: int | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, uint8 [H, W, 3]) for every `every`-th frame of the first video stream."""
    try:
        import av
    except ImportError:
        raise GanInvError("video input needs PyAV: pip install 'ganinv[scale]'") from None
    if every < 1:
        raise GanInvError(f"every must be >= 1, got {every}")
    count = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise GanInvError(f"{path}: no video stream")
            for index, frame in enumerate(container.decode(video=0)):
                if index % every:
                    continue
                yield index, frame.to_ndarray(format="rgb24")
                count += 1
                if max_frames is not None and count >= max_frames:
                    return
    except (av.error.FFmpegError, OSError) as e:  # noqa: B014 - PyAV's errors derive from OSError in some versions
        raise GanInvError(f"{path}: cannot decode video ({e})") from None
    if count == 0:
        raise GanInvError(f"{path}: no frames decoded")


def invert_video(path: str | os.PathLike, model, outdir: str | os.PathLike, method: str = "optimize", *,
                 settings: dict | None = None, every: int = 1, max_frames: int | None = None,
                 device: str = "cpu", seed: int = 0, fit: str = "crop", progress: bool = True) -> dict:
    """Invert the frames of a video into OUTDIR/<video stem>/frame_NNNNNN/ (one result folder each), the
    first from the method's own start, every later one from the previous frame's latent. A manifest
    (OUTDIR/<video stem>/manifest.jsonl) makes a rerun skip finished frames and start the next one from
    the last finished latent."""
    from PIL import Image
    from tqdm import tqdm

    from ..data.io import load_image
    from ..inversion import METHODS, InversionResult, invert
    from ..models.registry import load_model, resolve_device

    if method not in METHODS:
        raise GanInvError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    settings = METHODS[method].check_settings(dict(settings or {}))
    bundle = load_model(model, device=resolve_device(device))
    G = bundle.G
    video = Path(path)
    folder = Path(outdir) / video.stem
    manifest = Manifest(folder)
    digest = file_sha256(video)
    latest = manifest.latest()
    previous = None
    summary = {"done": 0, "skipped": 0, "failed": 0, "frames": []}
    started = time.perf_counter()
    bar = tqdm(desc=f"{video.name} [{method}]", total=max_frames, disable=not progress, dynamic_ncols=True)
    for index, frame in read_frames(video, every=every, max_frames=max_frames):
        name = f"frame_{index:06d}"
        job = Job(input=f"{video}#{index}", sha256=digest, output=str(folder / name))
        entry = latest.get(name)
        if entry is not None and entry.get("status") == "done" and entry.get("sha256") == digest:
            try:
                previous = InversionResult.load(folder / name, model=bundle)
                summary["skipped"] += 1
                bar.update(1)
                continue
            except (ValueError, OSError):
                pass  # recorded but unreadable now: invert it again
        target = load_image(Image.fromarray(frame), G.img_resolution, G.img_channels, fit=fit)
        result = invert(bundle, target, method, seed=seed, init_from=previous, **settings)
        result.input = {"path": job.input, "sha256": digest, "frame": index}
        result.save(job.output)
        manifest.record(job, "done", frame=index, seconds=round(result.seconds, 3),
                        psnr=round(float(result.metrics["psnr"][0]), 3))
        previous = result
        summary["done"] += 1
        summary["frames"].append(name)
        bar.update(1)
        bar.set_postfix(psnr=f"{result.metrics['psnr'][0]:.2f}", refresh=False)
    bar.close()
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary
