"""Multi-code inversion (mGANprior): the split synthesis, the composition, the method, storage and edits."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ganinv import invert
from ganinv.cli import main
from ganinv.editing.direction import Direction
from ganinv.editing.render import edit
from ganinv.inversion import METHODS, InversionResult
from ganinv.models.checkpoints import save_native
from ganinv.models.multicode import MultiCodeGenerator
from ganinv.models.prior import sample_prior
from conftest import tiny_generator


@pytest.fixture(scope="module")
def G():
    return tiny_generator(seed=3, resolution=16)


@pytest.fixture(scope="module")
def target(G):
    with torch.no_grad():
        return G.synthesis(sample_prior(G, 2, seed=7), noise_mode="const")


@pytest.mark.parametrize("architecture", ["skip", "resnet", "orig"])
def test_forward_until_then_from_is_the_whole_synthesis(architecture):
    G = tiny_generator(seed=1, resolution=32, architecture=architecture)
    ws = sample_prior(G, 3, seed=2) + 0.1 * torch.randn(3, G.num_ws, G.w_dim)
    with torch.no_grad():
        whole = G.synthesis(ws)
        for block in range(len(G.synthesis.block_resolutions) - 1):
            x, img = G.synthesis.forward_until(ws, block)
            res = G.synthesis.block_resolutions[block]
            assert x.shape[-1] == res and (img is None) == (architecture != "skip")
            assert torch.allclose(G.synthesis.forward_from(x, img, ws, block + 1), whole, atol=1e-5)
    with pytest.raises(ValueError, match="block index must be an integer 0..3"):
        G.synthesis.forward_until(ws, 4)
    with pytest.raises(ValueError, match="block >= 1"):
        G.synthesis.forward_from(x, img, ws, 0)


def _identity_wrapper(G, layer, codes=1):
    channels = G.synthesis.channels[G.synthesis.block_resolutions[layer]]
    return MultiCodeGenerator(G, layer, torch.zeros(1, codes, G.num_ws, G.w_dim),
                              torch.full((1, codes, channels), 1.0 / codes),
                              torch.full((1, codes, G.img_channels), 1.0 / codes))


def test_composition_of_equal_codes_with_weights_summing_to_one_is_the_plain_image(G):
    ws = sample_prior(G, 2, seed=4)
    with torch.no_grad():
        plain = G.synthesis(ws)
        for codes in (1, 3):
            assert torch.allclose(_identity_wrapper(G, 1, codes).synthesis(ws), plain, atol=1e-5)
        # Different codes compose to something else; doubling the importance changes the image.
        wrapper = _identity_wrapper(G, 1, 2)
        wrapper.synthesis.offsets[0, 1] += 1.0
        assert (wrapper.synthesis(ws) - plain).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="layer must be a synthesis block index 0..1"):
        _identity_wrapper(G, 2)


def test_multicode_inverts_a_generated_image_better_than_its_start(G, target):
    result = invert(G, target, "multicode", codes=4, layer=1, num_steps=60, seed=0)
    psnr = result.metrics["psnr"]
    first = result.history[0]["psnr"]
    assert np.mean(psnr) > first + 3, (first, psnr)
    assert result.G_tuned is None and isinstance(result.G_base, MultiCodeGenerator)
    assert result.G_base.num_codes == 4 and result.G_base.layer == 1 and len(result.G_base) == 2
    assert result.extras["multicode"]["codes"] == 4
    # The stored reconstruction is what the result renders (its own codes and weights).
    assert torch.allclose(result.render(), result.reconstruction, atol=1e-5)
    # Each target keeps its own codes.
    for i in range(2):
        assert torch.allclose(result[i].render(), result.reconstruction[i:i + 1], atol=1e-5)
    # The importance weights were learned (not the uniform start).
    assert (result.G_base.synthesis.importance - 0.25).abs().max() > 1e-3


def test_multicode_is_deterministic_and_leaves_G_untouched(G, target):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    a = invert(G, target[:1], "multicode", codes=2, num_steps=5, seed=3)
    b = invert(G, target[:1], "multicode", codes=2, num_steps=5, seed=3)
    assert torch.equal(a.ws, b.ws) and torch.equal(a.reconstruction, b.reconstruction)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())


def test_multicode_settings_are_checked(G, target):
    assert METHODS["multicode"].accepts_degradation
    with pytest.raises(ValueError, match="codes must be >= 1"):
        invert(G, target, "multicode", codes=0)
    with pytest.raises(ValueError, match="layer must be 0..1 for this 16 px model"):
        invert(G, target, "multicode", layer=2, num_steps=1)


def test_multicode_result_saves_loads_and_edits_every_code(G, target, tmp_path):
    result = invert(G, target[:1], "multicode", codes=3, layer=0, space="w", num_steps=8, seed=1)
    assert result.space == "w"
    folder = result.save(tmp_path / "r")[0]
    assert (folder / "multicode.safetensors").is_file() and not (folder / "generator").exists()
    loaded = InversionResult.load(folder, model=G)
    assert isinstance(loaded.G_base, MultiCodeGenerator) and loaded.G_tuned is None
    assert torch.allclose(loaded.render(), result.render(), atol=1e-6)
    assert torch.equal(loaded.G_base.synthesis.importance, result.G_base.synthesis.importance)
    # An edit moves every code (and the centre the later blocks read) by the same offset.
    vector = torch.randn(1, G.w_dim, generator=torch.Generator().manual_seed(0))
    direction = Direction(name="d", method="test", space="w", vectors=vector, layers=list(range(G.num_ws)),
                          std=torch.ones(1), num_ws=G.num_ws, w_dim=G.w_dim)
    edited = edit(loaded, direction, strength=2.0)
    shift = direction.apply(loaded.ws, 2.0, 0) - loaded.ws
    assert shift.abs().max() > 0
    synthesis = loaded.G_base.synthesis
    codes = synthesis.codes(loaded.ws) + shift.unsqueeze(1)
    with torch.no_grad():
        expected = synthesis.compose(loaded.ws + shift, codes, synthesis.importance, synthesis.skip_importance)
    assert torch.allclose(edited, expected.clamp(-1, 1), atol=1e-5)
    assert (edited - loaded.render()).abs().mean() > 1e-3
    # A damaged multicode file is refused with one line naming it.
    (folder / "multicode.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="multicode.safetensors") as info:
        InversionResult.load(folder, model=G)
    assert "\n" not in str(info.value)


def test_cli_multicode_codes_and_layer(G, target, tmp_path):
    model_dir = tmp_path / "model"
    save_native(model_dir, G, None, card={"name": "tiny16mc"})
    photo = tmp_path / "photo.png"
    Image.fromarray(((target[0].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)).save(photo)
    runner = CliRunner()
    common = ["invert", str(photo), "--model", str(model_dir), "--method", "multicode", "--steps", "3", "--quiet"]
    res = runner.invoke(main, common + ["--codes", "2", "--layer", "0", "--outdir", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    loaded = InversionResult.load(tmp_path / "o" / "photo", model=model_dir)
    assert loaded.G_base.num_codes == 2 and loaded.G_base.layer == 0
    res = runner.invoke(main, common + ["--layer", "5", "--outdir", str(tmp_path / "p")])
    assert res.exit_code != 0 and "layer must be 0..1" in res.output and "Traceback" not in res.output
