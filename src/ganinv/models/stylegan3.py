"""StyleGAN3 generator (alias-free, 'stylegan3-t' and 'stylegan3-r') in plain PyTorch.

Karras et al., "Alias-Free Generative Adversarial Networks" (NeurIPS 2021). The constructor arguments and
state-dict names are those of NVIDIA's stylegan3 repository (`Generator(z_dim, c_dim, w_dim,
img_resolution, img_channels, mapping_kwargs, **synthesis_kwargs)`, layers `synthesis.input`,
`synthesis.L0_36_512`, ...), so a checkpoint's init kwargs rebuild the same network and its tensors load
by name. StyleGAN3 training uses the StyleGAN2 discriminator (`ganinv.models.stylegan2.Discriminator`).

The synthesis network starts from Fourier features (section 3.1: sinusoids of fixed random frequencies,
rotated and translated by an affine map of the first ws entry, and by a user transform), followed by
`num_layers` modulated convolutions, each followed by the filtered leaky ReLU of `alias_free`, and a final
1x1 toRGB layer. Layer cutoffs, stopbands and sampling rates follow the geometric schedule of section 3.2
and appendix F. 'stylegan3-r' (rotation equivariant) uses 1x1 convolutions and radially symmetric
downsampling filters (`conv_kernel=1, use_radial_filters=True`). Each layer normalizes its input by a
running magnitude (`magnitude_ema`, a buffer updated only when asked: `update_emas=True`).

The same interface as the StyleGAN2 generator of this package: `G.mapping`, `G.synthesis(ws,
style_offsets=...)`, `G.synthesis.style_layers()`, `styles(ws)`, `noise_buffers()` (empty: StyleGAN3 has no
noise inputs), so inversion and editing work on either.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .alias_free import design_lowpass_filter, filtered_lrelu
from .layers import FullyConnectedLayer, modulated_conv2d
from .stylegan2 import MappingNetwork, StyleSynthesis

ARCHITECTURE = "stylegan3"


def make_transform(translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0) -> np.ndarray:
    """The 3x3 image transform (rotation by `rotate` degrees, then translation by `translate` in units of
    the image's half width, i.e. 0.5 moves content by a quarter of the image), as gen_images.py and the
    visualizer of the stylegan3 repository define it."""
    angle = math.radians(float(rotate))
    s, c = math.sin(angle), math.cos(angle)
    return np.array([[c, s, float(translate[0])], [-s, c, float(translate[1])], [0.0, 0.0, 1.0]])


def set_input_transform(G: nn.Module, translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0,
                        matrix: np.ndarray | torch.Tensor | None = None) -> None:
    """Translate and rotate what a StyleGAN3 generator draws, as the official visualizer does: the
    synthesis input's `transform` buffer becomes the inverse of the image transform `make_transform(
    translate, rotate)` (or of `matrix`, a 3x3 affine). `set_input_transform(G)` restores the identity.
    Works on a bare generator, a Model, or a locally tuned generator (both of its networks)."""
    G = getattr(G, "G", G)
    m = make_transform(translate, rotate) if matrix is None else np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"an input transform is a 3x3 matrix, got shape {m.shape}")
    try:
        inverse = np.linalg.inv(m)
    except np.linalg.LinAlgError:
        raise ValueError("the input transform is not invertible") from None
    inputs = [module for module in G.modules() if isinstance(module, SynthesisInput)]
    if not inputs:
        raise ValueError("this generator has no StyleGAN3 input layer (only StyleGAN3 networks can be "
                         "translated and rotated)")
    with torch.no_grad():
        for module in inputs:
            module.transform.copy_(torch.from_numpy(inverse))


class SynthesisInput(nn.Module):
    """Fourier features: `channels` sinusoids of fixed frequencies within `bandwidth`, sampled on a
    `size` grid at `sampling_rate`, rotated and translated by an affine map of w (and `transform`)."""

    def __init__(self, w_dim: int, channels: int, size: int | Sequence[int], sampling_rate: float,
                 bandwidth: float):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = [int(v) for v in np.broadcast_to(np.asarray(size), [2])]
        self.sampling_rate = float(sampling_rate)
        self.bandwidth = float(bandwidth)
        # Frequencies drawn uniformly from a disc of radius `bandwidth`, random phases.
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():  # identity rotation, no translation until trained
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3, 3))  # inverse of the user's image transform
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand([channels]) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        t = self.affine(w)  # (cos, sin, tx, ty), up to scale
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        # Built out of place so that per-target weights under torch.func.vmap (batched PTI) work.
        cos, sin, tx, ty = t.unbind(1)
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)

        def matrix(*rows):
            return torch.stack([torch.stack(row, dim=1) for row in rows], dim=1)

        rotation = matrix((cos, -sin, zero), (sin, cos, zero), (zero, zero, one))
        translation = matrix((one, zero, -tx), (zero, one, -ty), (zero, zero, one))
        transforms = rotation @ translation @ self.transform.to(t.dtype).unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]).squeeze(2)
        freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]  # [N, C, 2]
        # Frequencies a user transform pushed beyond the band are faded out rather than aliased.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        # Pixel-centre coordinates, in units where the sampling rate spans one unit.
        width, height = self.size
        theta = torch.zeros([1, 2, 3], device=w.device, dtype=t.dtype)
        theta[0, 0, 0] = 0.5 * width / self.sampling_rate
        theta[0, 1, 1] = 0.5 * height / self.sampling_rate
        grid = torch.nn.functional.affine_grid(theta, [1, 1, height, width], align_corners=False)  # [1,H,W,2]
        x = torch.einsum("hwk,nck->nhwc", grid[0], freqs) + phases[:, None, None, :]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={self.size}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")


class SynthesisLayer(nn.Module):
    """Modulated convolution (input normalized by its running magnitude) + filtered leaky ReLU; the last
    layer of the network is the 1x1 toRGB (no demodulation, no nonlinearity, no resampling)."""

    def __init__(self, w_dim: int, is_torgb: bool, is_critically_sampled: bool, use_fp16: bool,
                 in_channels: int, out_channels: int, in_size: int | Sequence[int], out_size: int | Sequence[int],
                 in_sampling_rate: float, out_sampling_rate: float, in_cutoff: float, out_cutoff: float,
                 in_half_width: float, out_half_width: float, conv_kernel: int = 3, filter_size: int = 6,
                 lrelu_upsampling: int = 2, use_radial_filters: bool = False, conv_clamp: float | None = 256,
                 magnitude_ema_beta: float = 0.999):
        super().__init__()
        if not (isinstance(conv_kernel, int) and 1 <= conv_kernel <= 7 and isinstance(filter_size, int)
                and 1 <= filter_size <= 32 and isinstance(lrelu_upsampling, int) and 1 <= lrelu_upsampling <= 8):
            raise ValueError(f"implausible conv_kernel {conv_kernel!r}, filter_size {filter_size!r} or "
                             f"lrelu_upsampling {lrelu_upsampling!r}")
        self.w_dim = w_dim
        self.is_torgb = bool(is_torgb)
        self.is_critically_sampled = bool(is_critically_sampled)
        self.use_fp16 = bool(use_fp16)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2])
        self.out_size = np.broadcast_to(np.asarray(out_size), [2])
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.weight_gain = 1 / math.sqrt(in_channels * self.conv_kernel ** 2)

        # The nonlinearity runs at tmp_sampling_rate: upsample by up_factor, downsample by down_factor.
        self.up_factor = int(np.rint(self.tmp_sampling_rate / in_sampling_rate))
        self.down_factor = int(np.rint(self.tmp_sampling_rate / out_sampling_rate))
        if (in_sampling_rate * self.up_factor != self.tmp_sampling_rate
                or out_sampling_rate * self.down_factor != self.tmp_sampling_rate):
            raise ValueError("sampling rates must divide the nonlinearity's sampling rate")
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = bool(use_radial_filters and not is_critically_sampled)
        self.register_buffer("up_filter", design_lowpass_filter(
            self.up_taps, in_cutoff, in_half_width * 2, self.tmp_sampling_rate))
        self.register_buffer("down_filter", design_lowpass_filter(
            self.down_taps, out_cutoff, out_half_width * 2, self.tmp_sampling_rate, radial=self.down_radial))

        # Padding so that output sample k sits where the symmetric interpretation (appendix C.3) puts it.
        pad_total = (self.out_size - 1) * self.down_factor + 1
        pad_total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += self.up_taps + self.down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = (int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1]))

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        return self.affine(w)

    def forward(self, x: torch.Tensor, w: torch.Tensor, style_offset: torch.Tensor | None = None,
                force_fp32: bool = False, update_emas: bool = False) -> torch.Tensor:
        if update_emas:
            with torch.no_grad():
                current = x.detach().to(torch.float32).square().mean()
                self.magnitude_ema.copy_(current.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()
        styles = self.affine(w)
        if style_offset is not None:
            styles = styles + style_offset.to(styles.dtype)
        if self.is_torgb:
            styles = styles * self.weight_gain
        use_half = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        dtype = torch.float16 if use_half else torch.float32
        # The input gain scales the (linear) convolution after demodulation: an output gain.
        x = modulated_conv2d(x.to(dtype), self.weight, styles, padding=self.conv_kernel - 1,
                             demodulate=not self.is_torgb, out_gain=float(input_gain))
        gain = 1.0 if self.is_torgb else math.sqrt(2)
        slope = 1.0 if self.is_torgb else 0.2
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias, up=self.up_factor,
                              down=self.down_factor, padding=self.padding, gain=gain, slope=slope,
                              clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return (f"is_torgb={self.is_torgb}, in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"in_size={list(self.in_size)}, out_size={list(self.out_size)}, up={self.up_factor}, "
                f"down={self.down_factor}, radial={self.down_radial}")


class SynthesisNetwork(StyleSynthesis):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, R, R]; ws[:, 0] drives the input's transform,
    ws[:, i + 1] the layer L{i}."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2,
                 first_stopband: float = 2 ** 2.1, last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10,
                 output_scale: float = 0.25, num_fp16_res: int = 4, **layer_kwargs):
        super().__init__()
        if not (isinstance(num_layers, int) and 1 <= num_layers <= 64 and isinstance(num_critical, int)
                and 0 <= num_critical < num_layers):
            raise ValueError(f"need 1 <= num_layers <= 64 and 0 <= num_critical < num_layers, got {num_layers}, "
                             f"{num_critical}")
        if not (isinstance(img_resolution, int) and 4 <= img_resolution <= 8192
                and img_resolution & (img_resolution - 1) == 0):
            raise ValueError(f"img_resolution must be a power of two from 4 to 8192, got {img_resolution!r}")
        if not (0 < channel_base <= 2 ** 20 and 0 < channel_max <= 8192 and 0 <= margin_size <= 1024):
            raise ValueError(f"implausible channel_base {channel_base!r}, channel_max {channel_max!r} or "
                             f"margin_size {margin_size!r}")
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res

        # Geometric progression of cutoffs and minimum stopbands from the first layer to the last
        # (section 3.2 / appendix F), in float64 as the schedule is designed.
        last_cutoff = img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels
        self.sampling_rates = [int(s) for s in sampling_rates]
        self.channels = {f"L{i}": int(c) for i, c in enumerate(channels)}

        self.input = SynthesisInput(w_dim=w_dim, channels=int(channels[0]), size=int(sizes[0]),
                                    sampling_rate=sampling_rates[0], bandwidth=cutoffs[0])
        self.layer_names: list[str] = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim, is_torgb=(idx == num_layers),
                is_critically_sampled=(idx >= num_layers - num_critical),
                use_fp16=bool(sampling_rates[idx] * (2 ** num_fp16_res) > img_resolution),
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=cutoffs[prev], out_cutoff=cutoffs[idx],
                in_half_width=half_widths[prev], out_half_width=half_widths[idx], **layer_kwargs)
            name = f"L{idx}_{int(layer.out_size[0])}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def style_layers(self) -> list[tuple[str, nn.Module, int]]:
        """(name like 'L3_52_512', layer, ws index it reads) for every modulated layer, in order."""
        return [(name, getattr(self, name), idx + 1) for idx, name in enumerate(self.layer_names)]

    def blocks(self) -> Iterator[tuple[int, list[nn.Module]]]:
        """The layers grouped by sampling rate (StyleGAN2's blocks are grouped by resolution)."""
        for rate in sorted(set(self.sampling_rates)):
            yield rate, [getattr(self, n) for n, r in zip(self.layer_names, self.sampling_rates) if r == rate]

    def layer_resolution(self, name: str) -> int:
        """Sampling rate of a style layer (the group `blocks()` puts it in)."""
        return self.sampling_rates[self.layer_names.index(name)]

    def noise_buffers(self) -> dict[str, torch.Tensor]:
        """StyleGAN3 has no noise inputs."""
        return {}

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", noise: dict | None = None,
                style_offsets: dict | None = None, force_fp32: bool = False, update_emas: bool = False,
                **unused) -> torch.Tensor:
        """`noise_mode` is accepted for interface compatibility (nothing is random here); `noise` must be
        empty. `style_offsets` {layer name: [C] or [N, C]} are added to the layers' styles."""
        ws = self._full_ws(ws)
        self._check_noise_mode(noise_mode)
        if noise:
            raise KeyError(f"StyleGAN3 has no noise inputs; got noise for {sorted(noise)}")
        style_offsets = style_offsets or {}
        for key in style_offsets:
            if key not in self.layer_names:
                raise KeyError(f"unknown synthesis layer {key!r}; expected one of {self.layer_names}")
        x = self.input(ws[:, 0])
        for idx, name in enumerate(self.layer_names):
            x = getattr(self, name)(x, ws[:, idx + 1], style_offset=style_offsets.get(name),
                                    force_fp32=force_fp32, update_emas=update_emas)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)


class Generator(nn.Module):
    """G(z, c) = synthesis(mapping(z, c)); arguments as the stylegan3 repository's Generator (synthesis
    arguments flat, or nested as `synthesis_kwargs`, the form a model card stores)."""

    architecture = ARCHITECTURE

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, synthesis_kwargs: dict | None = None,
                 **flat_synthesis_kwargs):
        super().__init__()
        synthesis_kwargs = {**(synthesis_kwargs or {}), **flat_synthesis_kwargs}
        mapping_kwargs = {"num_layers": 2, "w_avg_beta": 0.998, **(mapping_kwargs or {})}
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, mapping_kwargs=dict(mapping_kwargs),
                                synthesis_kwargs=dict(synthesis_kwargs))
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False,
                **synthesis_kwargs) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_w_avg=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)

    def kwargs_with_channels(self) -> dict:
        """Init kwargs as a card stores them (StyleGAN3's widths follow from channel_base/max)."""
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.init_kwargs.items()}
