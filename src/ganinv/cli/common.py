"""Options and error handling shared by every subcommand.

Option groups are decorators (`common_options`, `output_options`, `training_options`, ...), so a flag
means the same thing, with the same default and help, wherever it appears."""
from __future__ import annotations

import os
from pathlib import Path

import click
import torch

from ..errors import GanInvError
from ..models.checkpoints import CheckpointError
from ..train.loop import config_for_run
from ..models.registry import load_model, resolve_device, set_default_trust_card


DATASET_HELP = "Dataset folder built by `ganinv data ...` (dataset.json, labels.json, images/)."


class UserError(click.ClickException):
    """A mistake in the command line or input files: one line, non-zero exit, no traceback."""


def options(*decorators):
    """Several click options as one decorator, listed in `--help` in the order given."""
    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply


def device_option(f):
    return click.option("--device", default="auto", show_default=True,
                        type=click.Choice(["auto", "cpu", "cuda"]),
                        help="Where to run: auto picks CUDA when present.")(f)


def seed_option(f):
    return click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2 ** 32 - 1),
                        help="Seed for every random choice.")(f)


def quiet_option(f):
    return click.option("--quiet", is_flag=True, help="No progress bars or summaries.")(f)


def common_options(f):
    """--device, --seed and --quiet, which every subcommand that computes takes."""
    return options(device_option, seed_option, quiet_option)(f)


def trust_card_option(f):
    """--trust-card: load a native model card that lacks the sha256 of its weights (for every model loaded)."""
    def remember(ctx, param, value):
        set_default_trust_card(value)
        return value
    return click.option("--trust-card", is_flag=True, expose_value=False, callback=remember,
                        help="Load a native model folder whose card.json has no sha256 of its weights "
                             "(refused by default: the weights cannot be verified).")(f)


def model_option(f):
    return trust_card_option(click.option(
        "--model", "model", default=None,
        help="Embedded model name (emoji64, fashion32) or a checkpoint path "
             "(native folder, NVIDIA .pkl, rosinality .pt). Default: the embedded default.")(f))


def output_options(required: bool = True, *, default: Path | None = None, help: str | None = "Folder for outputs.",
                   overwrite_help: str = "Replace existing outputs in --outdir."):
    """--outdir (a folder, as a Path) and --overwrite (see `prepare_outdir`)."""
    extra = {} if default is None else {"default": default}
    return options(
        click.option("--outdir", type=click.Path(file_okay=False, path_type=Path), required=required, help=help,
                     **extra),
        click.option("--overwrite", is_flag=True, help=overwrite_help))


outdir_option = output_options  # the earlier name


def direction_output_options(f):
    """What a command that writes a direction shows and where: --strengths, --preview-seed and --upscale of
    its preview grid, --outdir/--out for NAME.json, NAME.safetensors and NAME_preview.png, and --overwrite."""
    return options(
        click.option("--strengths", default="-3:3:7", show_default=True, help="Preview columns: START:STOP:COUNT."),
        click.option("--preview-seed", default=0, show_default=True, type=click.IntRange(0),
                     help="Seed of the preview subject."),
        click.option("--upscale", default=1, show_default=True, type=click.IntRange(1, 16),
                     help="Nearest upscale of PNGs."),
        click.option("--outdir", "--out", "outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Folder for NAME.json, NAME.safetensors and NAME_preview.png."),
        click.option("--overwrite", is_flag=True, help="Replace existing files."))(f)


def threads_option(f):
    return click.option("--threads", default=None, type=click.IntRange(min=1), help="torch CPU threads.")(f)


def apply_threads(threads: int | None) -> None:
    """Apply --threads when given."""
    if threads:
        torch.set_num_threads(threads)


def learning_rate_option(default: float, help: str | None = None):
    return click.option("--learning-rate", "--lr", "learning_rate", default=default, show_default=True,
                        type=click.FloatRange(min=0, min_open=True), help=help)


def dataset_option(required: bool = True, help: str = DATASET_HELP):
    return click.option("--data", "data_dir", required=required,
                        type=click.Path(exists=True, file_okay=False, path_type=Path), help=help)


def training_options(*, outdir_help: str, resume_help: str, max_steps_help: str):
    """The run-folder options of every trainer: --outdir (the run folder), --resume/--no-resume,
    --max-steps and --threads (see `ganinv.train.loop`)."""
    return options(
        click.option("--outdir", required=True, type=click.Path(file_okay=False, path_type=Path), help=outdir_help),
        click.option("--resume/--no-resume", default=True, show_default=True, help=resume_help),
        click.option("--max-steps", default=None, type=click.IntRange(min=1), help=max_steps_help),
        threads_option)


def prepare_outdir(outdir: Path, overwrite: bool, names: list[str] | None = None) -> Path:
    """Create outdir; refuse to replace existing outputs unless --overwrite."""
    outdir.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        clash = [n for n in (names or []) if (outdir / n).exists()]
        if clash:
            raise UserError(f"{outdir}: {', '.join(clash[:3])} already exist; pass --overwrite to replace")
    return outdir


def load_model_or_fail(model, device: str):
    try:
        return load_model(model, device=resolve_device(device))
    except (CheckpointError, ValueError) as e:
        raise UserError(str(e)) from None


def config_for_run_or_fail(config, outdir: Path, resume: bool, schedule: tuple[str, ...]):
    """The settings a training run goes on with (`ganinv.train.loop.config_for_run`): a resumed run keeps
    its own settings except the schedule; an existing run is never restarted silently."""
    try:
        return config_for_run(config, outdir, resume=resume, schedule=schedule)
    except FileExistsError as e:
        raise UserError(f"{e.filename} exists; pass --resume to continue it or choose another --outdir") from None


def set_threads() -> None:
    threads = os.environ.get("GANINV_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def one_line(error: BaseException) -> str:
    """An error's message on one line (a message from a library may span several)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text or type(error).__name__


def run_main(main) -> int:
    """Run the click group: every GanInvError (a user mistake or an unusable input) and every other
    error is printed as one line, with a non-zero exit code; never a traceback. Loaders turn failures of
    untrusted files into GanInvError; anything else reaching here is a bug in ganinv, said as such."""
    try:
        rv = main.main(standalone_mode=False)
        if isinstance(rv, int):
            return rv
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Aborted.", err=True)
        return 130
    except (GanInvError, CheckpointError, FileNotFoundError, ValueError) as e:
        click.echo(f"Error: {one_line(e)}", err=True)
        return 1
    except OSError as e:  # a file or folder the command writes or reads: named by the OS message
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        click.echo(f"Error: {where}{e.strerror or one_line(e)}", err=True)
        return 1
    except Exception as e:  # noqa: BLE001 - last resort: one line, not a traceback
        click.echo(f"Error: internal error ({type(e).__name__}: {one_line(e)[:300]}); this is a bug in ganinv, "
                   "please report it with the command you ran", err=True)
        return 1
    return 0
