"""The published pSp / e4e / ReStyle encoders: parity with the official code, safe loading, and every
encoder-started inversion method driven by them.

The references in tests/fixtures/official_encoders/ were computed by the authors' code on weights filled
by that folder's recipe (see make_fixtures.py there); each test writes a checkpoint in the official layout
from the same recipe, loads it through `ganinv.load_encoder` and compares.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import ganinv
from ganinv.cli import main
from ganinv.models import official_encoders
from ganinv.models.checkpoints import CheckpointError
from ganinv.models.official_encoders import PSPEncoder, ReStyleEncoder, pool_reconstruction, resize_image

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official_encoders"
_spec = importlib.util.spec_from_file_location("official_encoder_recipe", FIXTURES / "recipe.py")
recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe)
CONFIGS = recipe.load_configs()
ATOL = 1e-4


@pytest.fixture(scope="module")
def references():
    with np.load(recipe.REFERENCES_FILE) as data:
        return dict(data)


def _checkpoint(name: str, config: dict, *, keys=None, n_styles=None, opts_as_namespace=False,
                decoder: dict | None = None) -> dict:
    """The official coaches' layout: {'state_dict': encoder.* (+ decoder.*), 'opts', 'latent_avg'}."""
    arrays = recipe.state_dict_arrays({"keys": keys or config["keys"]})
    state = {f"encoder.{k}": torch.from_numpy(v) for k, v in arrays.items()}
    for k, v in (decoder or {}).items():
        state[f"decoder.{k}"] = v
    opts = {**config["opts"], "device": "cuda:0", "exp_dir": "experiment", "checkpoint_path": None}
    latent_avg = torch.from_numpy(recipe.latent_avg(name, n_styles or config["n_styles"]))
    if config["opts"].get("learn_in_w"):
        latent_avg = latent_avg[:1]  # pSp saves [1, 512] when it learns a single w
    return {"state_dict": state, "opts": argparse.Namespace(**opts) if opts_as_namespace else opts,
            "latent_avg": latent_avg}


def _load(tmp_path, name, checkpoint) -> official_encoders.OfficialEncoder:
    path = tmp_path / f"{name}.pt"
    torch.save(checkpoint, path)
    try:
        return ganinv.load_encoder(path)
    finally:
        path.unlink()  # hundreds of MB; pytest keeps its temporary folders


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_official_checkpoint_matches_the_official_code(tmp_path, references, name):
    config = CONFIGS[name]
    enc = _load(tmp_path, name, _checkpoint(name, config, opts_as_namespace=name.endswith("resnet34")))
    restyle = config["kind"].startswith("restyle")
    assert isinstance(enc, ReStyleEncoder if restyle else PSPEncoder)
    assert (enc.kind, enc.encoder_type, enc.n_styles) == (config["kind"], config["class"], config["n_styles"])
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    latent_avg = torch.from_numpy(recipe.latent_avg(name, config["n_styles"]))
    with torch.no_grad():
        # Every encoder at 64 px (the networks run at any size whose last map reduces to 1x1) ...
        data = {k: torch.from_numpy(v) for k, v in recipe.inputs(name, config["n_styles"], recipe.SMALL_SIZE).items()}
        network_input = torch.cat([data["x"], data["y_prev"]], 1) if restyle else data["x"]
        codes = enc.encoder(network_input)
        first = codes + latent_avg
        expected = references[f"{name}/small/{'ws_first' if restyle else 'ws'}"]
        assert first.shape == expected.shape
        torch.testing.assert_close(first, torch.from_numpy(expected), atol=ATOL, rtol=0)
        if restyle:
            torch.testing.assert_close(codes + data["ws_prev"], torch.from_numpy(references[f"{name}/small/ws_next"]),
                                       atol=ATOL, rtol=0)
        # ... and the public call at 256 px where the fixtures have it.
        if name in recipe.FULL_SIZE:
            data = {k: torch.from_numpy(v) for k, v in recipe.inputs(name, config["n_styles"], recipe.INPUT_SIZE).items()}
            if restyle:
                batch = torch.cat([data["x"]] * 2)
                ws = enc(batch, torch.cat([data["y_prev"]] * 2),
                         torch.cat([latent_avg[None].expand_as(data["ws_prev"]), data["ws_prev"]]))
                n = data["x"].shape[0]
                torch.testing.assert_close(ws[:n], torch.from_numpy(references[f"{name}/full/ws_first"]), atol=ATOL, rtol=0)
                torch.testing.assert_close(ws[n:], torch.from_numpy(references[f"{name}/full/ws_next"]), atol=ATOL, rtol=0)
            else:
                ws = enc(data["x"])
                torch.testing.assert_close(ws, torch.from_numpy(references[f"{name}/full/ws"]), atol=ATOL, rtol=0)
            assert ws.shape[1:] == (config["n_styles"], 512)


def test_references_are_not_trivial(references):
    """The parity test can fail: the codes are far from zero and differ between encoders and images."""
    for name, config in CONFIGS.items():
        key = f"{name}/small/{'ws_first' if config['kind'].startswith('restyle') else 'ws'}"
        codes = references[key] - recipe.latent_avg(name, config["n_styles"])
        assert codes.std() > 0.05, name
        assert np.abs(codes[0] - codes[1]).max() > 0.01, name


def test_restyle_ws_prev_defaults_to_latent_avg_and_inputs_are_resized(small_input):
    torch.manual_seed(0)
    enc = ReStyleEncoder("ResNetBackboneEncoder", 2, 6, torch.randn(2, 512)).eval()
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        default = enc(x, y)
        given = enc(x, y, enc.latent_avg[None])
        by_hand = enc.encoder(torch.cat([resize_image(x), pool_reconstruction(y)], 1)) + enc.latent_avg
    torch.testing.assert_close(default, given)
    torch.testing.assert_close(default, by_hand)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        enc(torch.zeros(1, 6, 64, 64), y)
    with pytest.raises(ValueError, match="ws_prev"):
        enc(x, y, torch.zeros(1, 3, 512))


@pytest.mark.parametrize("source_size", [64, 100, 512])
def test_resize_matches_the_official_pil_transform(source_size):
    """transforms.Resize((256, 256)) on a PIL image (bilinear) vs resize_image on the same pixels as a tensor:
    equal up to PIL's rounding to 8 bits."""
    rng = np.random.default_rng(source_size)
    pixels = rng.integers(0, 256, (source_size // 4, source_size // 4, 3), dtype=np.uint8)
    pixels = np.array(Image.fromarray(pixels).resize((source_size, source_size), Image.BICUBIC))
    pil = np.asarray(Image.fromarray(pixels).resize((256, 256), Image.BILINEAR)).astype(np.float32)
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 127.5 - 1
    ours = ((resize_image(tensor)[0].permute(1, 2, 0).numpy() + 1) * 127.5)
    assert np.abs(ours - pil).max() <= 1.0 + 1e-3
    assert np.abs(ours - pil).mean() < 0.5


def _write_hostile(path: Path) -> Path:
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {path.parent / 'pwned'}",))
    torch.save({"state_dict": {}, "opts": Boom()}, path)
    return path


def test_hostile_and_broken_files_give_one_line_errors(tmp_path):
    cases = {}
    cases["pickle that runs a command"] = _write_hostile(tmp_path / "evil.pt")
    (tmp_path / "garbage.pt").write_bytes(b"PK\x03\x04 not really a zip")
    cases["garbage"] = tmp_path / "garbage.pt"
    torch.save({"g_ema": {}}, tmp_path / "other.pt")
    cases["not an encoder"] = tmp_path / "other.pt"
    base = {"encoder.conv1.weight": torch.zeros(64, 6, 7, 7), "encoder.styles.0.linear.weight": torch.zeros(512, 512)}
    torch.save({"state_dict": base, "opts": {"encoder_type": "Nonsense"}, "latent_avg": torch.zeros(512)},
               tmp_path / "type.pt")
    cases["unknown encoder_type"] = tmp_path / "type.pt"
    torch.save({"state_dict": base, "opts": {"encoder_type": "ResNetBackboneEncoder"}}, tmp_path / "noavg.pt")
    cases["ReStyle without latent_avg"] = tmp_path / "noavg.pt"
    torch.save({"state_dict": base, "opts": {"encoder_type": "ResNetBackboneEncoder"}, "latent_avg": torch.zeros(3, 7)},
               tmp_path / "badavg.pt")
    cases["latent_avg of the wrong shape"] = tmp_path / "badavg.pt"
    torch.save({"state_dict": base, "opts": {"encoder_type": "ResNetBackboneEncoder"}, "latent_avg": torch.zeros(512)},
               tmp_path / "missing.pt")
    cases["missing tensors"] = tmp_path / "missing.pt"
    torch.save({"state_dict": {"decoder.style.1.weight": torch.zeros(2, 2)}, "opts": {}}, tmp_path / "noenc.pt")
    cases["no encoder tensors"] = tmp_path / "noenc.pt"
    cases["missing file"] = tmp_path / "absent.pt"
    for what, path in cases.items():
        with pytest.raises(CheckpointError) as info:
            ganinv.load_encoder(path)
        message = str(info.value)
        assert "\n" not in message and str(path) in message, (what, message)
    assert not (tmp_path / "pwned").exists()
    runner = CliRunner()
    res = runner.invoke(main, ["invert", str(tmp_path / "x.png"), "--method", "encoder", "--encoder",
                               str(cases["pickle that runs a command"]), "--outdir", str(tmp_path / "out")])
    assert res.exit_code != 0 and "Traceback" not in res.output and "weights-only" in res.output
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------
# Inversion with an official encoder and the user's generator

INTEGRATION = "restyle_e4e_backbone_resnet34"


def _rosinality_decoder(n_latent: int = 4) -> dict[str, torch.Tensor]:
    """A rosinality-layout generator state dict of 2 ** (n_latent // 2 + 1) px with w_dim 512, from the
    key layout of the vendored rosinality fixture (its first blocks), with random 512-wide mappings."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        g_ema = torch.load(FIXTURES.parent / "rosinality_res32.pt", weights_only=True)["g_ema"]
    blocks = n_latent // 2 - 1  # upsampling blocks after 4x4
    gen = torch.Generator().manual_seed(5)
    out = {}
    for key, value in g_ema.items():
        m = re.match(r"(convs|to_rgbs|noises)\.(?:noise_)?(\d+)", key)
        if m and int(m.group(2)) >= {"convs": 2 * blocks, "to_rgbs": blocks, "noises": 2 * blocks + 1}[m.group(1)]:
            continue
        if key.startswith("style.") and key.endswith("weight"):
            value = torch.randn(512, 512, generator=gen) * 100  # rosinality stores weight / lr_mul (0.01)
        elif key.startswith("style."):
            value = torch.zeros(512)
        elif key.endswith("modulation.weight"):
            value = torch.randn(value.shape[0], 512, generator=gen)
        out[key] = value.clone()
    return out


def _integration_keys(n_styles: int) -> list:
    """The fixture encoder's keys with `n_styles` heads (every head has the same shapes)."""
    keys = [k for k in CONFIGS[INTEGRATION]["keys"] if not k[0].startswith("styles.")]
    heads = [k for k in CONFIGS[INTEGRATION]["keys"] if k[0].startswith("styles.0.")]
    for i in range(n_styles):
        keys += [[f"styles.{i}." + k[0][len("styles.0."):], *k[1:]] for k in heads]
    return keys


@pytest.fixture(scope="module")
def restyle_files(tmp_path_factory):
    """(encoder checkpoint carrying its decoder, the decoder alone as a rosinality .pt) for an 8 px
    generator with num_ws 4 and w_dim 512."""
    folder = tmp_path_factory.mktemp("restyle")
    decoder = _rosinality_decoder(4)
    checkpoint = _checkpoint(INTEGRATION, CONFIGS[INTEGRATION], keys=_integration_keys(4), n_styles=4, decoder=decoder)
    torch.save(checkpoint, folder / "restyle_e4e.pt")
    torch.save({"g_ema": decoder, "latent_avg": checkpoint["latent_avg"][0]}, folder / "generator.pt")
    yield folder / "restyle_e4e.pt", folder / "generator.pt"
    (folder / "restyle_e4e.pt").unlink()


@pytest.fixture
def small_input(monkeypatch):
    """The encoders run at 64 px here to keep these tests fast (parity at 256 px is tested above)."""
    monkeypatch.setattr(official_encoders, "INPUT_SIZE", 64)


def test_checkpoint_with_decoder_is_a_model_and_every_encoder_method_runs(restyle_files, small_input):
    checkpoint, _ = restyle_files
    model = ganinv.load_model(checkpoint)
    G, enc = model.G, model.encoder
    assert isinstance(enc, ReStyleEncoder) and (G.num_ws, G.w_dim, G.img_resolution) == (4, 512, 8)
    torch.testing.assert_close(G.mapping.w_avg, enc.latent_avg[0])
    target = torch.rand(1, 3, 8, 8) * 2 - 1
    one = ganinv.invert(model, target, "encoder", iterations=1)
    two = ganinv.invert(model, target, "encoder", iterations=2)
    with torch.no_grad():
        avg_image = G.synthesis(enc.latent_avg[None], noise_mode="const")
        ws1 = enc(target, avg_image)
        ws2 = enc(target, G.synthesis(ws1, noise_mode="const"), ws1)
    torch.testing.assert_close(one.ws, ws1, atol=1e-5, rtol=0)
    torch.testing.assert_close(two.ws, ws2, atol=1e-5, rtol=0)
    assert not torch.allclose(ws1, ws2)
    # (an 8 px generator has only the blocks Clone leaves as trained by default: tune them all here)
    for method, settings in (("hybrid", dict(num_steps=2)), ("pti", dict(num_steps=2)),
                             ("clone", dict(num_steps=2, frozen_params=[]))):
        result = ganinv.invert(model, target, method, **settings)
        assert result.ws.shape == (1, 4, 512) and np.isfinite(result.metrics["psnr"][0])
        if method != "hybrid":
            assert result.extras["init"].startswith("encoder"), result.extras


def test_psp_runs_once_and_takes_no_start(restyle_files, small_input):
    _, generator = restyle_files
    model = ganinv.load_model(generator)
    torch.manual_seed(1)
    enc = PSPEncoder("GradualStyleEncoder", 4, 3, torch.randn(512) * 0.1).eval()
    model.encoder = enc
    assert not enc.for_generator(model.G).training  # else every run would copy the network first
    target = torch.rand(1, 3, 8, 8) * 2 - 1
    result = ganinv.invert(model, target, "encoder", iterations=3)
    assert result.extras["iterations"] == 1
    with torch.no_grad():
        torch.testing.assert_close(result.ws, enc(target), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="cannot start"):
        ganinv.invert(model, target, "encoder", init_from=result)
    small = ganinv.load_model(ganinv.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=16, img_channels=3,
                                               synthesis_kwargs=dict(channel_base=64, channel_max=8)))
    small.encoder = enc
    with pytest.raises(ValueError, match="num_ws=4"):
        ganinv.invert(small, torch.zeros(1, 3, 16, 16), "encoder")


def test_cli_encoder_flag_and_checkpoint_as_model(tmp_path, restyle_files, small_input):
    checkpoint, generator = restyle_files
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    runner = CliRunner()
    res = runner.invoke(main, ["invert", str(tmp_path / "a.png"), "--model", str(generator), "--method", "encoder",
                               "--encoder", str(checkpoint), "--outdir", str(tmp_path / "flag"), "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["invert", str(tmp_path / "a.png"), "--model", str(checkpoint), "--method", "encoder",
                               "--outdir", str(tmp_path / "alone"), "--quiet"])
    assert res.exit_code == 0, res.output
    flag = np.load(tmp_path / "flag" / "a" / "latent.npz")["w"]
    alone = np.load(tmp_path / "alone" / "a" / "latent.npz")["w"]
    assert flag.shape == (1, 4, 512)
    np.testing.assert_allclose(flag, alone, atol=1e-5)
    res = runner.invoke(main, ["invert", str(tmp_path / "a.png"), "--model", str(generator), "--method", "pti",
                               "--num-steps", "2", "--encoder", str(checkpoint), "--outdir", str(tmp_path / "pti"),
                               "--quiet"])
    assert res.exit_code == 0, res.output
    assert "encoder" in (tmp_path / "pti" / "a" / "report.json").read_text()
