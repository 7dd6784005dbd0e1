"""A small multi-head CNN classifier for a dataset's labels, stored beside the embedded models.

It serves three purposes: its penultimate features define the Fréchet distance between generated and
real images (the construction of Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge
to a Local Nash Equilibrium", NeurIPS 2017, with this classifier in place of Inception, so the number
is named for what it is), it labels generated images for InterFaceGAN (Shen et al., CVPR 2020), and
it measures how far an edit moves an attribute.

Architecture: per resolution halving, two 3x3 conv + batch norm + leaky ReLU and a 2x2 average pool
(widths doubling up to a cap; batch norm uses its running statistics in eval mode, which is how the
classifier is always used after training) down to 4x4, then one fully connected feature layer on the
flattened 4x4 map (keeping where things are, which global pooling would lose), then one linear head
per label field. Stored natively as `model.safetensors` + `card.json` (heads, class names, held-out
accuracy, training settings).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..native import load_module_folder, save_module_folder

CARD_FORMAT = "ganinv-classifier"
CARD_VERSION = 1


class Classifier(nn.Module):
    """img [N, C, R, R] in [-1, 1] -> {head: logits [N, num_classes]}; `features` -> [N, feature_dim]."""

    def __init__(self, in_channels: int, resolution: int, heads: dict[str, Sequence[str]],
                 base_width: int = 16, max_width: int = 128, feature_dim: int = 128):
        super().__init__()
        if resolution < 8 or 2 ** int(round(math.log2(resolution))) != resolution:
            raise ValueError(f"classifier resolution must be a power of two >= 8, got {resolution}")
        if not heads:
            raise ValueError("a classifier needs at least one head")
        self.in_channels = in_channels
        self.resolution = resolution
        self.head_classes = {name: [str(c) for c in classes] for name, classes in heads.items()}
        self.init_kwargs = dict(in_channels=in_channels, resolution=resolution, heads=self.head_classes,
                                base_width=base_width, max_width=max_width, feature_dim=feature_dim)
        layers: list[nn.Module] = []
        channels = in_channels
        width = base_width
        res = resolution
        while res > 4:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.LeakyReLU(0.2),
                       nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
            channels = width
            width = min(width * 2, max_width)
            res //= 2
        self.body = nn.Sequential(*layers)
        self.feature = nn.Linear(channels * 4 * 4, feature_dim)
        self.feature_dim = feature_dim
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, len(classes))
                                    for name, classes in self.head_classes.items()})

    def _check(self, img: torch.Tensor) -> None:
        if img.ndim != 4 or img.shape[1] != self.in_channels or img.shape[2] != self.resolution \
                or img.shape[3] != self.resolution:
            raise ValueError(f"classifier input must have shape [N, {self.in_channels}, {self.resolution}, "
                             f"{self.resolution}] in [-1, 1], got {tuple(img.shape)}")

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, feature_dim] (after the leaky ReLU of the feature layer)."""
        self._check(img)
        x = self.body(img.to(torch.float32)).flatten(1)
        return F.leaky_relu(self.feature(x), 0.2)

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.features(img)
        return {name: head(x) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, img: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Class indices per head for a batch of images (eval mode, batched)."""
        was_training = self.training
        self.eval()
        outs: dict[str, list[torch.Tensor]] = {name: [] for name in self.heads}
        for start in range(0, len(img), batch_size):
            logits = self(img[start:start + batch_size])
            for name, value in logits.items():
                outs[name].append(value.argmax(dim=1).cpu())
        self.train(was_training)
        return {name: torch.cat(values) for name, values in outs.items()}


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


# ---------------------------------------------------------------------------------------------
# Storage


def save_classifier(directory: str | os.PathLike, model: Classifier, card: dict | None = None) -> Path:
    """Write `model.safetensors` + `card.json` (atomically) into `directory`."""
    full = {**(card or {}), "architecture": "ganinv-small-cnn", "init_kwargs": model.init_kwargs,
            "heads": model.head_classes, "feature_dim": model.feature_dim}
    return save_module_folder(directory, model, full, CARD_FORMAT, CARD_VERSION)


def load_classifier(directory: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """A classifier saved by `save_classifier`, in eval mode; its card is `model.card`."""
    model, card = load_module_folder(directory, CARD_FORMAT, CARD_VERSION, "classifier",
                                     lambda card: Classifier(**card["init_kwargs"]))
    model.card = card
    return model.eval().to(device)


def train_classifier_on_dataset(dataset_dir: str | os.PathLike, heads: Sequence[str], out_dir: str | os.PathLike,
                                *, epochs: float = 2.0, batch_size: int = 64, learning_rate: float = 2e-3,
                                base_width: int = 16, max_width: int = 128, feature_dim: int = 128,
                                mirror: bool = False, seed: int = 0, device: str | torch.device = "cpu",
                                on_step: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Train on a dataset folder's train split, evaluate on its held-out split, save; returns the card."""
    from ..data.dataset import images_to_tensor, load_dataset, read_dataset_info

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
