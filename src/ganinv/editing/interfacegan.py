"""InterFaceGAN: linear attribute boundaries in W, and conditional manipulation (Shen, Gu, Tang & Zhou,
"Interpreting the Latent Space of GANs for Semantic Face Editing", CVPR 2020; extended in TPAMI 2020).

Sample prior latents, label the images they make (with the model's attribute classifier or any
labeller, or take user labels), fit a linear classifier in W, and use the unit normal of its
separating hyperplane as the editing direction. The classifier is a class-balanced logistic
regression or an L2-regularized squared-hinge linear SVM, fitted with L-BFGS in torch; its accuracy on
a held-out part of the samples says how linearly the attribute is encoded.

Conditional manipulation: to change one attribute without dragging correlated ones along, remove from
its normal the components along the other boundaries' normals (n1 - (n1.n2) n2 for one condition;
for several, Gram-Schmidt the conditions first, then project them all out).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..utils import parse_layers
from .direction import Direction, model_identity, prior_std, safe_file_stem, sample_prior_ws

CLASSIFIERS = ("logistic", "svm")

# labeller(images [N, C, H, W] in [-1, 1]) -> labels [N]: 1 positive, 0 negative, -1 skip the sample.
Labeller = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Boundary:
    """A fitted hyperplane n.w + offset = 0 with unit normal n pointing to the positive side."""

    normal: torch.Tensor
    offset: float
    train_accuracy: float
    heldout_accuracy: float | None
    num_positive: int
    num_negative: int
    num_train: int
    num_heldout: int
    classifier: str

    def decision(self, latents: torch.Tensor) -> torch.Tensor:
        """Signed distance of latents [N, D] to the boundary (positive side > 0)."""
        return latents.to(self.normal.dtype) @ self.normal + self.offset


def _clean_labels(labels) -> torch.Tensor:
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.dtype == torch.bool:
        return labels.long()
    labels = labels.long() if not labels.is_floating_point() else labels
    valid = (labels == 0) | (labels == 1) | (labels == -1)
    if not bool(valid.all()):
        raise ValueError("labels must be 1 (positive), 0 (negative) or -1 (skip)")
    return labels.long()


def _newton_fit(x: torch.Tensor, sign: torch.Tensor, weights: torch.Tensor, classifier: str,
                regularization: float, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimize mean(weights * loss(sign * (x a + b))) + regularization/2 |a|^2 by damped Newton steps.

    Both losses are convex (squared hinge has a generalized Hessian), so a handful of steps reach
    machine precision on a few thousand samples of a few hundred dimensions."""
    n, d = x.shape
    features = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], dim=1)
    penalty = torch.full((d + 1,), float(regularization), dtype=x.dtype)
    penalty[-1] = 1e-10  # the bias is not regularized; a tiny ridge keeps the Hessian invertible

    def loss_parts(theta):
        margin = sign * (features @ theta)
        if classifier == "logistic":
            value = torch.nn.functional.softplus(-margin)
            first = -torch.sigmoid(-margin)
            second = torch.sigmoid(margin) * torch.sigmoid(-margin)
        else:
            slack = (1 - margin).clamp_min(0)
            value, first, second = slack.square(), -2 * slack, 2.0 * (slack > 0).to(x.dtype)
        total = (weights * value).mean() + 0.5 * (penalty * theta.square()).sum()
        return total, first, second

    theta = torch.zeros(d + 1, dtype=x.dtype)
    loss, first, second = loss_parts(theta)
    for _ in range(max_iter):
        gradient = features.t() @ (weights * sign * first) / n + penalty * theta
        if float(gradient.abs().max()) < 1e-10:
            break
        hessian = (features * (weights * second).unsqueeze(1)).t() @ features / n + torch.diag(penalty)
        step = torch.linalg.solve(hessian, -gradient)
        decrease = float(gradient @ step)
        size = 1.0
        while size > 1e-8:  # Armijo backtracking
            candidate = theta + size * step
            new_loss, new_first, new_second = loss_parts(candidate)
            if float(new_loss) <= float(loss) + 1e-4 * size * decrease:
                break
            size *= 0.5
        else:
            break
        converged = float(loss) - float(new_loss) < 1e-14
        theta, loss, first, second = candidate, new_loss, new_first, new_second
        if converged:
            break
    return theta[:d], theta[d]


def fit_boundary(latents: torch.Tensor, labels, *, classifier: str = "logistic", heldout_fraction: float = 0.2,
                 seed: int = 0, regularization: float = 1e-2, max_iter: int = 50) -> Boundary:
    """Fit a linear boundary to latents [N, D] with labels [N] (1, 0, or -1 to skip).

    Minimizes the class-balanced mean loss (logistic, or squared hinge for 'svm') plus
    regularization/2 |a|^2 on latents centred and scaled by one scalar (which keeps W's geometry), by
    Newton's method. `heldout_fraction` of the kept samples, chosen with `seed`, are held out to
    report accuracy."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
    if not 0 <= heldout_fraction < 1:
        raise ValueError("heldout_fraction must be in [0, 1)")
    latents = torch.as_tensor(latents).detach().cpu().to(torch.float64)
    if latents.ndim != 2:
        raise ValueError(f"latents must have shape [N, D], got {tuple(latents.shape)}")
    labels = _clean_labels(labels).cpu()
    if labels.numel() != latents.shape[0]:
        raise ValueError(f"{labels.numel()} labels for {latents.shape[0]} latents")
    keep = labels >= 0
    latents, labels = latents[keep], labels[keep]
    num_positive, num_negative = int((labels == 1).sum()), int((labels == 0).sum())
    if min(num_positive, num_negative) < 2:
        raise ValueError(f"need at least 2 positive and 2 negative samples, got {num_positive} positive and "
                         f"{num_negative} negative: the attribute is (almost) never or always present; "
                         "use more samples or another attribute")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(labels.numel(), generator=gen)
    num_heldout = int(round(heldout_fraction * labels.numel()))
    heldout_idx, train_idx = order[:num_heldout], order[num_heldout:]
    if labels[train_idx].unique().numel() < 2:
        raise ValueError("the training part has a single class; use more samples")

    x_train, y_train = latents[train_idx], labels[train_idx]
    mean = x_train.mean(dim=0)
    scale = (x_train - mean).square().mean().sqrt().clamp_min(1e-12)  # one scalar: keeps W's geometry
    xs = (x_train - mean) / scale
    sign = y_train.to(torch.float64) * 2 - 1
    pos = float((y_train == 1).sum())
    neg = float((y_train == 0).sum())
    weights = torch.where(y_train == 1, torch.tensor(len(y_train) / (2 * pos), dtype=torch.float64),
                          torch.tensor(len(y_train) / (2 * neg), dtype=torch.float64))
    a, b = _newton_fit(xs, sign, weights, classifier, regularization, max_iter)
    if not bool(torch.isfinite(a).all()) or float(a.norm()) == 0:
        raise ValueError("the linear classifier did not converge (zero or non-finite normal)")
    normal = a / scale
    length = normal.norm()
    offset = float((b - (a * mean).sum() / scale) / length)
    normal = normal / length

    def accuracy(idx):
        if idx.numel() == 0:
            return None
        predicted = (latents[idx] @ normal + offset) > 0
        return float((predicted.long() == labels[idx]).double().mean())

    return Boundary(normal=normal, offset=offset, train_accuracy=float(accuracy(train_idx)),
                    heldout_accuracy=accuracy(heldout_idx), num_positive=num_positive,
                    num_negative=num_negative, num_train=int(train_idx.numel()),
                    num_heldout=int(heldout_idx.numel()), classifier=classifier)


# ---------------------------------------------------------------------- conditional manipulation


def gram_schmidt(vectors: torch.Tensor, tolerance: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis [M', D] of the span of vectors [M, D] (dependent vectors dropped)."""
    basis: list[torch.Tensor] = []
    for v in vectors.to(torch.float64):
        r = v.clone()
        for q in basis:  # modified Gram-Schmidt: subtract one projection at a time
            r = r - (r @ q) * q
        if r.norm() > tolerance * max(float(v.norm()), 1e-12):
            basis.append(r / r.norm())
    if not basis:
        return torch.zeros(0, vectors.shape[-1], dtype=torch.float64)
    return torch.stack(basis)


def project_out(vector: torch.Tensor, conditions: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Unit vector along `vector` [D] with the span of `conditions` [M, D] removed.

    For one condition n2 this is n1 - (n1.n2) n2 (normalized). Raises ValueError when `vector` lies
    (almost) in the span of the conditions."""
    if not isinstance(conditions, torch.Tensor):
        conditions = torch.stack([torch.as_tensor(c).reshape(-1) for c in conditions]) if len(conditions) else None
    v = torch.as_tensor(vector).reshape(-1).to(torch.float64)
    if conditions is None or conditions.numel() == 0:
        return (v / v.norm()).float()
    conditions = conditions.reshape(-1, v.numel())
    basis = gram_schmidt(conditions)
    residual = v - (basis @ v) @ basis
    if residual.norm() < 1e-6 * v.norm():
        raise ValueError("the direction lies in the span of the conditions: nothing is left after projection")
    return (residual / residual.norm()).float()


def _condition_vectors(conditions: Sequence[Direction | tuple[Direction, int]],
                       w_dim: int) -> tuple[list[torch.Tensor], list[str]]:
    """The vectors and names of conditions given as Directions (all components) or (Direction, i)."""
    rows, names = [], []
    for cond in conditions:
        cond_dir, cond_index = cond if isinstance(cond, tuple) else (cond, None)
        if cond_dir.space != "w" or cond_dir.w_dim != w_dim:
            raise ValueError(f"condition {cond_dir.name!r} is not a 'w' direction with w_dim={w_dim}")
        if cond_index is None:
            rows.extend(cond_dir.vectors)
            names.append(cond_dir.name)
        else:
            rows.append(cond_dir.vectors[cond_dir._check_index(cond_index)])
            names.append(f"{cond_dir.name}:{cond_index}")
    return rows, names


def condition_direction(direction: Direction, conditions: Sequence[Direction | tuple[Direction, int]],
                        model, *, index: int = 0, num_std_samples: int = 10_000, seed: int = 0,
                        name: str | None = None) -> Direction:
    """Component `index` of a 'w' Direction made orthogonal to other 'w' directions (conditional
    manipulation). A condition is a Direction (all of its components) or (Direction, component)."""
    G = getattr(model, "G", model)
    if direction.space != "w":
        raise ValueError("conditional manipulation works on 'w' directions")
    rows, names = _condition_vectors(conditions, direction.w_dim)
    vector = project_out(direction.vectors[direction._check_index(index)], rows).unsqueeze(0)
    std = prior_std(G, "w", vector, direction.layers, num_samples=num_std_samples, seed=seed)
    base_name = direction.name if len(direction) == 1 else f"{direction.name}_{index}"
    suffix = "_".join(safe_file_stem(n) for n in names)
    return Direction(
        name=name or f"{base_name}_without_{suffix}", method=direction.method, space="w", vectors=vector,
        layers=list(direction.layers), std=std, num_ws=direction.num_ws, w_dim=direction.w_dim,
        scores=None, score_name="", labels=[f"{direction.label(index)} | not {', '.join(names)}"],
        settings=dict(direction.settings, conditioned_on=names, source_direction=direction.name,
                      source_component=index, num_std_samples=num_std_samples, std_seed=seed),
        model=dict(direction.model))


# ---------------------------------------------------------------------- labelling with a classifier


@dataclass(frozen=True)
class AttributeSpec:
    """'head' (a binary head), 'head:POS' (POS vs the rest) or 'head:POS/NEG'; POS and NEG are
    comma-separated class names or indices of that head."""

    head: str
    positive: tuple[int, ...]
    negative: tuple[int, ...] | None
    classes: tuple[str, ...]
    text: str

    @property
    def slug(self) -> str:
        """A file-friendly name: 'gender_man_vs_woman', 'class_3_vs_rest'."""
        if not self.classes:
            return safe_file_stem(self.head)
        pos = "-".join(self.classes[i] for i in self.positive)
        neg = "rest" if self.negative is None else "-".join(self.classes[i] for i in self.negative)
        return safe_file_stem(f"{self.head}_{pos}_vs_{neg}")


def classifier_heads(model) -> dict[str, list[str]]:
    """{head: class names} of the model's classifier (one name, '', for a single-logit binary head).

    Read from the classifier's `head_classes` (ganinv.train.classifier.Classifier) or a `heads`
    mapping of class names, else from its card or the model card's classifier entry."""
    classifier = getattr(model, "classifier", None)
    classifier_card = getattr(classifier, "card", None)
    model_card = getattr(model, "card", None) or {}
    heads_attribute = getattr(classifier, "heads", None)
    candidates = [getattr(classifier, "head_classes", None),
                  None if isinstance(heads_attribute, torch.nn.Module) else heads_attribute,
                  classifier_card.get("heads") if isinstance(classifier_card, dict) else None,
                  (model_card.get("classifier") or {}).get("heads") if isinstance(model_card.get("classifier"), dict)
                  else None]
    for heads in candidates:
        if heads:
            return _normalize_heads(heads)
    raise ValueError("this model has no classifier with listed heads; give labels or a labeller instead")


def _normalize_heads(heads) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(heads, dict):
        items = heads.items()
    else:  # list of {'name': ..., 'classes': [...]}
        items = [(h["name"], h.get("classes", h.get("num_classes", 1))) for h in heads]
    for head, classes in items:
        if isinstance(classes, dict):
            classes = classes.get("classes", classes.get("num_classes", 1))
        if isinstance(classes, int):
            classes = [""] if classes == 1 else [str(i) for i in range(classes)]
        out[str(head)] = [str(c) for c in classes]
    return out


def parse_attribute(text: str, heads: dict[str, list[str]]) -> AttributeSpec:
    """Parse an attribute specification against the classifier's heads (see AttributeSpec)."""
    head, _, rest = text.partition(":")
    head = head.strip()
    if head not in heads:
        raise ValueError(f"unknown classifier head {head!r}; heads: {', '.join(heads) or 'none'}")
    classes = heads[head]
    if len(classes) == 1:
        if rest:
            raise ValueError(f"head {head!r} is binary (one logit): give just {head!r}")
        return AttributeSpec(head, (0,), None, (), text)
    if not rest:
        raise ValueError(f"head {head!r} has classes {classes}: say which, e.g. {head}:{classes[0]} "
                         f"(vs the rest) or {head}:{classes[0]}/{classes[-1]}")
    # A class name may itself contain "/" (Fashion-MNIST's "T-shirt/top"): whole names win over the split.
    if rest.strip() in classes:
        pos_text, neg_text = rest.strip(), ""
    else:
        pos_text, _, neg_text = rest.partition("/")

    def indices(part: str) -> tuple[int, ...]:
        out = []
        items = [part.strip()] if part.strip() in classes else [s.strip() for s in part.split(",")]
        for item in filter(None, items):
            if item in classes:
                out.append(classes.index(item))
            elif re.fullmatch(r"\d+", item) and int(item) < len(classes):
                out.append(int(item))
            else:
                raise ValueError(f"{item!r} is not a class of head {head!r} (classes: {', '.join(classes)})")
        if not out:
            raise ValueError(f"empty class list in attribute {text!r}")
        return tuple(sorted(set(out)))

    positive = indices(pos_text)
    negative = indices(neg_text) if neg_text else None
    if negative is not None and set(positive) & set(negative):
        raise ValueError(f"attribute {text!r}: a class is on both sides")
    return AttributeSpec(head, positive, negative, tuple(classes), text)


def _classifier_device(classifier) -> torch.device | None:
    if isinstance(classifier, torch.nn.Module):
        for p in classifier.parameters():
            return p.device
    return None


def score_from_logits(logits: torch.Tensor, spec: AttributeSpec) -> torch.Tensor:
    """Log-odds [N] of the attribute from one head's logits [N, C] (or [N] / [N, 1] for a binary head)."""
    logits = logits.float()
    if logits.ndim == 1 or logits.shape[1] == 1:
        return logits.reshape(-1)
    pos = list(spec.positive)
    neg = list(spec.negative) if spec.negative is not None else \
        [i for i in range(logits.shape[1]) if i not in spec.positive]
    return torch.logsumexp(logits[:, pos], dim=1) - torch.logsumexp(logits[:, neg], dim=1)


def labels_from_logits(logits: torch.Tensor, spec: AttributeSpec) -> torch.Tensor:
    """Labels [N]: 1 where the head favours POS, 0 for NEG (or the rest); -1 for samples whose top class
    is neither POS nor NEG (only when NEG is given)."""
    logits = logits.detach().cpu()
    labels = (score_from_logits(logits, spec) > 0).long()
    if spec.negative is not None and logits.ndim == 2 and logits.shape[1] > 1:
        wanted = torch.tensor(list(spec.positive) + list(spec.negative))
        labels[~torch.isin(logits.argmax(dim=1), wanted)] = -1
    return labels


def classifier_outputs(classifier, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """{head: logits} for images, with a torch classifier temporarily in eval mode (batch norm must
    use its running statistics, and labelling must not update them)."""
    device = _classifier_device(classifier)
    images = images.to(device) if device is not None else images
    if not isinstance(classifier, torch.nn.Module) or not classifier.training:
        return classifier(images)
    classifier.eval()
    try:
        return classifier(images)
    finally:
        classifier.train()


def _head_output(outputs: dict[str, torch.Tensor], head: str) -> torch.Tensor:
    if head not in outputs:
        raise ValueError(f"classifier returned no head {head!r} (got {', '.join(outputs)})")
    return outputs[head]


def _head_logits(classifier, images: torch.Tensor, head: str) -> torch.Tensor:
    return _head_output(classifier_outputs(classifier, images), head)


def attribute_score(classifier, spec: AttributeSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """images -> log-odds [N] that the attribute is present (differentiable)."""
    def score(images: torch.Tensor) -> torch.Tensor:
        return score_from_logits(_head_logits(classifier, images, spec.head), spec)
    return score


def attribute_labeller(classifier, spec: AttributeSpec) -> Labeller:
    """images -> labels (see `labels_from_logits`)."""
    @torch.no_grad()
    def labeller(images: torch.Tensor) -> torch.Tensor:
        return labels_from_logits(_head_logits(classifier, images, spec.head), spec)
    return labeller


def _prior_sample_images(G, ws: torch.Tensor, batch_size: int):
    """The images of prior latents `ws`, `batch_size` at a time (call under `torch.no_grad()`)."""
    for start in range(0, len(ws), batch_size):
        yield G.synthesis(ws[start:start + batch_size], noise_mode="const")


def label_prior_samples(model, labeller: Labeller, *, num_samples: int, seed: int = 0,
                        truncation_psi: float = 1.0, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(ws [N, num_ws, w_dim], labels [N]) for seeded prior samples labelled from their images."""
    G = getattr(model, "G", model)
    ws = sample_prior_ws(G, num_samples, seed=seed, truncation_psi=truncation_psi)
    with torch.no_grad():
        labels = [_clean_labels(labeller(images)).cpu() for images in _prior_sample_images(G, ws, batch_size)]
    return ws, torch.cat(labels)


def classify_prior_samples(model, heads: Sequence[str], *, num_samples: int, seed: int = 0,
                           truncation_psi: float = 1.0, batch_size: int = 64
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(ws [N, num_ws, w_dim], {head: logits [N, ...]}) for the seeded prior samples that
    `label_prior_samples` labels, classified once by the model's classifier, so that several attributes
    can be labelled from one pass (`labels_from_logits`) and fit with `ws=..., labels=...`."""
    G = getattr(model, "G", model)
    if getattr(model, "classifier", None) is None:
        raise ValueError("this model has no classifier")
    ws = sample_prior_ws(G, num_samples, seed=seed, truncation_psi=truncation_psi)
    logits: dict[str, list[torch.Tensor]] = {head: [] for head in heads}
    with torch.no_grad():
        for images in _prior_sample_images(G, ws, batch_size):
            outputs = classifier_outputs(model.classifier, images)
            for head in logits:
                logits[head].append(_head_output(outputs, head).detach().cpu())
    return ws, {head: torch.cat(values) for head, values in logits.items()}


def find_interfacegan_direction(model, labeller: Labeller | None = None, *, attribute: str | None = None,
                                ws: torch.Tensor | None = None, labels=None, num_samples: int = 2000,
                                seed: int = 0, layers: str | list[int] = "all", classifier: str = "logistic",
                                heldout_fraction: float = 0.2, regularization: float = 1e-2,
                                truncation_psi: float = 1.0, batch_size: int = 64,
                                conditions: Sequence[Direction | tuple[Direction, int]] = (),
                                num_std_samples: int = 10_000, name: str | None = None) -> Direction:
    """An InterFaceGAN boundary normal as a one-component 'w' Direction.

    Labels come from (first that applies): `ws` + `labels` given by the user (ws [N, w_dim] or
    [N, num_ws, w_dim], averaged over `layers`); `labeller(images)` on `num_samples` seeded prior
    samples; or the model's classifier for `attribute` ('head', 'head:POS', 'head:POS/NEG').
    scores = [held-out accuracy]; settings hold train accuracy and class counts. With `conditions`,
    the normal is made orthogonal to those directions (conditional manipulation)."""
    G = getattr(model, "G", model)
    layer_list = parse_layers(layers, G.num_ws)
    spec = None
    if ws is not None or labels is not None:
        if ws is None or labels is None:
            raise ValueError("give both ws and labels (user labels), or a labeller")
        ws = torch.as_tensor(ws).float()
        if ws.ndim == 3:
            if tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
                raise ValueError(f"ws must have shape [N, {G.num_ws}, {G.w_dim}] or [N, {G.w_dim}], "
                                 f"got {tuple(ws.shape)}")
            latents = ws[:, layer_list].mean(dim=1)
        elif ws.ndim == 2 and ws.shape[1] == G.w_dim:
            latents = ws
        else:
            raise ValueError(f"ws must have shape [N, {G.num_ws}, {G.w_dim}] or [N, {G.w_dim}], got {tuple(ws.shape)}")
        source = "user labels"
    else:
        if labeller is None:
            if attribute is None:
                raise ValueError("interfacegan needs labels: an attribute of the model's classifier, "
                                 "a labeller, or ws + labels")
            if getattr(model, "classifier", None) is None:
                raise ValueError("this model has no classifier; give a labeller or ws + labels")
            spec = parse_attribute(attribute, classifier_heads(model))
            labeller = attribute_labeller(model.classifier, spec)
            source = f"classifier head {spec.head}"
        else:
            source = "labeller"
        ws, labels = label_prior_samples(model, labeller, num_samples=num_samples, seed=seed,
                                         truncation_psi=truncation_psi, batch_size=batch_size)
        latents = ws[:, layer_list].mean(dim=1)
    boundary = fit_boundary(latents, labels, classifier=classifier, heldout_fraction=heldout_fraction,
                            seed=seed, regularization=regularization)
    vector = boundary.normal.float().unsqueeze(0)
    condition_names: list[str] = []
    if conditions:
        rows, condition_names = _condition_vectors(conditions, G.w_dim)
        vector = project_out(vector[0], rows).unsqueeze(0)
    std = prior_std(G, "w", vector, layer_list, num_samples=num_std_samples, seed=seed + 1)
    attribute_text = spec.slug if spec is not None else safe_file_stem(attribute or "attribute")
    layer_text = layers if isinstance(layers, str) else ",".join(str(i) for i in layer_list)
    return Direction(
        name=name or f"interfacegan_{attribute_text}", method="interfacegan", space="w", vectors=vector,
        layers=layer_list, std=std, num_ws=G.num_ws, w_dim=G.w_dim,
        scores=[boundary.heldout_accuracy if boundary.heldout_accuracy is not None else boundary.train_accuracy],
        score_name="heldout_accuracy" if boundary.heldout_accuracy is not None else "train_accuracy",
        labels=[attribute or attribute_text],
        settings={"attribute": attribute, "label_source": source, "classifier": classifier,
                  "layers": layer_text, "num_samples": int(latents.shape[0]), "seed": seed,
                  "heldout_fraction": heldout_fraction, "regularization": regularization,
                  "truncation_psi": truncation_psi, "train_accuracy": boundary.train_accuracy,
                  "heldout_accuracy": boundary.heldout_accuracy, "num_positive": boundary.num_positive,
                  "num_negative": boundary.num_negative, "num_heldout": boundary.num_heldout,
                  "offset": boundary.offset, "conditioned_on": condition_names,
                  "num_std_samples": num_std_samples},
        model=model_identity(model))
