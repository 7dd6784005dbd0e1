"""`ganinv train` (StyleGAN2 training), `ganinv train-classifier`, `ganinv export-model`."""
from __future__ import annotations

from pathlib import Path

import click
import torch

from .common import (UserError, apply_threads, common_options, config_for_run_or_fail, dataset_option,
                     learning_rate_option, one_line, output_options, quiet_option, seed_option, threads_option,
                     training_options)
from ..errors import GanInvError
from ..models.registry import resolve_device
from ..train import distributed
from ..train.augment import parse_policy
from ..train.trainer import (CHECKPOINT_FILE, TrainConfig, check_training_resolution, load_training_data,
                             train)
from ..train.classifier import train_classifier_on_dataset
from ..train.export import export_model


@click.command("train")
@dataset_option()
@training_options(outdir_help="Run folder: checkpoint.pt (rolling), samples/, stats.jsonl, config.json.",
                  resume_help="Continue from OUTDIR/checkpoint.pt when it exists (its network settings win).",
                  max_steps_help="Stop after this many steps (smoke tests).")
@click.option("--kimg", "total_kimg", default=100_000.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Stop after this many thousand training images shown.")
@click.option("--snapshot-kimg", default=10.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Write checkpoint, sample grid and stats every this many kimg.")
@click.option("--snapshot-networks", is_flag=True,
              help="Also keep G_ema and D of every snapshot in OUTDIR/snapshots/kimgNNNNNN/ (model folders that "
                   "--init and --model read).")
@click.option("--batch", "batch_size", default=32, show_default=True, type=click.IntRange(min=2))
@click.option("--z-dim", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--w-dim", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--mapping-layers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--channel-base", default=4096, show_default=True, type=click.IntRange(min=16))
@click.option("--channel-max", default=64, show_default=True, type=click.IntRange(min=4))
@click.option("--d-channel-base", default=None, type=click.IntRange(min=16), help="Default: --channel-base.")
@click.option("--d-channel-max", default=None, type=click.IntRange(min=4), help="Default: --channel-max.")
@learning_rate_option(0.0025, help="Adam learning rate of G and D.")
@click.option("--gamma", "r1_gamma", default=None, type=click.FloatRange(min=0),
              help="R1 weight; default 0.0002 * resolution^2 / batch.")
@click.option("--pl-weight", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Path-length regularization weight (0 = off; 2 in the paper).")
@click.option("--style-mixing", "style_mixing_prob", default=0.9, show_default=True, type=click.FloatRange(0, 1))
@click.option("--ema-kimg", default=None, type=click.FloatRange(min=0), help="EMA half-life; default batch*10/32.")
@click.option("--augment", default="color,translation,cutout", show_default=True,
              help="DiffAugment policy: comma list of color, translation, cutout; 'none' to disable.")
@click.option("--mirror", is_flag=True, help="Random horizontal flips of the training images.")
@click.option("--cond", "label_key", default=None, help="Condition G and D on this label field (e.g. class).")
@click.option("--mixed-precision/--no-mixed-precision", default=True, show_default=True,
              help="fp16 in the highest-resolution blocks (CUDA only; ignored on CPU).")
@click.option("--init", "init", default=None,
              help="Start G, G_ema and D from an exported snapshot (model folder, its model.safetensors, or an "
                   "embedded model name such as emoji64) with fresh optimizer state; network settings must "
                   "match its card. Ignored when OUTDIR has a checkpoint to resume.")
@click.option("--grow", is_flag=True,
              help="With --init: the snapshot may have a lower resolution (a curriculum, e.g. 32 then 64 px); "
                   "the blocks both resolutions have start from it, the new ones fresh.")
@click.option("--widen", is_flag=True,
              help="With --init: the snapshot may have fewer channels (--channel-base/--channel-max); the "
                   "old channels keep drawing the same images, the new ones start fresh (net2net widening).")
@click.option("--resolution", default=None, type=click.IntRange(min=4),
              help="Train at this resolution, the data's divided by a power of two (images box-filtered); "
                   "default: the data's.")
@common_options
def train_command(data_dir, outdir, resume, max_steps, threads, total_kimg, snapshot_kimg, snapshot_networks,
                  batch_size, z_dim, w_dim,
                  mapping_layers, channel_base, channel_max, d_channel_base, d_channel_max, learning_rate,
                  r1_gamma, pl_weight, style_mixing_prob, ema_kimg, augment, mirror, label_key,
                  mixed_precision, init, grow, widen, resolution, device, seed, quiet):
    """Train a StyleGAN2 generator on a dataset folder (resumable; Ctrl-C or SIGTERM saves and stops)."""

    apply_threads(threads)
    try:
        parse_policy(augment)
        device = distributed.init_from_environment(resolve_device(device))
    except ValueError as e:
        raise UserError(str(e)) from None
    config = TrainConfig(z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers, channel_base=channel_base,
                         channel_max=channel_max, d_channel_base=d_channel_base, d_channel_max=d_channel_max,
                         batch_size=batch_size, g_learning_rate=learning_rate, d_learning_rate=learning_rate,
                         r1_gamma=r1_gamma, pl_weight=pl_weight, style_mixing_prob=style_mixing_prob,
                         ema_kimg=ema_kimg, augment=augment, mirror=mirror, label_key=label_key,
                         mixed_precision=mixed_precision, total_kimg=total_kimg, snapshot_kimg=snapshot_kimg,
                         snapshot_networks=snapshot_networks, seed=seed, init=init, grow=grow, widen=widen,
                         resolution=resolution)
    if grow and init is None:
        raise UserError("--grow needs --init (the lower-resolution snapshot to grow from)")
    if widen and init is None:
        raise UserError("--widen needs --init (the narrower snapshot to widen)")
    config = config_for_run_or_fail(config, outdir, resume, ("total_kimg", "snapshot_kimg", "snapshot_networks"))
    checkpoint = outdir / CHECKPOINT_FILE
    try:
        data = load_training_data(data_dir, config.label_key)
        if config.resolution is not None:
            check_training_resolution(data.images.shape[1], config.resolution)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    log = (lambda text: click.echo(text, err=True)) if not quiet and distributed.is_main() else None
    if log:
        size = f" at {config.resolution} px" if config.resolution else ""
        log(f"training on {len(data.images)} images {data.images.shape[1:]}{size} from {data_dir}; "
            f"run folder {outdir}; device {device}, {torch.get_num_threads()} threads")
    try:
        trainer = train(config, data, outdir, device=device, resume=resume, progress=not quiet,
                        max_steps=max_steps, handle_signals=True, log=log)
    except GanInvError as e:  # an --init snapshot that cannot be read or does not match
        raise UserError(one_line(e)) from None
    distributed.shutdown()
    if log:
        log(f"stopped at {trainer.kimg:.1f} kimg (step {trainer.step_index}); checkpoint {checkpoint}")
    distributed.exit_worker(0)


@click.command("train-classifier")
@dataset_option()
@output_options(help="Folder for the classifier (model.safetensors + card.json).",
                overwrite_help="Replace an existing classifier in --outdir.")
@click.option("--heads", default="class", show_default=True,
              help="Comma-separated label fields, one head each (emoji: group,subgroup,skin_tone,gender).")
@click.option("--epochs", default=1.0, show_default=True, type=click.FloatRange(min=0.01))
@click.option("--batch", "batch_size", default=64, show_default=True, type=click.IntRange(min=2))
@learning_rate_option(2e-3)
@click.option("--width", "base_width", default=16, show_default=True, type=click.IntRange(min=4),
              help="Channels of the first conv block (doubling per block up to 128).")
@click.option("--mirror", is_flag=True, help="Random horizontal flips while training.")
@threads_option
@common_options
def train_classifier_command(data_dir, outdir, overwrite, heads, epochs, batch_size, learning_rate, base_width,
                             mirror, threads, device, seed, quiet):
    """Train the small multi-head label classifier (Fréchet features, InterFaceGAN labels)."""
    from tqdm import tqdm


    apply_threads(threads)
    if (outdir / "card.json").exists() and not overwrite:
        raise UserError(f"{outdir} already holds a classifier; pass --overwrite to replace it")
    head_list = [h.strip() for h in heads.split(",") if h.strip()]
    if not head_list:
        raise UserError("--heads names no label field")
    bar = tqdm(total=None, disable=quiet, unit="step")

    def on_step(step, total, loss):
        bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    try:
        card = train_classifier_on_dataset(data_dir, head_list, outdir, epochs=epochs, batch_size=batch_size,
                                           learning_rate=learning_rate, base_width=base_width, mirror=mirror,
                                           seed=seed, device=resolve_device(device), on_step=on_step)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    finally:
        bar.close()
    if not quiet:
        for head, accuracy in card["heldout_accuracy"].items():
            base = card["heldout_evaluation"][head]["majority_baseline"]
            click.echo(f"{head}: held-out accuracy {accuracy:.4f} (majority class {base:.4f})")
        click.echo(f"wrote {outdir}")


@click.command("export-model")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Training run folder (with checkpoint.pt).")
@dataset_option()
@click.option("--classifier", "classifier_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path), help="Classifier folder for that dataset.")
@output_options(help="Model folder to write, e.g. src/ganinv/assets/fashion32.",
                overwrite_help="Replace an existing model folder.")
@click.option("--name", required=True, help="Model name on the card (emoji64, fashion32).")
@click.option("--description", default="", help="One-line description for the card.")
@click.option("--default/--no-default", "is_default", default=False, show_default=True,
              help="Whether the card lets this model be the embedded default.")
@click.option("--num-real", default=300, show_default=True, type=click.IntRange(min=1),
              help="Training images stored in real_images.npz.")
@click.option("--max-heldout", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="Held-out images stored in heldout.npz.")
@click.option("--num-quality-samples", default=10_000, show_default=True, type=click.IntRange(min=2),
              help="Samples (and train images) for the Fréchet distances.")
@click.option("--weights-dtype", default="auto", show_default=True, type=click.Choice(["auto", "float16", "float32"]),
              help="auto: float16 when no pixel changes by more than one 8-bit level.")
@click.option("--hardware", default=None, help="Hardware the run trained on (default: this machine).")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="Threads the run trained with (default: from stats.jsonl); also used for the export.")
@click.option("--notes", default="", help="Notes on quality for the card.")
@seed_option
@quiet_option
def export_model_command(run_dir, data_dir, classifier_dir, outdir, overwrite, name, description, is_default,
                         num_real, max_heldout, num_quality_samples, weights_dtype, hardware, threads, notes,
                         seed, quiet):
    """Build an embedded model folder (weights, card, samples, classifier, real/held-out images)."""

    apply_threads(threads)
    if (outdir / "card.json").exists() and not overwrite:
        raise UserError(f"{outdir} already holds a model; pass --overwrite to replace it")
    try:
        card = export_model(run_dir, data_dir, classifier_dir, outdir, name=name, description=description,
                            default=is_default, num_real=num_real, max_heldout=max_heldout,
                            num_quality_samples=num_quality_samples, weights_dtype=weights_dtype,
                            hardware=hardware, threads=threads, notes=notes, seed=seed)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    if not quiet:
        q = card["quality"]
        click.echo(f"wrote {outdir}: {card['images_seen_kimg']} kimg, Fréchet (classifier features) "
                   f"{q['samples_vs_heldout']:.3f} vs floor {q['train_vs_heldout_floor']:.3f} "
                   f"(ratio {q['ratio']:.2f}); weights {card['weights_dtype']}")


COMMANDS = [train_command, train_classifier_command, export_model_command]
