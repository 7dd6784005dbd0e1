"""Options and error handling shared by every subcommand."""
from __future__ import annotations

import os
from pathlib import Path

import click
import torch

from ..models.checkpoints import CheckpointError


class UserError(click.ClickException):
    """A mistake in the command line or input files: one line, non-zero exit, no traceback."""


def device_option(f):
    return click.option("--device", default="auto", show_default=True,
                        type=click.Choice(["auto", "cpu", "cuda"]),
                        help="Where to run: auto picks CUDA when present.")(f)


def seed_option(f):
    return click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2 ** 32 - 1),
                        help="Seed for every random choice.")(f)


def quiet_option(f):
    return click.option("--quiet", is_flag=True, help="No progress bars or summaries.")(f)


def model_option(f):
    return click.option("--model", "model", default=None,
                        help="Embedded model name (emoji64, fashion32) or a checkpoint path "
                             "(native folder, NVIDIA .pkl, rosinality .pt). Default: the embedded default.")(f)


def outdir_option(required: bool = True):
    def deco(f):
        f = click.option("--overwrite", is_flag=True, help="Replace existing outputs in --outdir.")(f)
        return click.option("--outdir", type=click.Path(file_okay=False, path_type=Path), required=required,
                            help="Folder for outputs.")(f)
    return deco


def prepare_outdir(outdir: Path, overwrite: bool, names: list[str] | None = None) -> Path:
    """Create outdir; refuse to replace existing outputs unless --overwrite."""
    outdir.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        clash = [n for n in (names or []) if (outdir / n).exists()]
        if clash:
            raise UserError(f"{outdir}: {', '.join(clash[:3])} already exist; pass --overwrite to replace")
    return outdir


def load_model_or_fail(model, device: str):
    from ..models.registry import load_model, resolve_device
    try:
        return load_model(model, device=resolve_device(device))
    except (CheckpointError, ValueError) as e:
        raise UserError(str(e)) from None


def set_threads() -> None:
    threads = os.environ.get("GANINV_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def run_main(main) -> int:
    try:
        rv = main.main(standalone_mode=False)
        if isinstance(rv, int):
            return rv
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        click.echo(f"Error: {e}", err=True)
        return 1
    return 0
