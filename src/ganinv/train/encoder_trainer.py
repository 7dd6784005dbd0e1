"""Training recipe for the inversion encoder (`ganinv.models.encoder.Encoder`).

Follows e4e (Tov et al., "Designing an Encoder for StyleGAN Image Manipulation", SIGGRAPH 2021) with
ReStyle's iterative training (Alaluf et al., "ReStyle", ICCV 2021), adapted to what exists offline:

- distortion: pixel L2, Laplacian-pyramid L1, a perceptual loss in the GAN discriminator's feature
  space, and LPIPS (VGG) only when its genuine weights are on the machine;
- similarity: 1 - cosine similarity of the model's own classifier features of target and
  reconstruction. e4e uses MoCo-v2 ResNet-50 (or ArcFace for faces) features here; those weights are not
  available offline, so the dataset classifier takes their place (recorded on the encoder card);
- editability: delta regularization (the L2 norm of each offset from the base latent) and a latent
  discriminator trained against w from the mapping network (non-saturating loss with R1 on real w, and
  a pool of past encoder outputs as in e4e);
- in-domain (off by default; `IN_DOMAIN_PRESET` turns it on): an image adversarial term on the
  reconstructions, the non-saturating loss softplus(-D(G(E(x)))) under the model's own discriminator,
  as in In-Domain GAN Inversion (Zhu et al., "In-Domain GAN Inversion for Real Image Editing", ECCV
  2020), together with the latent discriminator above at e4e's weight, so the codes both render images
  the GAN's D accepts and lie where the mapping network puts its w. IDInvert trains D alongside its
  encoder; here D stays frozen: the generator is frozen too, so the pretrained D already separates real
  images from this G's outputs, and a frozen D keeps the run's state (and resuming) unchanged;
- progressive unlocking of the offsets: base latent only for `progressive_start` steps, then one more
  offset every `progressive_every` steps;
- data: real training images plus generated pairs (w, G(w)) (with style mixing), for which the
  predicted ws is also pulled toward the true ws (a w-space loss);
- ReStyle: each step draws how many no-grad passes precede the trained pass (0 with probability
  `first_pass_probability`, else 1..iterations-1) and feeds their reconstruction as the second input.

Every random draw comes from one seeded `torch.Generator`, and its state, the data order, the optimizers
and the latent pool are in the rolling checkpoint, so a resumed run continues bit-exactly on the same
device. The latest encoder is also exported to `RUN/encoder/` at every snapshot.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.encoder import Encoder, load_encoder, restyle, save_encoder
from ..losses import build_reconstruction_loss, frozen_parameters
from ..utils import adam
from . import distributed
from .loop import CHECKPOINT_FILE, RunConfig, TrainingLoop, read_state, save_state
from ..metrics import WeightsUnavailable, find_lpips_weights
from ..data.dataset import images_to_tensor, load_dataset

CHECKPOINT_FORMAT = "ganinv-encoder-train-checkpoint"
SIMILARITY_NOTE = ("e4e's similarity loss uses MoCo-v2 (or ArcFace) features, whose weights are not available "
                   "offline; this encoder uses the feature space of the model's own dataset classifier instead")


@dataclass
class EncoderTrainConfig(RunConfig):
    """Every setting of an encoder training run (stored in the checkpoint and on the encoder card)."""

    settings_name = "encoder training settings"

    seed: int = 0
    batch_real: int = 8
    batch_generated: int = 8
    iterations: int = 2
    first_pass_probability: float = 0.5
    learning_rate: float = 5e-4
    latent_d_learning_rate: float = 2e-4
    mse_weight: float = 1.0
    laplacian_weight: float = 1.0
    dfeat_weight: float = 0.1
    lpips_weight: float | None = None  # None: 0.8 (e4e's weight) when genuine LPIPS weights exist, else 0
    similarity_weight: float = 0.1
    delta_weight: float = 2e-3
    adversarial_weight: float = 0.05
    image_adversarial_weight: float = 0.0  # IDInvert's image adversarial term under the frozen model D
    w_weight: float = 0.25
    r1_gamma: float = 10.0
    pool_size: int = 512
    style_mixing_prob: float = 0.5
    progressive_start: int = 300
    progressive_every: int = 100
    total_steps: int = 100_000
    snapshot_every: int = 250
    num_eval: int = 64
    architecture: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.batch_real < 0 or self.batch_generated < 0 or self.batch_real + self.batch_generated < 1:
            raise ValueError("batch_real + batch_generated must be >= 1 (and neither negative)")
        if self.iterations < 1:
            raise ValueError("iterations must be >= 1")
        if not 0 <= self.first_pass_probability <= 1:
            raise ValueError("first_pass_probability must be in [0, 1]")
        for name in ("learning_rate", "latent_d_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("mse_weight", "laplacian_weight", "dfeat_weight", "similarity_weight", "delta_weight",
                     "adversarial_weight", "image_adversarial_weight", "w_weight", "r1_gamma", "style_mixing_prob"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if self.lpips_weight is not None and not self.lpips_weight >= 0:
            raise ValueError("lpips_weight must be >= 0")
        if self.progressive_start < 0 or self.progressive_every < 1:
            raise ValueError("progressive_start must be >= 0 and progressive_every >= 1")


# `--preset in-domain`: both discriminators on. The latent weight is e4e's w-discriminator lambda (0.1);
# the image weight is In-Domain GAN Inversion's adversarial lambda (0.1).
IN_DOMAIN_PRESET = {"adversarial_weight": 0.1, "image_adversarial_weight": 0.1}
PRESETS: dict[str, dict[str, float]] = {"default": {}, "in-domain": IN_DOMAIN_PRESET}


class LatentDiscriminator(nn.Module):
    """e4e's latent discriminator: an MLP on single w vectors (normalized by the encoder's w_avg/w_scale)."""

    def __init__(self, w_dim: int, hidden: int = 256, num_layers: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        features = w_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(features, hidden), nn.LeakyReLU(0.2)]
            features = hidden
        layers.append(nn.Linear(features, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net(w).squeeze(-1)


def _resolve_lpips_weight(config: EncoderTrainConfig, lpips_dir) -> tuple[float, str]:
    if config.lpips_weight is not None:
        return float(config.lpips_weight), "as configured"
    try:
        find_lpips_weights("vgg", lpips_dir)
    except WeightsUnavailable:
        return 0.0, "off: genuine LPIPS weights are not available on this machine"
    return 0.8, "e4e's weight 0.8: genuine VGG LPIPS weights were found"


class EncoderTrainer:
    """One training run's state: encoder, latent discriminator, optimizers, RNG, data order, pool.

    Args:
        G, D: the (frozen) generator the encoder inverts and its discriminator (D may be None when
            dfeat_weight is 0).
        classifier: the model's classifier (`features(img)`), or None (similarity loss off).
        train_images: uint8 [N, H, W, C] real training images (may be empty when batch_real is 0).
        eval_images: float [M, C, H, W] held-out images for the periodic PSNR check (may be None).
        init_encoder: start from these weights (e.g. to adapt an encoder to a newer generator snapshot).
    """

    def __init__(self, config: EncoderTrainConfig, G: nn.Module, D: nn.Module | None = None,
                 classifier: nn.Module | None = None, train_images: np.ndarray | None = None,
                 eval_images: torch.Tensor | None = None, device: str | torch.device = "cpu",
                 init_encoder: Encoder | None = None, lpips_dir: str | None = None):
        config.validate()
        self.config = config
        self.device = torch.device(device)
        if G.c_dim:
            raise ValueError("the encoder trainer supports unconditional generators only (this one has "
                             f"c_dim={G.c_dim})")
        self.G = G.to(self.device).eval().requires_grad_(False)
        self.D = None if D is None else D.to(self.device).eval().requires_grad_(False)
        self.notes: list[str] = [SIMILARITY_NOTE]
        if classifier is not None:
            expected = (G.img_channels, G.img_resolution)
            got = (getattr(classifier, "in_channels", None), getattr(classifier, "resolution", None))
            if got != expected:
                raise ValueError(f"the classifier takes images with (channels, resolution)={got}, the generator "
                                 f"makes {expected}")
            classifier = classifier.to(self.device).eval().requires_grad_(False)
        elif config.similarity_weight > 0:
            self.notes.append("no classifier was given: the similarity loss is off")
        self.classifier = classifier
        if train_images is None:
            train_images = np.zeros([0, G.img_resolution, G.img_resolution, G.img_channels], dtype=np.uint8)
        if train_images.ndim == 3:
            train_images = train_images[..., None]
        if config.batch_real > 0:
            if len(train_images) < config.batch_real:
                raise ValueError(f"need at least batch_real={config.batch_real} real images, got {len(train_images)}")
            if tuple(train_images.shape[1:]) != (G.img_resolution, G.img_resolution, G.img_channels):
                raise ValueError(f"training images are {tuple(train_images.shape[1:])} (H, W, C), the generator makes "
                                 f"{(G.img_resolution, G.img_resolution, G.img_channels)}")
        self.train_images = train_images
        self.eval_images = None if eval_images is None else eval_images.to(self.device)

        torch.manual_seed(config.seed)
        # Under torchrun every process draws its own batches (ganinv.train.distributed); process 0 draws
        # what a single-process run would.
        self.generator = torch.Generator().manual_seed(distributed.process_seed(config.seed))
        if init_encoder is not None:
            self.encoder = Encoder(**init_encoder.init_kwargs).to(self.device)
            self.encoder.load_state_dict(init_encoder.state_dict())
            fresh = Encoder.for_generator(self.G, **_architecture(init_encoder.init_kwargs))
            # Keep the learned weights but take the new generator's w_avg, image and spread.
            for name in ("w_avg", "avg_image", "w_scale"):
                getattr(self.encoder, name).copy_(getattr(fresh, name))
            self.notes.append(_init_note(getattr(init_encoder, "card", None) or {}))
        else:
            self.encoder = Encoder.for_generator(self.G, **config.architecture)
        self.encoder.train().requires_grad_(True)
        self.latent_d = LatentDiscriminator(G.w_dim).to(self.device)
        distributed.broadcast_module(self.encoder)
        distributed.broadcast_module(self.latent_d)
        self.optimizer = adam(self.encoder.parameters(), lr=config.learning_rate, betas=(0.9, 0.99))
        self.d_optimizer = adam(self.latent_d.parameters(), lr=config.latent_d_learning_rate,
                                betas=(0.9, 0.99))
        self.lpips_weight, self.lpips_note = _resolve_lpips_weight(config, lpips_dir)
        weights = {"mse": config.mse_weight, "laplacian": config.laplacian_weight, "lpips": self.lpips_weight,
                   "discriminator_features": config.dfeat_weight if self.D is not None else 0.0}
        if config.dfeat_weight > 0 and self.D is None:
            self.notes.append("no discriminator: the discriminator-feature loss is off")
        if config.image_adversarial_weight > 0 and self.D is None:
            self.notes.append("no discriminator: the image adversarial loss is off")
        self.loss_fn = build_reconstruction_loss(weights, D=self.D, lpips_dir=lpips_dir).to(self.device)
        self.step_index = 0
        self.training_seconds = 0.0
        self.images_seen = 0
        self.order = torch.randperm(len(train_images), generator=self.generator) if len(train_images) else \
            torch.zeros([0], dtype=torch.long)
        self.position = 0
        self.pool = torch.zeros([config.pool_size, G.w_dim], device=self.device)
        self.pool_count = 0
        self.last_eval: dict[str, Any] = {}

    # ------------------------------------------------------------------ batches

    def _real_batch(self) -> torch.Tensor:
        count = self.config.batch_real
        if self.position + count > len(self.order):
            self.order = torch.randperm(len(self.train_images), generator=self.generator)
            self.position = 0
        index = self.order[self.position:self.position + count].numpy()
        self.position += count
        batch = torch.from_numpy(self.train_images[np.sort(index)]).permute(0, 3, 1, 2).float() / 127.5 - 1
        return batch.to(self.device)

    @torch.no_grad()
    def _prior_ws(self, count: int, mixing: bool) -> torch.Tensor:
        z = torch.randn([count, self.G.z_dim], generator=self.generator).to(self.device)
        ws = self.G.mapping(z, None, update_w_avg=False)
        if mixing and self.config.style_mixing_prob > 0 and self.G.num_ws > 1:
            z2 = torch.randn([count, self.G.z_dim], generator=self.generator).to(self.device)
            ws2 = self.G.mapping(z2, None, update_w_avg=False)
            mix = torch.rand([count], generator=self.generator) < self.config.style_mixing_prob
            cutoff = torch.randint(1, self.G.num_ws, [count], generator=self.generator)
            layer = torch.arange(self.G.num_ws).reshape(1, -1)
            take = (mix.reshape(-1, 1) & (layer >= cutoff.reshape(-1, 1))).to(self.device)
            ws = torch.where(take.unsqueeze(-1), ws2, ws)
        return ws

    def _normalized(self, w: torch.Tensor) -> torch.Tensor:
        return (w - self.encoder.w_avg) / self.encoder.w_scale

    def active_offsets_at(self, step: int) -> int:
        c = self.config
        if step < c.progressive_start:
            return 0
        return min(self.G.num_ws - 1, (step - c.progressive_start) // c.progressive_every + 1)

    # ------------------------------------------------------------------ one step

    def step(self) -> dict[str, float]:
        c = self.config
        encoder, G = self.encoder, self.G
        encoder.set_active_offsets(self.active_offsets_at(self.step_index))
        parts = []
        if c.batch_real:
            parts.append(self._real_batch())
        true_ws = None
        if c.batch_generated:
            true_ws = self._prior_ws(c.batch_generated, mixing=True)
            with torch.no_grad():
                parts.append(G.synthesis(true_ws, noise_mode="const").clamp(-1, 1))
        target = torch.cat(parts)
        n = target.shape[0]

        # ReStyle: how many (no-grad) passes come before the trained one.
        passes_before = 0
        if c.iterations > 1 and float(torch.rand([], generator=self.generator)) >= c.first_pass_probability:
            passes_before = int(torch.randint(1, c.iterations, [], generator=self.generator))
        with torch.no_grad():
            if passes_before:
                start_ws, _ = restyle(G, encoder, target, passes_before)
                current = G.synthesis(start_ws, noise_mode="const")
            else:
                start_ws = encoder.start_ws(n)
                current = encoder.avg_image.expand(n, -1, -1, -1)
        ws = start_ws + encoder(target, current)
        reconstruction = G.synthesis(ws, noise_mode="const")
        distortion, terms = self.loss_fn(reconstruction, target)
        total = distortion
        stats: dict[str, float] = {k: float(v) for k, v in terms.items()}
        if self.classifier is not None and c.similarity_weight > 0:
            with torch.no_grad():
                target_features = self.classifier.features(target)
            similarity = (1 - F.cosine_similarity(self.classifier.features(reconstruction), target_features,
                                                  dim=1)).mean()
            total = total + c.similarity_weight * similarity
            stats["similarity"] = float(similarity.detach())
        offsets = ws[:, 1:] - ws[:, :1]
        delta = (offsets.norm(dim=2) / (encoder.w_scale * math.sqrt(G.w_dim))).sum(dim=1).mean()
        if c.delta_weight > 0:
            total = total + c.delta_weight * delta
        stats["delta"] = float(delta.detach())
        if true_ws is not None and c.w_weight > 0:
            w_loss = (ws[-c.batch_generated:] - true_ws).square().mean() / encoder.w_scale ** 2
            total = total + c.w_weight * w_loss
            stats["w_loss"] = float(w_loss.detach())
        if self.D is not None and c.image_adversarial_weight > 0:
            # Non-saturating generator loss of the frozen D on the reconstructions (IDInvert's L_adv for E).
            image_adversarial = F.softplus(-self.D(reconstruction)).mean()
            total = total + c.image_adversarial_weight * image_adversarial
            stats["image_adversarial"] = float(image_adversarial.detach())
        fake_w = ws.reshape(-1, G.w_dim)
        if c.adversarial_weight > 0:
            with frozen_parameters(self.latent_d):
                adversarial = F.softplus(-self.latent_d(self._normalized(fake_w))).mean()
            total = total + c.adversarial_weight * adversarial
            stats["adversarial"] = float(adversarial.detach())
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite encoder loss at step {self.step_index}; the last checkpoint is kept")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        distributed.average_gradients(self.encoder)
        self.optimizer.step()
        stats["loss"] = float(total.detach())
        stats["psnr"] = float((10 * torch.log10(4 / (reconstruction.detach().clamp(-1, 1) - target)
                                                .square().flatten(1).mean(1).clamp_min(1e-12))).mean())

        if c.adversarial_weight > 0:
            stats.update(self._latent_d_step(fake_w.detach()))
        self.step_index += 1
        self.images_seen += n
        stats["passes_before"] = float(passes_before)
        stats["active_offsets"] = float(encoder.active_offsets)
        return stats

    def _latent_d_step(self, fake_w: torch.Tensor) -> dict[str, float]:
        c = self.config
        count = fake_w.shape[0]
        fake = fake_w
        if self.pool_count > 0:
            # Half of the fakes from the pool of earlier outputs (e4e's latent pool).
            half = count // 2
            pick = torch.randint(0, min(self.pool_count, c.pool_size), [half], generator=self.generator)
            fake = torch.cat([fake_w[:count - half], self.pool[pick.to(self.device)]])
        slots = (torch.arange(count) + self.pool_count) % c.pool_size
        self.pool[slots.to(self.device)] = fake_w
        self.pool_count += count
        real = self._prior_ws(max(1, count // self.G.num_ws), mixing=False)[:, 0]
        real = self._normalized(real).requires_grad_(c.r1_gamma > 0)
        real_logits = self.latent_d(real)
        fake_logits = self.latent_d(self._normalized(fake))
        loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        r1 = torch.zeros([], device=self.device)
        if c.r1_gamma > 0:
            grad, = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = grad.square().sum(dim=1).mean()
            loss = loss + c.r1_gamma / 2 * r1
        self.d_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.latent_d)
        self.d_optimizer.step()
        return {"latent_d": float(loss.detach()), "latent_r1": float(r1.detach())}

    # ------------------------------------------------------------------ evaluation and export

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """PSNR on the held-out images after each ReStyle pass (median over images)."""
        if self.eval_images is None or len(self.eval_images) == 0:
            return {}
        was_training = self.encoder.training
        self.encoder.eval()
        target = self.eval_images
        ws, images = restyle(self.G, self.encoder, target, self.config.iterations + 1, keep_images=True)
        images = images[1:] + [self.G.synthesis(ws, noise_mode="const")]
        psnr = [float((10 * torch.log10(4 / (img.clamp(-1, 1) - target).square().flatten(1).mean(1)
                                         .clamp_min(1e-12))).median()) for img in images]
        self.encoder.train(was_training)
        self.last_eval = {"heldout_psnr_median_by_pass": [round(p, 3) for p in psnr], "num_images": len(target),
                          "step": self.step_index}
        return self.last_eval

    def card(self, extra: dict | None = None) -> dict:
        c = self.config
        card = {
            "training": {"steps": self.step_index, "images_seen": self.images_seen,
                         "hours": round(self.training_seconds / 3600, 4), "device": str(self.device),
                         "threads": torch.get_num_threads(), "config": c.to_dict()},
            "losses": {"mse": c.mse_weight, "laplacian": c.laplacian_weight,
                       "discriminator_features": c.dfeat_weight if self.D is not None else 0.0,
                       "lpips_vgg": self.lpips_weight, "lpips_note": self.lpips_note,
                       "classifier_similarity": c.similarity_weight if self.classifier is not None else 0.0,
                       "delta_regularization": c.delta_weight, "latent_adversarial": c.adversarial_weight,
                       "image_adversarial": c.image_adversarial_weight if self.D is not None else 0.0,
                       "image_discriminator": "the model's own D, frozen",
                       "w_space_generated_pairs": c.w_weight, "latent_r1_gamma": c.r1_gamma},
            "similarity_loss_note": SIMILARITY_NOTE,
            "recommended_iterations": c.iterations,
            "heldout_eval": self.last_eval,
            "notes": self.notes,
        }
        card.update(extra or {})
        return card

    def export(self, directory: str | Path, extra_card: dict | None = None) -> Path:
        return save_encoder(directory, self.encoder, self.card(extra_card))

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": json.dumps(self.config.to_dict()),
            "encoder_init_kwargs": json.dumps(self.encoder.init_kwargs),
            "encoder": self.encoder.state_dict(),
            "latent_d": self.latent_d.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "rng": self.generator.get_state(),
            "order": self.order.clone(),
            "position": self.position,
            "pool": self.pool.detach().cpu().clone(),
            "pool_count": self.pool_count,
            "step_index": self.step_index,
            "images_seen": self.images_seen,
            "training_seconds": self.training_seconds,
            "last_eval": json.dumps(self.last_eval),
            "notes": json.dumps(self.notes),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a ganinv encoder training checkpoint")
        saved = EncoderTrainConfig.from_dict(json.loads(state["config"]))
        for name in ("architecture", "batch_real", "batch_generated", "iterations", "pool_size"):
            if getattr(saved, name) != getattr(self.config, name):
                raise ValueError(f"checkpoint was trained with {name}={getattr(saved, name)!r}, this run asks "
                                 f"for {getattr(self.config, name)!r}; use the same setting or a new --outdir")
        if json.loads(state["encoder_init_kwargs"]) != self.encoder.init_kwargs:
            raise ValueError("checkpoint's encoder architecture differs from this run's")
        self.encoder.load_state_dict(state["encoder"])
        self.latent_d.load_state_dict(state["latent_d"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.generator.set_state(state["rng"])
        if distributed.rank() > 0:  # the checkpoint holds process 0's random state
            self.generator.manual_seed(distributed.process_seed(self.config.seed) + int(state["step_index"]))
        self.order = state["order"].clone()
        self.position = int(state["position"])
        self.pool = state["pool"].to(self.device).clone()
        self.pool_count = int(state["pool_count"])
        self.step_index = int(state["step_index"])
        self.images_seen = int(state["images_seen"])
        self.training_seconds = float(state["training_seconds"])
        self.last_eval = json.loads(state["last_eval"])
        self.notes = json.loads(state["notes"])

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the one rolling resume checkpoint atomically."""
        return save_state(self.state_dict(), path)

    def load_checkpoint(self, path: str | Path) -> None:
        self.load_state_dict(read_state(path, self.device, "encoder training checkpoint"))


def _init_note(card: dict) -> str:
    """Provenance of an --init-encoder start: its earlier training and generator (the card's step and
    hour counts cover this run only)."""
    training = card.get("training") or {}
    generator = card.get("generator") or {}
    earlier = []
    if "steps" in training:
        earlier.append(f"{training['steps']} steps")
    if "hours" in training:
        earlier.append(f"{training['hours']} h")
    note = "initialized from an existing encoder"
    if earlier:
        note += " trained " + " / ".join(earlier)
    if generator.get("name") or generator.get("sha256"):
        note += f" for generator {generator.get('name', '?')} (sha256 {str(generator.get('sha256', '?'))[:12]})"
    return note + "; the training steps and hours above count this run only"


def _architecture(init_kwargs: dict) -> dict:
    return {k: v for k, v in init_kwargs.items() if k not in ("img_resolution", "img_channels", "num_ws", "w_dim")}


def train_encoder(trainer: EncoderTrainer, run_dir: str | Path, *, resume: bool = True, progress: bool = True,
                  max_steps: int | None = None, max_seconds: float | None = None, handle_signals: bool = False,
                  card_extra: dict | None = None, log: Callable[[str], None] | None = None) -> EncoderTrainer:
    """Run (or resume) `trainer` in `run_dir` until config.total_steps, `max_steps` more steps,
    `max_seconds` or a signal. At every snapshot: `checkpoint.pt` (rolling, atomic), `encoder/` (the
    exportable encoder with its card) and a line of `stats.jsonl` (see `ganinv.train.loop`)."""
    run_dir = Path(run_dir)
    config = trainer.config

    def postfix(stats: dict, steps_per_second: float) -> dict:
        return dict(loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}", offsets=int(stats["active_offsets"]))

    def stats_head(steps_per_second: float) -> dict:
        return {"step": trainer.step_index, "images_seen": trainer.images_seen,
                "hours": round(trainer.training_seconds / 3600, 4)}

    def export(stats: dict, evaluation: dict) -> None:
        trainer.export(run_dir / "encoder", card_extra)
        if log:
            log(f"step {trainer.step_index}: loss {stats.get('loss', float('nan')):.4f}, train psnr "
                f"{stats.get('psnr', float('nan')):.2f}, held-out psnr by pass "
                f"{evaluation.get('heldout_psnr_median_by_pass')}")

    loop = TrainingLoop(trainer, run_dir, count=lambda: trainer.step_index, total=config.total_steps,
                        snapshot_every=config.snapshot_every, unit="step", progress=progress,
                        handle_signals=handle_signals, postfix=postfix, stats_head=stats_head,
                        evaluate=trainer.evaluate, artifacts=export)
    if resume and loop.resume() and log:
        log(f"resumed from {loop.checkpoint} at step {trainer.step_index}")
    loop.write_config(config.to_dict())
    loop.run(max_steps=max_steps, max_seconds=max_seconds)
    return trainer


def trainer_for_model(config: EncoderTrainConfig, model, dataset_dir: str | Path | None, *,
                      classifier=None, device: str | torch.device = "cpu", init_encoder: str | Path | None = None,
                      lpips_dir: str | None = None) -> EncoderTrainer:
    """An `EncoderTrainer` for a model bundle (`ganinv.load_model`) and a dataset folder (train split for
    training, the first `num_eval` held-out images for the periodic check)."""

    train_images = None
    eval_images = None
    if dataset_dir is not None:
        train_images, _ = load_dataset(dataset_dir, "train")
        try:
            held, _ = load_dataset(dataset_dir, "heldout")
        except ValueError:
            held = np.zeros([0])
        if len(held) and config.num_eval > 0:
            eval_images = images_to_tensor(held[:config.num_eval])
    elif config.batch_real > 0:
        raise ValueError("real-image training needs a dataset folder (--data), or set batch_real to 0")
    if eval_images is None and model.heldout is not None and config.num_eval > 0:
        eval_images = model.heldout[:config.num_eval]
    classifier = classifier if classifier is not None else model.classifier
    initial = load_encoder(init_encoder) if init_encoder is not None else None
    return EncoderTrainer(config, model.G, model.D, classifier=classifier, train_images=train_images,
                          eval_images=eval_images, device=device, init_encoder=initial, lpips_dir=lpips_dir)


__all__ = ["CHECKPOINT_FILE", "EncoderTrainConfig", "EncoderTrainer", "IN_DOMAIN_PRESET", "LatentDiscriminator",
           "PRESETS", "SIMILARITY_NOTE",
           "train_encoder", "trainer_for_model"]
