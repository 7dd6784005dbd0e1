"""Alias-free resampling for StyleGAN3: windowed-sinc (and jinc) low-pass filter design and the filtered
leaky ReLU, in plain PyTorch.

Karras et al., "Alias-Free Generative Adversarial Networks" (NeurIPS 2021), section 3.2 and appendix
C-D: a pointwise nonlinearity creates frequencies above the band limit, so it is applied at a temporarily
higher sampling rate: upsample with an ideal-ish low-pass filter, add the bias, apply leaky ReLU (with
gain and clamp), low-pass filter again and decimate to the output rate. The filters are Kaiser-windowed
sinc filters (separable), or for the rotation-equivariant configuration a radially symmetric
Kaiser-windowed jinc filter (2-D) for downsampling.

Upsampling by zero insertion followed by convolution (the textbook definition) spends most of its work
multiplying zeros; here it is one strided transposed convolution per axis, and the decimating filter is a
strided convolution that computes only the samples it keeps. The results equal the definition.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .layers import is_vmapped


def _kaiser_beta(attenuation: float) -> float:
    # Kaiser's empirical formula for the window shape that reaches a stopband attenuation (dB).
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation > 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def _kaiser_attenuation(numtaps: int, width: float) -> float:
    # Attenuation reachable with `numtaps` taps for a transition width given as a fraction of Nyquist.
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> torch.Tensor | None:
    """A low-pass FIR filter with unit DC gain: 1-D Kaiser-windowed sinc (`numtaps` taps, cutoff and
    transition width in the units of the sampling rate `fs`), or with `radial` a 2-D [numtaps, numtaps]
    Kaiser-windowed jinc. One tap means no filtering: returns None."""
    if numtaps < 1:
        raise ValueError(f"a filter needs at least one tap, got {numtaps}")
    if numtaps == 1:
        return None
    nyquist = fs / 2
    beta = _kaiser_beta(_kaiser_attenuation(numtaps, width / nyquist))
    window = np.kaiser(numtaps, beta)
    if not radial:
        m = np.arange(numtaps) - (numtaps - 1) / 2
        rel = cutoff / nyquist
        f = rel * np.sinc(rel * m) * window
        return torch.as_tensor(f / f.sum(), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = torch.from_numpy(np.hypot(*np.meshgrid(x, x)))
    # The 2-D ideal low-pass kernel is J1(2 pi fc r) / (pi r) (the jinc), windowed radially separably.
    f = torch.special.bessel_j1(2 * cutoff * math.pi * r) / (math.pi * r)
    f = f * torch.from_numpy(np.outer(window, window))
    return (f / f.sum()).to(torch.float32)


def _crop_or_pad(x: torch.Tensor, dim: int, start: int, length: int) -> torch.Tensor:
    """x[start:start + length] along dim, zeros where that range leaves x."""
    size = x.shape[dim]
    lo = min(max(start, 0), size)
    hi = max(min(start + length, size), lo)
    x = x.narrow(dim, lo, hi - lo)
    before = max(-start, 0)
    after = length - before - x.shape[dim]
    if before > 0 or after > 0:
        x = F.pad(x, _pad_spec(x.dim(), dim, before, after))
    return x


def _pad_spec(ndim: int, dim: int, before: int, after: int) -> list[int]:
    spec = [0, 0] * (ndim - dim)
    spec[2 * (ndim - 1 - dim)] = before
    spec[2 * (ndim - 1 - dim) + 1] = after
    return spec


def _upsample_axis(x: torch.Tensor, f: torch.Tensor | None, up: int, pad0: int, pad1: int, dim: int,
                   gain: float) -> torch.Tensor:
    """Along `dim`: insert up-1 zeros after each sample, pad by (pad0, pad1) (negative crops), convolve
    with f * gain (valid part): as a strided transposed convolution, which skips the zeros."""
    size = x.shape[dim]
    taps = 1 if f is None else f.shape[0]
    out_len = size * up + pad0 + pad1 - taps + 1
    if f is None:
        if up > 1:
            shape = list(x.shape)
            x = x.unsqueeze(dim + 1)
            x = F.pad(x, _pad_spec(x.dim(), dim + 1, 0, up - 1))
            shape[dim] = size * up
            x = x.reshape(shape)
        if gain != 1:
            x = x * gain
        return _crop_or_pad(x, dim, -pad0, out_len)
    channels = x.shape[1]
    kernel = (f.to(x.dtype) * gain).reshape([1, 1, 1, taps] if dim == 3 else [1, 1, taps, 1])
    kernel = kernel.expand(channels, 1, -1, -1)
    stride = (1, up) if dim == 3 else (up, 1)
    # y[n] = sum_i x[i] f[n - i*up]; the definition's output j is y[j + taps - 1 - pad0].
    y = F.conv_transpose2d(x, kernel, stride=stride, groups=channels)
    return _crop_or_pad(y, dim, taps - 1 - pad0, out_len)


def _downsample(x: torch.Tensor, f: torch.Tensor | None, down: int) -> torch.Tensor:
    """Convolve with f (valid part) and keep every `down`-th sample: a strided convolution."""
    if f is None:
        return x[:, :, ::down, ::down] if down > 1 else x
    channels = x.shape[1]
    f = f.to(x.dtype).flip(list(range(f.dim())))
    if f.dim() == 2:
        return F.conv2d(x, f[None, None].expand(channels, 1, -1, -1), stride=down, groups=channels)
    taps = f.shape[0]
    x = F.conv2d(x, f.reshape(1, 1, 1, taps).expand(channels, 1, -1, -1), stride=(1, down), groups=channels)
    return F.conv2d(x, f.reshape(1, 1, taps, 1).expand(channels, 1, -1, -1), stride=(down, 1), groups=channels)


def filtered_lrelu(x: torch.Tensor, up_filter: torch.Tensor | None, down_filter: torch.Tensor | None,
                   bias: torch.Tensor | None, up: int = 1, down: int = 1,
                   padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = math.sqrt(2),
                   slope: float = 0.2, clamp: float | None = None) -> torch.Tensor:
    """Bias, upsample by `up` with `up_filter` (1-D, separable; gain up**2), leaky ReLU with `slope`
    times `gain`, clamp to [-clamp, clamp], filter with `down_filter` (1-D separable or 2-D) and decimate
    by `down`. `padding` = (x0, x1, y0, y1) is applied to the upsampled signal before filtering (negative
    values crop). x: [N, C, H, W]."""
    if up_filter is not None and up_filter.dim() != 1:
        raise ValueError("the upsampling filter must be 1-D (separable)")
    px0, px1, py0, py1 = (int(p) for p in padding)
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)
    x = _upsample_axis(x, up_filter, up, px0, px1, 3, float(up))
    x = _upsample_axis(x, up_filter, up, py0, py1, 2, float(up))
    # In place only on a tensor made here (the bias add or a resampling), never on the caller's.
    owned = bias is not None or up_filter is not None or up > 1
    # Under torch.func.vmap (batched PTI) requires_grad does not show the outer graph: never in place.
    inplace = owned and not (torch.is_grad_enabled() and x.requires_grad) and not is_vmapped(x)
    if slope != 1:
        x = F.leaky_relu_(x, slope) if inplace else F.leaky_relu(x, slope)
    if gain != 1:
        x = x.mul_(gain) if inplace else x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return _downsample(x, down_filter, down)
