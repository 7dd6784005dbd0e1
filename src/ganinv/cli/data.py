"""`ganinv data emoji` and `ganinv data fashion-mnist`: build the training datasets from Debian packages."""
from __future__ import annotations

import time
from pathlib import Path

import click
from tqdm import tqdm

from ..data.dataset import DatasetError, read_dataset_info
from .common import UserError, common_options, output_options, prepare_outdir
from ..data.emoji import EmojiBuildReport, build_emoji
from ..data.fashion_mnist import build_fashion_mnist

DATASET_OUTPUTS = ["dataset.json", "labels.json", "images"]


class _Progress:
    """A tqdm bar per build stage ('render', 'write'), driven by the builders' progress callback."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: tqdm | None = None
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="img", leave=False, dynamic_ncols=True)
        if self.bar is not None:
            self.bar.n = done
            if done == total or done % 200 == 0:
                self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _summary(outdir: Path, seconds: float) -> str:
    info = read_dataset_info(outdir)
    counts = info["counts"]
    return (f"{info['name']}: {counts['train']} train + {counts['heldout']} heldout images, "
            f"{info['resolution']}x{info['resolution']}x{info['channels']}, in {seconds:.1f} s -> {outdir}")


def _build(builder, outdir: Path, overwrite: bool, quiet: bool, **kwargs) -> float:
    """Run a dataset builder into outdir with a progress bar; its error is one line. Returns seconds."""
    prepare_outdir(outdir, overwrite, DATASET_OUTPUTS)
    progress = _Progress(quiet)
    started = time.perf_counter()
    try:
        builder(outdir, progress=progress, **kwargs)
    except DatasetError as e:
        raise UserError(str(e)) from None
    finally:
        progress.close()
    return time.perf_counter() - started


def _limit_option(help: str):
    return click.option("--limit", type=click.IntRange(min=1), default=None, help=help)


@click.group(name="data")
def data_group() -> None:
    """Build the datasets the embedded models are trained on (from Debian packages)."""


@data_group.command(name="emoji")
@output_options()
@_limit_option("Build only N emoji, spread evenly over the list (quick tests).")
@common_options
def emoji_command(outdir: Path, overwrite: bool, limit: int | None, device: str, seed: int, quiet: bool) -> None:
    """Render every fully-qualified emoji of Noto Color Emoji at 64x64 RGB, split by base design.

    Needs the Debian packages fonts-noto-color-emoji and unicode-data. The build is deterministic and
    runs on the CPU; --device and --seed are accepted for uniformity and not used.
    """
    report = EmojiBuildReport(outdir, {})
    seconds = _build(build_emoji, outdir, overwrite, quiet, limit=limit, report=report)
    if not quiet:
        click.echo(_summary(outdir, seconds))
        click.echo(f"  held-out designs: {report.heldout_designs}; emoji the font cannot render "
                   f"(skipped): {len(report.skipped)}")


@data_group.command(name="fashion-mnist")
@output_options()
@_limit_option("Keep only the first N images of each split (quick tests).")
@common_options
def fashion_mnist_command(outdir: Path, overwrite: bool, limit: int | None, device: str, seed: int,
                          quiet: bool) -> None:
    """Fashion-MNIST padded to 32x32, one channel; train = 60,000, heldout = the 10,000 test images.

    Needs the Debian package dataset-fashion-mnist. The build is deterministic and runs on the CPU;
    --device and --seed are accepted for uniformity and not used.
    """
    seconds = _build(build_fashion_mnist, outdir, overwrite, quiet, limit=limit)
    if not quiet:
        click.echo(_summary(outdir, seconds))


COMMANDS = [data_group]
