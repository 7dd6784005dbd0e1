"""Writing generators back to the layout other projects load: rosinality's stylegan2-pytorch `.pt`.

rosinality/stylegan2-pytorch (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN",
CVPR 2020, reimplemented in PyTorch) is the generator code that pSp, encoder4editing, ReStyle and PTI's
encoder path build on: they construct ``Generator(size, style_dim, n_mlp, channel_multiplier)`` and load
``ckpt['g_ema']`` into it, and take ``ckpt['latent_avg']`` as the average w. `export_rosinality` writes
exactly that, ``{'g_ema': state_dict, 'latent_avg': [w_dim], 'args': {...}, 'ganinv': {...}}``, where
``args`` is a plain dict of the constructor arguments under train.py's names (``size``, ``latent``,
``n_mlp``, ``channel_multiplier``) and ``ganinv`` says where the weights came from.

The layer correspondence is `rosinality_layer_names` (the reader in `checkpoints.py` goes the other
way). Two of ganinv's conventions differ from rosinality's in how weights are stored, and are undone
here: the modulated 3x3 convolutions keep rosinality's 1/sqrt(fan_in) folded into the weight, and the
mapping layers may use another learning-rate multiplier than rosinality's fixed ``lr_mlp=0.01``
(folded into weight and bias, which leaves the function unchanged).

What rosinality's Generator cannot express is refused with one line: labels, ``z_dim != w_dim``,
mapping widths other than w_dim, image channels other than 3, architectures other than 'skip', other
resample filters. Per-resolution channel widths outside rosinality's table (512 up to 32 px, then
``channel_multiplier`` times 256/128/64/32/16) are refused too, unless ``allow_custom_channels``: such
a file loads into rosinality's modules only after setting ``Generator.channels`` to ``args['channels']``.
"""
from __future__ import annotations

import collections
import math
import os
from pathlib import Path

import torch

from ..utils import atomic_path
from .storage import CheckpointError
from .stylegan2 import Generator

#: rosinality's EqualLinear learning-rate multiplier in the mapping network (Generator's lr_mlp default).
ROSINALITY_LR_MLP = 0.01
#: The widths rosinality's Generator builds for channel_multiplier m, by resolution.
_ROSINALITY_BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512}
_ROSINALITY_SCALED_CHANNELS = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
_BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


class ExportError(CheckpointError):
    """The generator cannot be written in the requested format (the message says why, in one line)."""


def rosinality_channel_table(channel_multiplier: int) -> dict[int, int]:
    """rosinality's per-resolution widths for a channel multiplier (its Generator's `channels`)."""
    table = dict(_ROSINALITY_BASE_CHANNELS)
    table.update({res: base * channel_multiplier for res, base in _ROSINALITY_SCALED_CHANNELS.items()})
    return table


def rosinality_layer_names(G: Generator) -> list[tuple[str, str, str, int | None]]:
    """(our module name, rosinality module name, kind, rosinality noise index) for every layer.

    kind is 'const', 'conv' (a modulated 3x3 convolution: weight, affine, noise strength, bias, noise
    map), 'torgb', or 'mapping'. The noise index numbers rosinality's `noises.noise_{i}` buffers."""
    names: list[tuple[str, str, str, int | None]] = []
    for i in range(G.mapping.num_layers):
        names.append((f"mapping.fc{i}", f"style.{i + 1}", "mapping", None))
    names.append(("synthesis.b4", "input", "const", None))
    names.append(("synthesis.b4.conv1", "conv1", "conv", 0))
    names.append(("synthesis.b4.torgb", "to_rgb1", "torgb", None))
    for i, res in enumerate(G.synthesis.block_resolutions[1:]):
        names.append((f"synthesis.b{res}.conv0", f"convs.{2 * i}", "conv", 2 * i + 1))
        names.append((f"synthesis.b{res}.conv1", f"convs.{2 * i + 1}", "conv", 2 * i + 2))
        names.append((f"synthesis.b{res}.torgb", f"to_rgbs.{i}", "torgb", None))
    return names


def rosinality_args(G: Generator, allow_custom_channels: bool = False) -> dict:
    """rosinality Generator constructor arguments for G ({'size', 'latent', 'n_mlp', 'channel_multiplier',
    'lr_mlp'}, plus 'channels' for custom widths); raises ExportError for what it cannot express."""
    def refuse(why: str) -> None:
        raise ExportError(f"rosinality's Generator cannot express this model: {why}")

    if G.c_dim:
        refuse(f"it is conditional (c_dim={G.c_dim}); rosinality's generator takes no labels")
    if G.z_dim != G.w_dim:
        refuse(f"z_dim={G.z_dim} differs from w_dim={G.w_dim} (rosinality uses one style_dim for both)")
    if G.img_channels != 3:
        refuse(f"it draws {G.img_channels}-channel images; rosinality's ToRGB always has 3 channels")
    mapping = G.mapping
    for i in range(mapping.num_layers):
        fc = getattr(mapping, f"fc{i}")
        if tuple(fc.weight.shape) != (G.w_dim, G.w_dim):
            refuse(f"mapping layer {i} is {fc.in_features}->{fc.out_features}; rosinality's are all "
                   f"{G.w_dim}->{G.w_dim}")
        if fc.activation != "lrelu" or fc.bias is None:
            refuse(f"mapping layer {i} uses activation {fc.activation!r}; rosinality's use leaky ReLU with a bias")
    if mapping.num_layers < 1:
        refuse("it has no mapping layers")
    expected_filter = torch.outer(torch.tensor(_BLUR_TAPS), torch.tensor(_BLUR_TAPS))
    expected_filter = expected_filter / expected_filter.sum()
    for res, block in G.synthesis.blocks():
        if block.architecture != "skip":
            refuse(f"block b{res} uses the {block.architecture!r} architecture; rosinality's generator is 'skip'")
        for name in block.layer_names():
            layer = getattr(block, name)
            if name.startswith("conv"):
                if not layer.use_noise:
                    refuse(f"b{res}.{name} has no noise input")
                if layer.activation != "lrelu" or tuple(layer.weight.shape[2:]) != (3, 3):
                    refuse(f"b{res}.{name} is not a 3x3 leaky-ReLU convolution")
                kernel = layer.resample_filter.cpu().float()
                if kernel.shape != expected_filter.shape or not torch.allclose(kernel, expected_filter, atol=1e-6):
                    refuse(f"b{res}.{name} uses a resample filter other than [1, 3, 3, 1]")
            elif tuple(layer.weight.shape[2:]) != (1, 1):
                refuse(f"b{res}.{name} is not a 1x1 toRGB")
    res = G.img_resolution
    log_size = int(round(math.log2(res)))
    if 2 ** log_size != res or res < 4:
        refuse(f"resolution {res} is not a power of two >= 4")
    channels = {int(r): int(c) for r, c in G.synthesis.channels.items()}
    multipliers = {channels[r] / base for r, base in _ROSINALITY_SCALED_CHANNELS.items() if r in channels}
    multiplier = next(iter(multipliers)) if len(multipliers) == 1 else (2 if not multipliers else None)
    standard = (res <= 1024 and multiplier is not None and float(multiplier).is_integer() and multiplier >= 1
                and all(channels[r] == c for r, c in rosinality_channel_table(int(multiplier)).items()
                        if r in channels))
    args = {"size": res, "latent": G.w_dim, "n_mlp": mapping.num_layers,
            "channel_multiplier": int(multiplier) if standard else None, "lr_mlp": ROSINALITY_LR_MLP}
    if not standard:
        if not allow_custom_channels:
            widths = ", ".join(f"{r}: {c}" for r, c in sorted(channels.items()))
            refuse(f"its channel widths {{{widths}}} are not rosinality's table (512 up to 32 px, then "
                   "channel_multiplier x 256/128/64/32/16); --custom-channels (allow_custom_channels) writes it anyway")
        args["channels"] = {str(r): c for r, c in sorted(channels.items())}
    return args


def _kernel(factor: int = 2) -> torch.Tensor:
    taps = torch.tensor(_BLUR_TAPS)
    kernel = torch.outer(taps, taps)
    return kernel / kernel.sum() * factor ** 2


def rosinality_state_dict(G: Generator, noise: dict[str, torch.Tensor] | None = None
                          ) -> collections.OrderedDict[str, torch.Tensor]:
    """G's weights under rosinality's `Generator.state_dict()` names and shapes (float32, CPU).

    `noise` ({layer name: [H, W] or [1, 1, H, W]}) replaces G's constant noise maps, e.g. the maps an
    inversion optimized. Call `rosinality_args` first to check that rosinality can express G."""
    params = {k: v.detach().to("cpu", torch.float32) for k, v in G.state_dict().items()}
    noise = {k: v.detach().to("cpu", torch.float32) for k, v in (noise or {}).items()}
    lr_ratio = G.mapping.fc0.bias_gain / ROSINALITY_LR_MLP
    out: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
    noises = {}
    for ours, theirs, kind, noise_index in rosinality_layer_names(G):
        if kind == "mapping":
            weight, bias = params[f"{ours}.weight"], params[f"{ours}.bias"]
            if lr_ratio != 1:
                weight, bias = weight * lr_ratio, bias * lr_ratio
            out[f"{theirs}.weight"], out[f"{theirs}.bias"] = weight, bias
        elif kind == "const":
            out["input.input"] = params[f"{ours}.const"].unsqueeze(0)
        elif kind == "conv":
            weight = params[f"{ours}.weight"]
            scale = 1 / math.sqrt(weight.shape[1] * weight.shape[2] * weight.shape[3])
            out[f"{theirs}.conv.weight"] = (weight / scale).unsqueeze(0)
            if ours.endswith("conv0"):
                out[f"{theirs}.conv.blur.kernel"] = _kernel()
            out[f"{theirs}.conv.modulation.weight"] = params[f"{ours}.affine.weight"]
            out[f"{theirs}.conv.modulation.bias"] = params[f"{ours}.affine.bias"]
            out[f"{theirs}.noise.weight"] = params[f"{ours}.noise_strength"].reshape(1)
            out[f"{theirs}.activate.bias"] = params[f"{ours}.bias"]
            layer_name = ours.removeprefix("synthesis.")
            noise_map = noise.get(layer_name, params[f"{ours}.noise_const"])
            noises[f"noises.noise_{noise_index}"] = noise_map.reshape(1, 1, *noise_map.shape[-2:])
        else:
            if theirs != "to_rgb1":
                out[f"{theirs}.upsample.kernel"] = _kernel()
            out[f"{theirs}.bias"] = params[f"{ours}.bias"].reshape(1, -1, 1, 1)
            out[f"{theirs}.conv.weight"] = params[f"{ours}.weight"].unsqueeze(0)
            out[f"{theirs}.conv.modulation.weight"] = params[f"{ours}.affine.weight"]
            out[f"{theirs}.conv.modulation.bias"] = params[f"{ours}.affine.bias"]
    unknown = sorted(set(noise) - {ours.removeprefix("synthesis.") for ours, _, kind, _ in rosinality_layer_names(G)
                                   if kind == "conv"})
    if unknown:
        raise ExportError(f"noise maps for unknown layers {unknown[:3]}")
    out.update(sorted(noises.items(), key=lambda item: int(item[0].rsplit("_", 1)[1])))
    return out


def export_rosinality(G: Generator, path: str | os.PathLike, *, noise: dict[str, torch.Tensor] | None = None,
                      metadata: dict | None = None, allow_custom_channels: bool = False) -> dict:
    """Write G as a rosinality `.pt` ({'g_ema', 'latent_avg', 'args', 'ganinv'}) atomically.

    `metadata` (plain JSON-like values) is stored under 'ganinv'. Returns the 'args' dict. Raises
    ExportError (one line) when rosinality's Generator cannot express G."""
    args = rosinality_args(G, allow_custom_channels=allow_custom_channels)
    checkpoint = {
        "g_ema": rosinality_state_dict(G, noise),
        "latent_avg": G.mapping.w_avg.detach().to("cpu", torch.float32).clone(),
        "args": args,
        "ganinv": dict(metadata or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return args
