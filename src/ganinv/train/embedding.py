"""Self-supervised training of the shape embedding (`ganinv.models.embedding.ShapeEmbedding`).

SimCLR (Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020): each image of a batch is augmented twice, both views are embedded and
projected, and the NT-Xent loss (a softmax cross-entropy over cosine similarities divided by a
temperature) asks each view to pick its partner among the 2N - 1 other views. Only the training split is
used.

The augmentations are chosen for what the metric must see. Views differ by a random resized crop
(scale 0.45-1, aspect 3/4-4/3, as one affine map with a small rotation and a horizontal flip), brightness,
contrast and saturation changes and, for colour images, occasional grayscale; they never differ by blur,
noise or scrambled parts, so the features cannot become invariant to sharpness or to the arrangement of
parts.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..data.dataset import images_to_tensor, load_dataset, read_dataset_info
from ..models.embedding import ShapeEmbedding, load_embedding, save_embedding


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand([n], generator=generator)


def augment_view(x: torch.Tensor, generator: torch.Generator, *, min_scale: float = 0.45,
                 max_rotation_degrees: float = 15.0, flip: bool = True, color: bool = True) -> torch.Tensor:
    """One random view per image of x (float [N, C, R, R] in [-1, 1]); the same generator state gives the
    same views. Geometry is a single per-image affine resampling (bilinear, border padding)."""
    n = len(x)
    area = _uniform(n, min_scale, 1.0, generator)
    log_aspect = _uniform(n, math.log(3 / 4), math.log(4 / 3), generator)
    aspect = torch.exp(log_aspect)
    scale_x = torch.sqrt(area * aspect).clamp(max=1.0)
    scale_y = torch.sqrt(area / aspect).clamp(max=1.0)
    # The crop's centre may move as far as the crop stays inside the image.
    shift_x = _uniform(n, -1.0, 1.0, generator) * (1 - scale_x)
    shift_y = _uniform(n, -1.0, 1.0, generator) * (1 - scale_y)
    angle = _uniform(n, -1.0, 1.0, generator) * math.radians(max_rotation_degrees)
    mirror = torch.where(torch.rand([n], generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([scale_x * cos * mirror, -scale_y * sin, shift_x], dim=1),
                         torch.stack([scale_x * sin * mirror, scale_y * cos, shift_y], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if color:
        out = (out + 1) / 2  # [0, 1] for the colour changes
        brightness = _uniform(n, 0.7, 1.3, generator).view(-1, 1, 1, 1).to(x)
        out = out * brightness
        contrast = _uniform(n, 0.7, 1.3, generator).view(-1, 1, 1, 1).to(x)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * contrast + mean
        if x.shape[1] == 3:
            gray = out.mean(dim=1, keepdim=True)
            saturation = _uniform(n, 0.6, 1.4, generator)
            saturation = torch.where(torch.rand([n], generator=generator) < 0.2, 0.0, saturation)
            out = (out - gray) * saturation.view(-1, 1, 1, 1).to(x) + gray
        out = out.clamp(0, 1) * 2 - 1
    return out


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss of two batches of unit-length projections [N, D] (row i of each is a pair)."""
    z = torch.cat([z1, z2])
    n = len(z1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def train_embedding(train_images: torch.Tensor, *, steps: int = 2000, batch_size: int = 128,
                    learning_rate: float = 2e-3, temperature: float = 0.2, base_width: int = 16,
                    max_width: int = 128, projection_dim: int = 64, seed: int = 0,
                    device: str | torch.device = "cpu",
                    on_step: Callable[[int, int, float], None] | None = None) -> tuple[ShapeEmbedding, list[float]]:
    """Train a `ShapeEmbedding` with SimCLR on float images [N, C, R, R] in [-1, 1].

    Returns (the network in eval mode, the loss of every step). `on_step(step, steps, loss)` is called
    after each step (progress bars)."""
    if train_images.ndim != 4:
        raise ValueError(f"train_images must be [N, C, R, R], got {tuple(train_images.shape)}")
    if len(train_images) < 2:
        raise ValueError("SimCLR needs at least two training images")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = ShapeEmbedding(train_images.shape[1], train_images.shape[2], base_width=base_width,
                           max_width=max_width, projection_dim=projection_dim).to(device)
    # channels_last runs these small convolutions about a quarter faster on a CPU; weights are unchanged.
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps,
                                                    pct_start=0.1)
    batch_size = min(batch_size, len(train_images))
    order = torch.randperm(len(train_images), generator=generator)
    position = 0
    losses: list[float] = []
    model.train()
    for step in range(steps):
        if position + batch_size > len(order):
            order = torch.randperm(len(train_images), generator=generator)
            position = 0
        x = train_images[order[position:position + batch_size]]
        position += batch_size
        view1 = augment_view(x, generator).to(device, memory_format=torch.channels_last)
        view2 = augment_view(x, generator).to(device, memory_format=torch.channels_last)
        loss = nt_xent_loss(model(view1), model(view2), temperature)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"embedding training loss is not finite at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, steps, losses[-1])
    return model.to(memory_format=torch.contiguous_format).eval(), losses


@torch.no_grad()
def view_retrieval_accuracy(model: ShapeEmbedding, images: torch.Tensor, seed: int = 1,
                            batch_size: int = 500) -> float:
    """Fraction of images whose augmented view's nearest feature (cosine) among the other images'
    views is its own second view: a held-out check that the features tell individual images apart."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    feats = []
    for _ in range(2):
        parts = [model.features(augment_view(images[s:s + batch_size], generator).to(device)).cpu()
                 for s in range(0, len(images), batch_size)]
        feats.append(F.normalize(torch.cat(parts), dim=1))
    return float(((feats[0] @ feats[1].T).argmax(dim=1) == torch.arange(len(images))).float().mean())


def train_embedding_on_dataset(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, *, steps: int = 2000,
                               batch_size: int = 128, learning_rate: float = 2e-3, temperature: float = 0.2,
                               base_width: int = 16, max_width: int = 128, seed: int = 0,
                               device: str | torch.device = "cpu",
                               on_step: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Train on a dataset folder's train split, check view retrieval on both splits, save; returns the card."""
    info = read_dataset_info(dataset_dir)
    train_arr, _ = load_dataset(dataset_dir, "train")
    held_arr, _ = load_dataset(dataset_dir, "heldout")
    train = images_to_tensor(train_arr)
    started = time.perf_counter()
    model, losses = train_embedding(train, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                                    temperature=temperature, base_width=base_width, max_width=max_width,
                                    seed=seed, device=device, on_step=on_step)
    seconds = time.perf_counter() - started
    count = min(len(held_arr), 2000)
    card = {
        "method": "SimCLR (Chen et al., ICML 2020) on the training split; features = pooled last convolution",
        "dataset": {"name": info.get("name"), "source_package": info.get("source_package"),
                    "source_version": info.get("source_version"), "license": info.get("license"),
                    "split_rule": info.get("split_rule"), "split_sha256": info.get("split_sha256"),
                    "counts": info.get("counts")},
        "view_retrieval_accuracy": {
            "heldout": view_retrieval_accuracy(model, images_to_tensor(held_arr[:count])),
            "train": view_retrieval_accuracy(model, images_to_tensor(train_arr[:count])),
            "num_images": count,
            "meaning": "fraction of images whose augmented view finds its own other view as nearest among "
                       "the views of all images (chance: 1 / num_images)"},
        "training": {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
                     "temperature": temperature, "seed": seed, "seconds": round(seconds, 1),
                     "threads": torch.get_num_threads(), "device": str(device),
                     "first_loss": losses[0], "last_loss": float(np.mean(losses[-50:]))},
    }
    save_embedding(out_dir, model, card)
    return load_embedding(out_dir).card


__all__ = ["augment_view", "nt_xent_loss", "train_embedding", "train_embedding_on_dataset",
           "view_retrieval_accuracy"]
