"""`ganinv directions`, `ganinv edit`, `ganinv mix`, `ganinv interpolate`: thin shells over ganinv.editing."""
from __future__ import annotations

import json
import re
from pathlib import Path

import click
import torch

from .common import (UserError, device_option, direction_output_options, load_model_or_fail, model_option,
                     outdir_option, prepare_outdir, quiet_option, seed_option, set_threads)
from ..editing import (
    DirectionError, FINDERS, find_directions, interpolate as run_interpolate, interpolation_weights,
    latent_from_seed, mix_latents, parse_strengths, preview_images, safe_file_stem, save_gif,
    save_strip)
from ..inversion.result import InversionResult, resolve_result_model
from ..data.io import save_grid, save_image
from ..editing.render import edit_sweep_many
from ..editing.published import load_any_direction
from .interop import import_direction_command
from .flow import attribute_edit
from ..errors import GanInvError
from ..utils import parse_layers, write_json
from .align import paste_inputs, write_pasted

_SEED = re.compile(r"^(?:seed)?(\d+)$")


def _finders_help() -> str:
    return "\n\n".join(f"{name}: {spec.summary} ({spec.paper})" for name, spec in FINDERS.items())


class _FindersCommand(click.Command):
    def format_epilog(self, ctx, formatter):
        with formatter.section("Finders"):
            formatter.write_text(_finders_help())
        with formatter.section("Published directions"):
            formatter.write_text("ganinv directions import FILE --model M --outdir DIR: read an InterFaceGAN, "
                                 "e4e or GANSpace file (see ganinv directions import --help)")

    def make_context(self, info_name, args, parent=None, **extra):
        # `directions import FILE ...` is its own command; every other first word names a finder.
        if args and args[0] == "import":
            return import_direction_command.make_context(f"{info_name} import", args[1:], parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


def _strengths(text: str) -> list[float]:
    try:
        return parse_strengths(text)
    except ValueError as e:
        raise UserError(str(e)) from None


def _load_model_for_sources(model, sources: list[str], device: str):
    """--model if given, else the model of the first saved result among the sources (an embedded model it
    names, or a model folder inside it: never a path a result names elsewhere), else the default
    embedded model."""
    if model is None:
        for text in sources:
            if not _SEED.match(text):
                try:
                    model = resolve_result_model(_source_path(text))
                except ValueError as e:
                    raise UserError(str(e)) from None
                break
    return load_model_or_fail(model, device)


def _source_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise UserError(f"{text}: neither a seed nor an existing result folder")
    return path


def _load_source(text: str, bundle, truncation_psi: float, class_index: int | None):
    """A seed ('12' or 'seed12') or a saved result folder (or zip) -> the subject (a Latent; an
    InversionResult for a saved result)."""
    match = _SEED.match(text)
    if match:
        try:
            return latent_from_seed(bundle, int(match.group(1)), truncation_psi=truncation_psi,
                                    class_index=class_index)
        except ValueError as e:
            raise UserError(str(e)) from None
    try:
        return InversionResult.load(_source_path(text), model=bundle)
    except ValueError as e:
        raise UserError(str(e)) from None


def _labels_from_file(path: Path, bundle) -> tuple[torch.Tensor, torch.Tensor]:
    """User labels: JSON {seed: 1 | 0 | -1} -> (ws of those seeds, labels)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read labels ({e})") from None
    except RecursionError:
        raise UserError(f"{path}: cannot read labels (nested too deeply)") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: labels must be a JSON object {{seed: 1 or 0}}")
    ws, labels = [], []
    for key, value in data.items():
        match = _SEED.match(str(key))
        if not match or value not in (0, 1, -1, True, False):
            raise UserError(f"{path}: bad entry {key!r}: {value!r} (expected seed: 1, 0 or -1)")
        ws.append(latent_from_seed(bundle, int(match.group(1))).ws)
        labels.append(int(value))
    return torch.cat(ws), torch.tensor(labels)


def _resolve_direction(spec: str, bundle):
    try:
        return load_any_direction(spec, model=bundle)
    except DirectionError as e:
        raise UserError(str(e)) from None


@click.command(cls=_FindersCommand)
@click.argument("method")
@model_option
@click.option("--layers", default="all", show_default=True,
              help="ws indices the directions apply to (and SeFa factorizes): all, 0-1, 2-5, 6-, ...")
@click.option("--num", default=10, show_default=True, type=click.IntRange(1),
              help="Number of components (sefa, ganspace, stylespace).")
@click.option("--attribute", default=None,
              help="Classifier attribute (interfacegan, stylespace): HEAD, HEAD:CLASS (vs rest) or HEAD:A,B/C,D.")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="User labels instead of the classifier: JSON {seed: 1 or 0}.")
@click.option("--num-samples", type=click.IntRange(10), default=None,
              help="Prior samples to label (interfacegan, stylespace) or for the PCA (ganspace).")
@click.option("--steps", type=click.IntRange(1), default=None,
              help="Training steps of a finder that trains (voynov, steerability); its default if omitted.")
@click.option("--normalize/--no-normalize", default=True, show_default=True,
              help="SeFa: unit-length weight rows (official); --no-normalize is rosinality's variant.")
@click.option("--classifier", "linear_classifier", type=click.Choice(["logistic", "svm"]), default="logistic",
              show_default=True, help="InterFaceGAN linear classifier.")
@click.option("--ranking", type=click.Choice(["mean_difference", "gradient"]), default="mean_difference",
              show_default=True, help="StyleSpace channel ranking.")
@click.option("--condition", "conditions", multiple=True, metavar="NAME_OR_FILE[:INDEX]",
              help="InterFaceGAN: make the direction orthogonal to these directions (repeatable).")
@click.option("--name", default=None, help="Direction name (file stem); default from method and layers.")
@direction_output_options
@device_option
@seed_option
@quiet_option
def directions(method, model, layers, num, attribute, labels_file, num_samples, steps, normalize, linear_classifier,
               ranking, conditions, name, strengths, preview_seed, upscale, outdir, overwrite, device, seed, quiet):
    """Find editing directions with METHOD and save them (+ a preview: rows = components, cols = strengths)."""
    set_threads()
    if method not in FINDERS:
        raise UserError(f"unknown direction finder {method!r}; choose from {', '.join(FINDERS)}")
    spec = FINDERS[method]
    strength_list = _strengths(strengths)
    bundle = load_model_or_fail(model, device)
    settings: dict = {"layers": layers, "seed": seed}
    if "num" in spec.defaults:
        settings["num"] = num
    if "normalize" in spec.defaults:
        settings["normalize"] = normalize
    if steps is not None:
        if "steps" not in spec.defaults:
            raise UserError(f"--steps does not apply to {method} (it trains nothing)")
        settings["steps"] = steps
    if num_samples is not None:
        if not spec.samples_prior:
            raise UserError(f"--num-samples does not apply to {method}")
        settings["num_samples"] = num_samples
    if spec.needs_labels:
        if labels_file is not None:
            settings["ws"], settings["labels"] = _labels_from_file(labels_file, bundle)
        elif attribute is None:
            raise UserError(f"{method} needs --attribute (a head of the model's classifier) or --labels FILE")
        elif bundle.classifier is None:
            raise UserError(f"model {bundle.name!r} has no classifier; give --labels FILE (JSON {{seed: 1 or 0}})")
        settings["attribute"] = attribute
    elif attribute is not None or labels_file is not None:
        raise UserError(f"--attribute/--labels do not apply to {method}")
    if spec.takes_conditions:
        settings["conditions"] = [(d, i) if i is not None else d
                                  for d, i in (_resolve_direction(c, bundle) for c in conditions)]
    elif conditions:
        raise UserError(f"--condition does not apply to {method}")
    if "classifier" in spec.defaults:
        settings["classifier"] = linear_classifier
    if "ranking" in spec.defaults:
        settings["ranking"] = ranking
    if name is not None:
        settings["name"] = name
    try:
        direction = find_directions(method, bundle, **settings)
    except (ValueError, DirectionError) as e:
        raise UserError(str(e)) from None
    stem = safe_file_stem(direction.name)
    prepare_outdir(outdir, overwrite, [f"{stem}.json", f"{stem}.safetensors", f"{stem}_preview.png"])
    path = direction.save(outdir)
    preview = preview_images(bundle, direction, strength_list, seed=preview_seed)
    save_grid(preview, outdir / f"{stem}_preview.png", ncols=len(strength_list), upscale=upscale)
    if not quiet:
        click.echo(f"wrote {path} ({len(direction)} component(s), space {direction.space}, "
                   f"layers {direction.layers}) and {stem}_preview.png")
        for i in range(len(direction)):
            score = direction.scores[i] if direction.scores else None
            score_text = f" {direction.score_name} {score:.4g}" if score is not None else ""
            click.echo(f"  {stem}:{i}  {direction.label(i)}{score_text}  (1 unit = {float(direction.std[i]):.4g})")


def _subject_options(gif_ms: int | None = None):
    """The options of the commands that render subjects (seeds or saved results): --model, truncation
    and class of seed sources, --gif-ms (when the command writes a GIF; its default), --upscale,
    --outdir/--overwrite, --device, --seed, --quiet."""
    options = [
        model_option,
        click.option("--truncation-psi", "--trunc", "truncation_psi", default=1.0, show_default=True,
                     type=click.FloatRange(-2, 2), help="Truncation for seed sources."),
        click.option("--class", "class_index", default=None, type=click.IntRange(0),
                     help="Class label for seed sources (conditional models)."),
    ]
    if gif_ms is not None:
        options.append(click.option("--gif-ms", default=gif_ms, show_default=True, type=click.IntRange(10, 10_000),
                                    help="GIF frame duration (ms)."))
    options += [click.option("--upscale", default=1, show_default=True, type=click.IntRange(1, 16),
                             help="Nearest upscale of outputs."),
                outdir_option(), device_option, seed_option, quiet_option]

    def decorate(f):
        for option in reversed(options):  # listed in --help in this order
            f = option(f)
        return f
    return decorate


def _load_subjects(sources: list[str], model, device: str, truncation_psi: float, class_index: int | None):
    """(model bundle, one subject per source) for seeds and saved results."""
    set_threads()
    bundle = _load_model_for_sources(model, sources, device)
    return bundle, [_load_source(text, bundle, truncation_psi, class_index) for text in sources]


def _write_frames(frames: torch.Tensor, outdir: Path, gif_name: str, gif_ms: int, upscale: int) -> list[str]:
    """strip.png, the GIF and frames/frame_NNN.png; returns the frame paths relative to outdir."""
    save_strip(frames, outdir / "strip.png", upscale=upscale)
    save_gif(frames, outdir / gif_name, duration_ms=gif_ms, upscale=upscale)
    (outdir / "frames").mkdir(exist_ok=True)
    names = [f"frames/frame_{i:03d}.png" for i in range(len(frames))]
    for frame, name in zip(frames, names):
        save_image(frame, outdir / name, upscale=upscale)
    for stale in (outdir / "frames").glob("frame_*.png"):  # frames of an earlier, longer run (--overwrite)
        if f"frames/{stale.name}" not in names:
            stale.unlink()
    return names


def _edit_pairs(direction_specs: tuple[str, ...], strength_texts: tuple[str, ...]) -> list[tuple[str, list[float]]]:
    """Pair each --direction with its --strength (one direction alone defaults to the sweep -3:3:7)."""
    if not strength_texts and len(direction_specs) == 1:
        strength_texts = ("-3:3:7",)
    if len(strength_texts) != len(direction_specs):
        raise UserError(f"give one --strength per --direction (got {len(direction_specs)} --direction and "
                        f"{len(strength_texts)} --strength)")
    return [(spec, _strengths(text)) for spec, text in zip(direction_specs, strength_texts)]


def _text_edit(subject, bundle, text, neutral, clip_path, clip_arch, clip_vocab, method, num_steps, beta,
               strengths, gif_ms, upscale, outdir, overwrite, source, quiet):
    """`ganinv edit SOURCE --text ...`: StyleCLIP latent optimization or a global direction in S."""
    from ..editing.clip import load_clip_model
    from ..editing.text import edit_with_text, find_global_direction
    if clip_path is None:
        raise UserError("--text needs CLIP weights: give --clip PATH (open_clip or OpenAI state dict; "
                        "nothing is downloaded)")
    try:
        clip = load_clip_model(clip_path, arch=clip_arch, vocab=clip_vocab, device=subject.device)
    except GanInvError as e:
        raise UserError(str(e)) from None
    if method == "optimize":
        if strengths:
            raise UserError("--strength applies to --text-method global, not optimize")
        prepare_outdir(outdir, overwrite, ["original.png", "edited.png", "strip.png", "latent.npz", "edit.json"])
        result = edit_with_text(subject, text, clip, num_steps=num_steps)
        original = subject.render()
        save_image(original[0], outdir / "original.png", upscale=upscale)
        save_image(result.images[0], outdir / "edited.png", upscale=upscale)
        save_strip(torch.cat([original[:1], result.images[:1]]), outdir / "strip.png", upscale=upscale)
        import numpy as np
        np.savez(outdir / "latent.npz", w=result.latent.ws[:1].detach().cpu().numpy())
        write_json(outdir / "edit.json", {"source": source, "model": bundle.name, **result.settings,
                                          "stop_reason": result.stop_reason, "history": result.history})
        if not quiet:
            click.echo(f"wrote original.png, edited.png, strip.png and latent.npz to {outdir} "
                       f"({num_steps} steps toward {text!r})")
        return
    values = _strengths(strengths[0] if strengths else "-3:3:7")
    if len(strengths) > 1:
        raise UserError("give one --strength with --text")
    try:
        direction = find_global_direction(bundle, clip, text, neutral, beta=beta)
    except ValueError as e:
        raise UserError(str(e)) from None
    stem = safe_file_stem(direction.name)
    prepare_outdir(outdir, overwrite, ["strip.png", "edit.gif", "edit.json", "frames", f"{stem}.json",
                                       f"{stem}.safetensors"])
    path = direction.save(outdir)
    frames = edit_sweep_many(subject, [(direction, 0, values)])
    frame_names = _write_frames(frames, outdir, "edit.gif", gif_ms, upscale)
    write_json(outdir / "edit.json", {"source": source, "model": bundle.name, "direction": direction.name,
                                      "direction_file_spec": str(path), "method": direction.method,
                                      "space": "s", "strengths": values, "settings": direction.settings,
                                      "frames": frame_names})
    if not quiet:
        click.echo(f"wrote {path.name} ({direction.settings['num_channels']} style channels) and the edit "
                   f"strip, GIF and frames to {outdir}")


@click.command(name="edit")
@click.argument("source")
@click.option("--direction", "direction_specs", multiple=True, metavar="NAME_OR_FILE[:INDEX]",
              help="A direction shipped with the model (by name) or a direction file; :INDEX picks a component. "
                   "Repeat it (each with its --strength) to combine edits.")
@click.option("--strength", "--strengths", "strengths", multiple=True, metavar="STRENGTHS",
              help="Strengths in prior std units for the --direction at the same position: START:STOP:COUNT, "
                   "a list, or one number. Default for a single --direction: -3:3:7. Swept strengths of combined "
                   "edits move together (same count); a single number holds in every frame.")
@click.option("--paste-back", is_flag=True,
              help="Also blend each edited face into the full photo (SOURCE from `invert --align`): pasted_NNN.png.")
@click.option("--photo", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --paste-back: the original photo (default: the path in SOURCE/alignment.json).")
@click.option("--attribute", "attribute_changes", multiple=True, metavar="HEAD=VALUE",
              help="StyleFlow edit instead of --direction: set a classifier attribute (e.g. skin_tone=4), the "
                   "others held; repeat for sequential edits.")
@click.option("--flow", "flow_path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="StyleFlow folder (`ganinv train-flow`); default: the model folder's styleflow/.")
@click.option("--text", default=None, help="Text-driven edit (StyleCLIP) toward this prompt, instead of --direction.")
@click.option("--neutral", default=None, help="--text global: the neutral text the prompt is measured from.")
@click.option("--clip", "clip_path", default=None, metavar="PATH",
              help="CLIP weights for --text: open_clip (.pt/.bin/.safetensors) or an OpenAI state dict.")
@click.option("--clip-arch", default=None, metavar="NAME",
              help="open_clip model name of --clip (e.g. ViT-B-32); omit for OpenAI weights.")
@click.option("--clip-vocab", default=None, metavar="PATH",
              help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: beside --clip, or in an installed open_clip).")
@click.option("--text-method", "--method", "text_method", type=click.Choice(["optimize", "global"]),
              default="optimize", show_default=True,
              help="--text: optimize the latent (result's own generator) or find a global direction in S.")
@click.option("--num-steps", default=100, show_default=True, type=click.IntRange(1),
              help="--text optimize: Adam steps.")
@click.option("--beta", default=0.1, show_default=True, type=click.FloatRange(0),
              help="--text global: relevance threshold for a style channel to join the direction.")
@_subject_options(gif_ms=150)
def edit_command(source, direction_specs, strengths, paste_back, photo, attribute_changes, flow_path, text, neutral,
                 clip_path, clip_arch, clip_vocab, text_method, num_steps, beta, model, truncation_psi, class_index,
                 gif_ms, upscale, outdir, overwrite, device, seed, quiet):
    """Edit SOURCE (a seed or a saved inversion result folder) along one or more directions combined, by
    StyleFlow attribute changes (--attribute), or toward a --text prompt with user-supplied CLIP weights:
    strip PNG, GIF, frames."""
    if sum((bool(direction_specs), bool(attribute_changes), text is not None)) != 1:
        raise UserError("give one kind of edit: --direction NAME_OR_FILE (with --strength), --attribute HEAD=VALUE "
                        "(StyleFlow) or --text PROMPT (with --clip PATH)")
    if attribute_changes and strengths:
        raise UserError("--strength goes with --direction; --attribute HEAD=VALUE sets a class and takes none")
    if paste_back and not direction_specs:
        raise UserError("--paste-back goes with --direction edits")
    if photo is not None and not paste_back:
        raise UserError("--photo goes with --paste-back")
    if text is not None:
        torch.manual_seed(seed)
        bundle, (subject,) = _load_subjects([source], model, device, truncation_psi, class_index)
        return _text_edit(subject, bundle, text, neutral, clip_path, clip_arch, clip_vocab, text_method, num_steps,
                          beta, strengths, gif_ms, upscale, outdir, overwrite, source, quiet)
    pairs = [] if attribute_changes else _edit_pairs(direction_specs, strengths)
    pasting = paste_inputs(source, photo) if paste_back else None
    torch.manual_seed(seed)
    bundle, (subject,) = _load_subjects([source], model, device, truncation_psi, class_index)
    if attribute_changes:
        return attribute_edit(subject, bundle, attribute_changes, flow_path, source, outdir, overwrite, upscale,
                              gif_ms, quiet, _write_frames)
    edits = []
    for spec, values in pairs:
        direction, index = _resolve_direction(spec, bundle)
        edits.append((spec, direction, 0 if index is None else index, values))
    prepare_outdir(outdir, overwrite, ["strip.png", "edit.gif", "edit.json", "frames"])
    try:
        frames = edit_sweep_many(subject, [(direction, index, values) for _, direction, index, values in edits])
    except (ValueError, DirectionError) as e:
        raise UserError(str(e)) from None
    frame_names = _write_frames(frames, outdir, "edit.gif", gif_ms, upscale)
    described = [{"direction": direction.name, "direction_file_spec": spec, "component": index,
                  "label": direction.label(index), "method": direction.method, "space": direction.space,
                  "layers": direction.layers, "units": direction.units, "strengths": values}
                 for spec, direction, index, values in edits]
    # A single edit keeps its fields at the top level too, as before combined edits existed.
    write_json(outdir / "edit.json", {"source": source, "model": bundle.name,
                                      **(described[0] if len(described) == 1 else {}),
                                      "edits": described, "frames": frame_names})
    if not quiet:
        summary = "; ".join(f"{d['label']}, strengths {d['strengths'][0]:g}..{d['strengths'][-1]:g}"
                            if len(d["strengths"]) > 1 else f"{d['label']}, strength {d['strengths'][0]:g}"
                            for d in described)
        click.echo(f"wrote strip.png, edit.gif and {len(frame_names)} frames to {outdir} ({summary})")
    if paste_back:
        write_pasted(pasting, frames, outdir, overwrite, quiet)


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--layers", default="0-3", show_default=True,
              help="ws indices taken from B (coarse 0-3 ~ pose/shape, high indices ~ colour/texture).")
@_subject_options()
def mix(a, b, layers, model, truncation_psi, class_index, upscale, outdir, overwrite, device, seed, quiet):
    """Style mixing: A with B's ws on --layers (A and B: seeds or saved result folders)."""
    bundle, (subject_a, subject_b) = _load_subjects([a, b], model, device, truncation_psi, class_index)
    try:
        indices = parse_layers(layers, bundle.G.num_ws)
        mixed = mix_latents(subject_a, subject_b, indices)
    except ValueError as e:
        raise UserError(str(e)) from None
    prepare_outdir(outdir, overwrite, ["a.png", "b.png", "mix.png", "grid.png", "mix.json"])
    images = [subject_a.render(), subject_b.render(), mixed.render()]
    for image, name in zip(images, ("a.png", "b.png", "mix.png")):
        save_image(image[0], outdir / name, upscale=upscale)
    save_grid(torch.cat(images), outdir / "grid.png", ncols=3, upscale=upscale)
    write_json(outdir / "mix.json", {"a": a, "b": b, "layers": indices, "model": bundle.name})
    if not quiet:
        click.echo(f"wrote a.png, b.png, mix.png and grid.png (A | B | mix, B's ws {indices}) to {outdir}")


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--frames", "num_frames", default=16, show_default=True, type=click.IntRange(2, 1000),
              help="Number of frames, both ends included.")
@click.option("--space", type=click.Choice(["w", "z"]), default="w", show_default=True,
              help="w: lerp in W/W+; z: slerp in Z (both ends must be seeds).")
@_subject_options(gif_ms=100)
def interpolate(a, b, num_frames, space, model, truncation_psi, class_index, gif_ms, upscale, outdir, overwrite,
                device, seed, quiet):
    """Morph from A to B (seeds or saved result folders): frames, strip PNG and GIF."""
    bundle, (subject_a, subject_b) = _load_subjects([a, b], model, device, truncation_psi, class_index)
    prepare_outdir(outdir, overwrite, ["strip.png", "interpolate.gif", "interpolate.json", "frames"])
    try:
        frames = run_interpolate(subject_a, subject_b, num_frames=num_frames, space=space)
    except ValueError as e:
        raise UserError(str(e)) from None
    _write_frames(frames, outdir, "interpolate.gif", gif_ms, upscale)
    write_json(outdir / "interpolate.json", {"a": a, "b": b, "space": space, "model": bundle.name,
                                             "weights": interpolation_weights(num_frames)})
    if not quiet:
        click.echo(f"wrote {num_frames} frames, strip.png and interpolate.gif to {outdir} ({space} space)")


COMMANDS = [directions, edit_command, mix, interpolate]
