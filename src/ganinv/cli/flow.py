"""`ganinv train-flow` and the StyleFlow branch of `ganinv edit --attribute`: thin shells over
ganinv.editing.styleflow (Abdal et al., ACM TOG 2021)."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch
from tqdm import tqdm

from .common import (UserError, device_option, load_model_or_fail, model_option, prepare_outdir, quiet_option,
                     seed_option, set_threads)
from ..editing.interfacegan import classifier_outputs
from ..editing.styleflow import (FLOW_FOLDER, StyleFlowError, attribute_names, attribute_vector, load_styleflow,
                                 save_styleflow, styleflow_edit, train_styleflow)
from ..errors import GanInvError
from ..utils import atomic_path, write_json


@click.command(name="train-flow")
@model_option
@click.option("--outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help=f"Folder for the flow (model.safetensors + card.json); `MODEL/{FLOW_FOLDER}` is where "
                   "`ganinv edit --attribute` looks by default.")
@click.option("--num-steps", "--steps", "steps", default=600, show_default=True, type=click.IntRange(1),
              help="Training steps (Adam, cosine schedule).")
@click.option("--num-samples", default=5000, show_default=True, type=click.IntRange(16),
              help="Seeded prior samples labelled by the model's classifier.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@click.option("--learning-rate", "--lr", "learning_rate", default=2e-3, show_default=True,
              type=click.FloatRange(min=0, min_open=True))
@click.option("--hidden", default=256, show_default=True, type=click.IntRange(4), help="Hidden units per layer.")
@click.option("--layers", "num_layers", default=3, show_default=True, type=click.IntRange(2, 8),
              help="Concat-squash layers of the dynamics.")
@click.option("--ode-steps", default=8, show_default=True, type=click.IntRange(1, 100),
              help="RK4 steps from w to z.")
@click.option("--head", "heads", multiple=True,
              help="Classifier head to condition on (repeatable). Default: every head with at most 16 classes.")
@click.option("--overwrite", is_flag=True, help="Replace an existing flow in --outdir.")
@device_option
@seed_option
@quiet_option
def train_flow(model, outdir, steps, num_samples, batch_size, learning_rate, hidden, num_layers, ode_steps, heads,
               overwrite, device, seed, quiet):
    """Train a StyleFlow (conditional continuous normalizing flow W <-> Gaussian, conditioned on the
    model's classifier heads) for attribute edits."""
    set_threads()
    bundle = load_model_or_fail(model, device)
    prepare_outdir(outdir, overwrite, ["model.safetensors", "card.json"])
    bar = None
    if not quiet:
        bar = tqdm(total=steps, desc="train-flow", leave=False, dynamic_ncols=True)

    def progress(step: int, loss: float) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(nll_per_dim=f"{loss:.3f}")

    try:
        flow, info = train_styleflow(bundle, heads=list(heads) or None, num_samples=num_samples, steps=steps,
                                     batch_size=batch_size, learning_rate=learning_rate, hidden=hidden,
                                     num_layers=num_layers, num_steps=ode_steps, seed=seed, progress=progress)
    except (GanInvError, ValueError) as e:
        raise UserError(str(e)) from None
    finally:
        if bar is not None:
            bar.close()
    save_styleflow(outdir, flow, {
        "model": bundle.name, "model_sha256": bundle.sha256,
        "paper": "Abdal et al., StyleFlow, ACM TOG 2021",
        "training": {"steps": steps, "num_samples": num_samples, "batch_size": batch_size,
                     "learning_rate": learning_rate, "seed": seed, "seconds": round(info.seconds, 1),
                     "first_loss": info.losses[0], "last_loss": info.losses[-1],
                     "heldout_log_likelihood_per_dim_before": info.heldout_before,
                     "heldout_log_likelihood_per_dim_after": info.heldout_after}})
    if not quiet:
        click.echo(f"wrote {outdir} (heads {', '.join(flow.heads)}; held-out log-likelihood per dim "
                   f"{info.heldout_before:.3f} -> {info.heldout_after:.3f}, {info.seconds:.0f} s)")


def find_flow(flow_path: Path | None, bundle) -> Path:
    """--flow, else the model folder's styleflow/."""
    if flow_path is not None:
        return flow_path
    folder = getattr(bundle, "folder", None)
    if folder is not None and (Path(folder) / FLOW_FOLDER / "card.json").is_file():
        return Path(folder) / FLOW_FOLDER
    raise UserError(f"model {bundle.name!r} has no {FLOW_FOLDER}/ flow; train one with `ganinv train-flow` "
                    "and pass it with --flow DIR")


def attribute_edit(subject, bundle, changes: tuple[str, ...], flow_path: Path | None, source: str, outdir: Path,
                   overwrite: bool, upscale: int, gif_ms: int, quiet: bool, write_frames) -> None:
    """`ganinv edit SOURCE --attribute HEAD=VALUE ...`: frames = the subject, then each edit in turn."""
    path = find_flow(flow_path, bundle)
    try:
        flow = load_styleflow(path, device=subject.device)
    except GanInvError as e:
        raise UserError(str(e)) from None
    if bundle.classifier is None:
        raise UserError(f"model {bundle.name!r} has no classifier to read the current attributes from")
    prepare_outdir(outdir, overwrite, ["strip.png", "edit.gif", "edit.json", "frames", "latent.npz"])
    ws = subject.ws.to(subject.device)
    if ws.shape[0] != 1:
        raise UserError(f"{source}: edit one subject at a time (this one holds {ws.shape[0]})")
    try:
        images = subject.render()
        before = attribute_vector(classifier_outputs(bundle.classifier, images), flow.heads)
        edited, attributes = styleflow_edit(flow, ws, list(changes), attributes=before)
    except StyleFlowError as e:
        raise UserError(str(e)) from None
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    frames = torch.cat([images] + [subject.render(ws=w) for w in edited])
    frame_names = write_frames(frames, outdir, "edit.gif", gif_ms, upscale)
    with atomic_path(outdir / "latent.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, w=edited[-1].detach().cpu().numpy().astype(np.float32))
    names = attribute_names(torch.cat([before] + attributes), flow.heads)
    write_json(outdir / "edit.json", {"source": source, "model": bundle.name, "method": "styleflow",
                                      "flow": str(path), "attributes": list(changes),
                                      "attributes_before": names[0], "attributes_after_each": names[1:],
                                      "frames": frame_names})
    if not quiet:
        click.echo(f"wrote strip.png, edit.gif, latent.npz and {len(frame_names)} frames to {outdir} "
                   f"(StyleFlow: {', '.join(changes)}; before: {names[0]})")


COMMANDS = [train_flow]
