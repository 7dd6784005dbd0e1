"""Restoration through inversion: the degradation operators, their losses, the methods and the CLI flags."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ganinv import invert
from ganinv.cli import main
from ganinv.errors import GanInvError
from ganinv.inversion import METHODS, InversionResult
from ganinv.inversion.degradation import Colorize, Inpaint, SuperResolution, load_mask
from ganinv.inversion.objective import build_objective
from ganinv.models.checkpoints import save_native
from ganinv.models.prior import sample_prior
from conftest import tiny_generator

RESTORERS = [name for name, spec in METHODS.items() if spec.accepts_degradation]
SHORT = {"optimize": dict(num_steps=6), "multicode": dict(num_steps=6, codes=2),
         "pti": dict(pivot_steps=4, num_steps=4), "clone": dict(h_steps=4, num_steps=6)}


@pytest.fixture(scope="module")
def G():
    return tiny_generator(seed=5, resolution=16)


@pytest.fixture(scope="module")
def truth(G):
    """Ground truth G(w*) for two prior latents."""
    with torch.no_grad():
        return G.synthesis(sample_prior(G, 2, seed=9), noise_mode="const")


def _hole(resolution=16):
    mask = torch.ones(resolution, resolution)
    mask[4:10, 5:11] = 0
    return mask


def test_the_four_methods_accept_a_degradation_and_the_others_refuse(G, truth):
    assert set(RESTORERS) == {"optimize", "multicode", "pti", "clone"}
    other = next(name for name, spec in METHODS.items() if not spec.accepts_degradation)
    with pytest.raises(ValueError, match=f"method {other} does not restore"):
        invert(G, truth, other, degradation=Colorize())


def test_inpainting_loss_gives_masked_pixels_no_gradient(G, truth):
    mask = _hole()
    degradation = Inpaint(mask)
    image = truth.flip(-1).clone().requires_grad_(True)
    loss, _ = build_objective({"mse_weight": 1.0, "laplacian_weight": 1.0})(degradation(image),
                                                                           degradation.observe(truth, G))
    loss.backward()
    hole = mask == 0
    assert image.grad[:, :, hole].abs().max() == 0
    assert image.grad[:, :, ~hole].abs().max() > 0
    # Whatever the target holds in the hole does not matter.
    scribbled = truth.clone()
    scribbled[:, :, hole] = 1.0
    assert torch.equal(degradation.observe(scribbled, G), degradation.observe(truth, G))


def test_colorization_compares_luminance_only(G, truth):
    degradation = Colorize()
    weights = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    # A colour change that keeps the luminance is invisible to the loss; one that changes it is not.
    direction = torch.tensor([0.587, -0.299, 0.0]).reshape(1, 3, 1, 1)
    assert (direction * weights).sum().abs() < 1e-7
    same = degradation(truth + 0.3 * direction)
    assert torch.allclose(same, degradation(truth), atol=1e-6)
    assert not torch.allclose(degradation(truth + 0.3), degradation(truth))
    gray = degradation(truth)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(degradation.observe(gray, G), gray, atol=1e-6)
    with pytest.raises(GanInvError, match="colour"):
        degradation(truth[:, :1])


@pytest.mark.parametrize("degradation", [None, Colorize(), Inpaint(torch.ones(16, 16)), SuperResolution(2)],
                         ids=["plain", "colorize", "inpaint", "super_resolution"])
def test_targets_are_checked_alike_with_and_without_a_degradation(G, truth, degradation):
    # One check serves a plain inversion and every degradation; a degradation names itself first.
    prefix = "" if degradation is None else f"{degradation.name}"

    def check(target):
        return invert(G, target, "optimize", num_steps=1, degradation=degradation)

    with pytest.raises(GanInvError, match=f"^{prefix}.*target must have shape \\[N, 3, 16, 16\\]"):
        check(torch.zeros(1, 3, 12, 12))
    with pytest.raises(GanInvError, match=f"^{prefix}.*target contains NaN or inf"):
        check(torch.full_like(truth, float("nan")))
    with pytest.raises(TypeError, match="float tensor"):
        check(truth.numpy())
    assert check(truth[0]).ws.shape[0] == 1  # a single [C, H, W] image is a batch of one


def test_super_resolution_compares_after_downsampling(G, truth):
    degradation = SuperResolution(4)
    low = degradation.observe(truth, G)
    assert low.shape == (2, 3, 4, 4)
    # A full-resolution target is downsampled; a low-resolution one is taken as it is.
    assert torch.equal(degradation.observe(low, G), low)
    # A pattern that averages to zero over each 4x4 cell changes nothing the loss sees.
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2 - 1.0
    assert torch.allclose(degradation(truth + 0.2 * checker), low, atol=1e-6)
    with pytest.raises(GanInvError, match="shape"):
        degradation.observe(torch.zeros(1, 3, 5, 5), G)
    with pytest.raises(GanInvError, match="integer >= 2"):
        SuperResolution(1)
    with pytest.raises(GanInvError, match="does not divide"):
        SuperResolution(3).observe(truth, G)


def _region_psnr(image, truth, region):
    mse = (image.clamp(-1, 1) - truth).square()[:, :, region].mean()
    return float(10 * torch.log10(4 / mse))


@pytest.mark.parametrize("method", RESTORERS)
def test_restoration_improves_the_unknown_part_over_the_start(G, truth, method):
    """Inpainting a hole in G(w*): the hole, never seen by the loss, comes closer to the truth than the start."""
    mask = _hole()
    hole = mask == 0
    settings = {"optimize": dict(num_steps=60, space="w"), "multicode": dict(num_steps=60, codes=2, space="w"),
                "pti": dict(pivot_steps=60, num_steps=10), "clone": dict(h_steps=60, h_space="w", num_steps=10)}
    result = invert(G, truth, method, degradation=Inpaint(mask), seed=0, **settings[method])
    start = invert(G, truth, method, degradation=Inpaint(mask), seed=0,
                   **{k: 1 for k in ("num_steps", "pivot_steps", "h_steps") if k in settings[method]},
                   **{k: v for k, v in settings[method].items() if k in ("codes", "space", "h_space")})
    assert _region_psnr(result.reconstruction, truth, hole) > _region_psnr(start.reconstruction, truth, hole) + 1
    assert result.extras["degradation"] == {"kind": "inpaint", "known_fraction": pytest.approx(1 - 36 / 256)}
    # The reconstruction is the full rendering; the stored target shows the observation (hole blanked).
    assert result.reconstruction.shape == truth.shape
    assert torch.equal(result.target[:, :, hole], torch.zeros_like(result.target[:, :, hole]))


@pytest.mark.parametrize("method", RESTORERS)
def test_colorization_and_super_resolution_run_with_every_restorer(G, truth, method):
    colour = invert(G, truth[:1], method, degradation=Colorize(), **SHORT[method])
    # The metrics compare luminance; the reconstruction keeps colour from the prior.
    assert colour.reconstruction.shape == (1, 3, 16, 16)
    assert (colour.reconstruction[:, 0] - colour.reconstruction[:, 2]).abs().mean() > 1e-3
    low = SuperResolution(2).observe(truth[:1], G)
    sr = invert(G, low, method, degradation=SuperResolution(2), **SHORT[method])
    assert sr.reconstruction.shape == (1, 3, 16, 16) and sr.target.shape == (1, 3, 16, 16)
    seen = SuperResolution(2)(sr.reconstruction)
    expected = float(10 * torch.log10(4 / (seen - low).square().mean()))
    assert sr.metrics["psnr"][0] == pytest.approx(expected, abs=1e-3)
    assert sr.extras["degradation"] == {"kind": "super_resolution", "factor": 2}


def test_super_resolution_lowers_the_full_resolution_error_over_the_start(G, truth):
    degradation = SuperResolution(4)
    low = degradation.observe(truth, G)
    result = invert(G, low, "optimize", degradation=degradation, num_steps=60, space="w")
    start = invert(G, low, "optimize", degradation=degradation, num_steps=1, space="w")
    everywhere = torch.ones(16, 16, dtype=torch.bool)
    assert _region_psnr(result.reconstruction, truth, everywhere) > _region_psnr(start.reconstruction, truth,
                                                                                  everywhere) + 1


def test_load_mask(tmp_path):
    array = np.full((24, 32), 255, np.uint8)
    array[:, :10] = 0
    Image.fromarray(array).save(tmp_path / "photo_mask.png")
    # The photo's size: cropped like the photo (crop keeps the centre 24x24, of which columns 0-5 are holes).
    mask = load_mask(tmp_path / "photo_mask.png", 16, image_size=(32, 24))
    assert mask.shape == (1, 1, 16, 16) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask[0, 0, :, 0].sum() == 0 and mask[0, 0, :, -1].sum() == 16
    with pytest.raises(GanInvError, match="mask is 32x24, expected 16x16"):
        load_mask(tmp_path / "photo_mask.png", 16)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(GanInvError, match="all black"):
        load_mask(tmp_path / "black.png", 16)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(GanInvError, match="text.png"):
        load_mask(tmp_path / "text.png", 16)
    with pytest.raises(GanInvError, match="no known pixel"):
        Inpaint(torch.zeros(16, 16))
    with pytest.raises(GanInvError, match=r"values must lie in \[0, 1\]"):
        Inpaint(torch.full((16, 16), 2.0))


@pytest.fixture(scope="module")
def cli_setup(G, truth, tmp_path_factory):
    root = tmp_path_factory.mktemp("restore_cli")
    save_native(root / "model", G, None, card={"name": "tiny16restore"})
    photo = root / "photo.png"
    Image.fromarray(((truth[0].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)).save(photo)
    mask = np.full((16, 16), 255, np.uint8)
    mask[4:10, 5:11] = 0
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(mask[:8]).save(root / "small_mask.png")
    (root / "mask.txt").write_text("not an image")
    small = Image.open(photo).resize((4, 4), Image.BOX)
    small.save(root / "low.png")
    return root


@pytest.mark.parametrize("flags, kind", [(["--mask", "mask.png"], "inpaint"), (["--colorize"], "colorize"),
                                         (["--super-resolution", "4"], "super_resolution")])
def test_cli_restoration_flags(cli_setup, flags, kind):
    root = cli_setup
    image = "low.png" if kind == "super_resolution" else "photo.png"
    flags = [str(root / f) if f.endswith(".png") else f for f in flags]
    out = root / f"out_{kind}"
    res = CliRunner().invoke(main, ["invert", str(root / image), "--model", str(root / "model"), "--method",
                                    "multicode", "--codes", "2", "--steps", "3", "--quiet", "--outdir", str(out),
                                    *flags])
    assert res.exit_code == 0, res.output
    loaded = InversionResult.load(next(out.iterdir()), model=root / "model")
    assert loaded.extras["degradation"]["kind"] == kind
    assert loaded.reconstruction.shape == (1, 3, 16, 16)


@pytest.mark.parametrize("flags, message", [
    (["--mask", "small_mask.png"], "mask is 16x8, expected 16x16"),
    (["--mask", "mask.txt"], "mask.txt"),
    (["--mask", "missing.png"], "no such file"),
    (["--mask", "mask.png", "--colorize"], "give one"),
    (["--mask", "mask.png", "--method", "encoder"], "does not restore"),
    (["--super-resolution", "3"], "must divide"),
])
def test_cli_restoration_errors_are_one_line(cli_setup, flags, message):
    root = cli_setup
    flags = [str(root / f) if f.endswith((".png", ".txt")) else f for f in flags]
    res = CliRunner().invoke(main, ["invert", str(root / "photo.png"), "--model", str(root / "model"), "--steps",
                                    "2", "--quiet", "--outdir", str(root / "bad"), *flags])
    assert res.exit_code != 0
    assert message in res.output and "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) == 1, res.output
