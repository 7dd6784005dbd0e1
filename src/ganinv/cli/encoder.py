"""`ganinv train-encoder` (e4e/ReStyle encoder for a model) and `ganinv export-encoder` (into a model folder)."""
from __future__ import annotations

from pathlib import Path

import click
import torch

from .common import (UserError, apply_threads, common_options, config_for_run_or_fail, dataset_option,
                     learning_rate_option, load_model_or_fail, model_option, options, quiet_option, training_options)
from ..models.registry import resolve_device
from ..train import distributed
from ..train.encoder_trainer import (CHECKPOINT_FILE, PRESETS, EncoderTrainConfig, train_encoder as run_training,
trainer_for_model)
from ..train.classifier import load_classifier
from ..models.encoder import load_encoder, save_encoder

# The encoder's loss weights: (flag, default, help); each a float >= 0.
LOSS_WEIGHTS = [
    ("--mse-weight", 1.0, None),
    ("--laplacian-weight", 1.0, None),
    ("--dfeat-weight", 0.1, "Perceptual loss in the discriminator's feature space."),
    ("--lpips-weight", None, "LPIPS (VGG) weight. Default: 0.8 when genuine weights are found, else off."),
    ("--similarity-weight", 0.1,
     "1 - cosine similarity of the model's classifier features (stands in for e4e's MoCo/ArcFace)."),
    ("--delta-weight", 2e-3, "e4e delta regularization on the per-layer offsets."),
    ("--adversarial-weight", 0.05, "e4e latent discriminator loss (0 turns the latent discriminator off)."),
    ("--w-weight", 0.25, "w-space loss on generated pairs."),
    ("--image-adversarial-weight", 0.0,
     "In-Domain GAN Inversion's adversarial loss on the reconstructions under the model's (frozen) D."),
]

loss_weight_options = options(*(
    click.option(flag, default=default, show_default=True, type=click.FloatRange(min=0), help=text)
    for flag, default, text in LOSS_WEIGHTS))


@click.command("train-encoder")
@model_option
@dataset_option(required=False,
                help="Dataset folder the model was trained on (`ganinv data ...`): real images from its train split, "
                     "the periodic check on its held-out split. Required unless --batch-real 0.")
@training_options(outdir_help="Run folder: checkpoint.pt (rolling), encoder/ (latest export), stats.jsonl, "
                              "config.json.",
                  resume_help="Continue from OUTDIR/checkpoint.pt when it exists (its settings win, except the "
                              "schedule).",
                  max_steps_help="Stop this session after this many steps.")
@click.option("--steps", "total_steps", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Stop when the run reaches this many steps.")
@click.option("--max-minutes", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Stop this session after this many minutes (a checkpoint is written).")
@click.option("--snapshot-every", default=250, show_default=True, type=click.IntRange(min=1),
              help="Write checkpoint, encoder/ and stats every this many steps.")
@click.option("--batch-real", default=8, show_default=True, type=click.IntRange(min=0),
              help="Real training images per step.")
@click.option("--batch-generated", default=8, show_default=True, type=click.IntRange(min=0),
              help="Generated pairs (w, G(w)) per step.")
@click.option("--iterations", default=2, show_default=True, type=click.IntRange(min=1),
              help="ReStyle passes trained for (the encoder method's default iterations).")
@learning_rate_option(5e-4)
@loss_weight_options
@click.option("--progressive-start", default=300, show_default=True, type=click.IntRange(min=0),
              help="Steps with the base latent only before the first offset unlocks.")
@click.option("--progressive-every", default=100, show_default=True, type=click.IntRange(min=1),
              help="Steps between unlocking further offsets.")
@click.option("--classifier", "classifier_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Classifier folder for the similarity loss (default: the model's own).")
@click.option("--init-encoder", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Start from this encoder folder (e.g. to adapt it to a newer generator).")
@click.option("--lpips-dir", default=None, help="Extra folder searched for LPIPS weights.")
@click.option("--preset", default="default", show_default=True, type=click.Choice(sorted(PRESETS)),
              help="in-domain: latent discriminator at 0.1 and image adversarial loss at 0.1 (In-Domain GAN "
                   "Inversion / e4e); weight flags given explicitly still win.")
@common_options
def train_encoder(model, data_dir, outdir, resume, max_steps, threads, total_steps, max_minutes, snapshot_every,
                  batch_real, batch_generated, iterations, learning_rate, mse_weight, laplacian_weight, dfeat_weight,
                  lpips_weight, similarity_weight, delta_weight, adversarial_weight, w_weight, image_adversarial_weight,
                  progressive_start,
                  progressive_every, classifier_dir, init_encoder, lpips_dir, preset, device, seed, quiet):
    """Train an e4e/ReStyle inversion encoder for a model (resumable; Ctrl-C or SIGTERM saves and stops).

    The latest encoder is written to OUTDIR/encoder at every snapshot; put it into a model folder with
    `ganinv export-encoder OUTDIR --model-dir MODEL_FOLDER`.
    """

    apply_threads(threads)
    try:
        device = distributed.init_from_environment(resolve_device(device))
    except ValueError as e:
        raise UserError(str(e)) from None
    context = click.get_current_context()
    chosen = {name: value for name, value in PRESETS[preset].items()
              if context.get_parameter_source(name) is click.core.ParameterSource.DEFAULT}
    adversarial_weight = chosen.get("adversarial_weight", adversarial_weight)
    image_adversarial_weight = chosen.get("image_adversarial_weight", image_adversarial_weight)
    config = EncoderTrainConfig(
        seed=seed, batch_real=batch_real, batch_generated=batch_generated, iterations=iterations,
        learning_rate=learning_rate, mse_weight=mse_weight, laplacian_weight=laplacian_weight,
        dfeat_weight=dfeat_weight, lpips_weight=lpips_weight, similarity_weight=similarity_weight,
        delta_weight=delta_weight, adversarial_weight=adversarial_weight, w_weight=w_weight,
        image_adversarial_weight=image_adversarial_weight,
        progressive_start=progressive_start, progressive_every=progressive_every, total_steps=total_steps,
        snapshot_every=snapshot_every)
    checkpoint = outdir / CHECKPOINT_FILE
    config = config_for_run_or_fail(config, outdir, resume, ("total_steps", "snapshot_every"))
    if data_dir is None and config.batch_real > 0:
        raise UserError("--data is required (or pass --batch-real 0 to train on generated pairs only)")
    bundle = load_model_or_fail(model, str(device))
    classifier = None
    if classifier_dir is not None:
        classifier = load_classifier(classifier_dir)
    try:
        trainer = trainer_for_model(config, bundle, data_dir, classifier=classifier, device=device,
                                    init_encoder=init_encoder, lpips_dir=lpips_dir)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    log = (lambda text: click.echo(text, err=True)) if not quiet and distributed.is_main() else None
    if log:
        log(f"encoder for {bundle.name} ({bundle.G.img_resolution}px, num_ws={bundle.G.num_ws}); run folder {outdir}; "
            f"device {device}, {torch.get_num_threads()} threads; LPIPS {trainer.lpips_note}")
    card_extra = {"name": f"{bundle.name}-encoder",
                  "generator": {"name": bundle.name, "sha256": bundle.sha256,
                                "folder": str(bundle.folder) if bundle.folder else None}}
    trainer = run_training(trainer, outdir, resume=resume, progress=not quiet, max_steps=max_steps,
                           max_seconds=None if max_minutes is None else max_minutes * 60, handle_signals=True,
                           card_extra=card_extra, log=log)
    distributed.shutdown()
    if log:
        log(f"stopped at step {trainer.step_index}; checkpoint {checkpoint}; encoder {outdir / 'encoder'}")
    distributed.exit_worker(0)


@click.command("export-encoder")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Native model folder to receive the encoder (written to MODEL_DIR/encoder).")
@click.option("--overwrite", is_flag=True, help="Replace an existing MODEL_DIR/encoder.")
@quiet_option
def export_encoder(source, model_dir, overwrite, quiet):
    """Copy a trained encoder (a train-encoder run folder or an encoder folder) into a model folder,
    after checking that it was trained for that model's generator."""

    encoder_dir = source / "encoder" if (source / "encoder" / "card.json").is_file() else source
    try:
        encoder = load_encoder(encoder_dir)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    bundle = load_model_or_fail(model_dir, "cpu")
    try:
        encoder.check_generator(bundle.G)
    except ValueError as e:
        raise UserError(f"{encoder_dir} does not fit {model_dir}: {e}") from None
    destination = model_dir / "encoder"
    if destination.exists() and not overwrite:
        raise UserError(f"{destination} exists; pass --overwrite to replace it")
    card = {k: v for k, v in encoder.card.items()}
    card["generator"] = {**(card.get("generator") or {}), "name": bundle.name, "sha256": bundle.sha256}
    save_encoder(destination, encoder, card)
    if not quiet:
        click.echo(f"wrote {destination}")


COMMANDS = [train_encoder, export_encoder]
