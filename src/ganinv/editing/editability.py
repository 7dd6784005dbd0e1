"""Editability: how far an edit moves a classifier-measured attribute, and what else it moves.

The distortion-editability trade-off (Tov et al., "Designing an Encoder for StyleGAN Image
Manipulation", SIGGRAPH 2021; Zhu et al., "In-Domain GAN Inversion for Real Image Editing", ECCV 2020;
Roich et al., "Pivotal Tuning for Latent-based Editing of Real Images", 2022): latents that reconstruct
a photo closely may leave the region where the generator's learned directions act, so the same edit
changes the attribute less (or changes other things more) than on sampled latents.

For one direction component and a list of strengths (prior standard deviations), `measure_edit`
renders each subject edited at every strength (an InversionResult with its own noise and, for
PTI/Clone, its tuned generator) and reports, averaged over subjects:

- ``score_change``: the classifier's log-odds for the attribute at strength s minus at strength 0
  (the attribute change the classifier sees);
- ``flip_rate``: among subjects on the other side of the classifier's decision at strength 0, the
  share the edit carries across it (toward the attribute for s > 0, away for s < 0);
- ``pixel_mse``: mean squared pixel change against the unedited render (on [-1, 1]);
- ``other_change``: for every other classifier head, the total-variation distance between its class
  probabilities before and after the edit, averaged over heads (None when there is no other head):
  the "rest of the image" that an attribute edit should leave alone.

`editability_ratio` divides a source's score change by that of sampled latents at the same strength:
1 means the edit acts on the inverted latent as it does on the generator's own samples.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from .direction import Direction
from .interfacegan import AttributeSpec, classifier_heads, classifier_outputs, parse_attribute, score_from_logits
from .render import edit, parse_strengths


@dataclass
class EditMeasurement:
    """Per-strength averages over `num_subjects` subjects (see the module docstring)."""

    label: str
    attribute: str
    strengths: list[float]
    num_subjects: int
    score_before: float
    score_change: list[float]
    score_change_std: list[float]
    flip_rate: list[float | None]
    pixel_mse: list[float]
    other_change: list[float | None]
    extras: dict = field(default_factory=dict)

    def at(self, strength: float) -> dict:
        """The measurements at one strength as a flat dict."""
        matches = [i for i, s in enumerate(self.strengths) if abs(s - strength) < 1e-9]
        if not matches:
            raise ValueError(f"strength {strength} was not measured (measured: {self.strengths})")
        i = matches[0]
        return {"strength": self.strengths[i], "score_change": self.score_change[i],
                "score_change_std": self.score_change_std[i], "flip_rate": self.flip_rate[i],
                "pixel_mse": self.pixel_mse[i], "other_change": self.other_change[i]}

    def to_dict(self) -> dict:
        return asdict(self)


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if logits.ndim == 1 or logits.shape[1] == 1:
        p = torch.sigmoid(logits.reshape(-1, 1))
        return torch.cat([p, 1 - p], dim=1)
    return torch.softmax(logits, dim=1)


def _as_subjects(source) -> list:
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("no subjects to measure")
        return list(source)
    return [source]


def measure_edit(source, direction: Direction | str, classifier, attribute: AttributeSpec | str,
                 strengths: Sequence[float] | str = "-3,-2,-1,1,2,3", *, index: int | None = None, model=None,
                 heads: dict[str, list[str]] | None = None, label: str = "") -> EditMeasurement:
    """Measure one direction component on `source`: an InversionResult, a Latent (a batch of sampled
    latents, say), or a list of them. `attribute` is an AttributeSpec or its text ('class:Sneaker',
    'skin_tone:1,2/4,5'), parsed against `heads` (default: the model's or classifier's heads)."""
    strengths = [float(s) for s in parse_strengths(strengths)]
    if any(abs(s) < 1e-12 for s in strengths):
        strengths = [s for s in strengths if abs(s) >= 1e-12]  # strength 0 is the reference
    if not strengths:
        raise ValueError("give at least one non-zero strength")
    if classifier is None:
        raise ValueError("measuring editability needs a classifier (the model ships none): pass classifier=")
    if isinstance(attribute, str):
        if heads is None:
            heads = classifier_heads(model if model is not None else _HeadsHolder(classifier))
        spec = parse_attribute(attribute, heads)
    else:
        spec = attribute
    before_scores, changes, flips_num, flips_den, mses, others = [], [], [], [], [], []
    count = 0
    for subject in _as_subjects(source):
        with torch.no_grad():
            base = edit(subject, direction, 0.0, index=index, model=model)
            base_out = classifier_outputs(classifier, base)
            base_score = score_from_logits(base_out[spec.head], spec).cpu()
            rows_change, rows_flip_num, rows_flip_den, rows_mse, rows_other = [], [], [], [], []
            for s in strengths:
                images = edit(subject, direction, s, index=index, model=model)
                out = classifier_outputs(classifier, images)
                score = score_from_logits(out[spec.head], spec).cpu()
                rows_change.append(score - base_score)
                start = base_score <= 0 if s > 0 else base_score > 0
                crossed = (score > 0) if s > 0 else (score <= 0)
                rows_flip_num.append((start & crossed).sum().item())
                rows_flip_den.append(start.sum().item())
                rows_mse.append((images.float() - base.float()).pow(2).flatten(1).mean(1).cpu())
                tv = [0.5 * (_probabilities(out[h]) - _probabilities(base_out[h])).abs().sum(1).cpu()
                      for h in out if h != spec.head]
                rows_other.append(torch.stack(tv).mean(0) if tv else None)
        before_scores.append(base_score)
        changes.append(torch.stack(rows_change))             # [S, n]
        flips_num.append(rows_flip_num)
        flips_den.append(rows_flip_den)
        mses.append(torch.stack(rows_mse))
        others.append(None if rows_other[0] is None else torch.stack(rows_other))
        count += int(base_score.shape[0])
    change = torch.cat(changes, dim=1)
    mse = torch.cat(mses, dim=1)
    other = None if any(o is None for o in others) else torch.cat(others, dim=1)
    flip = []
    for i in range(len(strengths)):
        num = sum(f[i] for f in flips_num)
        den = sum(f[i] for f in flips_den)
        flip.append(num / den if den else None)
    return EditMeasurement(
        label=label, attribute=spec.text, strengths=strengths, num_subjects=count,
        score_before=float(torch.cat(before_scores).mean()),
        score_change=[float(v) for v in change.mean(1)],
        score_change_std=[float(v) for v in (change.std(1) if count > 1 else torch.zeros(len(strengths)))],
        flip_rate=flip, pixel_mse=[float(v) for v in mse.mean(1)],
        other_change=[None] * len(strengths) if other is None else [float(v) for v in other.mean(1)])


def editability_ratio(measured: EditMeasurement, reference: EditMeasurement) -> list[float | None]:
    """measured.score_change / reference.score_change per strength (None where the reference does not
    move the attribute: |change| < 1e-6). Both must cover the same strengths and attribute."""
    if measured.strengths != reference.strengths:
        raise ValueError(f"strengths differ: {measured.strengths} vs {reference.strengths}")
    if measured.attribute != reference.attribute:
        raise ValueError(f"attributes differ: {measured.attribute!r} vs {reference.attribute!r}")
    return [None if abs(r) < 1e-6 else m / r for m, r in zip(measured.score_change, reference.score_change)]


class _HeadsHolder:
    """Lets classifier_heads read a bare classifier's heads."""

    def __init__(self, classifier) -> None:
        self.classifier = classifier
        self.card = {}


__all__ = ["EditMeasurement", "measure_edit", "editability_ratio"]
