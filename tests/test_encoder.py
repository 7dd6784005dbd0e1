"""Encoder inversion (e4e/ReStyle network, its training recipe, the `encoder` and `hybrid` methods)."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_discriminator, tiny_generator
from ganinv.inversion import METHODS, invert
from ganinv.models.encoder import Encoder, load_encoder, restyle, save_encoder, style_groups
from ganinv.models.registry import Model
from ganinv.train.encoder_trainer import EncoderTrainConfig, EncoderTrainer, train_encoder


def _targets(G, count: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = G.mapping(torch.randn([count, G.z_dim], generator=gen), None, update_w_avg=False)
        return G.synthesis(ws, noise_mode="const").clamp(-1, 1)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.clamp(-1, 1) - b).square().mean())


@pytest.fixture(scope="module")
def trained():
    """A tiny G and an encoder briefly trained on its generated pairs (shared by the slower tests)."""
    torch.set_num_threads(1)
    G, D = tiny_generator(), tiny_discriminator()
    config = EncoderTrainConfig(batch_real=0, batch_generated=8, iterations=2, learning_rate=2e-3, dfeat_weight=0.0,
                                progressive_start=0, progressive_every=2, num_eval=0)
    trainer = EncoderTrainer(config, G, D)
    for _ in range(100):
        trainer.step()
    return G, D, trainer.encoder.eval().requires_grad_(False)


@pytest.mark.parametrize("resolution,channels", [(16, 3), (32, 1), (32, 3), (16, 1)])
def test_encoder_shapes_for_generator_configs(resolution, channels):
    G = tiny_generator(resolution=resolution, channels=channels)
    encoder = Encoder.for_generator(G).eval()
    target = torch.rand(2, channels, resolution, resolution) * 2 - 1
    residual = encoder(target, encoder.avg_image)
    assert residual.shape == (2, G.num_ws, G.w_dim)
    ws, images = restyle(G, encoder, target, 3, keep_images=True)
    assert ws.shape == (2, G.num_ws, G.w_dim) and len(images) == 3
    assert all(img.shape == target.shape for img in images)
    # Inference (no autograd) takes the generator's channels-last path: same image to float rounding.
    assert torch.allclose(encoder.avg_image, G.synthesis(encoder.start_ws(1), noise_mode="const"), atol=1e-5)
    groups = style_groups(G.num_ws, resolution)
    assert sorted(i for indices in groups.values() for i in indices) == list(range(G.num_ws))
    assert groups["fine"] == [G.num_ws - 2, G.num_ws - 1]  # the two ws indices the last block reads


@pytest.mark.parametrize("num_ws,w_dim", [(1, 8), (5, 24), (12, 16)])
def test_encoder_any_num_ws_and_progressive_offsets(num_ws, w_dim):
    torch.manual_seed(0)
    encoder = Encoder(16, 3, num_ws, w_dim).eval()
    target, current = torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16)
    assert encoder(target, current).shape == (3, num_ws, w_dim)
    encoder.set_active_offsets(0)  # e4e: base latent only, every index the same
    out = encoder(target, current)
    assert torch.equal(out, out[:, :1].expand_as(out))
    if num_ws > 2:
        encoder.set_active_offsets(1)
        out = encoder(target, current)
        assert not torch.equal(out[:, 1], out[:, 0])
        assert torch.equal(out[:, 2:], out[:, :1].expand(-1, num_ws - 2, -1))
    with pytest.raises(ValueError, match=r"\[N, 3, 16, 16\]"):
        encoder(torch.randn(1, 1, 16, 16), current[:1])


def _tiny_trainer(G, D, seed=0, **overrides):
    from ganinv.train.classifier import Classifier
    torch.manual_seed(5)
    classifier = Classifier(3, 16, {"kind": ["a", "b"]}, base_width=4, max_width=8, feature_dim=16).eval()
    reals = ((_targets(G, 24, seed=11) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    settings = dict(seed=seed, batch_real=4, batch_generated=4, iterations=2, learning_rate=2e-3, progressive_start=1,
                    progressive_every=1, pool_size=16, num_eval=0)
    settings.update(overrides)
    return EncoderTrainer(EncoderTrainConfig(**settings), G, D, classifier=classifier, train_images=reals)


def test_training_lowers_loss_and_resumes_bit_exactly(tmp_path):
    G, D = tiny_generator(), tiny_discriminator()
    check = _targets(G, 16, seed=3)

    def error(trainer):
        with torch.no_grad():
            ws, _ = restyle(G, trainer.encoder, check, 1)
            return _mse(G.synthesis(ws, noise_mode="const"), check)

    reference = _tiny_trainer(G, D)
    before = error(reference)
    for _ in range(6):
        stats = reference.step()
    assert {"mse", "laplacian", "discriminator_features", "similarity", "delta", "w_loss", "adversarial",
            "latent_d"} <= set(stats)
    at_six = {k: v.clone() for k, v in reference.encoder.state_dict().items()}
    d_at_six = [p.detach().clone() for p in reference.latent_d.parameters()]

    first = _tiny_trainer(G, D)
    train_encoder(first, tmp_path, max_steps=3, progress=False)
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "encoder" / "card.json").is_file()
    resumed = _tiny_trainer(G, D)
    train_encoder(resumed, tmp_path, max_steps=3, progress=False)
    assert resumed.step_index == 6
    for name, value in resumed.encoder.state_dict().items():
        assert torch.equal(value, at_six[name]), name
    for a, b in zip(resumed.latent_d.parameters(), d_at_six):
        assert torch.equal(a, b)

    for _ in range(14):
        reference.step()
    assert error(reference) < 0.8 * before
    # A different seed is a different run.
    other = _tiny_trainer(G, D, seed=1)
    other.step()
    assert not torch.equal(other.encoder.stem.weight, resumed.encoder.stem.weight)


def test_resume_refuses_a_different_architecture(tmp_path):
    G, D = tiny_generator(), tiny_discriminator()
    train_encoder(_tiny_trainer(G, D), tmp_path, max_steps=1, progress=False)
    with pytest.raises(ValueError, match="batch_real"):
        train_encoder(_tiny_trainer(G, D, batch_real=2), tmp_path, max_steps=1, progress=False)


def test_restyle_iterations_do_not_increase_error(trained):
    G, _, encoder = trained
    targets = _targets(G, 24, seed=123)  # not the training draws
    with torch.no_grad():
        ws, images = restyle(G, encoder, targets, 3, keep_images=True)
        errors = [_mse(img, targets) for img in images[1:]] + [_mse(G.synthesis(ws, noise_mode="const"), targets)]
    start = _mse(images[0], targets)
    assert errors[0] < 0.6 * start
    assert errors[1] < errors[0]  # the trained second pass refines the first
    assert errors[2] <= errors[0]  # a pass beyond the trained ones does not undo the refinement
    result = invert(Model(G=G, encoder=encoder), targets[:4], "encoder", iterations=2)
    assert result.space == "w+" and result.ws.shape == (4, G.num_ws, G.w_dim)
    assert torch.allclose(result.reconstruction, images[2][:4].clamp(-1, 1), atol=1e-5)


def test_hybrid_uses_the_encoder_and_improves_on_it(trained):
    G, D, encoder = trained
    model = Model(G=G, D=D, encoder=encoder)
    target = _targets(G, 2, seed=321)
    start = invert(model, target, "encoder", iterations=2)
    steps = []
    result = invert(model, target, "hybrid", num_steps=8, callback=lambda info: steps.append(info.step))
    assert result.method == "hybrid" and steps == list(range(8))
    for a, b in zip(result.metrics["psnr"], start.metrics["psnr"]):
        assert a >= b - 1e-4
    assert np.mean(result.metrics["psnr"]) > np.mean(start.metrics["psnr"]) + 0.05
    assert [h["domain"] for h in result.history][0] >= 0
    # Zero steps returns the encoder's latent itself.
    zero = invert(model, target, "hybrid", num_steps=0)
    assert torch.allclose(zero.ws, start.ws)


@pytest.mark.parametrize("method", ["pti", "clone"])
def test_tuning_methods_start_from_the_encoder_when_the_model_has_one(trained, method):
    G, D, encoder = trained
    target = _targets(G, 1, seed=7)
    expected = invert(Model(G=G, encoder=encoder), target, "encoder").ws
    result = invert(Model(G=G, D=D, encoder=encoder), target, method, num_steps=1)
    assert result.extras.get("init") == "encoder (shipped with the model)"
    assert torch.allclose(result.ws, expected)
    plain = invert(Model(G=G, D=D), target, method, num_steps=1, **({"pivot_steps": 2} if method == "pti" else
                                                                       {"h_steps": 2}))
    assert "init" not in plain.extras


def test_missing_or_mismatched_encoder_errors():
    G = tiny_generator()
    target = _targets(G, 1, seed=1)
    for method in ("encoder", "hybrid"):
        assert method in METHODS
        with pytest.raises(ValueError, match="no encoder.*train-encoder"):
            invert(G, target, method)
    other = Encoder.for_generator(tiny_generator(seed=4))
    with pytest.raises(ValueError, match="another generator"):
        invert(Model(G=G, encoder=other), target, "encoder")
    with pytest.raises(ValueError, match="img_resolution=32"):
        invert(Model(G=G, encoder=Encoder.for_generator(tiny_generator(resolution=32))), target, "encoder")
    with pytest.raises(ValueError, match="iterations"):
        invert(Model(G=G, encoder=Encoder.for_generator(G)), target, "encoder", iterations=0)


def test_save_load_roundtrip_and_model_folder(tmp_path, trained):
    from ganinv.models.checkpoints import save_native
    from ganinv.models.registry import load_model

    G, D, encoder = trained
    save_encoder(tmp_path / "enc", encoder, {"name": "tiny-encoder"})
    loaded = load_encoder(tmp_path / "enc")
    assert loaded.card["name"] == "tiny-encoder" and loaded.card["format"] == "ganinv-encoder"
    x = _targets(G, 2, seed=9)
    assert torch.equal(loaded(x, loaded.avg_image), encoder(x, encoder.avg_image))
    assert int(loaded.active_offsets) == int(encoder.active_offsets)

    folder = save_native(tmp_path / "model", G, D, card={"name": "tiny"})
    save_encoder(folder / "encoder", encoder, {"name": "tiny-encoder"})
    bundle = load_model(folder)
    assert isinstance(bundle.encoder, Encoder)
    result = invert(bundle, x[:1], "encoder")
    assert torch.allclose(result.ws, invert(Model(G=G, encoder=encoder), x[:1], "encoder").ws, atol=1e-5)

    card = json.loads((tmp_path / "enc" / "card.json").read_text())
    card["init_kwargs"]["pyramid_width"] += 8
    (tmp_path / "enc" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="do not match"):
        load_encoder(tmp_path / "enc")
    with pytest.raises(FileNotFoundError, match="card"):
        load_encoder(tmp_path / "nowhere")


def test_cli_train_and_export(tmp_path):
    from ganinv.cli import main
    from ganinv.models.checkpoints import save_native
    from ganinv.models.registry import load_model

    G, D = tiny_generator(), tiny_discriminator()
    folder = save_native(tmp_path / "model", G, D, card={"name": "tiny"})
    run = tmp_path / "run"
    runner = CliRunner()
    args = ["train-encoder", "--model", str(folder), "--outdir", str(run), "--batch-real", "0",
            "--batch-generated", "2", "--max-steps", "2", "--dfeat-weight", "0", "--quiet", "--device", "cpu"]
    out = runner.invoke(main, args)
    assert out.exit_code == 0, out.output
    assert (run / "encoder" / "model.safetensors").is_file()
    assert json.loads((run / "stats.jsonl").read_text().splitlines()[-1])["step"] == 2
    out = runner.invoke(main, args[:-3] + ["--no-resume", "--quiet"])
    assert out.exit_code != 0 and "exists" in out.output
    out = runner.invoke(main, ["train-encoder", "--model", str(folder), "--outdir", str(tmp_path / "r2"), "--quiet"])
    assert out.exit_code != 0 and "--data" in out.output
    out = runner.invoke(main, ["export-encoder", str(run), "--model-dir", str(folder), "--quiet"])
    assert out.exit_code == 0, out.output
    assert load_model(folder).encoder is not None
    out = runner.invoke(main, ["export-encoder", str(run), "--model-dir", str(folder)])
    assert out.exit_code != 0 and "--overwrite" in out.output
    other = save_native(tmp_path / "other", tiny_generator(seed=8), None, card={"name": "other"})
    out = runner.invoke(main, ["export-encoder", str(run), "--model-dir", str(other)])
    assert out.exit_code != 0 and "another generator" in out.output


def test_init_encoder_keeps_weights_takes_new_generator_stats_and_records_provenance(tmp_path, trained):
    G, D, encoder = trained
    save_encoder(tmp_path / "enc", encoder, {"name": "earlier", "training": {"steps": 100, "hours": 0.01},
                                             "generator": {"name": "tiny", "sha256": "ab" * 32}})
    earlier = load_encoder(tmp_path / "enc")
    G2 = tiny_generator(seed=5)  # a "newer snapshot": same architecture, other weights and w_avg
    with torch.no_grad():
        G2.mapping(torch.randn([256, G2.z_dim], generator=torch.Generator().manual_seed(0)), None)
    config = EncoderTrainConfig(batch_real=0, batch_generated=2, dfeat_weight=0.0, num_eval=0)
    trainer = EncoderTrainer(config, G2, D, init_encoder=earlier)
    learned = {k: v for k, v in earlier.state_dict().items() if k not in ("w_avg", "avg_image", "w_scale")}
    for name, value in learned.items():
        assert torch.equal(trainer.encoder.state_dict()[name], value), name
    fresh = Encoder.for_generator(G2, **{k: v for k, v in earlier.init_kwargs.items()
                                        if k not in ("img_resolution", "img_channels", "num_ws", "w_dim")})
    assert torch.allclose(trainer.encoder.w_avg, fresh.w_avg)
    assert not torch.allclose(trainer.encoder.w_avg, earlier.w_avg)
    note = [n for n in trainer.card()["notes"] if n.startswith("initialized from")]
    assert note and "100 steps" in note[0] and "tiny" in note[0] and "abababababab" in note[0]
