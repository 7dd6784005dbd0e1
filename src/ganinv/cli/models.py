"""`ganinv info`, `ganinv convert`, `ganinv generate`."""
from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from ..errors import GanInvError
from ..models.checkpoints import load_checkpoint, save_native
from ..utils import one_hot, parse_seeds, z_from_seeds
from .common import (UserError, common_options, load_model_or_fail, output_options, prepare_outdir,
                     set_threads, trust_card_option)
from ..models.registry import available_models, default_trust_card, resolve_path
from ..data.io import save_grid, save_image
from .interop import convert_to_rosinality


@click.command()
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON.")
@trust_card_option
def info(model, as_json):
    """Print a model's card (embedded name or checkpoint path)."""
    try:
        path = resolve_path(model)
        ckpt = load_checkpoint(path, trust_card=default_trust_card())
    except GanInvError as e:
        raise UserError(str(e)) from None
    card = dict(ckpt.card)
    G = ckpt.G
    card.setdefault("img_resolution", G.img_resolution)
    card.setdefault("img_channels", G.img_channels)
    card.setdefault("z_dim", G.z_dim)
    card.setdefault("w_dim", G.w_dim)
    card.setdefault("num_ws", G.num_ws)
    card.setdefault("c_dim", G.c_dim)
    card["generator_parameters"] = sum(p.numel() for p in G.parameters())
    card["discriminator_parameters"] = sum(p.numel() for p in ckpt.D.parameters()) if ckpt.D is not None else None
    if as_json:
        click.echo(json.dumps(card, indent=2))
        return
    click.echo(f"model: {card.get('name', path.name)}  ({path})")
    for key in ("img_resolution", "img_channels", "z_dim", "w_dim", "num_ws", "c_dim",
                "generator_parameters", "discriminator_parameters"):
        click.echo(f"  {key}: {card[key]}")
    click.echo(f"  channels: {G.synthesis.channels}")
    for key, value in card.items():
        if key in ("generator", "discriminator") or key.endswith("_parameters") or key in (
                "img_resolution", "img_channels", "z_dim", "w_dim", "num_ws", "c_dim"):
            continue
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        click.echo(f"  {key}: {text if len(text) < 200 else text[:197] + '...'}")
    if model is None:
        click.echo(f"(default embedded model; installed: {', '.join(available_models())})")


@click.command()
@click.argument("source")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Model name for the card (default: the file's stem).")
@click.option("--fp16", is_flag=True, help="Store weights as float16 (half the size).")
@click.option("--overwrite", is_flag=True, help="Replace an existing model folder.")
@click.option("--to", "target", type=click.Choice(["native", "rosinality"]), default="native", show_default=True,
              help="native: a model folder; rosinality: OUT.pt as rosinality/pSp/e4e/PTI load it (SOURCE may be "
                   "a PTI/Clone result folder: its tuned generator).")
@click.option("--custom-channels", is_flag=True,
              help="rosinality: write channel widths outside rosinality's table too (recorded in args['channels']).")
@trust_card_option
def convert(source, out, name, fp16, overwrite, target, custom_channels):
    """Convert any supported checkpoint (NVIDIA .pkl, rosinality .pt, native) to a native folder, or any
    model or tuned result to a rosinality .pt (--to rosinality)."""
    if target == "rosinality":
        if fp16:
            raise UserError("--fp16 applies to native folders; rosinality files are float32")
        click.echo(convert_to_rosinality(source, out, overwrite=overwrite, allow_custom_channels=custom_channels,
                                         name=name))
        return
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty; pass --overwrite to replace")
    try:
        ckpt = load_checkpoint(resolve_path(source), trust_card=default_trust_card())
    except GanInvError as e:
        raise UserError(str(e)) from None
    card = dict(ckpt.card)
    card["name"] = name or card.get("name") or out.name
    save_native(out, ckpt.G, ckpt.D, card=card, dtype=torch.float16 if fp16 else torch.float32)
    click.echo(f"wrote {out} (generator{' + discriminator' if ckpt.D is not None else ''})")


@click.command()
@click.option("--model", default=None, help="Embedded model name or checkpoint path.")
@trust_card_option
@click.option("--seeds", default="0-7", show_default=True, help="Seeds, e.g. 0,3,5-9.")
@click.option("--truncation-psi", "--trunc", "truncation_psi", default=1.0, show_default=True,
              type=click.FloatRange(-2, 2), help="Truncation psi (1 = none).")
@click.option("--truncation-cutoff", default=None, type=click.IntRange(0), help="Truncate only ws < cutoff.")
@click.option("--class", "class_idx", default=None, type=click.IntRange(0), help="Class label (conditional models).")
@click.option("--noise-mode", default="const", type=click.Choice(["const", "random", "none"]))
@click.option("--upscale", default=1, type=click.IntRange(1, 16), help="Nearest-neighbour upscale for PNGs.")
@output_options()
@common_options
def generate(model, seeds, truncation_psi, truncation_cutoff, class_idx, noise_mode, upscale, outdir,
             overwrite, device, seed, quiet):
    """Generate one PNG per seed plus a grid (seeds follow NVIDIA's gen_images)."""
    set_threads()
    try:
        seed_list = parse_seeds(seeds)
    except ValueError as e:
        raise UserError(str(e)) from None
    bundle = load_model_or_fail(model, device)
    G = bundle.G
    names = [f"seed{s:04d}.png" for s in seed_list] + ["grid.png"]
    prepare_outdir(outdir, overwrite, names)
    dev = next(G.parameters()).device
    torch.manual_seed(seed)
    images = []
    with torch.no_grad():
        for start in range(0, len(seed_list), 16):
            chunk = seed_list[start:start + 16]
            z = z_from_seeds(chunk, G.z_dim).to(dev)
            try:
                c = one_hot(class_idx, G.c_dim, len(chunk))
            except ValueError as e:
                raise UserError(str(e)) from None
            img = G(z, None if c is None else c.to(dev), truncation_psi=truncation_psi,
                    truncation_cutoff=truncation_cutoff, noise_mode=noise_mode)
            images.append(img.cpu())
    images = torch.cat(images)
    for s, img in zip(seed_list, images):
        save_image(img, outdir / f"seed{s:04d}.png", upscale=upscale)
    save_grid(images, outdir / "grid.png", upscale=upscale)
    if not quiet:
        click.echo(f"wrote {len(seed_list)} images and grid.png to {outdir} (model {bundle.name})")


COMMANDS = [info, convert, generate]
