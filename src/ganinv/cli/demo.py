"""`ganinv demo`: the main job in one command -- invert, compare methods, edit, one picture + report."""
from __future__ import annotations

import time
from pathlib import Path

import click
import torch
from PIL import Image, ImageDraw, ImageFont

from .common import UserError, common_options, load_model_or_fail, model_option, output_options, set_threads
from ..data.io import ImageLoadError, load_image, to_pil
from .. import editing as E
from ..inversion import METHODS, invert
from ..utils import atomic_path, write_json

# Documented presets: fewer steps than the benchmark, so the demo stays quick on a CPU.
DEMO_METHODS = {
    "optimize": dict(space="w+", num_steps=150),
    "pti": dict(pivot_steps=100, num_steps=100),
    "clone": dict(h_steps=100, num_steps=1500, target_psnr=35.0, max_seconds=25.0),
}


def label_font():
    """Pillow's bitmap font: 6 px per character, 11 px high, with a full-width space.

    Pillow 10.1 and later make a FreeType font the default; at its 10 px size the space is hardly
    wider than the gap between two letters, so a label like "held-out sample" reads "held-outsample".
    """
    load_bitmap = getattr(ImageFont, "load_default_imagefont", None)  # Pillow >= 10.1
    return load_bitmap() if load_bitmap is not None else ImageFont.load_default()


def _labelled_sheet(rows: list[list[torch.Tensor]], header: list[str], row_labels: list[str], scale: int):
    font = label_font()
    cell = rows[0][0].shape[-1] * scale
    pad, top, left = 4, 18, 0
    width = left + len(header) * (cell + pad) + pad
    height = top + len(rows) * (cell + pad + 12) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for j, text in enumerate(header):
        draw.text((left + pad + j * (cell + pad), 3), text[: max(4, cell // 6)], fill="black", font=font)
    for i, row in enumerate(rows):
        y = top + i * (cell + pad + 12)
        for j, image in enumerate(row):
            pil = to_pil(image).convert("RGB").resize((cell, cell), Image.NEAREST)
            sheet.paste(pil, (left + pad + j * (cell + pad), y))
        draw.text((left + pad, y + cell + 1), row_labels[i], fill="black", font=font)
    return sheet


@click.command()
@model_option
@click.option("--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your photo(s); default: a bundled held-out sample and a natural photo.")
@click.option("--methods", default="optimize,pti,clone", show_default=True, help="Inversion methods to compare.")
@output_options(required=False, default=Path("ganinv-demo"), help=None,
                overwrite_help="Replace an existing demo output.")
@common_options
def demo(model, images, methods, outdir, overwrite, device, seed, quiet):
    """Invert example images with several methods, edit the result, write demo.png + report.json."""
    from tqdm import tqdm

    set_threads()
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in method_list if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {unknown}; available: {', '.join(METHODS)}")
    if (outdir / "demo.png").exists() and not overwrite:
        raise UserError(f"{outdir}/demo.png exists; pass --overwrite to replace it")
    started = time.perf_counter()
    bundle = load_model_or_fail(model, device)
    G = bundle.G
    targets: list[tuple[str, torch.Tensor]] = []
    for path in images:
        try:
            targets.append((path.name, load_image(path, G.img_resolution, G.img_channels)))
        except ImageLoadError as e:
            raise UserError(str(e)) from None
    if not targets:
        if bundle.heldout is not None:
            label = ""
            if bundle.heldout_labels:
                rec = bundle.heldout_labels[0]
                label = str(rec.get("name") or rec.get("class_name") or "")
            targets.append((f"held-out sample {label}".strip(), bundle.heldout[:1]))
        if bundle.folder is not None:
            for photo in sorted((bundle.folder.parent / "examples").glob("*.png"))[:1]:
                targets.append((f"photo: {photo.stem}", load_image(photo, G.img_resolution, G.img_channels)))
        if not targets:
            raise UserError("this model bundles no example images; pass --image PATH")
    # Directions: the shipped ones if any, else the top SeFa components (closed form, instant).
    directions = []
    for name in ("interfacegan", "sefa_coarse", "sefa_all"):
        for key, path in sorted(bundle.directions.items()):
            if key.startswith(name) and len(directions) < 2:
                directions.append(E.load_direction(str(path))[0])
    if not directions:
        directions = [E.find_sefa_directions(bundle, layers="all", num=2)]
    edit_specs = [(d, 0) for d in directions][:2]
    if len(edit_specs) < 2 and len(directions[0]) > 1:
        edit_specs.append((directions[0], 1))

    outdir.mkdir(parents=True, exist_ok=True)
    rows, row_labels, report = [], [], {"model": bundle.name, "targets": []}
    for name, target in targets:
        row = [target[0]]
        entry = {"target": name, "methods": {}}
        last = None
        for method in method_list:
            bar = tqdm(desc=f"{name[:24]} [{method}]", disable=quiet, leave=False, total=None)

            def progress(info, bar=bar):
                if bar.total != info.num_steps:
                    bar.reset(total=info.num_steps)
                bar.n = info.step + 1
                bar.set_postfix(info.progress_fields(), refresh=True)

            settings = {k: v for k, v in DEMO_METHODS.get(method, {}).items() if k in METHODS[method].defaults}
            result = invert(bundle, target, method, seed=seed, callback=progress, metrics=("ssim",), **settings)
            bar.close()
            row.append(result.reconstruction[0])
            slug = "".join(ch if ch.isalnum() else "_" for ch in name)[:40]
            result.save(outdir / "results" / f"{slug}_{method}")
            entry["methods"][method] = {"psnr": result.metrics["psnr"][0], "ssim": result.metrics.get("ssim", [None])[0],
                                        "seconds": round(result.seconds, 2), "stop_reason": result.stop_reason,
                                        "settings": settings, "locality": result.extras.get("locality")}
            if not quiet:
                click.echo(f"{name}: {method:9s} PSNR {result.metrics['psnr'][0]:6.2f} dB in {result.seconds:5.1f}s")
            last = result
        for direction, index in edit_specs:
            for strength in (-3.0, 3.0):
                row.append(E.edit(last, direction, strength, index=index)[0])
        rows.append(row)
        row_labels.append(name)
        report["targets"].append(entry)
    header = ["target"] + method_list + [f"{d.label(i) if hasattr(d, 'label') else d.name} {s:+.0f}"
                                          for d, i in edit_specs for s in (-3, 3)]
    scale = max(1, 128 // G.img_resolution)
    sheet = _labelled_sheet(rows, header, row_labels, scale)
    with atomic_path(outdir / "demo.png") as tmp:
        sheet.save(tmp, format="PNG")
    report["edits"] = [{"direction": d.name, "index": i, "strengths": [-3, 3], "edited_result": method_list[-1]}
                       for d, i in edit_specs]
    report["seconds_total"] = round(time.perf_counter() - started, 1)
    write_json(outdir / "report.json", report)
    if not quiet:
        click.echo(f"wrote {outdir / 'demo.png'} and {outdir / 'report.json'} in {report['seconds_total']}s")


COMMANDS = [demo]
