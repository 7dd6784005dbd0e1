"""`ganinv invert` options for many inputs: `--engine local|ray` (a resumable batch with a manifest, on
this process or a Ray cluster) and video files (frames inverted in order, each from the previous one)."""
from __future__ import annotations

from pathlib import Path

import click

from ..batch import ENGINES, invert_many, invert_video, is_video
from .common import UserError, options


def _engine_options(f):
    return options(
        click.option("--engine", type=click.Choice(ENGINES), default=None,
                     help="Run the batch as one job with a manifest (OUTDIR/manifest.jsonl; a rerun resumes): "
                          "'local' in this process, 'ray' on Ray workers (pip install 'ganinv[scale]')."),
        click.option("--address", default=None, help="Ray cluster to join (e.g. auto, ray://HEAD:10001); "
                                                     "default: start a local one."),
        click.option("--num-workers", type=click.IntRange(1), default=None,
                     help="Ray workers (default: the cluster's CPUs, or GPUs / --gpus-per-worker)."),
        click.option("--gpus-per-worker", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="GPUs each Ray worker reserves (use with --device cuda)."),
        click.option("--threads-per-worker", type=click.IntRange(1), default=1, show_default=True,
                     help="torch threads in each worker."),
        click.option("--every-frame", type=click.IntRange(1), default=1, show_default=True,
                     help="Video inputs: invert every N-th frame."),
        click.option("--max-frames", type=click.IntRange(1), default=None, help="Video inputs: at most N frames."),
    )(f)


batch_options = _engine_options


def wants_batch(engine: str | None, paths: list[Path]) -> bool:
    return engine is not None or any(is_video(p) for p in paths)


def run_batch(paths: list[Path], *, model, method: str, settings: dict, outdir: Path, engine: str | None,
              address, num_workers, gpus_per_worker, threads_per_worker, every_frame, max_frames,
              device: str, seed: int, fit: str, quiet: bool, encoder=None) -> int:
    """The batch path of `ganinv invert`: videos one by one, then the images as one job. Returns the exit
    code (1 when any input failed)."""
    failed = 0
    model_ref = str(model) if model is not None else None
    if encoder is not None and any(is_video(p) for p in paths):
        raise UserError("--encoder is not supported for video inputs yet; invert the frames as images")
    for video in (p for p in paths if is_video(p)):
        summary = invert_video(video, model_ref, outdir, method, settings=settings, every=every_frame,
                               max_frames=max_frames, device=device, seed=seed, fit=fit, progress=not quiet)
        if not quiet:
            click.echo(f"{video.name}: {summary['done']} frames inverted, {summary['skipped']} already done "
                       f"-> {outdir / video.stem}")
    images = [p for p in paths if not is_video(p)]
    if images:
        if engine == "ray" and device == "auto":
            device = "cuda" if gpus_per_worker else "cpu"
        summary = invert_many(images, model_ref, outdir, method, settings=settings, engine=engine or "local",
                              address=address, num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                              threads_per_worker=threads_per_worker, device=device, seed=seed, fit=fit,
                              progress=not quiet, encoder=None if encoder is None else str(encoder))
        for failure in summary["failures"]:
            click.echo(f"{failure['input']}: failed: {failure['error']}", err=True)
        failed += summary["failed"]
        if not quiet:
            click.echo(f"{summary['done']} inverted, {summary['skipped']} already done, {summary['failed']} failed "
                       f"in {summary['seconds']:.1f}s ({summary['engine']}) -> {outdir} (manifest.jsonl)")
    if failed:
        raise UserError(f"{failed} input(s) failed (see above and {outdir}/manifest.jsonl)")
    return 0
