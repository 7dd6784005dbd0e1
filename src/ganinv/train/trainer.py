"""StyleGAN2 training loop for ganinv's own (small) generators.

Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020): non-saturating
logistic loss, lazy R1 regularization (Mescheder et al. 2018) every `r1_interval` steps, optional
lazy path-length regularization, style-mixing regularization, and an exponential moving average of
the generator's weights (G_ema, with the ramp-up of Karras et al., "Training Generative Adversarial
Networks with Limited Data", NeurIPS 2020). Small data sets use DiffAugment (Zhao et al. 2020, see
`augment.py`) on both real and generated images.

One choice differs from the official loop to save CPU time: the fakes of a step are generated once.
The discriminator step reads them detached; the generator step then runs the updated discriminator
on the same (re-augmented) fakes and back-propagates through the generator graph kept from the
forward pass. The generator's weights do not change between the two uses, so this is the same
gradient as a fresh forward pass with those latents.

Everything random comes from one `torch.Generator` (data order, latents, style mixing, augmentation)
plus torch's global generator (per-layer noise); both states are in the checkpoint, so a resumed run
continues bit-exactly on the same device and thread count.
"""
from __future__ import annotations

import copy
import json
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import torch
import torch.nn.functional as F

from ..data.io import save_grid
from ..errors import GanInvError
from ..models.checkpoints import load_native, save_native
from ..models.layers import fir_as_convolution
from ..models.registry import resolve_path
from ..models.stylegan2 import Discriminator, DiscriminatorEpilogue, Generator
from ..utils import adam
from . import distributed
from .augment import diff_augment, parse_policy
from .loop import CHECKPOINT_FILE, RunConfig, TrainingLoop, read_state, save_state
from ..data.dataset import load_dataset

CHECKPOINT_FORMAT = "ganinv-train-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class TrainConfig(RunConfig):
    """Every setting of a training run; stored in the checkpoint and on the exported card."""

    # networks
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 2
    channel_base: int = 4096
    channel_max: int = 128
    d_channel_base: int | None = None  # None: same as the generator's
    d_channel_max: int | None = None
    mbstd_group_size: int = 4
    resolution: int | None = None  # train at this power of two below the data's (box-filtered); None: the data's
    # optimisation
    batch_size: int = 32
    g_learning_rate: float = 0.0025
    d_learning_rate: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float | None = None  # None: 0.0002 * resolution^2 / batch (the official 'auto' rule)
    r1_interval: int = 16
    pl_weight: float = 0.0  # path-length regularization off by default (small data)
    pl_interval: int = 4
    pl_decay: float = 0.01
    style_mixing_prob: float = 0.9
    ema_kimg: float | None = None  # None: batch * 10 / 32 (official 'auto')
    ema_rampup: float | None = 0.05
    augment: str = "color,translation,cutout"
    mirror: bool = False
    label_key: str | None = None  # conditional training on this record field
    init: str | None = None  # exported snapshot that G, G_ema and D start from (None: random weights)
    grow: bool = False  # `init` may have a lower resolution: the layers both share start from it, the rest fresh
    widen: bool = False  # `init` may have fewer channels: widened so that it draws the same images (`widen_from`)
    mixed_precision: bool = True  # fp16 in the 4 highest-resolution blocks, CUDA only
    # schedule
    total_kimg: float = 100_000.0
    snapshot_kimg: float = 10.0
    snapshot_networks: bool = False  # also keep G_ema and D of every snapshot in RUN/snapshots/kimgNNNNNN/
    seed: int = 0
    grid_size: int = 64


# The settings that fix the networks' shapes: a snapshot given to `init` must have been trained with them.
NETWORK_SETTINGS = ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "d_channel_base",
                    "d_channel_max", "mbstd_group_size", "label_key")
# Settings and network arguments that a widened run (`widen`) may change: the channel counts.
_WIDTH_SETTINGS = ("channel_base", "channel_max", "d_channel_base", "d_channel_max")
_WIDTH_KWARGS = ("channel_base", "channel_max", "channels")
# Network arguments that a grown run (`grow`) changes: its resolution and the channels of its new blocks.
_RESOLUTION_KWARGS = ("img_resolution", "channels")
# Network arguments that change how a network runs, not its weights (fp16 blocks on CUDA only).
_PRECISION_KWARGS = ("num_fp16_res", "conv_clamp")


def read_snapshot(path: str | Path) -> tuple[Generator, Discriminator, dict]:
    """(G, D, card) of an exported model: its folder, its model.safetensors, or an embedded model's name."""
    text = str(path)
    if Path(text).is_file() and Path(text).suffix == ".safetensors":
        text = str(Path(text).parent)  # the card lies beside the weights
    folder = resolve_path(text)
    G, D, card, _ = load_native(folder)
    if D is None:
        raise GanInvError(f"{text}: this model has no discriminator; starting a training run needs G and D")
    return G, D, card


def _architecture(kwargs: dict, prefix: str = "") -> dict:
    """Flattened network arguments ('synthesis_kwargs.channels' ...), without the precision ones."""
    flat = {}
    for key, value in kwargs.items():
        if key in _PRECISION_KWARGS:
            continue
        if isinstance(value, dict) and key != "channels":
            flat.update(_architecture(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_snapshot_matches(config: "TrainConfig", card: dict, networks: dict, snapshot_networks: dict,
                           source: str) -> None:
    """Raise a one-line GanInvError naming the first network setting in which a snapshot differs from
    the run: the card's training settings first, then each network's architecture arguments. With
    `config.grow` the snapshot may have a lower resolution (and fewer blocks); the channels of the blocks
    both have must agree."""
    settings = card.get("training_settings") or {}
    if config.widen and config.grow:
        raise GanInvError(f"{source}: --widen and --grow cannot be combined (widen, then grow in a second run)")
    if config.widen and config.label_key is not None:
        raise GanInvError(f"{source}: --widen widens unconditional networks only")
    for name in NETWORK_SETTINGS:
        if config.widen and name in _WIDTH_SETTINGS:
            continue
        if name in settings and settings[name] != getattr(config, name):
            raise GanInvError(f"{source}: the snapshot was trained with {name}={settings[name]!r}, this run asks "
                              f"for {getattr(config, name)!r}")
    for net, mine in networks.items():
        mine, theirs = _architecture(mine), _architecture(snapshot_networks[net])
        if config.widen:
            _check_wider(mine, theirs, net, source)
        ours_px, theirs_px = int(mine["img_resolution"]), int(theirs["img_resolution"])
        if ours_px != theirs_px:
            if not config.grow:
                raise GanInvError(f"{source}: the snapshot's {net} has img_resolution={theirs_px}, this run's {net} "
                                  f"would have {ours_px} (--grow starts a higher resolution from a lower one)")
            if theirs_px > ours_px:
                raise GanInvError(f"{source}: the snapshot is {theirs_px} px, above this run's {ours_px} px; "
                                  "--grow only adds resolution")
            for key in [k for k in mine if k.split(".")[-1] in _RESOLUTION_KWARGS]:
                if key.endswith("channels"):  # the blocks both have must have the same widths
                    shared = {px: c for px, c in mine[key].items() if px in theirs.get(key, {})}
                    if shared != theirs.get(key):
                        raise GanInvError(f"{source}: the snapshot's {net} has {key}={theirs.get(key)!r}, this "
                                          f"run's {net} would have {shared!r} at those resolutions")
                mine.pop(key)
                theirs.pop(key, None)
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                raise GanInvError(f"{source}: the snapshot's {net} has {key}={theirs.get(key)!r}, this run's "
                                  f"{net} would have {mine.get(key)!r}")


def _check_wider(mine: dict, theirs: dict, net: str, source: str) -> None:
    """For --widen: this run's channels at every resolution at least the snapshot's; then drop the width
    arguments from both (flattened) argument sets so that the rest is compared as usual."""
    width_keys = [k for k in set(mine) | set(theirs) if k.split(".")[-1] in _WIDTH_KWARGS]
    for key in [k for k in width_keys if k.split(".")[-1] == "channels"]:
        ours = {int(px): int(c) for px, c in (mine.get(key) or {}).items()}
        old = {int(px): int(c) for px, c in (theirs.get(key) or {}).items()}
        if set(ours) != set(old):
            raise GanInvError(f"{source}: the snapshot's {net} has blocks at {sorted(old)} px, this run's at "
                              f"{sorted(ours)} (--widen changes widths only)")
        narrower = [px for px in sorted(old) if ours[px] < old[px]]
        if narrower:
            px = narrower[0]
            raise GanInvError(f"{source}: the snapshot's {net} has {old[px]} channels at {px} px, this run's "
                              f"only {ours[px]}; --widen never removes channels")
    for key in width_keys:
        mine.pop(key, None)
        theirs.pop(key, None)


def widen_from(target: torch.nn.Module, source: torch.nn.Module) -> None:
    """Copy a narrower network `source` into `target` (the same architecture with at least as many channels
    at every layer) so that the old channels compute what they computed: net2net widening with random
    padding (Chen, Goodfellow & Shlens, "Net2Net: Accelerating Learning via Knowledge Transfer", ICLR 2016).

    Each weight's block of old outputs x old inputs is the source's (times old / new runtime weight gain,
    where a layer scales its weight by 1/sqrt(fan-in)); the old outputs' weights on new inputs are zero, so
    the new channels do not reach the old ones; the new outputs keep `target`'s fresh initialization (random
    weights, so they learn from the first step). Other tensors (biases, constant inputs, style affines) keep
    the source's values in their leading entries. A StyleGAN2 generator then draws the same images; a
    discriminator gives the same logits unless its 4-px width grows (its minibatch-std feature averages
    over all of those channels). The epilogue's input channels with the minibatch-std feature appended are
    mapped old-to-old and feature-to-feature."""
    sources = dict(source.named_modules())
    modules = dict(target.named_modules())
    with torch.no_grad():
        for name, module in modules.items():
            old = sources.get(name)
            if old is None or type(old) is not type(module):
                raise GanInvError(f"widening: the snapshot has no {type(module).__name__} at "
                                  f"{name or 'the top level'}")
            tensors = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
            theirs = dict(old.named_parameters(recurse=False)) | dict(old.named_buffers(recurse=False))
            for key, tensor in tensors.items():
                value = theirs[key].detach().to(tensor.dtype)
                if value.shape == tensor.shape:
                    tensor.copy_(value)
                    continue
                if value.ndim != tensor.ndim or any(a > b for a, b in zip(value.shape, tensor.shape)):
                    raise GanInvError(f"widening: {name}.{key} has shape {list(value.shape)} in the snapshot, "
                                      f"{list(tensor.shape)} here")
                if key == "weight" and tensor.ndim >= 2:
                    out_old, in_old = value.shape[:2]
                    in_map = torch.arange(in_old)
                    parent = modules.get(name.rpartition(".")[0])
                    if (isinstance(parent, DiscriminatorEpilogue) and module is parent.conv
                            and parent.mbstd is not None):  # its input: the features, then the mbstd channels
                        f = parent.mbstd.num_channels
                        in_map[in_old - f:] = torch.arange(tensor.shape[1] - f, tensor.shape[1])
                    scale = getattr(old, "weight_gain", 1.0) / getattr(module, "weight_gain", 1.0)
                    tensor[:out_old].zero_()
                    tensor[:out_old, in_map] = value * scale
                else:
                    tensor[tuple(slice(0, n) for n in value.shape)] = value


@dataclass
class TrainingData:
    """Training images (uint8 [N, H, W, C]) and optional integer labels with their names."""

    images: np.ndarray
    labels: np.ndarray | None = None
    label_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"training images must be uint8 [N, H, W, C], got {self.images.dtype} "
                             f"{self.images.shape}")
        if self.images.shape[1] != self.images.shape[2]:
            raise ValueError(f"training images must be square, got {self.images.shape[1:3]}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError("one label per training image is needed")


def labels_from_records(records: list[dict], key: str) -> tuple[np.ndarray, list[str]]:
    """Integer labels for `key` of each record and the sorted class names."""
    try:
        values = [str(r[key]) for r in records]
    except KeyError:
        raise ValueError(f"label field {key!r} is missing from the dataset records") from None
    names = sorted(set(values), key=lambda v: (len(v), v) if v.isdigit() else (math.inf, v))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def build_networks(config: TrainConfig, resolution: int, channels: int, c_dim: int,
                   device: torch.device) -> tuple[Generator, Discriminator]:
    """G and D for a config; fp16 blocks and conv clamping only when training on CUDA."""
    half = bool(config.mixed_precision and device.type == "cuda")
    synthesis = dict(channel_base=config.channel_base, channel_max=config.channel_max)
    d_kwargs = dict(channel_base=config.d_channel_base or config.channel_base,
                    channel_max=config.d_channel_max or config.channel_max)
    if half:
        synthesis.update(num_fp16_res=4, conv_clamp=256)
        d_kwargs.update(num_fp16_res=4, conv_clamp=256)
    G = Generator(z_dim=config.z_dim, c_dim=c_dim, w_dim=config.w_dim, img_resolution=resolution,
                  img_channels=channels, mapping_kwargs=dict(num_layers=config.mapping_layers),
                  synthesis_kwargs=synthesis)
    D = Discriminator(c_dim=c_dim, img_resolution=resolution, img_channels=channels,
                      epilogue_kwargs=dict(mbstd_group_size=config.mbstd_group_size), **d_kwargs)
    return G.to(device), D.to(device)


def _load_shared(target: torch.nn.Module, source: dict[str, torch.Tensor], name: str) -> None:
    """Copy into `target` every tensor of `source` that it has under the same name (a lower-resolution
    network's blocks); the rest of `target` keeps its fresh initialization. Tensors only `source` has
    (the input layer of a discriminator's former first block) are dropped."""
    own = target.state_dict()
    copied = 0
    for key, value in source.items():
        if key not in own:
            continue
        if own[key].shape != value.shape:
            raise GanInvError(f"{name}: {key} has shape {list(value.shape)}, this run's has {list(own[key].shape)}")
        own[key].copy_(value)
        copied += 1
    if not copied:
        raise GanInvError(f"{name}: no layer of the snapshot fits this run's networks")


def check_training_resolution(size: int, resolution: int) -> None:
    """Raise ValueError unless `resolution` is the data's `size` divided by a power of two."""
    if resolution > size or size % resolution or (size // resolution) & (size // resolution - 1):
        raise ValueError(f"resolution {resolution} must be the data's {size} px divided by a power of two")


def downsample_images(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [N, H, W, C] images box-filtered to `resolution` (a power-of-two fraction of H)."""
    size = images.shape[1]
    check_training_resolution(size, resolution)
    if resolution == size:
        return images
    factor = size // resolution
    pooled = images.reshape(len(images), resolution, factor, resolution, factor, images.shape[3])
    return np.rint(pooled.mean(axis=(2, 4), dtype=np.float32)).astype(np.uint8)


class Trainer:
    """Holds the networks, optimizers and random state of one run; `step()` trains one batch."""

    def __init__(self, config: TrainConfig, data: TrainingData, device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.augment_policy = parse_policy(config.augment)
        source = data.images if config.resolution is None else downsample_images(data.images, config.resolution)
        images = torch.from_numpy(np.ascontiguousarray(source)).permute(0, 3, 1, 2)
        self.images = images.contiguous()  # uint8 NCHW, converted per batch
        self.num_images = len(images)
        # Under torchrun each process trains on its share of every batch (see ganinv.train.distributed).
        self.local_batch = distributed.local_share(config.batch_size, "batch size")
        if self.num_images < config.batch_size:
            raise ValueError(f"{self.num_images} training images is fewer than one batch ({config.batch_size})")
        self.resolution = int(images.shape[2])
        self.channels = int(images.shape[1])
        self.c_dim = 0
        self.labels = None
        if config.label_key is not None:
            if data.labels is None:
                raise ValueError(f"conditional training on {config.label_key!r} needs labels")
            self.labels = torch.from_numpy(np.asarray(data.labels, dtype=np.int64))
            self.c_dim = len(data.label_names)
        self.label_names = list(data.label_names)
        self.r1_gamma = (config.r1_gamma if config.r1_gamma is not None
                         else 0.0002 * self.resolution ** 2 / config.batch_size)
        self.ema_kimg = config.ema_kimg if config.ema_kimg is not None else config.batch_size * 10 / 32

        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(distributed.process_seed(config.seed))
        self.G, self.D = build_networks(config, self.resolution, self.channels, self.c_dim, self.device)
        distributed.broadcast_module(self.G)
        distributed.broadcast_module(self.D)
        if distributed.rank() > 0:
            torch.manual_seed(distributed.process_seed(config.seed))  # noise maps differ per process
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.G.train()
        self.D.train()
        # Lazy regularization: scale Adam's rate and betas so the regularizer's occasional steps
        # average out as in the paper (StyleGAN2, appendix B).
        self.opt_G = self._optimizer(self.G, config.g_learning_rate,
                                     config.pl_interval if config.pl_weight > 0 else None)
        self.opt_D = self._optimizer(self.D, config.d_learning_rate, config.r1_interval)
        self.step_index = 0
        self.num_images_seen = 0
        self.training_seconds = 0.0
        self.pl_mean = torch.zeros([], device=self.device)
        self.order = torch.randperm(self.num_images, generator=self.generator)
        self.position = 0
        # phase name -> context manager; set by benchmarks/train_step.py to time each phase of a step.
        self.phase_timer: Callable[[str], ContextManager] | None = None
        self.input_memory_format = torch.contiguous_format
        if self.device.type == "cpu":
            # D and its inputs channels-last: with the FIR filters as convolutions, steps ran 1.01-1.09x
            # faster on one CPU thread at 64 px (benchmarks/train_step.py, arm contiguous_D); G gained nothing.
            self.D.to(memory_format=torch.channels_last)
            self.input_memory_format = torch.channels_last
        # FIR filters as depthwise convolutions in the steps (1.27x faster steps, see models.layers).
        self.fir_convolution = True

    def _optimizer(self, net: torch.nn.Module, learning_rate: float, interval: int | None):
        ratio = interval / (interval + 1) if interval else 1.0
        betas = tuple(b ** ratio for b in self.config.betas)
        return adam(net.parameters(), lr=learning_rate * ratio, betas=betas, eps=1e-8)

    # -- sampling -------------------------------------------------------------------------------

    @property
    def kimg(self) -> float:
        return self.num_images_seen / 1000

    def _next_indices(self, count: int) -> torch.Tensor:
        parts = []
        while count > 0:
            if self.position >= self.num_images:
                self.order = torch.randperm(self.num_images, generator=self.generator)
                self.position = 0
            take = min(count, self.num_images - self.position)
            parts.append(self.order[self.position:self.position + take])
            self.position += take
            count -= take
        return torch.cat(parts)

    def _real_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = self._next_indices(self.local_batch)
        img = self.images[idx].to(self.device, torch.float32) / 127.5 - 1
        if self.config.mirror:
            flip = torch.rand([len(idx)], generator=self.generator) < 0.5
            img = torch.where(flip.to(self.device).view(-1, 1, 1, 1), img.flip(3), img)
        return img, self._one_hot(self.labels[idx]) if self.labels is not None else None

    def _one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.c_dim).to(self.device, torch.float32)

    def _fake_labels(self, count: int) -> torch.Tensor | None:
        # Labels of random training images, so generated classes follow the data's frequencies.
        if self.labels is None:
            return None
        idx = torch.randint(0, self.num_images, [count], generator=self.generator)
        return self._one_hot(self.labels[idx])

    def _latents(self, count: int) -> torch.Tensor:
        return torch.randn([count, self.config.z_dim], generator=self.generator).to(self.device)

    def _mapping(self, z: torch.Tensor, c: torch.Tensor | None, update_w_avg: bool = True) -> torch.Tensor:
        ws = self.G.mapping(z, c, update_w_avg=update_w_avg)
        if self.config.style_mixing_prob > 0:
            # Style mixing: with probability p, layers from a random cutoff on use a second latent.
            cutoff = int(torch.randint(1, ws.shape[1], [], generator=self.generator))
            mix = float(torch.rand([], generator=self.generator)) < self.config.style_mixing_prob
            if mix:
                z2 = self._latents(z.shape[0])
                ws2 = self.G.mapping(z2, c, update_w_avg=False)
                ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return ws

    def _d_input(self, img: torch.Tensor) -> torch.Tensor:
        """D's input: the augmented images, in D's memory format."""
        img = diff_augment(img, self.augment_policy, self.generator) if self.augment_policy else img
        return img.contiguous(memory_format=self.input_memory_format)

    # -- one step -------------------------------------------------------------------------------

    def _phase(self, name: str):
        """Times one phase of a step when `phase_timer` is set (benchmarks/train_step.py); else nothing."""
        return self.phase_timer(name) if self.phase_timer is not None else nullcontext()

    def step(self) -> dict[str, float]:
        """Train one batch: a D step (with lazy R1), a G step (with lazy path-length reg), EMA."""
        with fir_as_convolution(self.fir_convolution):
            return self._step()

    def _step(self) -> dict[str, float]:
        cfg = self.config
        batch = self.local_batch
        stats: dict[str, float] = {}
        with self._phase("data"):
            real, real_c = self._real_batch()
            gen_c = self._fake_labels(batch)
            z = self._latents(batch)

        with self._phase("G forward"):
            self.G.requires_grad_(True)
            ws = self._mapping(z, gen_c)
            fake = self.G.synthesis(ws, noise_mode="random")

        # Discriminator: softplus(D(fake)) + softplus(-D(real)), plus gamma/2 |grad D(real)|^2 lazily.
        do_r1 = self.r1_gamma > 0 and self.step_index % cfg.r1_interval == 0
        with self._phase("augment"):
            # D draws no random numbers, so augmenting both batches first keeps the random sequence.
            fake_input = self._d_input(fake.detach())
            real_input = self._d_input(real).detach().requires_grad_(do_r1)
        with self._phase("D forward"):
            self.D.requires_grad_(True)
            self.opt_D.zero_grad(set_to_none=True)
            fake_logits = self.D(fake_input, gen_c)
            real_logits = self.D(real_input, real_c)
            loss_D = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
            stats["loss_D"] = float(loss_D.detach())
            stats["D_real"] = float(real_logits.detach().mean())
            stats["D_fake"] = float(fake_logits.detach().mean())
        if do_r1:
            with self._phase("R1"):
                (grad,) = torch.autograd.grad(real_logits.sum(), real_input, create_graph=True)
                penalty = grad.square().sum(dim=[1, 2, 3])
                loss_D = loss_D + penalty.mean() * (self.r1_gamma / 2) * cfg.r1_interval
                stats["r1_penalty"] = float(penalty.detach().mean())
        with self._phase("D backward"):
            loss_D.backward()
        with self._phase("D optimizer"):
            self._sanitize(self.D)
            distributed.average_gradients(self.D)
            self.opt_D.step()

        # Generator: softplus(-D(G(z))) through the updated D, on the fakes generated above.
        with self._phase("augment"):
            gen_input = self._d_input(fake)
        with self._phase("G: D forward"):
            self.D.requires_grad_(False)
            self.opt_G.zero_grad(set_to_none=True)
            gen_logits = self.D(gen_input, gen_c)
            loss_G = F.softplus(-gen_logits).mean()
            stats["loss_G"] = float(loss_G.detach())
        with self._phase("G backward"):
            loss_G.backward()
        with self._phase("G optimizer"):
            self._sanitize(self.G)
            distributed.average_gradients(self.G)
            self.opt_G.step()
        del fake, ws, gen_input

        if cfg.pl_weight > 0 and self.step_index % cfg.pl_interval == 0:
            with self._phase("path length"):
                stats["pl_penalty"] = self._path_length_step()

        for key in ("loss_D", "loss_G"):
            if not math.isfinite(stats[key]):
                raise FloatingPointError(f"{key} became {stats[key]} at step {self.step_index} "
                                         f"({self.kimg:.1f} kimg); the last checkpoint is kept")
        self.num_images_seen += cfg.batch_size
        self.step_index += 1
        with self._phase("EMA"):
            distributed.average_buffers(self.G.mapping)  # w_avg tracks every process's latents
            self._update_ema()
        return stats

    def _path_length_step(self) -> float:
        """Path-length regularization (StyleGAN2 section 3.2), lazily every pl_interval steps."""
        cfg = self.config
        count = max(self.local_batch // 2, 1)
        self.opt_G.zero_grad(set_to_none=True)
        ws = self._mapping(self._latents(count), self._fake_labels(count), update_w_avg=False)
        img = self.G.synthesis(ws, noise_mode="random")
        noise = torch.randn(img.shape, generator=self.generator).to(self.device) / math.sqrt(
            img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
        self.pl_mean = self.pl_mean.lerp(distributed.average_scalar(lengths.mean().detach()), cfg.pl_decay)
        penalty = (lengths - self.pl_mean).square()
        (penalty.mean() * cfg.pl_weight * cfg.pl_interval + img[:, 0, 0, 0].mean() * 0).backward()
        self._sanitize(self.G)
        distributed.average_gradients(self.G)
        self.opt_G.step()
        return float(penalty.detach().mean())

    @staticmethod
    def _sanitize(net: torch.nn.Module) -> None:
        for param in net.parameters():
            if param.grad is not None:
                torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_images = self.ema_kimg * 1000
        if self.config.ema_rampup is not None:
            ema_images = min(ema_images, self.num_images_seen * self.config.ema_rampup)
        beta = 0.5 ** (self.config.batch_size / max(ema_images, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # -- state ----------------------------------------------------------------------------------

    def start_from_snapshot(self, path: str | Path) -> None:
        """Start from an exported model (`ganinv export-model`, an embedded model): its G (the exported
        G_ema) becomes G and G_ema, its D becomes D; the optimizers keep their fresh state. The image,
        step and time counters go on from the snapshot's card, so kimg, the R1 schedule and the EMA
        ramp-up continue where the snapshot's run was. Raises GanInvError when a network setting differs."""
        G, D, card = read_snapshot(path)
        check_snapshot_matches(self.config, card, {"G": self.G.kwargs_with_channels(),
                                                   "D": self.D.kwargs_with_channels()},
                               {"G": G.kwargs_with_channels(), "D": D.kwargs_with_channels()}, str(path))
        with torch.no_grad():
            if self.config.widen:
                for target, source in ((self.G, G), (self.G_ema, G), (self.D, D)):
                    widen_from(target, source)
            elif G.img_resolution == self.resolution:
                self.G.load_state_dict(G.state_dict())
                self.G_ema.load_state_dict(G.state_dict())
                self.D.load_state_dict(D.state_dict())
            else:  # grow: the blocks both resolutions have, from the snapshot
                for target, source in ((self.G, G), (self.G_ema, G), (self.D, D)):
                    _load_shared(target, source.state_dict(), str(path))
        self.num_images_seen = int(round(float(card.get("images_seen_kimg", 0)) * 1000))
        self.step_index = int(card.get("training_steps", 0))
        self.training_seconds = float(card.get("training_hours", 0)) * 3600

    def state_dict(self) -> dict:
        state = {
            "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
            "config": json.dumps(self.config.to_dict()),
            "label_names": json.dumps(self.label_names),
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "generator_state": self.generator.get_state(),
            "torch_rng_state": torch.get_rng_state(),
            "order": self.order.clone(), "position": self.position,
            "step_index": self.step_index, "num_images_seen": self.num_images_seen,
            "training_seconds": self.training_seconds, "pl_mean": self.pl_mean.detach().cpu(),
            "G_kwargs": json.dumps(self.G.kwargs_with_channels()),
            "D_kwargs": json.dumps(self.D.kwargs_with_channels()),
        }
        if self.device.type == "cuda":
            state["cuda_rng_state"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a ganinv training checkpoint")
        saved = TrainConfig.from_dict(json.loads(state["config"]))
        for name in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "d_channel_base",
                     "d_channel_max", "label_key", "batch_size"):
            if getattr(saved, name) != getattr(self.config, name):
                raise ValueError(f"checkpoint was trained with {name}={getattr(saved, name)!r}, "
                                 f"this run asks for {getattr(self.config, name)!r}")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.generator.set_state(state["generator_state"])
        torch.set_rng_state(state["torch_rng_state"])
        if self.device.type == "cuda" and "cuda_rng_state" in state:
            torch.cuda.set_rng_state(state["cuda_rng_state"], self.device)
        self.order = state["order"].clone()
        self.position = int(state["position"])
        self.step_index = int(state["step_index"])
        self.num_images_seen = int(state["num_images_seen"])
        self.training_seconds = float(state["training_seconds"])
        self.pl_mean = state["pl_mean"].to(self.device)
        if distributed.rank() > 0:
            # The checkpoint holds process 0's random state: the others draw their own from here on.
            seed = distributed.process_seed(self.config.seed) + self.step_index
            self.generator.manual_seed(seed)
            torch.manual_seed(seed)

    def save_snapshot(self, folder: str | Path) -> Path:
        """G_ema and D as a model folder (model.safetensors + card.json with the training settings and
        counters): what `start_from_snapshot` (`ganinv train --init`) and `ganinv.load_model` read."""
        card = {"training_settings": self.config.to_dict(), "images_seen_kimg": round(self.kimg, 3),
                "training_steps": self.step_index, "training_hours": round(self.training_seconds / 3600, 4),
                "label_names": self.label_names}
        return save_native(folder, self.G_ema, self.D, card=card)

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the one rolling resume checkpoint atomically."""
        return save_state(self.state_dict(), path)

    def load_checkpoint(self, path: str | Path) -> None:
        self.load_state_dict(read_checkpoint(path, self.device))

    @torch.no_grad()
    def sample_grid(self, count: int | None = None) -> torch.Tensor:
        """G_ema on fixed latents (seeded apart from the training randomness), const noise."""
        count = count or self.config.grid_size
        gen = torch.Generator().manual_seed(self.config.seed + 12345)
        z = torch.randn([count, self.config.z_dim], generator=gen).to(self.device)
        c = None
        if self.c_dim:
            c = F.one_hot(torch.arange(count) % self.c_dim, self.c_dim).to(self.device, torch.float32)
        return self.G_ema(z, c, noise_mode="const").cpu()


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """A training checkpoint's state (tensors and plain data only: weights-only loading)."""
    return read_state(path, device)


def networks_from_checkpoint(path: str | Path) -> tuple[Generator, Discriminator, dict]:
    """(G_ema, D, info) from a training checkpoint; info has config, kimg, seconds, label names."""
    state = read_checkpoint(path)
    G = Generator(**json.loads(state["G_kwargs"]))
    D = Discriminator(**json.loads(state["D_kwargs"]))
    G.load_state_dict(state["G_ema"])
    D.load_state_dict(state["D"])
    info = {"config": json.loads(state["config"]), "kimg": int(state["num_images_seen"]) / 1000,
            "step": int(state["step_index"]), "training_seconds": float(state["training_seconds"]),
            "label_names": json.loads(state["label_names"])}
    return G.eval(), D.eval(), info


def train(config: TrainConfig, data: TrainingData, run_dir: str | Path, *, device: str | torch.device = "cpu",
          resume: bool = True, progress: bool = True, max_steps: int | None = None,
          handle_signals: bool = False, log: Callable[[str], None] | None = None) -> Trainer:
    """Train (or resume) a run in `run_dir` until `config.total_kimg`, `max_steps` or a signal.

    Writes `checkpoint.pt` (rolling, atomic), `samples/kimgNNNNNN.png` and a line of `stats.jsonl` at
    every snapshot, and once more at the end (see `ganinv.train.loop`). A new run with `config.init`
    starts from that exported snapshot (`Trainer.start_from_snapshot`); a run folder with a checkpoint
    resumes from it instead, so the same call continues the run.
    """
    run_dir = Path(run_dir)
    trainer = Trainer(config, data, device=device)
    if config.init is not None and not (resume and (run_dir / CHECKPOINT_FILE).is_file()):
        trainer.start_from_snapshot(config.init)  # before the run folder exists: a mismatch leaves nothing

    def postfix(stats: dict, images_per_second: float) -> dict:
        return dict(kimg=f"{trainer.kimg:.1f}", G=f"{stats['loss_G']:.3f}", D=f"{stats['loss_D']:.3f}",
                    ips=f"{images_per_second:.1f}")

    def stats_head(images_per_second: float) -> dict:
        return {"kimg": round(trainer.kimg, 3), "step": trainer.step_index,
                "training_hours": round(trainer.training_seconds / 3600, 4),
                "images_per_second": round(images_per_second, 2)}

    def sample_grids(stats: dict, evaluation: dict) -> None:
        grid = trainer.sample_grid()
        save_grid(grid, run_dir / "samples" / f"kimg{int(trainer.kimg):06d}.png", upscale=2)
        save_grid(grid, run_dir / "samples_latest.png", upscale=2)
        if trainer.config.snapshot_networks:
            trainer.save_snapshot(run_dir / "snapshots" / f"kimg{int(trainer.kimg):06d}")

    loop = TrainingLoop(trainer, run_dir, count=lambda: trainer.num_images_seen,
                        total=int(config.total_kimg * 1000), snapshot_every=max(int(config.snapshot_kimg * 1000), 1),
                        unit="img", unit_scale=True, progress=progress, handle_signals=handle_signals,
                        postfix=postfix, stats_head=stats_head, artifacts=sample_grids)
    if resume and loop.resume():
        if log:
            log(f"resumed from {loop.checkpoint} at {trainer.kimg:.1f} kimg (step {trainer.step_index})")
    elif config.init is not None and log:
        grown = (" (grown: the new blocks start fresh)" if config.grow else
                 " (widened: the new channels start fresh, the old ones draw the same images)" if config.widen else "")
        log(f"started from the snapshot {config.init} at {trainer.kimg:.1f} kimg (fresh optimizer state){grown}")
    loop.write_config(config.to_dict())
    loop.run(max_steps=max_steps)
    return trainer


def load_training_data(dataset_dir: str | Path, label_key: str | None = None) -> TrainingData:
    """The train split of a dataset folder (see `ganinv.data.dataset`), with labels when asked."""

    images, records = load_dataset(dataset_dir, split="train")
    if label_key is None:
        return TrainingData(images)
    labels, names = labels_from_records(records, label_key)
    return TrainingData(images, labels, names)
