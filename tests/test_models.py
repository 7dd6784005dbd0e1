"""The pure-PyTorch StyleGAN2: resampling against a naive reference, equivalent code paths, options."""
import numpy as np
import pytest
import torch

import ganinv.models.layers as layers_module
from ganinv.models.layers import modulated_conv2d, setup_filter, upfirdn2d
from ganinv.models.stylegan2 import Discriminator, Generator
from conftest import tiny_discriminator, tiny_generator


def naive_upfirdn2d(x, f, up, down, pad):
    """Direct loops: zero insertion, padding, true convolution, decimation (numpy, float64)."""
    x = x.astype(np.float64)
    n, c, h, w = x.shape
    up_x = np.zeros((n, c, h * up, w * up))
    up_x[:, :, ::up, ::up] = x
    px0, px1, py0, py1 = pad
    padded = np.zeros((n, c, h * up + py0 + py1, w * up + px0 + px1))
    padded[:, :, py0:py0 + h * up, px0:px0 + w * up] = up_x
    fh, fw = f.shape
    out_h = padded.shape[2] - fh + 1
    out_w = padded.shape[3] - fw + 1
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, :, i:i + fh, j:j + fw]
            out[:, :, i, j] = (window * f[::-1, ::-1]).sum(axis=(2, 3))
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2, 1, 2)), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)),
                                         (2, 2, (3, 2, 3, 2))])
@pytest.mark.parametrize("separable", [True, False])
def test_upfirdn2d_matches_naive_reference(up, down, pad, separable):
    rng = np.random.RandomState(0)
    x = rng.randn(2, 3, 6, 6).astype(np.float32)
    f = setup_filter([1, 3, 3, 1]).numpy() if separable else rng.rand(4, 4).astype(np.float32)
    ours = upfirdn2d(torch.from_numpy(x), torch.from_numpy(f), up=up, down=down, padding=list(pad)).numpy()
    ref = naive_upfirdn2d(x, f, up, down, pad)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-5
    # In the GAN trainer's form, the filter under autograd is a (strided) depthwise convolution: same values,
    # and the gradient matches the shifted-slice form's.
    gradients = []
    for conv in (True, False):
        with layers_module.fir_as_convolution(conv):
            xt = torch.from_numpy(x).requires_grad_(True)
            out = upfirdn2d(xt, torch.from_numpy(f), up=up, down=down, padding=list(pad))
            assert np.abs(out.detach().numpy() - ref).max() < 1e-5
            (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
            gradients.append(xt.grad)
    assert torch.allclose(gradients[0], gradients[1], atol=1e-5)


@pytest.mark.parametrize("up", [1, 2])
def test_fused_and_unfused_modulated_conv_agree(up):
    torch.manual_seed(0)
    x = torch.randn(3, 8, 8, 8)
    weight = torch.randn(5, 8, 3, 3)
    styles = torch.randn(3, 8)
    f = setup_filter([1, 3, 3, 1])
    a = modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f, flip_weight=(up == 1),
                         fused_modconv=True)
    b = modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f, flip_weight=(up == 1),
                         fused_modconv=False)
    assert a.shape == (3, 5, 8 * up, 8 * up)
    assert (a - b).abs().max() < 1e-4
    # Each sample's output depends on its own style only (batching does not mix samples).
    c = modulated_conv2d(x[1:2], weight, styles[1:2], up=up, padding=1, resample_filter=f, flip_weight=(up == 1))
    assert (c - a[1:2]).abs().max() < 1e-4


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_modulated_conv_bias_and_noise_in_the_epilogue(up, channels_last):
    """bias and noise given to modulated_conv2d (the convolution's own bias, an in-place noise add) equal
    adding them to its output afterwards, in both forms, both layouts, with gradients."""
    torch.manual_seed(1)
    x = torch.randn(1, 8, 8, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(5, 8, 3, 3, requires_grad=True)
    bias = torch.randn(5, requires_grad=True)
    styles = torch.randn(1, 8)
    noise = torch.randn(1, 1, 8 * up, 8 * up)
    f = setup_filter([1, 3, 3, 1])
    kw = dict(up=up, padding=1, resample_filter=f, flip_weight=(up == 1), out_gain=1.5)
    reference = modulated_conv2d(x, weight, styles, fused_modconv=False, **kw) + bias.reshape(1, -1, 1, 1) + noise
    ref_grads = torch.autograd.grad(reference.square().sum(), [weight, bias])
    for fused in (True, False):
        out = modulated_conv2d(x, weight, styles, noise=noise, bias=bias, fused_modconv=fused, **kw)
        assert (out - reference).abs().max() < 1e-4, fused
        grads = torch.autograd.grad(out.square().sum(), [weight, bias])
        for g, r in zip(grads, ref_grads):
            assert (g - r).abs().max() <= 1e-4 * r.abs().max(), fused


@pytest.mark.parametrize("arch", ["skip", "resnet"])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_configurations(arch, channels):
    G = tiny_generator(resolution=32, channels=channels, architecture=arch, conv_clamp=256)
    D = tiny_discriminator(resolution=32, channels=channels, architecture=arch, conv_clamp=256)
    z = torch.randn(3, G.z_dim)
    with torch.no_grad():
        img = G(z)
        assert img.shape == (3, channels, 32, 32) and torch.isfinite(img).all()
        assert D(img).shape == (3, 1)
        # Batch-size independence of G (fused path for 1, unfused for 3).
        assert (G(z[:1]) - img[:1]).abs().max() < 1e-4
    assert G.num_ws == 2 * 5 - 2


def test_conditional_networks():
    G = tiny_generator(resolution=16, c_dim=4)
    D = tiny_discriminator(resolution=16, c_dim=4)
    z = torch.randn(2, G.z_dim)
    c = torch.nn.functional.one_hot(torch.tensor([0, 3]), 4).float()
    with torch.no_grad():
        img = G(z, c)
        other = G(z, c.flip(0))
        assert (img - other).abs().max() > 1e-3  # the label matters
        assert D(img, c).shape == (2, 1)
    with pytest.raises(ValueError, match="conditional"):
        G(z, None)


def test_truncation_noise_and_style_offsets():
    G = tiny_generator(resolution=16)
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        ws = G.mapping(z, None)
        assert torch.allclose(G.mapping(z, None, truncation_psi=0), G.mapping.w_avg.expand_as(ws))
        cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
        assert torch.allclose(cut[:, 2:], ws[:, 2:]) and not torch.allclose(cut[:, :2], ws[:, :2])
        const = G.synthesis(ws, noise_mode="const")
        explicit = G.synthesis(ws, noise=G.synthesis.noise_buffers())
        assert torch.allclose(const, explicit, atol=1e-6)
        assert (G.synthesis(ws, noise_mode="none") - const).abs().max() > 1e-4
        zero = {name: torch.zeros(style.shape[1]) for name, style in G.synthesis.styles(ws).items()}
        assert torch.allclose(G.synthesis(ws, style_offsets=zero), const, atol=1e-6)
        name = next(iter(zero))
        assert (G.synthesis(ws, style_offsets={name: torch.ones(zero[name].shape) * 3}) - const).abs().max() > 1e-3
        with pytest.raises(KeyError):
            G.synthesis(ws, noise={"b999.conv0": torch.zeros(4, 4)})
        with pytest.raises(ValueError, match="ws must have shape"):
            G.synthesis(ws[:, :3])
    layers = G.synthesis.style_layers()
    assert [idx for _, _, idx in layers][-1] == G.num_ws - 1
    assert len({idx for _, _, idx in layers}) == G.num_ws


def test_w_avg_tracks_in_training_mode_only():
    G = tiny_generator(resolution=16)
    before = G.mapping.w_avg.clone()
    with torch.no_grad():
        G.eval()(torch.randn(4, G.z_dim))
        assert torch.equal(G.mapping.w_avg, before)
        G.train()(torch.randn(4, G.z_dim))
        assert not torch.equal(G.mapping.w_avg, before)


def test_minibatch_std_handles_indivisible_batch():
    D = tiny_discriminator(resolution=16)
    with torch.no_grad():
        assert D(torch.randn(6, 3, 16, 16)).shape == (6, 1)
        assert D(torch.randn(1, 3, 16, 16)).shape == (1, 1)
    with pytest.raises(ValueError, match="img must have shape"):
        D(torch.randn(2, 3, 8, 8))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="power of two"):
        Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=24, img_channels=3)
    with pytest.raises(ValueError, match="channels table"):
        Discriminator(c_dim=0, img_resolution=16, img_channels=3, channels={16: 8})


@pytest.mark.parametrize("batch", [1, 5])
def test_fast_paths_match_the_official_order_of_operations(batch, monkeypatch):
    """Slice FIR, 1x1 matmuls and the folded in-place epilogue give the official arithmetic's images, with
    and without autograd (in-place steps only run when no gradient is recorded)."""
    import ganinv.models.stylegan2 as sg2_module
    torch.manual_seed(3)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=512, channel_max=32, conv_clamp=256)).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
            elif name.endswith(".bias") and "affine" not in name:
                p.normal_(0, 0.2)
    ws = G.mapping(torch.randn(batch, 16), None).detach()
    noise = {k: torch.randn(batch, 1, *v.shape) for k, v in G.synthesis.noise_buffers().items()}
    with torch.no_grad():
        fast = G.synthesis(ws, noise=noise)
        fast_unfused = G.synthesis(ws, noise=noise, fused_modconv=False)
        fast_const = G.synthesis(ws, noise_mode="const")
        monkeypatch.setattr(layers_module, "_SLICE_FIR_MAX_ELEMENTS", 0)  # large-map path: FIR by padded conv
        fast_conv_fir = G.synthesis(ws, noise=noise)
        monkeypatch.undo()
        monkeypatch.setattr(layers_module, "CHANNELS_LAST_UPSAMPLING", False)  # NCHW throughout
        fast_nchw = G.synthesis(ws, noise=noise)
        monkeypatch.undo()
    assert fast.is_contiguous()
    ws_grad = ws.clone().requires_grad_(True)
    fast_grad = G.synthesis(ws_grad, noise=noise)
    fast_grad.square().sum().backward()
    fast_param_grads = {n: p.grad.clone() for n, p in G.synthesis.named_parameters() if p.grad is not None}
    G.zero_grad(set_to_none=True)
    monkeypatch.setattr(layers_module, "FAST_PATHS", False)
    monkeypatch.setattr(sg2_module, "FOLD_EPILOGUE", False)
    with torch.no_grad():
        plain = G.synthesis(ws, noise=noise)
        plain_const = G.synthesis(ws, noise_mode="const")
    ws_plain = ws.clone().requires_grad_(True)
    G.synthesis(ws_plain, noise=noise).square().sum().backward()
    assert (fast - plain).abs().max() < 1e-5
    assert (fast_const - plain_const).abs().max() < 1e-5
    assert (fast_unfused - plain).abs().max() < 1e-5
    assert (fast_conv_fir - plain).abs().max() < 1e-5
    assert (fast_nchw - plain).abs().max() < 1e-5
    assert (fast_grad.detach() - plain).abs().max() < 1e-5
    assert (ws_grad.grad - ws_plain.grad).abs().max() <= 1e-4 * ws_plain.grad.abs().max()
    for name, p in G.synthesis.named_parameters():  # training takes the fast paths too
        if p.grad is not None:
            assert (fast_param_grads[name] - p.grad).abs().max() <= 1e-4 * (p.grad.abs().max() + 1e-6), name


def test_cached_weight_quantities_follow_weight_updates(monkeypatch):
    """Inference keeps per-weight quantities (demodulation norms, channels-last and transposed copies) on
    the weight; any in-place change (an optimizer step, load_state_dict) must invalidate them."""
    import ganinv.models.stylegan2 as sg2_module
    torch.manual_seed(4)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=512, channel_max=32)).eval()
    ws = G.mapping(torch.randn(1, 16), None).detach()
    with torch.no_grad():
        before = G.synthesis(ws)
        assert (G.synthesis(ws) - before).abs().max() == 0  # served from the caches: same result
    opt = torch.optim.SGD(G.synthesis.parameters(), lr=0.5)
    G.synthesis(ws).square().mean().backward()  # with autograd: caches bypassed
    opt.step()
    with torch.no_grad():
        after_step = G.synthesis(ws)
        state = {k: v.clone() for k, v in G.state_dict().items()}
        for name, p in G.synthesis.named_parameters():
            if name.endswith("weight"):
                p.add_(torch.randn_like(p) * 0.3)
        after_edit = G.synthesis(ws)
        G.load_state_dict(state)
        after_load = G.synthesis(ws)
        monkeypatch.setattr(layers_module, "FAST_PATHS", False)
        monkeypatch.setattr(sg2_module, "FOLD_EPILOGUE", False)
        ref_step = G.synthesis(ws)
    assert (after_step - before).abs().max() > 1e-3
    assert (after_step - ref_step).abs().max() < 1e-5
    assert (after_load - ref_step).abs().max() < 1e-5
    assert (after_edit - after_step).abs().max() > 1e-3
