"""Losses: each is zero (or minimal) at identity, positive otherwise, differentiable w.r.t. the image,
and never changes or accumulates gradients in D; the Laplacian pyramid inverts exactly; the factory
builds only the non-zero terms and names what is missing."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ganinv.losses as losses
from ganinv.metrics import lpips as lpips_module
from ganinv.models.stylegan2 import Discriminator
from ganinv.nets import VGG16


def _images(n=2, channels=3, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=generator) * 2 - 1


@pytest.fixture(scope="module")
def D():
    torch.manual_seed(0)
    return Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=32,
                         epilogue_kwargs=dict(mbstd_group_size=2))


@pytest.fixture
def standin_vgg(tmp_path):
    """Random VGG16 + heads under the genuine file names (tests only: never reported)."""
    torch.manual_seed(0)
    backbone = VGG16()
    torch.save(backbone.state_dict(), tmp_path / "vgg16-397923af.pth")
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(VGG16.TAP_CHANNELS)}
    torch.save(heads, tmp_path / "vgg.pth")
    return tmp_path


@pytest.fixture
def no_lpips_weights(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("GANINV_LPIPS_DIR", str(empty))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(lpips_module, "_installed_lpips_package_dir", lambda: None)
    return empty


def _check_image_loss(loss_fn, target, other):
    """Zero at identity, positive otherwise, gradient reaches the reconstruction only."""
    assert loss_fn(target.clone(), target).item() == pytest.approx(0.0, abs=1e-6)
    reconstruction = other.clone().requires_grad_(True)
    value = loss_fn(reconstruction, target)
    assert value.ndim == 0 and value.item() > 1e-4
    value.backward()
    assert reconstruction.grad is not None and torch.isfinite(reconstruction.grad).all()
    assert reconstruction.grad.abs().sum() > 0


# --------------------------------------------------------------------------- Laplacian pyramid

@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 1, 32, 32), (1, 3, 16, 16), (1, 3, 17, 23)])
def test_laplacian_pyramid_collapses_exactly(shape):
    image = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    pyramid = losses.laplacian_pyramid(image)
    expected_levels = int(math.log2(min(shape[-2:]))) - 2
    assert len(pyramid) == expected_levels + 1
    if shape[-1] == shape[-2] and shape[-1] & (shape[-1] - 1) == 0:
        assert pyramid[-1].shape[-1] == 4     # power-of-two images end at a 4x4 low-pass
    assert torch.allclose(losses.collapse_laplacian_pyramid(pyramid), image, atol=1e-5)


def test_laplacian_pyramid_band_pass_levels_ignore_constant_offset():
    image = _images(1, 3, 32)
    shifted = losses.laplacian_pyramid(image + 0.25)
    original = losses.laplacian_pyramid(image)
    for band_shifted, band_original in zip(shifted[:-1], original[:-1]):
        assert torch.allclose(band_shifted, band_original, atol=1e-5)
    assert torch.allclose(shifted[-1], original[-1] + 0.25, atol=1e-5)
    # So the loss of a constant offset is exactly the offset (only the residual differs).
    assert losses.laplacian_pyramid_loss(image + 0.25, image).item() == pytest.approx(0.25, abs=1e-5)


def test_laplacian_loss_is_sum_of_level_mean_absolute_differences():
    a, b = _images(2, 3, 32, seed=1), _images(2, 3, 32, seed=2)
    levels_a, levels_b = losses.laplacian_pyramid(a), losses.laplacian_pyramid(b)
    expected = sum((x - y).abs().mean(dim=(1, 2, 3)) for x, y in zip(levels_a, levels_b))
    assert torch.allclose(losses.laplacian_pyramid_loss(a, b, reduction="none"), expected, atol=1e-6)
    assert losses.laplacian_pyramid_loss(a, b).item() == pytest.approx(expected.mean().item(), abs=1e-6)


def test_laplacian_band_mse_weights_each_band_of_the_difference():
    a, b = _images(2, 3, 32, seed=1), _images(2, 3, 32, seed=2)
    bands = losses.laplacian_pyramid(a - b)  # 3 band-pass levels + the 4x4 residual
    energy = [band.square().mean(dim=(1, 2, 3)) for band in bands]
    weights = [5.0, 0.0, 2.0]  # the coarsest levels get no weight
    expected = 5.0 * energy[0] + 2.0 * energy[2]
    got = losses.laplacian_band_mse(a, b, weights, reduction="none")
    assert got.shape == (2,) and torch.allclose(got, expected, rtol=1e-5)
    assert losses.laplacian_band_mse(a, b, weights).item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert losses.laplacian_band_mse(a, a, weights).item() == 0.0
    # A constant offset lives in the residual only; a pixel checkerboard mostly in the finest band.
    assert losses.laplacian_band_mse(a + 0.5, a, [1, 1, 1]).item() == pytest.approx(0.0, abs=1e-10)
    assert losses.laplacian_band_mse(a + 0.5, a, [0, 0, 0, 1]).item() == pytest.approx(0.25, rel=1e-4)
    checker = 0.1 * (torch.arange(32)[:, None] + torch.arange(32)[None, :]).remainder(2).float().expand(2, 3, 32, 32)
    fine = losses.laplacian_band_mse(a + checker, a, [1]).item()
    coarse = losses.laplacian_band_mse(a + checker, a, [0, 1, 1]).item()
    assert fine > 20 * coarse > 0
    with pytest.raises(ValueError, match=">= 0"):
        losses.laplacian_band_mse(a, b, [1.0, -1.0])
    with pytest.raises(ValueError, match="5 weights for a pyramid of 4 levels"):
        losses.laplacian_band_mse(a, b, [1, 1, 1, 1, 1])


def test_laplacian_loss_basic_properties():
    _check_image_loss(losses.LaplacianPyramidLoss(), _images(2, 3, 16), _images(2, 3, 16, seed=5))
    with pytest.raises(ValueError, match="too many"):
        losses.laplacian_pyramid(torch.zeros(1, 3, 8, 8), levels=4)


# --------------------------------------------------------------------------- pixel MSE

def test_pixel_mse():
    target, other = _images(2), _images(2, seed=3)
    loss = losses.PixelMSELoss()
    assert loss(other, target).item() == pytest.approx(F.mse_loss(other, target).item(), rel=1e-6)
    assert loss(other, target, reduction="none").shape == (2,)
    _check_image_loss(loss, target, other)


# --------------------------------------------------------------------------- discriminator features

def test_discriminator_feature_loss_leaves_D_untouched(D):
    before = {name: p.detach().clone() for name, p in D.named_parameters()}
    loss = losses.DiscriminatorFeatureLoss(D)
    assert list(loss.parameters()) == [] and list(loss.children()) == []   # D is not a submodule
    _check_image_loss(loss, _images(2, 3, 16), _images(2, 3, 16, seed=7))
    for name, p in D.named_parameters():
        assert p.grad is None, name
        assert p.requires_grad, name          # flags restored
        assert torch.equal(p, before[name]), name


def test_discriminator_feature_loss_grows_with_distortion(D):
    target = _images(2, 3, 16)
    loss = losses.DiscriminatorFeatureLoss(D, distance="l2")
    values = [loss(target + s * _images(2, 3, 16, seed=8), target).item() for s in (0.01, 0.1, 1.0)]
    assert 0 < values[0] < values[1] < values[2]
    layer_loss = losses.DiscriminatorFeatureLoss(D, layers=[0])
    assert layer_loss(target + 0.1, target).item() > 0
    with pytest.raises(ValueError, match="out of range"):
        losses.DiscriminatorFeatureLoss(D, layers=[99])(target, target)


def test_discriminator_feature_loss_keeps_frozen_flags_of_frozen_D(D):
    for p in D.parameters():
        p.requires_grad_(False)
    try:
        losses.DiscriminatorFeatureLoss(D)(_images(1, 3, 16).requires_grad_(True), _images(1, 3, 16, seed=1))
        assert not any(p.requires_grad for p in D.parameters())
    finally:
        for p in D.parameters():
            p.requires_grad_(True)


# --------------------------------------------------------------------------- noise regularization

def _noise_dict(seed=0, batch=None):
    generator = torch.Generator().manual_seed(seed)
    shape = (lambda size: (size, size)) if batch is None else (lambda size: (batch, 1, size, size))
    return {f"b{size}.conv{j}": torch.randn(*shape(size), generator=generator)
            for size in (8, 16, 32) for j in (0, 1)}


def test_noise_regularization_penalizes_correlated_noise():
    regularization = losses.NoiseRegularization()
    white = regularization(_noise_dict())
    smooth = {name: F.interpolate(value[None, None, ::4, ::4], scale_factor=4, mode="bilinear")[0, 0]
              for name, value in _noise_dict().items()}
    # White noise: each term is the square of a mean of ~N(0, 1/pixels) products, so small.
    assert white.item() < 0.3
    assert regularization(smooth).item() > 20 * white.item()
    constant = {name: torch.ones_like(value) for name, value in _noise_dict().items()}
    # A constant map has autocorrelation 1 at every scale, twice (x and y) per scale:
    # 32 px -> 32, 16, 8 (3 scales), 16 px -> 2 scales, 8 px -> 1 scale; two maps each.
    assert regularization(constant).item() == pytest.approx(2 * 2 * (3 + 2 + 1), rel=1e-6)


def test_noise_regularization_is_differentiable_and_batched():
    noise = {name: value.requires_grad_(True) for name, value in _noise_dict(batch=3).items()}
    per_image = losses.NoiseRegularization()(noise, reduction="none")
    assert per_image.shape == (3,)
    per_image.sum().backward()
    assert all(value.grad is not None and value.grad.abs().sum() > 0 for value in noise.values())
    with pytest.raises(ValueError, match="expected"):
        losses.NoiseRegularization()({"b8.conv0": torch.zeros(8)})


def test_normalize_noise_in_place():
    noise = {name: value * 3 + 1 for name, value in _noise_dict(batch=2).items()}
    noise["shared"] = torch.randn(16, 16) * 0.1 - 2
    objects = {name: value for name, value in noise.items()}
    losses.normalize_noise_(noise)
    for name, value in noise.items():
        assert value is objects[name]
        per_image = value.reshape(value.shape[0] if value.ndim == 4 else 1, -1)
        assert torch.allclose(per_image.mean(dim=1), torch.zeros(per_image.shape[0]), atol=1e-5)
        assert torch.allclose(per_image.square().mean(dim=1), torch.ones(per_image.shape[0]), atol=1e-4)


# --------------------------------------------------------------------------- LPIPS loss

def test_lpips_loss_with_standin_weights(standin_vgg):
    loss = losses.LPIPSLoss("vgg", weights_dir=standin_vgg)
    _check_image_loss(loss, _images(1, 3, 32), _images(1, 3, 32, seed=4))
    assert all(p.grad is None for p in loss.parameters())


def test_lpips_loss_absent_weights_raise_only_when_asked(no_lpips_weights):
    with pytest.raises(losses.WeightsUnavailable, match="vgg16-397923af.pth"):
        losses.build_reconstruction_loss({"lpips": 0.1, "mse": 1.0})
    built = losses.build_reconstruction_loss({"lpips": 0.0, "mse": 1.0})
    assert set(built.terms) == {"mse"}


# --------------------------------------------------------------------------- factory

def test_build_reconstruction_loss_sums_weighted_terms(D, standin_vgg):
    weights = {"mse": 1.0, "laplacian": 0.5, "discriminator_features": 0.1, "lpips": 0.2,
               "noise_regularization": 1000.0}
    loss = losses.build_reconstruction_loss(weights, D=D, lpips_dir=standin_vgg)
    target = _images(2, 3, 16)
    reconstruction = _images(2, 3, 16, seed=1).requires_grad_(True)
    noise = {name: value.requires_grad_(True) for name, value in _noise_dict().items()}
    total, terms = loss(reconstruction, target, noise=noise)
    assert set(terms) == set(weights)
    assert all(not value.requires_grad for value in terms.values())
    assert total.item() == pytest.approx(sum(weights[k] * terms[k].item() for k in weights), rel=1e-5)
    total.backward()
    assert reconstruction.grad.abs().sum() > 0
    assert all(value.grad is not None for value in noise.values())
    assert all(p.grad is None for p in D.parameters())
    per_image, _ = loss(reconstruction, target, noise=noise, reduction="none")
    assert per_image.shape == (2,)
    assert per_image.mean().item() == pytest.approx(total.item(), rel=1e-5)


def test_build_reconstruction_loss_builds_only_nonzero_terms_and_validates():
    loss = losses.build_reconstruction_loss({"mse": 0, "laplacian": 1, "discriminator_features": 0})
    assert set(loss.terms) == {"laplacian"} and not loss.needs_noise
    target = _images(1)
    total, terms = loss(target, target)
    assert total.item() == 0.0 and set(terms) == {"laplacian"}
    with pytest.raises(ValueError, match="unknown loss term.*'pixel'"):
        losses.build_reconstruction_loss({"pixel": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        losses.build_reconstruction_loss({"mse": -1.0})
    with pytest.raises(ValueError, match="all loss weights are zero"):
        losses.build_reconstruction_loss({"mse": 0.0})
    with pytest.raises(ValueError, match="pass D"):
        losses.build_reconstruction_loss({"discriminator_features": 1.0})
    with pytest.raises(ValueError, match="noise="):
        losses.build_reconstruction_loss({"mse": 1.0, "noise_regularization": 1.0})(target, target)


def test_reconstruction_loss_drives_optimization_down(D):
    torch.manual_seed(0)
    target = _images(1, 3, 16)
    image = torch.zeros_like(target, requires_grad=True)
    loss = losses.build_reconstruction_loss({"laplacian": 1.0, "discriminator_features": 0.1}, D=D)
    optimizer = torch.optim.Adam([image], lr=0.05)
    first = None
    for _ in range(20):
        total, _ = loss(image, target)
        first = total.item() if first is None else first
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert total.item() < 0.5 * first
    assert all(p.grad is None for p in D.parameters())


def test_pyramid_blur_is_the_reflect_padded_binomial_filter():
    # The blur is written as shifted slices for speed; it must equal the definition: a
    # separable [1, 4, 6, 4, 1] / 16 filter with reflect padding, here as a depthwise convolution.
    from ganinv.losses.laplacian import _blur
    image = _images(2, 3, 12, seed=4)[:, :, :, :9]  # not square, not a power of two
    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    kernel2d = (kernel[:, None] * kernel[None, :]).expand(3, 1, 5, 5)
    reference = torch.nn.functional.conv2d(torch.nn.functional.pad(image, (2, 2, 2, 2), mode="reflect"),
                                           kernel2d, groups=3)
    assert torch.allclose(_blur(image), reference, atol=1e-6)
    assert torch.allclose(_blur(image, gain=4.0), 4 * reference, atol=1e-5)


def test_laplacian_residual_terms_match_the_two_losses():
    a, b = _images(2, 3, 32, seed=1), _images(2, 3, 32, seed=2)
    l1, band = losses.laplacian_residual_terms(a, b, [3.0, 1.0], reduction="none")
    assert torch.allclose(l1, losses.laplacian_pyramid_loss(a, b, reduction="none"), atol=1e-6)
    assert torch.allclose(band, losses.laplacian_band_mse(a, b, [3.0, 1.0], reduction="none"), rtol=1e-6)
    l1_only, zero = losses.laplacian_residual_terms(a, b)
    assert l1_only.item() == pytest.approx(l1.mean().item(), rel=1e-6) and zero.item() == 0.0
    with pytest.raises(ValueError, match="weights"):
        losses.laplacian_residual_terms(a, b, [1.0] * 5)
