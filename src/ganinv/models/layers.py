"""Building blocks of StyleGAN2 in plain PyTorch: FIR resampling, bias + activation, equalized-lr layers
and the modulated/demodulated convolution.

Follows the arithmetic of Karras et al., "Analyzing and Improving the Image Quality of StyleGAN"
(CVPR 2020) and the parameterisation of "Training Generative Adversarial Networks with Limited Data"
(NeurIPS 2020), so that weights trained with the official code give the official outputs. Nothing here
needs a compiled extension: resampling is written with separable depthwise convolutions, which on a
CPU are faster than the 2-D FIR reference, and the modulated convolution picks between the grouped
(fused) form and the "scale the activations" form by batch size, since both compute the same thing.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Activation functions by name: (function, default gain). Gain sqrt(2) keeps the variance of
# leaky-ReLU outputs at one (He et al.), as in the paper's equalized learning rate.
_ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
    "relu": (F.relu, math.sqrt(2)),
}
_INPLACE_ACTIVATIONS = {"lrelu": lambda x: F.leaky_relu_(x, 0.2), "relu": F.relu_}
# Positively homogeneous activations: act(x) * g == act(x * g) for g > 0.
HOMOGENEOUS_ACTIVATIONS = ("linear", "lrelu", "relu")


def activation_gain(name: str) -> float:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name][1]


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear",
             gain: float | None = None, clamp: float | None = None, owned: bool = False) -> torch.Tensor:
    """x + b (broadcast over channel dim 1), then activation, gain and optional symmetric clamp.

    When no gradient is being recorded, the steps after the bias add work in place on the new tensor:
    one activation-sized buffer instead of four. The caller's x is never modified unless it says x is
    its own temporary (`owned=True`)."""
    fn, default_gain = _ACTIVATIONS[act]
    gain = default_gain if gain is None else gain
    inplace = not torch.is_grad_enabled() or not (x.requires_grad or (b is not None and b.requires_grad))
    if b is not None:
        shape = [1] * x.ndim
        shape[1] = -1
        x = x + b.to(x.dtype).reshape(shape)
        owned = True
    if inplace and owned and act in _INPLACE_ACTIVATIONS:
        _INPLACE_ACTIVATIONS[act](x)
    elif act != "linear":
        x = fn(x)
        owned = True
    if gain != 1:
        x = x.mul_(gain) if inplace and owned else x * gain
        owned = True
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp) if inplace and owned else x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ---------------------------------------------------------------------------------------------
# FIR filtering (upfirdn2d). Filters are stored as 2-D [fh, fw] buffers (as in the official
# checkpoints); when a 2-D filter is an outer product we filter separably.


def setup_filter(f: Sequence[float] | torch.Tensor | None, normalize: bool = True,
                 gain: float = 1.0) -> torch.Tensor:
    """A 2-D FIR filter from a 1-D tap list (outer product), normalized to sum 1."""
    if f is None:
        f = [1]
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1:
        f = torch.outer(f, f)
    if f.ndim != 2:
        raise ValueError(f"a resample filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    if normalize:
        f = f / f.sum()
    return f * gain


def _separable_taps(f: torch.Tensor) -> tuple[list[float], list[float]] | None:
    """(column taps, row taps) as floats with outer(col, row) == f, or None if f is not rank one.

    Filters are module buffers used on every forward pass: the answer is kept on the tensor itself
    (keyed by its version counter, so an in-place change is seen) instead of re-checked each call."""
    cached = getattr(f, "_ganinv_separable", None)
    if cached is not None and cached[0] == f._version:
        return cached[1]
    taps = None
    total = f.sum()
    if float(total) != 0:
        col = f.sum(dim=1)
        row = f.sum(dim=0) / total
        if torch.allclose(torch.outer(col, row), f, rtol=1e-5, atol=1e-7):
            taps = (col.tolist(), row.tolist())
    try:
        f._ganinv_separable = (f._version, taps)
    except (AttributeError, RuntimeError):  # e.g. a tensor subclass that refuses attributes
        pass
    return taps


# Measured on a 2-core CPU (benchmarks/generator_speed.py): for small and medium activations a
# rank-one filter applied as shifted, scaled slices beats PyTorch's depthwise convolution by 1.5-4x;
# for very large ones (memory-bound) the depthwise convolution is faster.
_SLICE_FIR_MAX_ELEMENTS = 4_000_000
# CPU fast paths: rank-one FIR filters as shifted slices, 1x1 convolutions as matmuls. False gives the
# plain depthwise 2-D FIR and conv2d of the official CPU fallback (the speed benchmark's A/B arm).
FAST_PATHS = True
# Batch-1 modulated convolutions use the grouped ("fused") form when the activations hold at least this
# many times as many elements as the weight, and the scale-the-activations form otherwise.
FUSED_MIN_RATIO = 1.0
# CPU: transposed (upsampling) convolutions in channels-last layout, which the following layers keep.
CHANNELS_LAST_UPSAMPLING = True
# Inside `fir_as_convolution()` (the GAN trainer's steps), FIR filters run as depthwise convolutions while
# autograd records: the shifted-slice form's backward pass writes a zero-filled copy of the input per tap.
# Measured over forward and backward on one CPU thread at 64 px StyleGAN2 shapes, the convolution is 2-3x
# faster, 4-7x when it also downsamples (strided: only the kept outputs), and a whole training step 1.27x
# (benchmarks/train_step.py). Inversions keep the slices: their tuned results are compared across code
# paths within 1e-4, which the other rounding would move.
FIR_CONV_UNDER_AUTOGRAD = False


@contextlib.contextmanager
def fir_as_convolution(enabled: bool = True) -> Iterator[None]:
    """Within the block, FIR filters on tensors that autograd records run as depthwise convolutions
    (same values; see FIR_CONV_UNDER_AUTOGRAD)."""
    global FIR_CONV_UNDER_AUTOGRAD
    previous, FIR_CONV_UNDER_AUTOGRAD = FIR_CONV_UNDER_AUTOGRAD, enabled
    try:
        yield
    finally:
        FIR_CONV_UNDER_AUTOGRAD = previous


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D tensor laid out NHWC (and not also NCHW-contiguous, as 1x1 maps are)."""
    if x.dim() != 4 or is_vmapped(x) or x.is_contiguous():
        return False
    return x.is_contiguous(memory_format=torch.channels_last)


def is_vmapped(x: torch.Tensor) -> bool:
    """True for a tensor batched by torch.func.vmap (per-target weights of batched PTI): its memory
    layout cannot be asked or chosen, so the channels-last fast paths stay off."""
    return torch._C._functorch.is_batchedtensor(x)


def derived_weight(weight: torch.Tensor, key: str, fn) -> torch.Tensor:
    """fn(weight), kept on the tensor for inference: weights are constant between optimizer steps, so
    quantities such as the demodulation norms need not be recomputed on every forward pass. The cache is
    keyed by the tensor's version counter (in-place updates, load_state_dict and optimizer steps bump it)
    and bypassed whenever autograd records the computation."""
    if (not FAST_PATHS or (weight.requires_grad and torch.is_grad_enabled())
            or torch.is_inference_mode_enabled()):  # inference tensors could not be saved for backward later
        return fn(weight)
    cache = getattr(weight, "_ganinv_derived", None)
    if cache is None or cache[0] != weight._version:
        cache = (weight._version, {})
        try:
            weight._ganinv_derived = cache
        except (AttributeError, RuntimeError):
            return fn(weight)
    if key not in cache[1]:
        cache[1][key] = fn(weight)
    return cache[1][key]


def upsamples_channels_last(x: torch.Tensor) -> bool:
    """Whether conv2d_resample(up > 1) on x returns a channels-last tensor: the CPU fast path for
    inference. With autograd recording, the channels-last backward passes are slower (measured 10-20% per
    training step at 64 px), so training and optimization stay NCHW."""
    return (FAST_PATHS and CHANNELS_LAST_UPSAMPLING and x.device.type == "cpu" and not torch.is_grad_enabled()
            and not is_vmapped(x))


def _fir_pass(x: torch.Tensor, taps: Sequence[float], pad0: int, pad1: int, dim: int) -> torch.Tensor:
    """Valid correlation along `dim` of x zero-padded by (pad0, pad1), without building the padded copy:
    each tap adds a shifted slice into the output, clipped at the borders. The first tap that covers the
    whole output initializes it (no zero fill when one does); the rest accumulate in place (autograd
    allows it: an addition's backward needs neither operand)."""
    size = x.shape[dim]
    out_size = size + pad0 + pad1 - len(taps) + 1

    def span(i):  # output range [j0, j1) that tap i reads from inside x, and the matching source start
        j0, j1 = max(0, pad0 - i), min(out_size, size + pad0 - i)
        return j0, j1, j0 + i - pad0

    full = [i for i in range(len(taps)) if span(i)[:2] == (0, out_size)]
    if full:
        first = full[0]
        out = x.narrow(dim, span(first)[2], out_size) * taps[first]
    else:
        first = None
        shape = list(x.shape)
        shape[dim] = out_size
        out = x.new_zeros(shape)
    for i, tap in enumerate(taps):
        if i == first:
            continue
        j0, j1, src = span(i)
        if j1 > j0:
            out.narrow(dim, j0, j1 - j0).add_(x.narrow(dim, src, j1 - j0), alpha=tap)
    return out


def _separable_fir_slices(x: torch.Tensor, col_taps: Sequence[float], row_taps: Sequence[float],
                          pad: Sequence[int] = (0, 0, 0, 0)) -> torch.Tensor:
    """Valid correlation of x zero-padded by pad = (x0, x1, y0, y1) >= 0 with outer(col, row): a row
    pass and a column pass of shifted slices."""
    px0, px1, py0, py1 = pad
    return _fir_pass(_fir_pass(x, row_taps, px0, px1, 3), col_taps, py0, py1, 2)


def _pad_or_crop(x: torch.Tensor, padx0: int, padx1: int, pady0: int, pady1: int) -> torch.Tensor:
    if max(padx0, padx1, pady0, pady1) > 0:
        x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    if min(padx0, padx1, pady0, pady1) < 0:
        x = x[:, :, max(-pady0, 0): x.shape[2] - max(-pady1, 0), max(-padx0, 0): x.shape[3] - max(-padx1, 0)]
    return x


def _parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    assert len(padding) == 4
    return tuple(int(p) for p in padding)  # type: ignore[return-value]


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
              padding: int | Sequence[int] = 0, gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR filter (true convolution), downsample by striding.

    `padding` is [x0, x1, y0, y1] (or one int, or [x, y]); negative values crop.
    """
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    batch, channels, height, width = x.shape
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    if f.shape[0] > 1 or f.shape[1] > 1:
        # conv2d computes correlation; flipping the filter makes it a convolution.
        recording = FIR_CONV_UNDER_AUTOGRAD and torch.is_grad_enabled() and x.requires_grad
        taps = (_separable_taps(f) if FAST_PATHS and not recording and x.numel() <= _SLICE_FIR_MAX_ELEMENTS
                else None)
        if taps is not None:
            x = _pad_or_crop(x, min(padx0, 0), min(padx1, 0), min(pady0, 0), min(pady1, 0))  # crops are views
            col, row = taps
            x = _separable_fir_slices(x, [t * gain for t in reversed(col)], row[::-1],
                                      (max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)))
        else:
            conv_pad = (0, 0)
            if FAST_PATHS and padx0 == padx1 >= 0 and pady0 == pady1 >= 0:
                conv_pad = (pady0, padx0)  # the convolution pads: no padded copy of a large input
            else:
                x = _pad_or_crop(x, padx0, padx1, pady0, pady1)
            f = (f.to(device=x.device, dtype=x.dtype) * gain).flip([0, 1])
            # Every down-th output of a valid convolution is the strided convolution: a quarter of the work.
            stride = down if FAST_PATHS else 1
            x = F.conv2d(x, f[None, None].expand(x.shape[1], 1, -1, -1), padding=conv_pad, stride=stride,
                         groups=x.shape[1])
            down //= stride
    else:
        x = _pad_or_crop(x, padx0, padx1, pady0, pady1)
    if f.shape[0] == 1 and f.shape[1] == 1 and float(f.reshape(-1)[0]) * gain != 1:
        x = x * (float(f.reshape(-1)[0]) * gain)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2, gain: float = 1.0) -> torch.Tensor:
    fh, fw = f.shape
    p = [(fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=p, gain=gain * up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2, gain: float = 1.0) -> torch.Tensor:
    fh, fw = f.shape
    p = [(fw - down + 1) // 2, (fw - down) // 2, (fh - down + 1) // 2, (fh - down) // 2]
    return upfirdn2d(x, f, down=down, padding=p, gain=gain)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1,
                    down: int = 1, padding: int = 0, groups: int = 1,
                    flip_weight: bool = True, bias: torch.Tensor | None = None) -> torch.Tensor:
    """2-D convolution with optional FIR up/down-sampling, as the official conv2d_resample.

    `bias` [out_channels], when given, is added to the result: by the convolution itself where the
    convolution is the last step (oneDNN adds it in its epilogue, no extra pass), else in place after."""
    if bias is not None:
        if up == 1 and down == 1 and not (FAST_PATHS and w.shape[2] == w.shape[3] == 1):
            px0, px1, py0, py1 = _parse_padding(padding)
            if px0 == px1 >= 0 and py0 == py1 >= 0:
                if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
                    w = w.flip([2, 3])
                if FAST_PATHS and is_channels_last(x):
                    w = derived_weight(w, "channels_last", lambda v: v.contiguous(memory_format=torch.channels_last))
                return F.conv2d(x, w, bias.to(x.dtype), padding=(py0, px0), groups=groups)
        x = conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight)
        # The result is a new tensor (an addition's backward needs neither operand: safe under autograd).
        return x.add_(bias.to(x.dtype).reshape(1, -1, 1, 1))
    out_channels, in_per_group, kh, kw = w.shape
    fh, fw = (1, 1) if f is None else f.shape
    px0, px1, py0, py1 = _parse_padding(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    def conv(x, w, stride=1, pad=(0, 0), transpose=False, flip=True):
        if not flip and (kw > 1 or kh > 1):
            w = w.flip([2, 3])
        if transpose and upsamples_channels_last(x):
            # oneDNN's transposed convolution on NCHW tensors returns through a slow transposing copy; in
            # channels-last layout it does not. The result stays channels-last: the layers after it (FIR,
            # 3x3 convolution, epilogue, toRGB) run in that layout without converting back.
            x = x.contiguous(memory_format=torch.channels_last)
        if FAST_PATHS and is_channels_last(x):
            # oneDNN wants a channels-last weight with a channels-last input: convert once, not every call.
            w = derived_weight(w, "channels_last", lambda v: v.contiguous(memory_format=torch.channels_last))
        if transpose:
            return F.conv_transpose2d(x, w, stride=stride, padding=pad, groups=groups)
        return F.conv2d(x, w, stride=stride, padding=pad, groups=groups)

    if (FAST_PATHS and kw == 1 and kh == 1 and up == 1 and down == 1
            and max(px0, px1, py0, py1) == 0 == min(px0, px1, py0, py1)):
        # 1x1 convolution (toRGB): a (batched) matmul; PyTorch's CPU conv takes its slow path here.
        n, c, h, wd = x.shape
        if groups == 1 and is_channels_last(x):
            # NHWC: [N, HW, C] @ [C, O] reads the activations in place (a reshape to [N, C, HW] would copy).
            out = torch.matmul(x.permute(0, 2, 3, 1).reshape(n, h * wd, c), w.reshape(out_channels, c).t())
            return out.reshape(n, h, wd, out_channels).permute(0, 3, 1, 2)
        if groups == 1:
            # bmm with the weight broadcast over the batch: torch.matmul(2-D, 3-D) would first copy x
            # into a transposed layout (a full pass over the activations at high resolution).
            out = torch.bmm(w.reshape(1, out_channels, in_per_group).expand(n, -1, -1), x.reshape(n, c, h * wd))
        else:
            out = torch.bmm(w.reshape(groups, out_channels // groups, in_per_group),
                            x.reshape(groups, in_per_group, h * wd))
        return out.reshape(n, -1, h, wd)
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1])
        return conv(x, w, flip=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = conv(x, w, flip=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up * up)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1])
        return conv(x, w, stride=down, flip=flip_weight)
    if up > 1:
        if groups == 1:
            w = derived_weight(w, "transposed", lambda v: v.transpose(0, 1).contiguous())
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw)
            w = w.transpose(1, 2).reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = conv(x, w, stride=up, pad=(pyt, pxt), transpose=True, flip=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up * up)
        if down > 1:
            x = upfirdn2d(x, f, down=down)
        return x
    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return conv(x, w, pad=(py0, px0), flip=flip_weight)
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up * up)
    x = conv(x, w, flip=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down)
    return x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     noise: torch.Tensor | None = None, up: int = 1, down: int = 1, padding: int = 0,
                     resample_filter: torch.Tensor | None = None, demodulate: bool = True,
                     flip_weight: bool = True, fused_modconv: bool | None = None,
                     out_gain: float = 1.0, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Modulated convolution (StyleGAN2 eq. 1-3): scale input channels by `styles`, convolve, and
    (if demodulate) rescale each output channel to unit expected norm.

    fused_modconv=None picks the faster of the two equivalent forms: the grouped convolution with
    per-sample weights for batch 1, and "scale activations, shared-weight conv, scale outputs" for
    larger batches (one dense convolution instead of N small ones).

    `noise` is added after demodulation (any tensor that broadcasts to the output, e.g. noise plus the
    layer's bias); `out_gain` scales the convolution's output before that (folded into the
    demodulation coefficients, so it costs no extra pass over the activations). `bias` [out_channels] is
    added with the noise; the grouped form hands it to the convolution (no pass of its own) and adds the
    noise in place, the other form adds both in its one demodulating pass.
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if styles.shape != (batch, in_channels):
        raise ValueError(f"styles must have shape [{batch}, {in_channels}], got {tuple(styles.shape)}")
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalize to avoid fp16 overflow; cancels out in demodulation.
        weight = weight * (1 / math.sqrt(in_channels * kh * kw)
                           / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    if fused_modconv is None:
        # Batch 1: the grouped form is a plain convolution with a modulated copy of the weight; scaling
        # the activations instead is cheaper wherever they are smaller than the weight (low resolutions).
        fused_modconv = batch == 1 and (not FAST_PATHS or x[0].numel() >= weight.numel() * FUSED_MIN_RATIO)

    dcoefs = None
    if demodulate and (FAST_PATHS or not fused_modconv):
        # sum_{i,k} (W_oik s_i)^2 = sum_i s_i^2 sum_k W_oik^2: a matmul instead of an [N, O, I, k, k] tensor.
        wsq = derived_weight(weight, "sumsq_t", lambda v: v.square().sum(dim=[2, 3]).t())
        dcoefs = (styles.square() @ wsq + 1e-8).rsqrt()
    if fused_modconv:
        if dcoefs is not None:
            # One pass over the weight: modulation and demodulation (and out_gain) as one scale factor.
            if out_gain != 1:
                dcoefs = dcoefs * out_gain
            scale = dcoefs.reshape(batch, -1, 1) * styles.reshape(batch, 1, -1)
            w = weight.unsqueeze(0) * scale.reshape(batch, out_channels, in_channels, 1, 1)
            dcoefs, out_gain = None, 1.0
        else:
            w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
            if demodulate:
                dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if out_gain != 1:
        dcoefs = (dcoefs * out_gain if dcoefs is not None
                  else torch.full([batch, out_channels], float(out_gain), dtype=x.dtype, device=x.device))
    if not fused_modconv:
        x = x * styles.reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight, f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight)
        if bias is not None:
            noise = _offset(bias.to(x.dtype), None if noise is None else noise.to(x.dtype), channels_last=is_channels_last(x))
        if dcoefs is not None and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.reshape(batch, -1, 1, 1))  # one pass
        if dcoefs is not None:
            x = x * dcoefs.reshape(batch, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x
    if dcoefs is not None:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    if batch > 1:  # at batch 1 the reshape is a no-op that can leave a channels-last tensor odd strides
        x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    if bias is not None:
        bias = bias.to(x.dtype).repeat(batch) if batch > 1 else bias.to(x.dtype)
    x = conv2d_resample(x, w, f=resample_filter, up=up, down=down, padding=padding, groups=batch,
                        flip_weight=flip_weight, bias=bias)
    if batch > 1:
        x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        noise = noise.to(x.dtype)
        # x is the convolution's own new tensor: add in place (no activation-sized temporary) where the
        # noise broadcasts to it; an addition's backward needs neither operand, so autograd allows it.
        x = x.add_(noise) if torch.broadcast_shapes(noise.shape, x.shape) == x.shape else x + noise
    return x


def _offset(bias: torch.Tensor, noise: torch.Tensor | None, channels_last: bool) -> torch.Tensor:
    """bias [C] + noise (broadcasting to [N, C, H, W]) as one tensor, laid out like the activations it
    will meet (an NCHW operand next to NHWC activations would make the add a slow transposing pass)."""
    offset = bias.reshape(1, -1, 1, 1)
    if noise is None:
        return offset
    noise = noise.reshape((1,) * (4 - noise.dim()) + tuple(noise.shape))
    if channels_last:
        return (offset.permute(0, 2, 3, 1) + noise.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return offset + noise


# ---------------------------------------------------------------------------------------------
# Equalized learning-rate layers (weights stored at unit variance, scaled at run time).


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: str = "linear", lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        activation_gain(activation)
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1,
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = activation_gain(activation)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        x = conv2d_resample(x, w, f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1))
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)


def channels_from_base(resolutions: Sequence[int], channel_base: int, channel_max: int) -> dict[int, int]:
    return {int(res): int(min(channel_base // res, channel_max)) for res in resolutions}


def as_numpy_float(v) -> float:
    return float(np.asarray(v))
