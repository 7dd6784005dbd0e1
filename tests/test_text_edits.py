"""Text-driven edits (StyleCLIP) with a random-weight stand-in CLIP: loading by path in both layouts, the
offline tokenizer, latent optimization (also on a tuned generator) and global directions in S."""
import gzip
import zipfile

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from conftest import tiny_generator, tiny_result
from ganinv.editing import Direction, edit
from ganinv.editing.clip import CLIP, CLIPError, Tokenizer, load_clip_model
from ganinv.editing.text import clip_distance, edit_with_text, find_global_direction, text_direction

MERGES = ["#version: 0.2", "f a", "c e</w>", "fa ce</w>", "s m", "i l", "sm il", "i n", "smil in",
          "smilin g</w>"]


def tiny_clip_state(seed=0, vocab_size=None):
    torch.manual_seed(seed)
    vocab_size = vocab_size or 512 + len(MERGES) - 1 + 2
    model = CLIP(embed_dim=16, image_size=16, patch_size=8, vision_width=64, vision_layers=1, vision_heads=1,
                 context_length=16, vocab_size=vocab_size, text_width=64, text_layers=1, text_heads=1)
    return model, {k: v.contiguous() for k, v in model.state_dict().items()}


@pytest.fixture
def clip_files(tmp_path):
    _, state = tiny_clip_state()
    weights = tmp_path / "tiny_clip.safetensors"
    save_file(state, str(weights))
    vocab = tmp_path / "bpe_simple_vocab_16e6.txt.gz"  # found beside the weights
    vocab.write_bytes(gzip.compress("\n".join(MERGES).encode()))
    return weights, vocab


def test_tokenizer_offline(clip_files):
    _, vocab = clip_files
    tokenizer = Tokenizer(vocab, context_length=16)
    tokens = tokenizer(["a smiling face", "A  Smiling FACE!"])
    assert tokens.shape == (2, 16) and tokens.dtype == torch.long
    ids = tokenizer.encode("a smiling face")
    assert [tokenizer.encoder["a</w>"], tokenizer.encoder["smiling</w>"], tokenizer.encoder["face</w>"]] == ids
    assert tokens[0, 0] == tokenizer.start_id and tokens[0, len(ids) + 1] == tokenizer.end_id
    assert int(tokens[0, len(ids) + 2:].abs().sum()) == 0
    long = tokenizer("x" * 40 + " " + "y " * 30)
    assert long[0, -1] == tokenizer.end_id and long.shape == (1, 16)


def test_load_both_layouts_same_outputs(tmp_path, clip_files):
    weights, vocab = clip_files
    model, state = tiny_clip_state()
    pt = tmp_path / "trained.pt"  # open_clip's training checkpoint layout
    torch.save({"epoch": 3, "name": "tiny", "state_dict": {f"module.{k}": v for k, v in state.items()}}, pt)
    openai = tmp_path / "openai_state.pt"
    torch.save({**state, "input_resolution": torch.tensor(16), "context_length": torch.tensor(16),
                "vocab_size": torch.tensor(state["token_embedding.weight"].shape[0])}, openai)
    images = torch.rand(2, 3, 20, 20) * 2 - 1
    reference = model.eval().encode_image(images)
    for path, arch in ((weights, "ViT-tiny-quickgelu"), (pt, "ViT-tiny-quickgelu"), (openai, None)):
        clip = load_clip_model(path, arch=arch, vocab=vocab)
        assert torch.allclose(clip.embed_images(images), reference, atol=1e-5)
        assert clip.model.config["quick_gelu"]
    gelu = load_clip_model(weights, arch="ViT-B-32", vocab=vocab)  # open_clip's own configs use GELU
    assert not gelu.model.config["quick_gelu"]
    text = load_clip_model(weights, vocab=vocab).embed_text(["a face", "a smiling face"])
    assert text.shape == (2, 16) and torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(text[0], text[1])


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_bad_weights_one_line_errors(tmp_path, clip_files):
    _, vocab = clip_files
    missing = tmp_path / "nothere.pt"
    with pytest.raises(CLIPError) as e:
        load_clip_model(missing, vocab=vocab)
    assert str(missing) in _one_line(e)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00garbage" * 3)
    with pytest.raises(CLIPError) as e:
        load_clip_model(corrupt, vocab=vocab)
    assert str(corrupt) in _one_line(e)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CLIPError) as e:
        load_clip_model(junk, vocab=vocab)
    assert str(junk) in _one_line(e)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(CLIPError) as e:
        load_clip_model(other, vocab=vocab)
    assert "not a CLIP" in _one_line(e)
    _, state = tiny_clip_state()
    del state["ln_final.bias"]
    state["extra.weight"] = torch.zeros(1)
    partial = tmp_path / "partial.safetensors"
    save_file(state, str(partial))
    with pytest.raises(CLIPError) as e:
        load_clip_model(partial, vocab=vocab)
    assert "unsupported CLIP architecture" in _one_line(e)
    script = tmp_path / "openai_jit.pt"  # the shape of a TorchScript archive: refused, never executed
    with zipfile.ZipFile(script, "w") as archive:
        archive.writestr("ViT-B-32/code/__torch__/model.py", "def forward(): pass")
        archive.writestr("ViT-B-32/constants.pkl", b"")
        archive.writestr("ViT-B-32/data.pkl", b"")
    with pytest.raises(CLIPError) as e:
        load_clip_model(script, vocab=vocab)
    assert "TorchScript" in _one_line(e) and "state_dict" in str(e.value)
    weights, _ = clip_files
    with pytest.raises(CLIPError) as e:
        load_clip_model(weights, vocab=tmp_path / "no_vocab.txt.gz")
    assert "--clip-vocab" in _one_line(e)
    small = tmp_path / "small.safetensors"
    save_file(tiny_clip_state(vocab_size=100)[1], str(small))
    with pytest.raises(CLIPError) as e:
        load_clip_model(small, vocab=vocab)
    _one_line(e)


@pytest.mark.parametrize("tuned", [False, True])
def test_latent_optimization_lowers_clip_loss(clip_files, tuned):
    weights, _ = clip_files
    clip = load_clip_model(weights)
    G = tiny_generator()
    result = tiny_result(G, tuned=tuned)
    edited = edit_with_text(result, "a smiling face", clip, num_steps=15, learning_rate=0.05)
    losses = [h["loss"] for h in edited.history]
    assert losses[-1] < losses[0] and min(losses) < losses[0] * 0.99
    target = clip.embed_text(["a smiling face"])
    before = clip_distance(clip, result.render(), target)
    after = clip_distance(clip, edited.images, target)
    assert float(after) < float(before)
    assert edited.latent.generator is result.generator  # the tuned generator renders the edit
    assert not torch.equal(edited.latent.ws, result.ws.to(edited.latent.ws.device))
    assert all(not p.requires_grad or p.grad is None for p in result.generator.parameters())
    with pytest.raises(ValueError):
        edit_with_text(result, "  ", clip)


def test_global_direction_in_s_applies(clip_files, tmp_path):
    weights, _ = clip_files
    clip = load_clip_model(weights)
    G = tiny_generator()
    direction = find_global_direction(G, clip, "a smiling face", "a face", num_images=3, beta=0.0,
                                      num_std_samples=200)
    total = sum(layer.affine.out_features for _, layer, _ in G.synthesis.style_layers())
    assert isinstance(direction, Direction) and direction.space == "s"
    assert tuple(direction.vectors.shape) == (1, total)
    assert direction.settings["num_channels"] > 0 and float(direction.std[0]) > 0
    # toRGB channels are left out unless asked for
    start = 0
    for name, channels in direction.style_layout:
        if name.endswith("torgb"):
            assert float(direction.vectors[0, start:start + channels].abs().sum()) == 0
        start += channels
    path = direction.save(tmp_path)
    loaded = Direction.load(path)
    for tuned in (False, True):
        result = tiny_result(G, tuned=tuned)
        plain = edit(result, loaded, strength=0.0)
        moved = edit(result, loaded, strength=3.0)
        assert (moved - plain).abs().mean() > 1e-3
        # moving along the direction raises the image's alignment with delta_t
        delta_t = text_direction(clip, "a smiling face", "a face")
        gain = (clip.embed_images(moved) - clip.embed_images(plain)) @ delta_t
        assert float(gain) > 0
    strict = find_global_direction(G, clip, "a smiling face", "a face", num_images=3, num_std_samples=200,
                                   beta=float(direction.scores[0]) * 0.999)
    assert strict.settings["num_channels"] < direction.settings["num_channels"]
    with pytest.raises(ValueError, match="lower beta"):
        find_global_direction(G, clip, "a smiling face", "a face", num_images=2, num_std_samples=50, beta=2.0)


def _invoke(args):
    from ganinv.cli import main
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_text_edits(clip_files, tmp_path):
    import json

    from ganinv.models.checkpoints import save_native
    weights, vocab = clip_files
    G = tiny_generator()
    model_dir = tmp_path / "tiny-model"
    save_native(model_dir, G, None, card={"name": "tiny"})
    result = tiny_result(G, tuned=True)
    result.model_name = "tiny"
    result.save(tmp_path / "result")
    out = tmp_path / "opt"
    r = _invoke(["edit", tmp_path / "result", "--model", model_dir, "--text", "a smiling face", "--clip", weights,
                 "--clip-arch", "ViT-tiny-quickgelu", "--method", "optimize", "--num-steps", "4", "--outdir", out])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "edit.json").read_text())
    assert report["method"] == "styleclip_optimize" and len(report["history"]) == 5
    assert (out / "edited.png").is_file() and (out / "latent.npz").is_file()
    out = tmp_path / "global"
    r = _invoke(["edit", "3", "--model", model_dir, "--text", "a smiling face", "--neutral", "a face",
                 "--clip", weights, "--clip-vocab", vocab, "--method", "global", "--beta", "0",
                 "--strength", "-2:2:3", "--outdir", out])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "edit.json").read_text())
    assert report["space"] == "s" and len(list((out / "frames").glob("frame_*.png"))) == 3
    spec = report["direction_file_spec"]
    r = _invoke(["edit", "4", "--model", model_dir, "--direction", spec, "--strength", "2", "--outdir",
                 tmp_path / "again"])
    assert r.exit_code == 0, r.output
    missing = tmp_path / "no_clip.pt"
    r = _invoke(["edit", "3", "--model", model_dir, "--text", "a face", "--clip", missing, "--outdir",
                 tmp_path / "x"])
    assert r.exit_code == 1 and str(missing) in r.output and r.output.count("\n") == 1
    r = _invoke(["edit", "3", "--model", model_dir, "--text", "a face", "--outdir", tmp_path / "y"])
    assert r.exit_code == 1 and "--clip PATH" in r.output
    r = _invoke(["edit", "3", "--model", model_dir, "--outdir", tmp_path / "z"])
    assert r.exit_code == 1 and "--direction" in r.output


CLIP_FIXTURES = __import__("pathlib").Path(__file__).resolve().parent / "fixtures" / "clip"


def test_towers_match_open_clip():
    """open_clip's forward passes on the same weights (fixtures written by open_clip's own code)."""
    from safetensors.torch import load_file
    ref = load_file(str(CLIP_FIXTURES / "openclip_tiny_ref.safetensors"))
    from ganinv.editing.clip import load_clip
    model = load_clip(CLIP_FIXTURES / "openclip_tiny.safetensors", arch="tiny-quickgelu")
    assert model.config["vision_heads"] == 2 and model.config["text_heads"] == 2
    images = ref["images"] * 2 - 1  # generator range
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), ref["image_features"], atol=1e-4)
        assert torch.allclose(model.encode_text(ref["tokens"]), ref["text_features"], atol=1e-4)
        gelu = load_clip(CLIP_FIXTURES / "openclip_tiny.safetensors", arch="tiny")
        assert not torch.allclose(gelu.encode_image(images), ref["image_features"], atol=1e-4)


def test_tokenizer_matches_open_clip():
    import json
    ref = json.loads((CLIP_FIXTURES / "tokens_ref.json").read_text())
    tokenizer = Tokenizer(CLIP_FIXTURES / "bpe_merges_2000.txt.gz", context_length=ref["context_length"])
    assert tokenizer(ref["texts"]).tolist() == ref["tokens"]


def test_single_channel_generator(clip_files):
    """fashion32-like generators (one channel) are seen by CLIP as gray RGB."""
    weights, _ = clip_files
    clip = load_clip_model(weights)
    G = tiny_generator(channels=1)
    result = tiny_result(G, tuned=False)
    edited = edit_with_text(result, "a sneaker", clip, num_steps=6, learning_rate=0.05)
    assert edited.images.shape == result.render().shape
    assert edited.history[-1]["loss"] < edited.history[0]["loss"]
    direction = find_global_direction(G, clip, "a sneaker", "a shoe", num_images=2, beta=0.0, num_std_samples=50)
    assert direction.space == "s" and (edit(result, direction, 3.0) - edit(result, direction, 0.0)).abs().max() > 0
