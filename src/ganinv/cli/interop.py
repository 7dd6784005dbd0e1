"""Other projects' files: `ganinv directions import`, `ganinv convert --to rosinality` (its worker) and
`ganinv export-latent`."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from ..data.io import save_grid
from ..editing import parse_strengths, preview_images, safe_file_stem
from ..editing.direction import DirectionError
from ..editing.published import import_direction
from ..inversion.result import REPORT_FILE, InversionResult, read_result_report
from ..models.checkpoints import CheckpointError, load_checkpoint
from ..models.export import ExportError, export_rosinality
from ..models.registry import resolve_path
from ..models.storage import load_tensors
from ..utils import atomic_path
from ..version import __version__
from .common import (UserError, device_option, direction_output_options, load_model_or_fail, model_option,
                     prepare_outdir, quiet_option, seed_option, set_threads)

#: The decoder pSp, e4e, ReStyle and PTI's e4e path build: Generator(size, 512, 8, channel_multiplier=2).
ENCODER_DECODER_ARGS = {"latent": 512, "n_mlp": 8, "channel_multiplier": 2}
#: Preview rows of an imported direction (a GANSpace PCA has dozens of components).
MAX_PREVIEW_ROWS = 10


# ---------------------------------------------------------------------------------- directions import


@click.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_option
@click.option("--name", default=None, help="Direction name (file stem); default: the file's stem or its own name.")
@click.option("--layers", default=None,
              help="ws indices to apply it to (all, 0-3, 8-9, ...). Default: the file's own range when it records "
                   "one (GANSpace's saved edits), else all, as InterFaceGAN and e4e apply theirs.")
@click.option("--source-space", type=click.Choice(["auto", "w"]), default="auto", show_default=True,
              help="auto refuses InterFaceGAN's Z-space boundaries by their file names; w reads any file as W.")
@direction_output_options
@device_option
@seed_option
@quiet_option
def import_direction_command(file, model, name, layers, source_space, strengths, preview_seed, upscale, outdir,
                             overwrite, device, seed, quiet):
    """Import a published direction FILE (InterFaceGAN .npy, e4e/ReStyle/PTI .pt, GANSpace .npz/.pkl) for
    --model: strength in prior-std units of that model, the file's own unit kept on the card."""
    set_threads()
    try:
        strength_list = parse_strengths(strengths)
    except ValueError as e:
        raise UserError(str(e)) from None
    bundle = load_model_or_fail(model, device)
    try:
        direction = import_direction(file, bundle, name=name, layers=layers, source_space=source_space, seed=seed)
    except DirectionError as e:
        raise UserError(str(e)) from None
    stem = safe_file_stem(direction.name)
    prepare_outdir(outdir, overwrite, [f"{stem}.json", f"{stem}.safetensors", f"{stem}_preview.png"])
    path = direction.save(outdir)
    shown = list(range(min(len(direction), MAX_PREVIEW_ROWS)))
    preview = preview_images(bundle, direction, strength_list, seed=preview_seed, components=shown)
    save_grid(preview, outdir / f"{stem}_preview.png", ncols=len(strength_list), upscale=upscale)
    if not quiet:
        factors = direction.settings["strength_per_source_unit"]
        click.echo(f"wrote {path} ({len(direction)} component(s) from {direction.settings['source']['format']}, "
                   f"layers {direction.layers}) and {stem}_preview.png")
        for i in range(min(len(direction), MAX_PREVIEW_ROWS)):
            click.echo(f"  {stem}:{i}  {direction.label(i)}  (1 unit = {float(direction.std[i]):.4g} along the "
                       f"vector; their 1.0 = strength {factors[i]:.4g})")
        if len(direction) > MAX_PREVIEW_ROWS:
            click.echo(f"  ... {len(direction) - MAX_PREVIEW_ROWS} more (the preview shows the first "
                       f"{MAX_PREVIEW_ROWS})")


# ---------------------------------------------------------------------------------- convert --to rosinality


def _noise_from_result(folder: Path, G) -> dict[str, torch.Tensor]:
    """The optimized noise maps of a result folder, checked against G's layers."""
    path = folder / "noise.safetensors"
    if not path.is_file():
        return {}
    try:
        noise = load_tensors(path, what="noise maps file")
    except CheckpointError as e:
        raise UserError(str(e)) from None
    buffers = G.synthesis.noise_buffers()
    for key, value in noise.items():
        fits = key in buffers and tuple(value.shape[-2:]) == tuple(buffers[key].shape)
        if not fits or value.numel() != buffers[key].numel():
            raise UserError(f"{path}: noise map {key!r} {tuple(value.shape)} does not fit the tuned generator")
    return noise


def convert_to_rosinality(source: str, out: Path, *, overwrite: bool = False, allow_custom_channels: bool = False,
                          name: str | None = None) -> str:
    """Write SOURCE (model name, checkpoint, native folder, or a PTI/Clone result folder) as a rosinality
    `.pt` at `out`; returns the message to print."""
    if out.is_dir():
        raise UserError(f"{out}: is a folder; give the .pt file to write")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace")
    source_path = Path(source).expanduser()
    notes: list[str] = []
    metadata: dict = {"format_version": 1, "written_by": f"ganinv {__version__}"}
    noise = None
    try:
        if source_path.is_dir() and (source_path / REPORT_FILE).is_file():
            report = read_result_report(source_path)
            if not (source_path / "generator").is_dir():
                model_name = (report.get("model") or {}).get("name") or "its base model"
                raise UserError(f"{source_path}: this {report['method']} result has no tuned generator; convert "
                                f"{model_name} instead")
            ckpt = load_checkpoint(source_path / "generator")
            noise = _noise_from_result(source_path, ckpt.G)
            metadata.update({"source": f"result {source_path.name}", "tuned_by": ckpt.card.get("tuned_by"),
                             "base_model": ckpt.card.get("base_model")})
            if noise:
                metadata["noise"] = "the result's optimized noise maps, as noises.noise_*"
                notes.append("its optimized noise maps are the file's noise buffers (render with "
                             "randomize_noise=False)")
        else:
            ckpt = load_checkpoint(resolve_path(source))
            metadata.update({"source": ckpt.card.get("name") or source_path.name,
                             "source_sha256": ckpt.card.get("sha256") or (ckpt.card.get("source") or {}).get("sha256")})
        if ckpt.card.get("locality_gate"):
            metadata["weights"] = ("bare tuned generator: the locality gate, which blends back to the base model "
                                   "away from the pivot, is not included")
            metadata["locality_gate"] = ckpt.card["locality_gate"]
            notes.append("these are the BARE tuned weights: the locality gate cannot be expressed as plain weights, "
                         "so away from the pivot this generator differs from the base model")
        if name:
            metadata["name"] = name
        args = export_rosinality(ckpt.G, out, noise=noise, metadata=metadata,
                                 allow_custom_channels=allow_custom_channels)
    except ExportError as e:
        raise UserError(f"{source}: {e}") from None
    except (CheckpointError, ValueError) as e:
        raise UserError(str(e)) from None
    call = (f"Generator({args['size']}, {args['latent']}, {args['n_mlp']}, "
            f"channel_multiplier={args['channel_multiplier'] or 2})")
    if args.get("channels"):
        notes.append(f"custom channel widths (args['channels']): set Generator.channels to them before building {call}")
    elif all(args[k] == v for k, v in ENCODER_DECODER_ARGS.items()):
        notes.append("this is the decoder pSp/e4e/ReStyle build: Generator(size, 512, 8, channel_multiplier=2)")
    else:
        notes.append("pSp/e4e/ReStyle build Generator(size, 512, 8, channel_multiplier=2), which this is not")
    return f"wrote {out}: rosinality {call}, keys g_ema, latent_avg, args" + "".join(f"; {n}" for n in notes)


# ---------------------------------------------------------------------------------- export-latent


@click.command(name="export-latent")
@click.argument("results", nargs=-1, required=True)
@click.option("--to", "target", type=click.Choice(["e4e", "nvidia"]), default="e4e", show_default=True,
              help="e4e: latents.pt, a tensor [N, num_ws, w_dim] as encoder4editing's inference saves; "
                   "nvidia: projected_w.npz with key w [N, num_ws, w_dim] (stylegan2-ada-pytorch "
                   "generate.py --projected-w).")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write (latents.pt or projected_w.npz).")
@model_option
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@quiet_option
def export_latent(results, target, out, model, overwrite, quiet):
    """Write the ws of saved inversion RESULTS (folders or zips, in order) for other projects' tools."""
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace")
    bundle = load_model_or_fail(model, "cpu") if model is not None else None
    ws = []
    for text in results:
        try:
            result = InversionResult.load(Path(text), model=bundle)
        except ValueError as e:
            raise UserError(str(e)) from None
        if ws and tuple(result.ws.shape[1:]) != tuple(ws[0].shape[1:]):
            raise UserError(f"{text}: ws {tuple(result.ws.shape[1:])} differ from the first result's "
                            f"{tuple(ws[0].shape[1:])}; export results of one model together")
        ws.append(result.ws.detach().to("cpu", torch.float32))
    stacked = torch.cat(ws)
    with atomic_path(out) as tmp:
        if target == "e4e":
            torch.save(stacked.clone(), tmp)
        else:
            with open(tmp, "wb") as f:
                np.savez(f, w=stacked.numpy())
    if not quiet:
        click.echo(f"wrote {out}: ws {list(stacked.shape)} ({'torch tensor' if target == 'e4e' else 'key w'})")


COMMANDS = [export_latent]
