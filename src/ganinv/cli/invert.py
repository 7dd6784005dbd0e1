"""`ganinv invert`: photos -> latents (+ tuned generators), one result folder per image."""
from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from .common import (UserError, device_option, load_model_or_fail, model_option, quiet_option, seed_option,
                     set_threads)
from ..inversion import METHODS, invert as run_invert
from ..data.io import ImageLoadError, load_image
from ..inversion.result import is_complete_result
from ..metrics import format_metric
from .align import FaceItems, detection_options, load_target, save_alignment


def _methods_help() -> str:
    lines = []
    for name, spec in METHODS.items():
        notes = []
        if spec.needs_encoder:
            notes.append("needs the model's encoder")
        if spec.starts_from_encoder:
            notes.append("starts from the model's encoder when it has one")
        if spec.tunes_generator:
            notes.append("tunes a copy of G")
        note = f" ({'; '.join(notes)})" if notes else ""
        settings = ", ".join(s.describe() for s in spec.settings if s.name != "preview_every")
        lines.append(f"{name}: {spec.summary}{note}. Settings: {settings}")
    return "\n\n".join(lines)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _load_real_dir(real_dir: Path, G) -> torch.Tensor:
    files = sorted(p for p in real_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
    images = []
    for p in files:
        try:
            images.append(load_image(p, G.img_resolution, G.img_channels))
        except ImageLoadError:
            continue
    if not images:
        raise UserError(f"--real-dir {real_dir}: no readable images")
    return torch.cat(images)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _expand_images(paths) -> list[Path]:
    """Files as given; a folder stands for its image files (sorted by name, not recursive)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                click.echo(f"{path}: no image files in this folder", err=True)
            out.extend(found)
        else:
            out.append(path)
    return out


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard expects K/N (e.g. 2/8), got {text!r}") from None
    if not 1 <= k <= n:
        raise UserError(f"--shard {text}: K must be between 1 and N")
    return k, n


class _MethodsCommand(click.Command):
    def format_epilog(self, ctx, formatter):
        with formatter.section("Methods (see --set KEY=VALUE for any setting)"):
            formatter.write_text(_methods_help())


@click.command(cls=_MethodsCommand)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_option
@click.option("--method", default="optimize", show_default=True,
              help="Inversion method (listed below).")
@click.option("--num-steps", "--steps", "num_steps", type=click.IntRange(1), default=None,
              help="Iterations (method default if omitted).")
@click.option("--space", type=click.Choice(["z", "w", "w+"]), default=None, help="Latent space (optimize).")
@click.option("--preset", default=None, help="Clone preset: fast (default) or paper.")
@click.option("--target-psnr", type=float, default=None, help="Stop when this PSNR is reached (pti, clone).")
@click.option("--init-from", default=None, help="Start the method from this method's latent (e.g. optimize).")
@click.option("--real-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Real training images for Clone's global loss (default: the model's own).")
@click.option("--fit", type=click.Choice(["crop", "pad", "stretch"]), default="crop", show_default=True,
              help="How a non-square photo becomes the model's square input.")
@click.option("--align", is_flag=True,
              help="Find the faces in each photo, align each by the FFHQ recipe and invert every face (or --face "
                   "K) into OUTDIR/<stem>_face_KK/ with alignment.json (for `edit --paste-back`).")
@click.option("--face", type=click.IntRange(0), default=None, help="With --align: invert only face K (0 = leftmost).")
@detection_options
@click.option("--set", "extra", multiple=True, metavar="KEY=VALUE", help="Any other method setting.")
@click.option("--lpips-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with genuine LPIPS weights (to report LPIPS).")
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--overwrite", is_flag=True, help="Replace existing result folders.")
@click.option("--skip-existing", is_flag=True,
              help="Leave images whose result folder is complete (report.json and every result file) alone "
                   "and redo incomplete ones: resume an interrupted batch.")
@click.option("--shard", default=None, metavar="K/N",
              help="Process only the K-th of N interleaved slices of the image list (1-based), so N processes "
                   "or machines can share one batch and OUTDIR.")
@device_option
@seed_option
@quiet_option
def invert(images, model, method, num_steps, space, preset, target_psnr, init_from, real_dir, fit, align, face,
           upsample, detector, min_score, extra, lpips_dir, outdir, overwrite, skip_existing, shard, device, seed,
           quiet):
    """Invert IMAGES (files, or folders of images) into the model's latent space; writes
    OUTDIR/<image stem>/ per image."""
    from tqdm import tqdm

    set_threads()
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    settings = {}
    for item in extra:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        settings[key.strip().replace("-", "_")] = _parse_value(value)
    if num_steps is not None:
        settings["num_steps"] = num_steps
    if space is not None:
        settings["space"] = space
    if preset is not None:
        settings["preset"] = preset
    if target_psnr is not None:
        settings["target_psnr"] = target_psnr
    try:
        settings = METHODS[method].check_settings(settings)
    except ValueError as e:
        raise UserError(str(e)) from None
    if overwrite and skip_existing:
        raise UserError("--overwrite and --skip-existing contradict each other; pick one")
    shard_spec = _parse_shard(shard)
    bundle = load_model_or_fail(model, device)
    G = bundle.G
    real = _load_real_dir(real_dir, G) if real_dir is not None else None
    outdir.mkdir(parents=True, exist_ok=True)
    failures = 0
    stems: dict[str, int] = {}
    if face is not None and not align:
        raise UserError("--face K selects a face of --align; add --align")
    items = _expand_images(images)
    if align:
        items = FaceItems(items, G.img_resolution, G.img_channels, face,
                          {"upsample": upsample, "detector": detector, "min_score": min_score})
    for index, path in enumerate(items):
        stem = path.stem
        stems[stem] = stems.get(stem, 0) + 1
        if stems[stem] > 1:
            stem = f"{stem}-{stems[stem]}"
        if shard_spec is not None and index % shard_spec[1] != shard_spec[0] - 1:
            continue  # (output names are assigned before sharding, so every shard agrees on them)
        out = outdir / stem
        if skip_existing and is_complete_result(out):
            if not quiet:
                click.echo(f"{path.name}: {out} already done (skipped)")
            continue
        if out.exists() and not (overwrite or skip_existing):  # --skip-existing redoes incomplete folders
            click.echo(f"{path}: {out} exists; pass --overwrite to replace (skipped)", err=True)
            failures += 1
            continue
        try:
            target = load_target(path, G, fit)
        except (ImageLoadError, OSError) as e:
            click.echo(f"{path}: skipped: {e}", err=True)
            failures += 1
            continue
        bar = tqdm(total=None, desc=f"{path.name} [{method}]", disable=quiet, leave=False, dynamic_ncols=True)
        state = {"stage": None}

        def progress(info):
            if state["stage"] != info.stage:
                state["stage"] = info.stage
                bar.reset(total=info.num_steps)
                bar.set_description(f"{path.name} [{info.stage or method}]")
            bar.n = info.step + 1
            bar.set_postfix(info.progress_fields(), refresh=False)
            bar.refresh()
            return None

        try:
            result = run_invert(bundle, target, method, real_images=real, seed=seed, callback=progress,
                                init_from=init_from, metrics=("ssim", "identity") if align else ("ssim",),
                                compute_lpips=lpips_dir is not None,
                                lpips_dir=lpips_dir, **settings)
        except ValueError as e:
            bar.close()
            raise UserError(str(e)) from None
        bar.close()
        result.save(out)
        save_alignment(path, out)
        if not quiet:
            m = result.metrics
            first = {k: v[0] if isinstance(v, list) and v else None for k, v in m.items()}
            lp_text = f" lpips {format_metric(first['lpips_alex'])}" if "lpips_alex" in first else ""
            lp_text += f" identity {format_metric(first['identity'])}" if "identity" in first else ""
            click.echo(f"{path.name}: {method} psnr {m['psnr'][0]:.2f} dB ssim {format_metric(first.get('ssim'))} mse "
                       f"{m['mse'][0]:.5f}{lp_text} in {result.seconds:.1f}s ({result.stop_reason}) -> {out}")
    failures += getattr(items, "failures", 0)
    if failures:
        raise click.exceptions.Exit(1)


COMMANDS = [invert]
