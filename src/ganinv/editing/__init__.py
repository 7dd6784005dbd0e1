"""Editing: direction finders, Directions, edits of sampled and inverted latents, latent operations.

Finders (explicit registry `FINDERS`, one module each):
    sefa          Shen & Zhou, CVPR 2021: eigenvectors of the style-modulation weights (unsupervised)
    ganspace      Härkönen et al., NeurIPS 2020: principal components of W (unsupervised)
    interfacegan  Shen et al., CVPR 2020: normal of a linear attribute boundary in W (labels needed)
    stylespace    Wu et al., CVPR 2021: single style channels that control an attribute (labels needed)
    voynov        Voynov & Babenko, ICML 2020: directions a reconstructor can tell apart (unsupervised)
    steerability  Jahanian et al., ICLR 2020: linear walks for zoom, shift, brightness, colour (self-supervised)

Text-driven edits (Patashnik et al., StyleCLIP, ICCV 2021) with user-supplied CLIP weights (`text`,
`clip`): `edit_with_text` (latent optimization) and `find_global_direction` (an 's' Direction).

Typical use::

    from ganinv import editing as E
    direction = E.find_directions("sefa", model, layers="0-1", num=5)
    direction.save("directions/")
    image = E.edit(result, "directions/sefa_0-1.json:2", strength=2.0)   # or ganinv.edit(...)
    frames = E.edit_sweep(result, direction, "-3:3:7", index=0)
    measured = E.measure_edit(result, direction, model.classifier, "class:Sneaker", "-2,2", model=model)

`ganinv.edit(...)` is this package's `edit` function.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .direction import (Direction, DirectionError, load_direction, prior_std, safe_file_stem,  # noqa: F401
                        sample_prior_ws, split_spec)
from .editability import EditMeasurement, editability_ratio, measure_edit  # noqa: F401
from .ganspace import find_ganspace_directions, pca_of_w  # noqa: F401
from .interfacegan import (AttributeSpec, Boundary, attribute_labeller, attribute_score,  # noqa: F401
                           classifier_heads, classifier_outputs, classify_prior_samples, condition_direction,
                           find_interfacegan_direction, fit_boundary, gram_schmidt, label_prior_samples,
                           labels_from_logits, parse_attribute, project_out)
from .ops import (Latent, analogy, analogy_latent, as_latent, interpolate, interpolation_weights,  # noqa: F401
                  latent_from_result, latent_from_seed, lerp, mix_latents, slerp, style_mix)
from .render import (edit, edit_many, edit_sweep, parse_strengths, preview_images,  # noqa: F401
                     resolve_direction, save_gif, save_strip)
from .sefa import find_sefa_directions, sefa_eigen, sefa_weight_matrix  # noqa: F401
from .steerability import find_steerability_directions, measure_walk  # noqa: F401
from .stylespace import find_stylespace_directions, style_layout  # noqa: F401
from .voynov import find_voynov_directions  # noqa: F401
from .clip import CLIPError, ClipModel, load_clip_model  # noqa: F401
from .text import TextEdit, edit_with_text, find_global_direction, text_direction  # noqa: F401
from ..models.registry import load_model


@dataclass(frozen=True)
class FinderSpec:
    """A direction finder: `find(model, **settings) -> Direction`, its defaults, a summary and what it
    needs, so callers ask the entry rather than test the name:

    - `needs_labels`: it fits an attribute (the model's classifier, or user labels: `ws` + `labels`).
    - `samples_prior`: it draws prior samples (`num_samples`); False for closed-form finders that read
      the weights only.
    - `takes_conditions`: it can be made orthogonal to other directions (`conditions`).
    - a finder that trains something has a `steps` setting (voynov, steerability).
    The other settings it takes are the keys of `defaults` (e.g. `num`, `normalize`, `ranking`).
    """

    name: str
    find: Callable[..., Direction]
    defaults: dict
    summary: str
    paper: str
    needs_labels: bool = False
    samples_prior: bool = True
    takes_conditions: bool = False


FINDERS: dict[str, FinderSpec] = {
    "sefa": FinderSpec(
        "sefa", find_sefa_directions,
        dict(layers="all", num=10, normalize=True, num_std_samples=10_000, seed=0),
        "closed-form eigenvectors of the style-modulation weights of a layer range",
        "Shen & Zhou, Closed-Form Factorization of Latent Semantics in GANs, CVPR 2021", samples_prior=False),
    "ganspace": FinderSpec(
        "ganspace", find_ganspace_directions,
        dict(layers="all", num=10, num_samples=20_000, num_std_samples=10_000, seed=0),
        "principal components of W from seeded prior samples",
        "Härkönen et al., GANSpace: Discovering Interpretable GAN Controls, NeurIPS 2020"),
    "interfacegan": FinderSpec(
        "interfacegan", find_interfacegan_direction,
        dict(layers="all", num_samples=2000, classifier="logistic", heldout_fraction=0.2,
             regularization=1e-2, num_std_samples=10_000, seed=0),
        "unit normal of a linear attribute boundary in W (logistic regression or linear SVM)",
        "Shen et al., Interpreting the Latent Space of GANs for Semantic Face Editing, CVPR 2020",
        needs_labels=True, takes_conditions=True),
    "stylespace": FinderSpec(
        "stylespace", find_stylespace_directions,
        dict(layers="all", num=10, num_samples=1000, ranking="mean_difference", include_torgb=False,
             num_std_samples=10_000, seed=0),
        "single style channels ranked for an attribute (mean difference or classifier gradient)",
        "Wu, Lischinski & Shechtman, StyleSpace Analysis, CVPR 2021", needs_labels=True),
    "voynov": FinderSpec(
        "voynov", find_voynov_directions,
        dict(layers="all", num=16, steps=800, batch_size=24, shift_scale=3.0, learning_rate=1e-3,
             num_std_samples=10_000, seed=0),
        "directions trained jointly with a reconstructor that must tell which one moved an image",
        "Voynov & Babenko, Unsupervised Discovery of Interpretable Directions in the GAN Latent Space, ICML 2020",
        samples_prior=False),
    "steerability": FinderSpec(
        "steerability", find_steerability_directions,
        dict(layers="all", transformations="all", steps=300, batch_size=16, learning_rate=0.01,
             num_std_samples=10_000, seed=0),
        "linear walks learned to reproduce zoom, shifts, brightness and colour shifts of the image",
        "Jahanian, Chai & Isola, On the 'steerability' of generative adversarial networks, ICLR 2020",
        samples_prior=False),
}


def list_finders() -> list[str]:
    return list(FINDERS)


def find_directions(method: str, model, **settings) -> Direction:
    """Run the finder `method` (a key of FINDERS: 'sefa', 'ganspace', 'interfacegan', ...) on a Model or a
    generator; `settings` override the finder's defaults (see FINDERS[method].defaults)."""
    if method not in FINDERS:
        raise ValueError(f"unknown direction finder {method!r}; choose from {', '.join(FINDERS)}")
    spec = FINDERS[method]
    return spec.find(model, **{**spec.defaults, **settings})


def layer_groups(G) -> dict[str, list[int]]:
    """ws indices of the coarse / middle / fine layers, by resolution as in StyleGAN: the first two
    blocks (4-8 px) are coarse, the last max(1, blocks - 4) blocks fine (64 px up for 1024 px
    models), the rest middle. An index belongs to the conv layer that reads it (as in SeFa), the last
    index to the final toRGB. A group with no index is left out."""
    G = getattr(G, "G", G)
    resolutions = [res for res, _ in G.synthesis.blocks()]
    num_fine = max(1, len(resolutions) - 4)
    names = {}
    for i, res in enumerate(resolutions):
        names[res] = "coarse" if i < 2 else ("fine" if i >= len(resolutions) - num_fine else "middle")
    groups: dict[str, list[int]] = {"coarse": [], "middle": [], "fine": []}
    for name, _, index in G.synthesis.style_layers():
        if name.endswith("torgb") and index != G.num_ws - 1:
            continue  # an intermediate toRGB shares its index with the next block's first conv
        # StyleGAN2 layer names start with their block ('b8.conv0'); StyleGAN3 networks say it themselves.
        layer_resolution = getattr(G.synthesis, "layer_resolution", None)
        res = layer_resolution(name) if layer_resolution is not None else int(name.split(".")[0][1:])
        groups[names[res]].append(index)
    return {k: sorted(v) for k, v in groups.items() if v}


_NO_TONE = {"", "none", "no", "n/a", "unknown", "0", "mixed"}


def default_attributes(heads: dict[str, list[str]], max_classes: int = 12) -> list[str]:
    """InterFaceGAN attributes worth shipping for a classifier's heads: skin_tone light vs dark,
    gender man vs woman, binary heads as they are, and each class vs the rest for small heads."""
    out = []
    for head, classes in heads.items():
        if len(classes) == 1:
            out.append(head)
        elif head == "skin_tone":
            tones = [c for c in classes if c.strip().lower() not in _NO_TONE]
            if len(tones) >= 2:
                half = len(tones) // 2  # 5 tones: the two lightest vs the two darkest
                out.append(f"{head}:{','.join(tones[:half])}/{','.join(tones[-half:])}")
        elif head == "gender":
            if "man" in classes and "woman" in classes:
                out.append(f"{head}:man/woman")
        elif len(classes) <= max_classes:
            out.extend(f"{head}:{c}" for c in classes)
    return out


def compute_default_directions(model, outdir: str | Path | None = None, *, num: int = 8,
                               num_samples: int = 4000, seed: int = 0, batch_size: int = 128,
                               num_std_samples: int = 10_000, attributes: list[str] | None = None,
                               progress: Callable[[str], None] | None = None) -> list[dict]:
    """Find and save the directions shipped with an embedded model (default: <model folder>/directions).

    Writes SeFa for all / coarse / middle / fine layers, GANSpace, and (when the model has a classifier)
    InterFaceGAN boundaries for `attributes` (default: `default_attributes` of its heads, e.g. emoji
    skin_tone light vs dark and gender man vs woman, fashion each class vs rest), all from one set of
    `num_samples` seeded prior samples. Returns one summary dict per direction (name, file, scores)
    and one per skipped attribute (name, skipped: reason)."""

    model = load_model(model)
    G = model.G
    if outdir is None:
        if model.folder is None:
            raise ValueError("this model has no folder; give outdir")
        outdir = model.folder / "directions"
    outdir = Path(outdir)
    report = progress or (lambda message: None)
    summary: list[dict] = []

    def keep(direction: Direction) -> None:
        path = direction.save(outdir)
        summary.append({"name": direction.name, "file": str(path), "method": direction.method,
                        "layers": direction.layers, "score_name": direction.score_name,
                        "scores": direction.scores})
        report(f"{direction.name}: {direction.score_name} {[round(s, 4) for s in direction.scores or []]}")

    common = dict(num_std_samples=num_std_samples, seed=seed)
    keep(find_sefa_directions(model, layers="all", num=num, name="sefa_all", **common))
    for group, indices in layer_groups(G).items():
        keep(find_sefa_directions(model, layers=indices, num=num, name=f"sefa_{group}", **common))
    keep(find_ganspace_directions(model, num=num, name="ganspace", **common))

    if model.classifier is not None:
        heads = classifier_heads(model)
        wanted = attributes if attributes is not None else default_attributes(heads)
        specs = [parse_attribute(text, heads) for text in wanted]
        ws, logits = classify_prior_samples(model, sorted({s.head for s in specs}), num_samples=num_samples,
                                            seed=seed, batch_size=batch_size)
        for spec in specs:
            labels = labels_from_logits(logits[spec.head], spec)
            try:
                direction = find_interfacegan_direction(model, ws=ws, labels=labels, attribute=spec.text,
                                                        name=f"interfacegan_{spec.slug}", **common)
            except ValueError as e:  # e.g. the generator never draws that class
                summary.append({"name": f"interfacegan_{spec.slug}", "skipped": str(e)})
                report(f"interfacegan_{spec.slug}: skipped ({e})")
                continue
            direction.settings["label_source"] = f"classifier head {spec.head}"
            keep(direction)
    return summary

__all__ = [
    "Direction", "DirectionError", "load_direction", "split_spec", "safe_file_stem", "sample_prior_ws", "prior_std",
    "FINDERS", "FinderSpec", "list_finders", "find_directions",
    "find_sefa_directions", "sefa_eigen", "sefa_weight_matrix", "find_ganspace_directions", "pca_of_w",
    "find_interfacegan_direction", "fit_boundary", "Boundary", "gram_schmidt", "project_out",
    "condition_direction", "AttributeSpec", "parse_attribute", "classifier_heads", "attribute_labeller",
    "attribute_score", "classifier_outputs", "classify_prior_samples", "labels_from_logits", "label_prior_samples",
    "find_stylespace_directions", "style_layout",
    "edit", "edit_many", "edit_sweep", "resolve_direction", "parse_strengths", "preview_images",
    "save_strip", "save_gif",
    "Latent", "as_latent", "latent_from_seed", "latent_from_result", "lerp", "slerp", "interpolate",
    "interpolation_weights", "style_mix", "mix_latents", "analogy", "analogy_latent",
    "layer_groups", "default_attributes", "compute_default_directions",
    "EditMeasurement", "measure_edit", "editability_ratio",
    "CLIPError", "ClipModel", "load_clip_model", "TextEdit", "edit_with_text", "find_global_direction",
    "text_direction",
]
