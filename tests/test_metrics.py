"""Metrics: MSE/PSNR definitions, SSIM against scikit-image, LPIPS loading and behaviour with
stand-in weights (random tensors with the genuine files' key names and shapes), feature similarity."""
from __future__ import annotations

import math
import os
import pickle

import pytest
import torch

import ganinv.metrics as metrics
from ganinv.metrics import lpips as lpips_module
from ganinv.nets import VGG16, AlexNet, WeightsMismatch


def _optional(module_name: str):
    """A package of the `test` extra (pip install -e ".[test]"): a test error, never a skip, when missing."""
    return __import__(module_name, fromlist=["_"])


def _images(n=2, channels=3, height=32, width=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, height, width, generator=generator) * 2 - 1


# --------------------------------------------------------------------------- LPIPS stand-in weights

def write_standin_lpips_weights(folder, net="alex", seed=0, with_classifier_keys=True):
    """Random weights with the genuine files' names, keys and shapes (tests only: never reported)."""
    torch.manual_seed(seed)
    backbone_class = {"alex": AlexNet, "vgg": VGG16}[net]
    backbone = backbone_class(with_classifier=False)
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    if with_classifier_keys:
        # A genuine torchvision file also holds the classifier; only those extra keys may be ignored.
        state["classifier.6.weight"] = torch.zeros(10, 4)
        state["classifier.6.bias"] = torch.zeros(10)
    filename = lpips_module.BACKBONE_FILES[net][0]
    torch.save(state, folder / filename)
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(backbone.TAP_CHANNELS)}
    torch.save(heads, folder / lpips_module.HEAD_FILES[net][-1])
    return folder


@pytest.fixture
def isolated_lpips_search(tmp_path, monkeypatch):
    """No genuine weights visible: empty env dir, empty torch hub, no lpips package."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("GANINV_LPIPS_DIR", str(empty))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(lpips_module, "_installed_lpips_package_dir", lambda: None)
    monkeypatch.setattr(lpips_module, "_CACHE", {})
    return tmp_path


@pytest.fixture
def standin_alex(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    write_standin_lpips_weights(folder, "alex")
    return folder


# --------------------------------------------------------------------------- MSE / PSNR

def test_mse_and_psnr_definitions():
    target = torch.zeros(2, 3, 8, 8)
    reconstruction = target.clone()
    reconstruction[0] += 0.1
    reconstruction[1] += 0.02
    assert torch.allclose(metrics.mse(reconstruction, target), torch.tensor([0.01, 0.0004]), rtol=1e-5)
    # Peak-to-peak 2 on [-1, 1]: PSNR = 10 log10(4 / MSE); 0.0004 is exactly 40 dB.
    assert torch.allclose(metrics.psnr(reconstruction, target),
                          torch.tensor([10 * math.log10(400), 40.0]), atol=1e-3)
    assert math.isinf(metrics.psnr(target, target)[0].item())
    assert abs(metrics.mse_from_psnr(35) - 0.00126) < 1e-5


def test_psnr_matches_uint8_convention():
    # The same images on [0, 255] with peak 255 give the same PSNR.
    a, b = _images(1), _images(1, seed=1)
    a255, b255 = (a + 1) * 127.5, (b + 1) * 127.5
    reference = 10 * torch.log10(255.0 ** 2 / (a255 - b255).square().mean())
    assert abs(metrics.psnr(a, b).item() - reference.item()) < 1e-3


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        metrics.mse(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        metrics.psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


# --------------------------------------------------------------------------- SSIM

@pytest.mark.parametrize("channels,height,width", [(3, 32, 32), (1, 32, 32), (3, 20, 27), (3, 64, 64)])
def test_ssim_matches_scikit_image(channels, height, width):
    skimage_metrics = _optional("skimage.metrics")
    target = _images(2, channels, height, width, seed=3)
    # Structured images (smooth gradient + noise of several strengths), not only white noise.
    ramp = torch.linspace(-1, 1, width).view(1, 1, 1, width).expand(2, channels, height, width)
    target = (0.6 * ramp + 0.3 * target).clamp(-1, 1)
    for strength in (0.02, 0.2, 0.8):
        reconstruction = (target + strength * _images(2, channels, height, width, seed=4)).clamp(-1, 1)
        ours = metrics.ssim(reconstruction, target)
        for i in range(2):
            x = ((reconstruction[i] + 1) / 2).permute(1, 2, 0).double().numpy()
            y = ((target[i] + 1) / 2).permute(1, 2, 0).double().numpy()
            reference = skimage_metrics.structural_similarity(
                x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
                channel_axis=2)
            assert abs(ours[i].item() - reference) < 1e-4, (strength, ours[i].item(), reference)


def test_ssim_identity_and_ordering():
    target = _images(1, 3, 32, 32)
    assert abs(metrics.ssim(target, target).item() - 1.0) < 1e-6
    small = metrics.ssim((target + 0.05 * _images(1, seed=9)).clamp(-1, 1), target).item()
    large = metrics.ssim((target + 0.5 * _images(1, seed=9)).clamp(-1, 1), target).item()
    assert 1.0 > small > large


def test_ssim_rejects_images_smaller_than_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


# --------------------------------------------------------------------------- compute_metrics

def test_compute_metrics_clamps_reconstruction_only():
    target = torch.ones(2, 3, 16, 16)
    target[1] = 0.5
    reconstruction = torch.full_like(target, 1.7)   # clamped to 1: image 0 perfect, image 1 off by 0.5
    result = metrics.compute_metrics(reconstruction, target)
    assert set(result) == {"mse", "psnr", "ssim"}
    assert result["mse"][0] == 0.0 and abs(result["mse"][1] - 0.25) < 1e-6
    assert all(isinstance(v, float) for values in result.values() for v in values)
    assert len(result["psnr"]) == 2 and math.isinf(result["psnr"][0])
    # Images too small for the 11x11 SSIM window report SSIM as unavailable.
    assert metrics.compute_metrics(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))["ssim"] is None


def test_compute_metrics_without_lpips_weights_reports_none(isolated_lpips_search):
    target = _images(1)
    result = metrics.compute_metrics(target, target, lpips="alex")
    assert result["lpips_alex"] is None
    assert metrics.format_metric(result["lpips_alex"]) == "n/a"
    assert metrics.format_metric(0.123456) == "0.1235"


def test_compute_metrics_with_lpips_and_identity(standin_alex):
    model = metrics.load_lpips("alex", weights_dir=standin_alex)
    target = _images(2)
    reconstruction = target.flip(0)
    result = metrics.compute_metrics(reconstruction, target, lpips=model, feature_fn=lambda x: x.mean(dim=(2, 3)))
    assert len(result["lpips_alex"]) == 2 and all(v > 0 for v in result["lpips_alex"])
    assert len(result["identity"]) == 2


# --------------------------------------------------------------------------- LPIPS

def test_lpips_loads_standin_weights_and_behaves(standin_alex):
    model = metrics.load_lpips("alex", weights_dir=standin_alex)
    assert model.weights_source[0].endswith("alexnet-owt-7be5be79.pth")
    assert not any(p.requires_grad for p in model.parameters())
    target = _images(2, 3, 64, 64)
    assert torch.allclose(model(target, target), torch.zeros(2), atol=1e-7)
    distances = [model((target + s * _images(2, 3, 64, 64, seed=5)).clamp(-1, 1), target).mean().item()
                 for s in (0.05, 0.2, 0.8)]
    assert 0 < distances[0] < distances[1] < distances[2], distances
    # Symmetric in its arguments.
    other = _images(2, 3, 64, 64, seed=6)
    assert torch.allclose(model(target, other), model(other, target), atol=1e-6)


def test_lpips_small_and_grayscale_images(standin_alex):
    model = metrics.load_lpips("alex", weights_dir=standin_alex)
    gray = _images(3, 1, 32, 32)
    distances = model(gray, gray.flip(0))
    assert distances.shape == (3,) and torch.isfinite(distances).all() and (distances[[0, 2]] > 0).all()
    # A gray image equals its 3-channel copy, and 32 px images are upsampled to 64 before the backbone.
    assert torch.allclose(model(gray, gray.flip(0)), model(gray.expand(-1, 3, -1, -1), gray.flip(0).expand(-1, 3, -1, -1)))
    upsampled = torch.nn.functional.interpolate(gray, size=64, mode="bilinear", align_corners=False)
    assert torch.allclose(distances, model(upsampled, upsampled.flip(0)), atol=1e-6)


def test_lpips_gradient_reaches_image_not_network(standin_alex):
    model = metrics.load_lpips("alex", weights_dir=standin_alex)
    target = _images(1, 3, 64, 64)
    image = (target + 0.3 * _images(1, 3, 64, 64, seed=2)).requires_grad_(True)
    model(image, target).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_lpips_vgg_loads_with_torchvision_key_names(tmp_path):
    write_standin_lpips_weights(tmp_path, "vgg")
    model = metrics.load_lpips("vgg", weights_dir=tmp_path)
    target = _images(1, 3, 32, 32)
    assert model(target, target).item() == pytest.approx(0.0, abs=1e-7)
    assert model(target, -target).item() > 0


def test_lpips_found_through_environment_variable(isolated_lpips_search, standin_alex, monkeypatch):
    monkeypatch.setenv("GANINV_LPIPS_DIR", str(standin_alex))
    backbone, heads = metrics.find_lpips_weights("alex")
    assert backbone.parent == standin_alex and heads.parent == standin_alex
    assert metrics.try_load_lpips("alex") is not None


def test_lpips_found_in_torch_hub_cache(isolated_lpips_search):
    hub = isolated_lpips_search / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    write_standin_lpips_weights(hub, "alex")
    backbone, _ = metrics.find_lpips_weights("alex")
    assert backbone.parent == hub


def test_absent_lpips_weights_raise_clear_error(isolated_lpips_search):
    with pytest.raises(metrics.WeightsUnavailable) as error:
        metrics.load_lpips("vgg")
    message = str(error.value)
    assert "vgg16-397923af.pth" in message and "vgg.pth" in message
    assert str(isolated_lpips_search / "empty") in message
    assert "hub" in message and "GANINV_LPIPS_DIR" in message
    assert metrics.try_load_lpips("vgg") is None


def test_lpips_rejects_mismatched_or_unsafe_files(tmp_path):
    write_standin_lpips_weights(tmp_path, "alex")
    heads = torch.load(tmp_path / "alex.pth", weights_only=True)
    heads["lin2.model.1.weight"] = torch.rand(1, 100, 1, 1)
    torch.save(heads, tmp_path / "alex.pth")
    with pytest.raises(WeightsMismatch, match="lin2"):
        metrics.load_lpips("alex", weights_dir=tmp_path)

    write_standin_lpips_weights(tmp_path, "alex")
    state = torch.load(tmp_path / "alexnet-owt-7be5be79.pth", weights_only=True)
    del state["features.8.weight"]
    state["features.99.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "alexnet-owt-7be5be79.pth")
    with pytest.raises(WeightsMismatch, match=r"features\.8\.weight.*features\.99\.weight"):
        metrics.load_lpips("alex", weights_dir=tmp_path)

    # torch.load(weights_only=True): a file that would run code on unpickling is refused.
    torch.save({"evil": _Evil()}, tmp_path / "alexnet-owt-7be5be79.pth")
    with pytest.raises(pickle.UnpicklingError):
        metrics.load_lpips("alex", weights_dir=tmp_path)


class _Evil:
    def __reduce__(self):
        return (open, (str(os.devnull), "r"))


# --------------------------------------------------------------------------- feature similarity

def test_feature_similarity():
    images = _images(3, 3, 8, 8)
    flatten = lambda x: x.flatten(1)  # noqa: E731
    assert torch.allclose(metrics.feature_similarity(images, images, flatten), torch.ones(3), atol=1e-6)
    assert torch.allclose(metrics.feature_similarity(images, -images, flatten), -torch.ones(3), atol=1e-6)
    with pytest.raises(ValueError, match="feature_fn"):
        metrics.feature_similarity(images, images, lambda x: x.flatten())
