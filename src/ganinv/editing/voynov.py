"""Unsupervised discovery of interpretable directions by a direction matrix and a reconstructor trained
together (Voynov & Babenko, "Unsupervised Discovery of Interpretable Directions in the GAN Latent Space",
ICML 2020).

A matrix A of K unit directions in W and a reconstructor R (a small CNN) are trained jointly: a prior
latent w is shifted along a random direction k by a random amount eps, and R sees the image pair
(G(w), G(w + eps A_k)) and must say which direction moved it (cross-entropy over K) and by how much
(L1 on eps). Directions that R can tell apart are those with distinct, recognizable effects on the
image, which is what makes them interpretable. The generator stays frozen; gradients reach A through it.
As in the paper's StyleGAN experiments the shift is applied in W, to every ws index of `layers`. The
directions are returned in the order of the reconstructor's held-out accuracy on each.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.prior import sample_prior
from ..utils import adam, parse_layers
from .direction import Direction, model_identity, prior_std


class Reconstructor(nn.Module):
    """(image, shifted image) -> (logits over K directions, predicted shift)."""

    def __init__(self, channels: int, num_directions: int, width: int = 32):
        super().__init__()
        layers, c = [], 2 * channels
        for out in (width, 2 * width, 4 * width, 4 * width):
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            c = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.direction = nn.Linear(c, num_directions)
        self.shift = nn.Linear(c, 1)

    def forward(self, image: torch.Tensor, shifted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(torch.cat([image, shifted], dim=1))
        return self.direction(h), self.shift(h).squeeze(1)


def _render(G, ws: torch.Tensor) -> torch.Tensor:
    image = G.synthesis(ws, noise_mode="const")
    if image.shape[-1] > 64:  # the reconstructor needs shapes, not detail
        image = F.interpolate(image, size=(64, 64), mode="area")
    return image


def train_directions(G, *, num: int = 16, layers="all", steps: int = 800, batch_size: int = 24,
                     shift_scale: float = 3.0, min_shift: float = 0.5, learning_rate: float = 1e-3,
                     shift_weight: float = 0.25, seed: int = 0, callback=None
                     ) -> tuple[torch.Tensor, Reconstructor, list[dict]]:
    """Train A [num, w_dim] (unit rows, in units of the prior std of w) and the reconstructor.

    Shifts eps are drawn from +/-[min_shift, shift_scale] in units of the mean prior std of w, so the
    same settings suit any generator. Returns (A, reconstructor, history)."""
    device = next(G.parameters()).device
    layer_list = parse_layers(layers, G.num_ws)
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    G = G.eval().requires_grad_(False)
    with torch.no_grad():
        prior = sample_prior(G, 4096, seed=seed)[:, 0]
    w_std = float(prior.std(0).mean())
    A = nn.Parameter(torch.randn(num, G.w_dim, generator=gen).to(device))
    R = Reconstructor(G.img_channels, num).to(device)
    optimizer = adam([A, *R.parameters()], lr=learning_rate, betas=(0.9, 0.999))
    mask = torch.zeros(G.num_ws, 1, device=device)
    mask[layer_list] = 1
    history = []
    for step in range(steps):
        pick = torch.randint(0, len(prior), [batch_size], generator=gen)
        w = prior[pick].to(device)
        k = torch.randint(0, num, [batch_size], generator=gen).to(device)
        magnitude = torch.rand(batch_size, generator=gen) * (shift_scale - min_shift) + min_shift
        sign = torch.where(torch.rand(batch_size, generator=gen) < 0.5, -1.0, 1.0)
        eps = (magnitude * sign).to(device)
        directions = F.normalize(A, dim=1)[k]
        ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)
        shifted = ws + mask * (eps * w_std).reshape(-1, 1, 1) * directions.unsqueeze(1)
        with torch.no_grad():
            base = _render(G, ws)
        logits, eps_hat = R(base, _render(G, shifted))
        classification = F.cross_entropy(logits, k)
        regression = (eps_hat - eps).abs().mean()
        loss = classification + shift_weight * regression
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        record = {"step": step, "loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == k).float().mean()),
                  "shift_error": float(regression.detach())}
        history.append(record)
        if callback is not None:
            callback(record)
    return F.normalize(A.detach(), dim=1), R.eval(), history


@torch.no_grad()
def direction_accuracy(G, A: torch.Tensor, R: Reconstructor, layers, *, num_samples: int = 256,
                       shift_scale: float = 3.0, min_shift: float = 0.5, seed: int = 1) -> torch.Tensor:
    """The reconstructor's accuracy per direction on fresh prior samples and shifts: [K]."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    prior = sample_prior(G, num_samples, seed=seed + 7)[:, 0].to(device)
    w_std = float(sample_prior(G, 4096, seed=seed)[:, 0].std(0).mean())
    layer_list = parse_layers(layers, G.num_ws)
    mask = torch.zeros(G.num_ws, 1, device=device)
    mask[layer_list] = 1
    correct = torch.zeros(len(A))
    counts = torch.zeros(len(A))
    for first in range(0, num_samples, 64):
        w = prior[first:first + 64]
        n = len(w)
        k = torch.randint(0, len(A), [n], generator=gen)
        eps = (torch.rand(n, generator=gen) * (shift_scale - min_shift) + min_shift) * torch.where(
            torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)
        shifted = ws + mask * (eps.to(device) * w_std).reshape(-1, 1, 1) * A[k.to(device)].unsqueeze(1)
        logits, _ = R(_render(G, ws), _render(G, shifted))
        hit = (logits.argmax(1).cpu() == k).float()
        correct.index_add_(0, k, hit)
        counts.index_add_(0, k, torch.ones(n))
    return correct / counts.clamp_min(1)


def find_voynov_directions(model, *, layers: str | list[int] = "all", num: int = 16, steps: int = 800,
                           batch_size: int = 24, shift_scale: float = 3.0, learning_rate: float = 1e-3,
                           num_std_samples: int = 10_000, seed: int = 0, name: str | None = None,
                           callback=None) -> Direction:
    """`num` directions found by the Voynov-Babenko objective on the ws indices `layers`, sorted by the
    reconstructor's held-out accuracy on each (the score). Strength units: prior std along each."""
    G = getattr(model, "G", model)
    layer_list = parse_layers(layers, G.num_ws)
    if num < 2:
        raise ValueError("num must be at least 2 (the reconstructor tells directions apart)")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    A, R, history = train_directions(G, num=num, layers=layer_list, steps=steps, batch_size=batch_size,
                                     shift_scale=shift_scale, learning_rate=learning_rate, seed=seed,
                                     callback=callback)
    accuracy = direction_accuracy(G, A, R, layer_list, shift_scale=shift_scale, seed=seed + 1)
    order = torch.argsort(accuracy, descending=True)
    vectors = A[order].cpu().float()
    std = prior_std(G, "w", vectors, layer_list, num_samples=num_std_samples, seed=seed)
    layer_text = layers if isinstance(layers, str) else ",".join(map(str, layer_list))
    tail = history[-50:]
    return Direction(
        name=name or f"voynov_{layer_text}", method="voynov", space="w", vectors=vectors, layers=layer_list,
        std=std, num_ws=G.num_ws, w_dim=G.w_dim, scores=[float(accuracy[i]) for i in order],
        score_name="reconstructor accuracy (held-out)", labels=[f"voynov {layer_text} #{i}" for i in range(num)],
        settings={"layers": layer_text, "num": num, "steps": steps, "batch_size": batch_size,
                  "shift_scale": shift_scale, "learning_rate": learning_rate, "seed": seed,
                  "num_std_samples": num_std_samples,
                  "final_train_accuracy": sum(h["accuracy"] for h in tail) / len(tail)},
        model=model_identity(model))
