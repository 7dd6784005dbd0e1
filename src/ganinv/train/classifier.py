"""Training and evaluation of the dataset classifier (`ganinv.models.classifier.Classifier`).

The classifier's features define the Fréchet distance of `train/quality.py`, it labels samples for
InterFaceGAN (Shen et al., CVPR 2020) and it measures edits; the network and its storage live in
`ganinv.models.classifier` and are re-exported here.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.classifier import CARD_FORMAT, CARD_VERSION, Classifier, load_classifier, save_classifier  # noqa: F401
from ..data.dataset import images_to_tensor, load_dataset, read_dataset_info

# ---------------------------------------------------------------------------------------------
# Labels


def head_labels(records: Sequence[dict], key: str, class_names: Sequence[str] | None = None
                ) -> tuple[np.ndarray, list[str]]:
    """Integer targets for one label field and its class names.

    Integer fields with a `<key>_name` companion (Fashion-MNIST's class/class_name) keep their index
    order and take the names; other fields use their sorted string values. With `class_names`
    given, values not among them get -1 (ignored by the loss and by accuracy).
    """
    if not records:
        raise ValueError("no records to take labels from")
    if key not in records[0]:
        raise ValueError(f"label field {key!r} is not in the dataset records (fields: {sorted(records[0])})")
    raw = [r.get(key) for r in records]
    if class_names is None:
        if all(isinstance(v, int) for v in raw) and f"{key}_name" in records[0]:
            names_by_index = {int(r[key]): str(r[f"{key}_name"]) for r in records}
            class_names = [names_by_index.get(i, str(i)) for i in range(max(names_by_index) + 1)]
            return np.array(raw, dtype=np.int64), list(class_names)
        class_names = sorted({str(v) for v in raw})
    index = {name: i for i, name in enumerate(class_names)}
    if all(isinstance(v, int) for v in raw) and f"{key}_name" in records[0]:
        return np.array([v if 0 <= v < len(class_names) else -1 for v in raw], dtype=np.int64), list(class_names)
    return np.array([index.get(str(v), -1) for v in raw], dtype=np.int64), list(class_names)


# ---------------------------------------------------------------------------------------------
# Training


def _random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Shift the whole batch by a random integer offset (edge padding): cheap translation jitter."""
    if max_shift <= 0:
        return x
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, [2], generator=generator))
    padded = F.pad(x, [max_shift] * 4, mode="replicate")
    h, w = x.shape[2], x.shape[3]
    return padded[:, :, max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]


def train_classifier(train_images: torch.Tensor, train_labels: dict[str, np.ndarray],
                     heads: dict[str, list[str]], *, epochs: float = 2.0, batch_size: int = 64,
                     learning_rate: float = 2e-3, base_width: int = 16, max_width: int = 128,
                     feature_dim: int = 128, mirror: bool = False, max_shift: int = 2, seed: int = 0,
                     device: str | torch.device = "cpu",
                     on_step: Callable[[int, int, float], None] | None = None) -> tuple[Classifier, list[float]]:
    """Train a multi-head classifier (cross-entropy summed over heads, labels -1 ignored).

    Args:
        train_images: float [N, C, R, R] in [-1, 1].
        train_labels: head -> int array [N].
        heads: head -> class names.
        on_step: called with (step, total_steps, loss) after each step (progress bars).
    Returns:
        (classifier in eval mode, loss per step).
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    n = len(train_images)
    model = Classifier(train_images.shape[1], train_images.shape[2], heads, base_width=base_width,
                       max_width=max_width, feature_dim=feature_dim).to(device)
    targets = {name: torch.from_numpy(np.asarray(train_labels[name], dtype=np.int64)) for name in heads}
    total_steps = max(1, int(math.ceil(epochs * n / batch_size)))
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=total_steps,
                                                    pct_start=0.15)
    losses: list[float] = []
    order = torch.randperm(n, generator=generator)
    position = 0
    model.train()
    for step in range(total_steps):
        if position + batch_size > n:
            order = torch.randperm(n, generator=generator)
            position = 0
        idx = order[position:position + batch_size]
        position += batch_size
        x = train_images[idx].to(device)
        if mirror:
            flip = torch.rand([len(idx)], generator=generator) < 0.5
            x = torch.where(flip.to(device).view(-1, 1, 1, 1), x.flip(3), x)
        x = _random_shift(x, generator, max_shift)
        logits = model(x)
        loss = sum(F.cross_entropy(logits[name], targets[name][idx].to(device), ignore_index=-1)
                   for name in heads if (targets[name][idx] >= 0).any())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, total_steps, losses[-1])
    return model.eval(), losses


@torch.no_grad()
def evaluate_classifier(model: Classifier, images: torch.Tensor, labels: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per head: accuracy over images whose label is known (>= 0), the count, and the majority baseline."""
    predictions = model.predict(images)
    out = {}
    for name, target in labels.items():
        target = torch.from_numpy(np.asarray(target, dtype=np.int64))
        known = target >= 0
        count = int(known.sum())
        accuracy = float((predictions[name][known] == target[known]).float().mean()) if count else float("nan")
        majority = float(torch.bincount(target[known]).max() / count) if count else float("nan")
        out[name] = {"accuracy": accuracy, "count": count, "majority_baseline": majority}
    return out


def train_classifier_on_dataset(dataset_dir: str | os.PathLike, heads: Sequence[str], out_dir: str | os.PathLike,
                                *, epochs: float = 2.0, batch_size: int = 64, learning_rate: float = 2e-3,
                                base_width: int = 16, max_width: int = 128, feature_dim: int = 128,
                                mirror: bool = False, seed: int = 0, device: str | torch.device = "cpu",
                                on_step: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Train on a dataset folder's train split, evaluate on its held-out split, save; returns the card."""

    info = read_dataset_info(dataset_dir)
    train_arr, train_records = load_dataset(dataset_dir, "train")
    held_arr, held_records = load_dataset(dataset_dir, "heldout")
    head_names: dict[str, list[str]] = {}
    train_targets, held_targets = {}, {}
    for key in heads:
        # Class names from both splits, so held-out-only classes are counted as errors, not dropped.
        _, names = head_labels(list(train_records) + list(held_records), key)
        head_names[key] = names
        train_targets[key], _ = head_labels(train_records, key, names)
        held_targets[key], _ = head_labels(held_records, key, names)
    started = time.perf_counter()
    model, losses = train_classifier(images_to_tensor(train_arr), train_targets, head_names, epochs=epochs,
                                     batch_size=batch_size, learning_rate=learning_rate, base_width=base_width,
                                     max_width=max_width, feature_dim=feature_dim, mirror=mirror, seed=seed,
                                     device=device, on_step=on_step)
    seconds = time.perf_counter() - started
    heldout = evaluate_classifier(model, images_to_tensor(held_arr).to(device), held_targets)
    train_eval = evaluate_classifier(model, images_to_tensor(train_arr[:5000]).to(device),
                                     {k: v[:5000] for k, v in train_targets.items()})
    card = {
        "dataset": {"name": info.get("name"), "source_package": info.get("source_package"),
                    "source_version": info.get("source_version"), "license": info.get("license"),
                    "split_rule": info.get("split_rule"), "split_sha256": info.get("split_sha256"),
                    "counts": info.get("counts")},
        "heldout_accuracy": {k: v["accuracy"] for k, v in heldout.items()},
        "heldout_evaluation": heldout,
        "train_accuracy_first_5000": {k: v["accuracy"] for k, v in train_eval.items()},
        "training": {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                     "mirror": mirror, "seed": seed, "steps": len(losses), "seconds": round(seconds, 1),
                     "threads": torch.get_num_threads(), "device": str(device),
                     "first_loss": losses[0], "last_loss": float(np.mean(losses[-50:]))},
    }
    save_classifier(out_dir, model, card)
    return load_classifier(out_dir).card
