"""`ganinv invert`: photos -> latents (+ tuned generators), one result folder per image."""
from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from .batch import batch_options, run_batch, wants_batch
from ..batch import VIDEO_SUFFIXES, file_sha256, result_names
from .common import (UserError, device_option, load_model_or_fail, model_option, quiet_option, seed_option,
                     set_threads)
from ..inversion import METHODS, invert as run_invert
from ..data.io import ImageLoadError, load_image, read_image
from ..errors import GanInvError
from ..inversion.degradation import Colorize, Inpaint, SuperResolution, load_mask
from ..inversion.result import read_result_report, result_input_sha256
from ..models.official_encoders import load_encoder
from ..models.storage import CheckpointError
from ..metrics import format_metric
from .align import AlignedFace, FaceItems, alignment_attachment, detection_options


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
    except (json.JSONDecodeError, RecursionError):
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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", *VIDEO_SUFFIXES)


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


def _recorded_input_path(folder: Path) -> str | None:
    try:
        recorded = read_result_report(folder)["input"].get("path")
    except (ValueError, OSError):
        return None
    return recorded if isinstance(recorded, str) else None


def _same_file(recorded: str | None, path: Path) -> bool:
    """Whether a recorded input path names the same file as `path` (by name: the working folder or the
    folder of inputs may differ between runs)."""
    return recorded is not None and Path(recorded).name == path.name


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


def _say_failure(path: Path, error: GanInvError | OSError, saving_to: Path | None = None) -> None:
    """One stderr line for an input the command fails on and goes past: "skipped" when the input cannot be
    read, "not saved" when its result cannot be written to `saving_to`. A GanInvError says its own line; an
    OSError gives the OS's reason."""
    if saving_to is None:
        reason = error if isinstance(error, GanInvError) else f"cannot read ({error.strerror or error})"
        click.echo(f"{path}: skipped: {reason}", err=True)
    else:
        reason = error if isinstance(error, GanInvError) else f"{saving_to}: {error.strerror or error}"
        click.echo(f"{path}: not saved: {reason}", err=True)


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
@click.option("--encoder", "encoder_path", type=click.Path(path_type=Path), default=None,
              help="Encoder to use instead of the model's: a pSp / e4e / ReStyle checkpoint (.pt) or a ganinv "
                   "encoder folder (methods encoder and hybrid run it; pti and clone start from it).")
@click.option("--real-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Real training images for Clone's global loss (default: the model's own).")
@click.option("--fit", type=click.Choice(["crop", "pad", "stretch"]), default="crop", show_default=True,
              help="How a non-square photo becomes the model's square input.")
@click.option("--codes", type=click.IntRange(1, 64), default=None, help="Number of latent codes (multicode).")
@click.option("--layer", type=click.IntRange(0), default=None,
              help="Synthesis block index where the codes' features are composed (multicode; 0 = 4 px block).")
@click.option("--mask", "mask_path", type=click.Path(path_type=Path), default=None,
              help="Inpaint: MASK.png, white = known, black = to fill (the image's or the model's size).")
@click.option("--colorize", is_flag=True, help="Colorize: the target is grayscale, the loss compares luminance.")
@click.option("--super-resolution", "super_resolution", type=click.IntRange(2), default=None, metavar="F",
              help="Super-resolution by F: the image is the low-resolution target (loaded at resolution/F).")
@click.option("--align", is_flag=True,
              help="Find the faces in each photo, align each by the FFHQ recipe and invert every face (or --face "
                   "K) into OUTDIR/<stem>_face_KK/ with alignment.json (for `edit --paste-back`).")
@click.option("--face", type=click.IntRange(0), default=None, help="With --align: invert only face K (0 = leftmost).")
@detection_options
@click.option("--set", "extra", multiple=True, metavar="KEY=VALUE", help="Any other method setting.")
@click.option("--lpips-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with genuine LPIPS weights (to report LPIPS).")
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--overwrite", is_flag=True,
              help="Replace existing result folders (each is replaced as a whole, once the new one is complete).")
@click.option("--skip-existing", is_flag=True,
              help="Leave images whose result folder is complete and records this very input (its sha256) "
                   "alone, and redo incomplete ones: resume an interrupted batch.")
@click.option("--shard", default=None, metavar="K/N",
              help="Process only the K-th of N interleaved slices of the image list (1-based), so N processes "
                   "or machines can share one batch and OUTDIR.")
@batch_options
@device_option
@seed_option
@quiet_option
def invert(images, model, method, num_steps, space, preset, target_psnr, init_from, real_dir, fit, codes, layer,
           mask_path, colorize, super_resolution, align, face, upsample, detector, min_score, extra, lpips_dir,
           outdir, overwrite, skip_existing, shard, engine,
           address, num_workers, gpus_per_worker, threads_per_worker, every_frame, max_frames, device, seed, quiet,
           encoder_path=None):
    """Invert IMAGES (files, or folders of images) into the model's latent space; writes
    OUTDIR/<image stem>/ per image (inputs sharing a stem: OUTDIR/<stem>-<extension>/)."""
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
    if codes is not None:
        settings["codes"] = codes
    if layer is not None:
        settings["layer"] = layer
    if sum((mask_path is not None, colorize, super_resolution is not None)) > 1:
        raise UserError("--mask, --colorize and --super-resolution are separate restorations; give one")
    restoring = mask_path is not None or colorize or super_resolution is not None
    if restoring and not METHODS[method].accepts_degradation:
        raise UserError(f"--method {method} does not restore degraded images; use one of "
                        f"{', '.join(n for n, spec in METHODS.items() if spec.accepts_degradation)}")
    try:
        settings = METHODS[method].check_settings(settings)
    except ValueError as e:
        raise UserError(str(e)) from None
    if overwrite and skip_existing:
        raise UserError("--overwrite and --skip-existing contradict each other; pick one")
    if face is not None and not align:
        raise UserError("--face K selects a face of --align; add --align")
    if align and (mask_path is not None or super_resolution is not None):
        raise UserError("--align inverts aligned face crops; --mask and --super-resolution take whole images")
    shard_spec = _parse_shard(shard)
    paths = _expand_images(images)
    if wants_batch(engine, paths):
        if restoring or align:
            raise UserError("--align, --mask, --colorize and --super-resolution run in this process; "
                            "drop --engine and video inputs to use them")
        return run_batch(paths, model=model, method=method, settings=settings, outdir=outdir, engine=engine,
                         address=address, num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                         threads_per_worker=threads_per_worker, every_frame=every_frame, max_frames=max_frames,
                         device=device, seed=seed, fit=fit, quiet=quiet, encoder=encoder_path)
    bundle = load_model_or_fail(model, device)
    G = bundle.G
    if encoder_path is not None:
        try:
            bundle.encoder = load_encoder(encoder_path, device=next(G.parameters()).device)
        except (CheckpointError, ValueError) as e:
            raise UserError(str(e)) from None
    real = _load_real_dir(real_dir, G) if real_dir is not None else None
    degradation = Colorize() if colorize else None
    if colorize and G.img_channels != 3:
        raise UserError(f"--colorize needs a colour model; {bundle.name or 'this model'} has {G.img_channels} channel(s)")
    if super_resolution is not None:
        if G.img_resolution % super_resolution:
            raise UserError(f"--super-resolution {super_resolution} must divide the model's resolution {G.img_resolution}")
        degradation = SuperResolution(super_resolution)
    if mask_path is not None and not mask_path.is_file():
        raise UserError(f"--mask {mask_path}: no such file")
    outdir.mkdir(parents=True, exist_ok=True)
    failures = 0
    inputs: list[Path] = []
    seen: set[Path] = set()
    for path in paths:  # the same file named twice is inverted once
        key = path.resolve() if path.exists() else path
        if key not in seen:
            seen.add(key)
            inputs.append(path)
    faces = FaceItems([], G.img_resolution, G.img_channels, face,
                      {"upsample": upsample, "detector": detector, "min_score": min_score}) if align else None
    for index, (path, name) in enumerate(zip(inputs, result_names(inputs))):
        if shard_spec is not None and index % shard_spec[1] != shard_spec[0] - 1:
            continue  # (output names are assigned before sharding, so every shard agrees on them)
        try:
            if not path.is_file():  # (never hash a pipe or a device: reading it may not end)
                raise ImageLoadError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
            input_sha256 = file_sha256(path)
        except (ImageLoadError, OSError) as e:
            _say_failure(path, e)
            failures += 1
            continue
        # A photo is one item; with --align each of its faces is one, named <name>_face_KK.
        items = [(path, name)] if faces is None else [(f, f"{name}_face_{f.index:02d}") for f in faces.of(path)]
        for item, item_name in items:
            label = item.name
            out = outdir / item_name
            if skip_existing and (out.exists() or out.is_symlink()):
                recorded = result_input_sha256(out)
                if recorded == input_sha256:
                    if not quiet:
                        click.echo(f"{label}: {out} already done (skipped)")
                    continue
                other = _recorded_input_path(out) if recorded is not None else None
                if other is not None and not _same_file(other, path):
                    # a complete result of another file: never replace it silently
                    click.echo(f"{path}: {out} holds the result of another input ({other}); move it or choose "
                               "another --outdir (skipped)", err=True)
                    failures += 1
                    continue
                # incomplete, made before inputs were recorded, or this file changed since: redo it
            if out.exists() and not (overwrite or skip_existing):
                click.echo(f"{path}: {out} exists; pass --overwrite to replace (skipped)", err=True)
                failures += 1
                continue
            try:
                if isinstance(item, AlignedFace):
                    target = item.target
                elif super_resolution is not None:  # the photo is the low-resolution observation
                    target = load_image(path, G.img_resolution // super_resolution, G.img_channels, fit=fit)
                else:
                    target = load_image(path, G.img_resolution, G.img_channels, fit=fit)
                size = read_image(path, G.img_channels).size if mask_path is not None else None
            except (ImageLoadError, OSError) as e:
                click.echo(f"{path}: skipped: {e}", err=True)
                failures += 1
                continue
            if mask_path is not None:
                try:
                    degradation = Inpaint(load_mask(mask_path, G.img_resolution, image_size=size, fit=fit))
                except GanInvError as e:  # a bad mask is a mistake for the whole command
                    raise UserError(f"--mask {e}" if str(e).startswith(str(mask_path)) else f"--mask {mask_path}: {e}"
                                    ) from None
            bar = tqdm(total=None, desc=f"{label} [{method}]", disable=quiet, leave=False, dynamic_ncols=True)
            state = {"stage": None}

            def progress(info):
                if state["stage"] != info.stage:
                    state["stage"] = info.stage
                    bar.reset(total=info.num_steps)
                    bar.set_description(f"{label} [{info.stage or method}]")
                bar.n = info.step + 1
                bar.set_postfix(info.progress_fields(), refresh=False)
                bar.refresh()
                return None

            try:
                result = run_invert(bundle, target, method, real_images=real, seed=seed, callback=progress,
                                    init_from=init_from, metrics=("ssim", "identity") if align else ("ssim",),
                                    compute_lpips=lpips_dir is not None, lpips_dir=lpips_dir, degradation=degradation, **settings)
            except ValueError as e:
                bar.close()
                raise UserError(str(e)) from None
            bar.close()
            result.input = {"path": str(path), "sha256": input_sha256}
            try:
                result.save(out, attachments=alignment_attachment(item))
            except (GanInvError, OSError) as e:
                _say_failure(path, e, saving_to=out)
                failures += 1
                continue
            if not quiet:
                m = result.metrics
                first = {k: v[0] if isinstance(v, list) and v else None for k, v in m.items()}
                lp_text = f" lpips {format_metric(first['lpips_alex'])}" if "lpips_alex" in first else ""
                click.echo(f"{label}: {method} psnr {m['psnr'][0]:.2f} dB ssim {format_metric(first.get('ssim'))} mse "
                           f"{m['mse'][0]:.5f}{lp_text} in {result.seconds:.1f}s ({result.stop_reason}) -> {out}")
    failures += faces.failures if faces is not None else 0
    if failures:
        raise click.exceptions.Exit(1)


COMMANDS = [invert]
