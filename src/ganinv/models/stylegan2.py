"""StyleGAN2 generator and discriminator in plain PyTorch.

Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020), with the
constructor arguments and state-dict names of the official stylegan2-ada-pytorch networks
(Karras et al., "Training Generative Adversarial Networks with Limited Data", NeurIPS 2020), so that a
checkpoint's init kwargs rebuild the same network and its tensors load by name.

Additions over the official classes, all optional: an explicit per-resolution `channels` table (real
checkpoints do not always follow channel_base / resolution), explicit noise maps and style offsets
(StyleSpace edits) in `synthesis`, and discriminator features for perceptual losses.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import nn

from .layers import (HOMOGENEOUS_ACTIVATIONS, Conv2dLayer, FullyConnectedLayer, activation_gain, bias_act,
                     channels_from_base, downsample2d, modulated_conv2d, normalize_2nd_moment,
                     setup_filter, upsample2d)

NOISE_MODES = ("const", "random", "none")
# Synthesis layers fold bias, noise and activation gain into the modulated convolution's epilogue (same
# result, fewer passes over the activations); False restores the official order of operations (the speed
# benchmark's A/B arm and a parity test use it).
FOLD_EPILOGUE = True


def _resolutions(img_resolution: int) -> list[int]:
    log2 = int(round(math.log2(img_resolution)))
    if img_resolution < 4 or 2 ** log2 != img_resolution:
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    return [2 ** i for i in range(2, log2 + 1)]


def _channel_table(resolutions: Sequence[int], channel_base: int, channel_max: int,
                   channels: dict | None) -> dict[int, int]:
    table = channels_from_base(resolutions, channel_base, channel_max)
    if channels:
        given = {int(k): int(v) for k, v in channels.items()}
        missing = [r for r in resolutions if r not in given]
        if missing:
            raise ValueError(f"channels table lacks resolutions {missing}")
        table = {r: given[r] for r in resolutions}
    return table


class MappingNetwork(nn.Module):
    """z (and label c) -> w, broadcast to num_ws copies; tracks the running average w_avg."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None,
                 activation: str = "lrelu", lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None = None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_w_avg: bool | None = None) -> torch.Tensor:
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must have shape [N, {self.z_dim}], got "
                                 f"{None if z is None else tuple(z.shape)}")
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"c must have shape [N, {self.c_dim}] (this model is conditional), "
                                 f"got {None if c is None else tuple(c.shape)}")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_w_avg is None:
            update_w_avg = self.training
        if update_w_avg and self.w_avg_beta is not None and self.num_ws is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.num_ws is None:
                raise ValueError("truncation needs a mapping network with num_ws")
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 kernel_size: int = 3, up: int = 1, use_noise: bool = True, activation: str = "lrelu",
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = activation_gain(activation)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        return self.affine(w)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const",
                noise: torch.Tensor | None = None, style_offset: torch.Tensor | None = None,
                fused_modconv: bool | None = None, gain: float = 1) -> torch.Tensor:
        styles = self.affine(w)
        if style_offset is not None:
            styles = styles + style_offset.to(styles.dtype)
        noise_input = None
        if self.use_noise:
            if noise is not None:
                noise_input = noise * self.noise_strength
            elif noise_mode == "random":
                noise_input = torch.randn([x.shape[0], 1, self.resolution, self.resolution],
                                          device=x.device) * self.noise_strength
            elif noise_mode == "const":
                noise_input = self.noise_const * self.noise_strength
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        total_gain = self.act_gain * gain
        if not FOLD_EPILOGUE or self.activation not in HOMOGENEOUS_ACTIVATIONS or total_gain <= 0:
            x = modulated_conv2d(x, self.weight, styles, noise=noise_input, up=self.up,
                                 padding=self.padding, resample_filter=self.resample_filter,
                                 flip_weight=(self.up == 1), fused_modconv=fused_modconv)
            return bias_act(x, self.bias, act=self.activation, gain=total_gain, clamp=act_clamp)
        # act(conv + noise + b) * g == act(g * conv + g * (noise + b)): bias, noise and gain land in the
        # convolution's epilogue (one pass), the activation and clamp then work in place when allowed.
        noise_term = None if noise_input is None else noise_input.to(x.dtype) * total_gain  # [N or 1, 1, H, W]
        x = modulated_conv2d(x, self.weight, styles, noise=noise_term, bias=self.bias.to(x.dtype) * total_gain,
                             up=self.up, padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=(self.up == 1), fused_modconv=fused_modconv, out_gain=total_gain)
        return bias_act(x, None, act=self.activation, gain=1.0, clamp=act_clamp, owned=True)


class ToRGBLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        return self.affine(w)

    def forward(self, x: torch.Tensor, w: torch.Tensor, style_offset: torch.Tensor | None = None,
                fused_modconv: bool | None = None) -> torch.Tensor:
        styles = self.affine(w)
        if style_offset is not None:
            styles = styles + style_offset.to(styles.dtype)
        x = modulated_conv2d(x, self.weight, styles * self.weight_gain, demodulate=False,
                             fused_modconv=fused_modconv)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 img_channels: int, is_last: bool, architecture: str = "skip",
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None,
                 use_fp16: bool = False, **layer_kwargs):
        super().__init__()
        if architecture not in ("skip", "resnet", "orig"):
            raise ValueError(f"unknown synthesis architecture {architecture!r}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter)

    def layer_names(self) -> list[str]:
        names = [] if self.in_channels == 0 else ["conv0"]
        names.append("conv1")
        if self.num_torgb:
            names.append("torgb")
        return names

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str = "const", noise: dict | None = None, style_offsets: dict | None = None,
                force_fp32: bool = False, fused_modconv: bool | None = None):
        noise = noise or {}
        style_offsets = style_offsets or {}
        w_iter = iter(ws.unbind(dim=1))
        use_half = self.use_fp16 and not force_fp32 and ws.device.type == "cuda"
        dtype = torch.float16 if use_half else torch.float32
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = x.to(dtype)

        def run(name, x, **kw):
            layer = getattr(self, name)
            return layer(x, next(w_iter), noise_mode=noise_mode, noise=noise.get(name),
                         style_offset=style_offsets.get(name), fused_modconv=fused_modconv, **kw)

        if self.in_channels == 0:
            x = run("conv1", x)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = run("conv0", x)
            x = run("conv1", x, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = run("conv0", x)
            x = run("conv1", x)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), style_offset=style_offsets.get("torgb"),
                           fused_modconv=fused_modconv).to(torch.float32)
            img = img + y if img is not None else y
        return x, img


class StyleSynthesis(nn.Module):
    """What the synthesis networks of this package share (this module's and `ganinv.models.stylegan3`'s):
    ws [N, num_ws, w_dim], or one w [N, w_dim] repeated for every layer, checked the same way, and the
    StyleSpace styles of the layers `style_layers()` lists. A subclass sets `w_dim` and `num_ws`."""

    w_dim: int
    num_ws: int

    def style_layers(self) -> list[tuple[str, nn.Module, int]]:
        """(layer name, layer, ws index it reads) for every modulated layer, in order."""
        raise NotImplementedError

    def styles(self, ws: torch.Tensor) -> dict[str, torch.Tensor]:
        """StyleSpace: each modulated layer's style vector [N, C] (the affine output)."""
        self._check_ws(ws)
        return {name: layer.styles(ws[:, idx]) for name, layer, idx in self.style_layers()}

    def _check_ws(self, ws: torch.Tensor) -> None:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")

    def _full_ws(self, ws: torch.Tensor) -> torch.Tensor:
        """ws as float32 [N, num_ws, w_dim] (one w [N, w_dim] is repeated for every layer), shape checked."""
        if ws.ndim == 2:
            ws = ws.unsqueeze(1).repeat([1, self.num_ws, 1])
        self._check_ws(ws)
        return ws.to(torch.float32)

    @staticmethod
    def _check_noise_mode(noise_mode: str) -> None:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")


class SynthesisNetwork(StyleSynthesis):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, R, R]."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 0, channels: dict | None = None,
                 **block_kwargs):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = _resolutions(img_resolution)
        self.channels = _channel_table(self.block_resolutions, channel_base, channel_max, channels)
        log2 = len(self.block_resolutions) + 1
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = self.channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, self.channels[res], w_dim, res, img_channels,
                                   is_last=(res == img_resolution), use_fp16=(res >= fp16_resolution),
                                   **block_kwargs)
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def blocks(self) -> Iterator[tuple[int, SynthesisBlock]]:
        for res in self.block_resolutions:
            yield res, getattr(self, f"b{res}")

    def style_layers(self) -> list[tuple[str, nn.Module, int]]:
        """(name like 'b8.conv0', layer, ws index it reads) for every modulated layer, in order."""
        out = []
        w_idx = 0
        for res, block in self.blocks():
            for i, name in enumerate(block.layer_names()):
                out.append((f"b{res}.{name}", getattr(block, name), w_idx + i))
            w_idx += block.num_conv
        return out

    def noise_buffers(self) -> dict[str, torch.Tensor]:
        """The constant noise maps, keyed by layer name ('b8.conv0'), as [H, W] tensors."""
        return {name: layer.noise_const for name, layer, _ in self.style_layers()
                if isinstance(layer, SynthesisLayer) and layer.use_noise}

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", noise: dict | None = None,
                style_offsets: dict | None = None, force_fp32: bool = False,
                fused_modconv: bool | None = None) -> torch.Tensor:
        ws = self._full_ws(ws)
        self._check_noise_mode(noise_mode)
        noise = noise or {}
        style_offsets = style_offsets or {}
        for key in list(noise) + list(style_offsets):
            res, _, name = key.partition(".")
            if not (res[1:].isdigit() and int(res[1:]) in self.block_resolutions and name):
                raise KeyError(f"unknown synthesis layer {key!r}; expected names like 'b8.conv0'")
        _, img = self._run_blocks(None, None, ws, 0, len(self.block_resolutions), noise_mode, noise, style_offsets,
                                  force_fp32, fused_modconv)
        return img.contiguous()  # the CPU fast path may leave the last layers channels-last

    def _run_blocks(self, x, img, ws, start: int, stop: int, noise_mode: str, noise: dict, style_offsets: dict,
                    force_fp32: bool, fused_modconv: bool | None):
        """Blocks start..stop-1 (indices into block_resolutions) on (x, img); each reads its own ws indices."""
        w_idx = 0
        for index, (res, block) in enumerate(self.blocks()):
            if start <= index < stop:
                prefix = f"b{res}."
                block_noise = {k[len(prefix):]: v for k, v in noise.items() if k.startswith(prefix)}
                block_offsets = {k[len(prefix):]: v for k, v in style_offsets.items() if k.startswith(prefix)}
                block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
                x, img = block(x, img, block_ws, noise_mode=noise_mode, noise=block_noise,
                               style_offsets=block_offsets, force_fp32=force_fp32,
                               fused_modconv=fused_modconv)
            w_idx += block.num_conv
        return x, img

    def _check_block(self, block: int, last: int) -> int:
        if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block <= last:
            raise ValueError(f"synthesis block index must be an integer 0..{last} "
                             f"(blocks at {', '.join(map(str, self.block_resolutions))} px), got {block!r}")
        return block

    def forward_until(self, ws: torch.Tensor, block: int, noise_mode: str = "const", noise: dict | None = None,
                      style_offsets: dict | None = None, force_fp32: bool = False,
                      fused_modconv: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run blocks 0..`block` (indices into `block_resolutions`): (features [N, C, R, R] after that block,
        the partial RGB image of the skip architecture at R px, or None for the others). ws as in forward;
        only the indices those blocks read matter. `forward_from(x, img, ws, block + 1)` finishes the image."""
        ws = self._full_ws(ws)
        block = self._check_block(block, len(self.block_resolutions) - 1)
        return self._run_blocks(None, None, ws, 0, block + 1, noise_mode, noise or {},
                                style_offsets or {}, force_fp32, fused_modconv)

    def forward_from(self, x: torch.Tensor, img: torch.Tensor | None, ws: torch.Tensor, block: int,
                     noise_mode: str = "const", noise: dict | None = None, style_offsets: dict | None = None,
                     force_fp32: bool = False, fused_modconv: bool | None = None) -> torch.Tensor:
        """Run blocks `block`.. on features x (and the partial skip image img) from `forward_until(..., block - 1)`:
        the image [N, img_channels, R, R]. ws [N, num_ws, w_dim]; only the indices those blocks read matter."""
        ws = self._full_ws(ws)
        block = self._check_block(block, len(self.block_resolutions) - 1)
        if block == 0:
            raise ValueError("forward_from starts after the first block (block >= 1); use forward for a whole image")
        _, img = self._run_blocks(x, img, ws, block, len(self.block_resolutions), noise_mode,
                                  noise or {}, style_offsets or {}, force_fp32, fused_modconv)
        return img.contiguous()


class Generator(nn.Module):
    """G(z, c) = synthesis(mapping(z, c)); arguments as NVIDIA's stylegan2-ada-pytorch Generator."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, synthesis_kwargs: dict | None = None):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, mapping_kwargs=dict(mapping_kwargs or {}),
                                synthesis_kwargs=dict(synthesis_kwargs or {}))
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution,
                                          img_channels=img_channels, **(synthesis_kwargs or {}))
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, **synthesis_kwargs) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

    def kwargs_with_channels(self) -> dict:
        """Init kwargs with the explicit per-resolution channel table (what a card stores)."""
        kwargs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.init_kwargs.items()}
        kwargs["synthesis_kwargs"]["channels"] = {str(k): v for k, v in self.synthesis.channels.items()}
        return kwargs


# ---------------------------------------------------------------------------------------------
# Discriminator


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int,
                 img_channels: int, architecture: str = "resnet", activation: str = "lrelu",
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None,
                 use_fp16: bool = False, **unused):
        super().__init__()
        if architecture not in ("skip", "resnet", "orig"):
            raise ValueError(f"unknown discriminator architecture {architecture!r}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter)

    def forward(self, x, img, force_fp32: bool = False):
        use_half = self.use_fp16 and not force_fp32 and img is not None and img.device.type == "cuda"
        dtype = torch.float16 if use_half else torch.float32
        if x is not None:
            x = x.to(dtype)
        if self.in_channels == 0 or self.architecture == "skip":
            y = self.fromrgb(img.to(dtype))
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class MinibatchStdLayer(nn.Module):
    """Appends the across-group standard deviation of features (Karras et al. 2018).

    Groups are strided (sample k with samples k + N/G, k + 2N/G, ...), as in the official code. When
    the batch is not divisible by the group size the largest divisor not above it is used (the
    official code errors there).
    """

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        while n % g:
            g -= 1
        f = self.num_channels
        y = x.float().reshape(g, -1, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 architecture: str = "resnet", mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1,
                 activation: str = "lrelu", conv_clamp: float | None = None):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap=None):
        x = x.to(torch.float32)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """D(img, c) -> logits [N, 1]; arguments as NVIDIA's stylegan2-ada-pytorch Discriminator."""

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int, architecture: str = "resnet",
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 0,
                 conv_clamp: float | None = None, cmap_dim: int | None = None, channels: dict | None = None,
                 block_kwargs: dict | None = None, mapping_kwargs: dict | None = None,
                 epilogue_kwargs: dict | None = None):
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.init_kwargs = dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                                architecture=architecture, channel_base=channel_base,
                                channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
                                cmap_dim=cmap_dim, block_kwargs=dict(block_kwargs or {}),
                                mapping_kwargs=dict(mapping_kwargs or {}),
                                epilogue_kwargs=dict(epilogue_kwargs or {}))
        resolutions = _resolutions(img_resolution)
        self.block_resolutions = resolutions[::-1][:-1]
        self.channels = _channel_table(resolutions, channel_base, channel_max, channels)
        log2 = len(resolutions) + 1
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = self.channels[4]
        if c_dim == 0:
            cmap_dim = 0
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        for res in self.block_resolutions:
            in_channels = self.channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, self.channels[res], self.channels[res // 2], res,
                                       use_fp16=(res >= fp16_resolution), **(block_kwargs or {}), **common)
            setattr(self, f"b{res}", block)
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None,
                                          w_avg_beta=None, **(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(self.channels[4], cmap_dim=cmap_dim, resolution=4,
                                        **(epilogue_kwargs or {}), **common)

    def _check(self, img, c):
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(f"img must have shape [N, {self.img_channels}, {self.img_resolution}, "
                             f"{self.img_resolution}], got {tuple(img.shape)}")
        if self.c_dim > 0 and (c is None or c.shape != (img.shape[0], self.c_dim)):
            raise ValueError(f"c must have shape [N, {self.c_dim}]")

    def features(self, img: torch.Tensor, c: torch.Tensor | None = None,
                 force_fp32: bool = True) -> list[torch.Tensor]:
        """Activations after each resolution block (highest resolution first), float32."""
        self._check(img, c)
        x = None
        feats = []
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
            feats.append(x.float())
        return feats

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None,
                force_fp32: bool = False) -> torch.Tensor:
        self._check(img, c)
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)

    def kwargs_with_channels(self) -> dict:
        kwargs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.init_kwargs.items()}
        kwargs["channels"] = {str(k): v for k, v in self.channels.items()}
        return kwargs
