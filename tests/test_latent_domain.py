"""In-domain encoder training (image and latent discriminators), the latent-overlap measures in W and the
latent-domain benchmark's functions, on tiny random models."""
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_discriminator, tiny_generator
from ganinv.errors import GanInvError
from ganinv.metrics.latent_overlap import (fit_pca, frechet_distance, latent_overlap, latent_vectors, project,
                                           two_sample_accuracy)
from ganinv.models.encoder import Encoder
from ganinv.models.prior import sample_prior
from ganinv.train.encoder_trainer import IN_DOMAIN_PRESET, EncoderTrainConfig, EncoderTrainer

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- overlap measures

def _gaussian(count, dim=16, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(size=(count, dim)) + shift


def test_identical_distributions_overlap():
    a, b = _gaussian(400, seed=1), _gaussian(400, seed=2)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Two samples of one distribution: only the small-sample error (about D^2/N for unit covariance).
    assert frechet_distance(a, b) < 1.5
    assert abs(two_sample_accuracy(a, b) - 0.5) < 0.1


def test_shifted_distributions_separate():
    a, b = _gaussian(400, seed=1), _gaussian(400, seed=2, shift=1.0)
    near = frechet_distance(a, _gaussian(400, seed=3))
    far = frechet_distance(a, b)
    assert far > 10 and far > 8 * near
    assert far == pytest.approx(16.0, rel=0.25)  # ||mu_a - mu_b||^2 = D for a shift of 1 per coordinate
    assert two_sample_accuracy(a, b) > 0.95
    # A spread-only difference is seen by the Fréchet distance too.
    assert frechet_distance(a, 3 * _gaussian(400, seed=4)) > 10


def test_overlap_inputs_and_pca():
    ws = torch.randn(6, 4, 8)
    assert latent_vectors(ws).shape == (6, 8)
    assert np.allclose(latent_vectors(ws, "first"), ws[:, 0].double().numpy())
    with pytest.raises(GanInvError, match="reduction"):
        latent_vectors(ws, "median")
    with pytest.raises(GanInvError, match="same D"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(GanInvError, match="NaN"):
        two_sample_accuracy(np.full((10, 3), np.nan), np.zeros((10, 3)))
    # PCA on data stretched along one axis finds that axis first.
    data = _gaussian(300, dim=5) * np.array([10.0, 1, 1, 1, 1])
    mean, basis = fit_pca(data)
    assert abs(basis[0, 0]) > 0.99 and basis.shape == (2, 5)
    xy = project(data, (mean, basis))
    assert xy.shape == (300, 2) and xy[:, 0].std() > 5 * xy[:, 1].std()
    numbers = latent_overlap(_gaussian(50), _gaussian(200, seed=9))
    assert set(numbers) == {"frechet_distance", "two_sample_accuracy", "count"} and numbers["count"] == 50


def test_prior_ws_overlap_and_shifted_ws_do_not():
    G = tiny_generator()
    prior = latent_vectors(sample_prior(G, 400, seed=1))
    same = latent_vectors(sample_prior(G, 200, seed=2))
    spread = prior.std(0).mean()
    shifted = same + 2 * spread
    assert frechet_distance(same, prior) < frechet_distance(shifted, prior) / 5
    assert two_sample_accuracy(same, prior) < 0.65 < 0.9 < two_sample_accuracy(shifted, prior)


# ---------------------------------------------------------------- in-domain training terms

def _trainer(G, D, **overrides):
    settings = dict(seed=0, batch_real=0, batch_generated=4, iterations=1, learning_rate=2e-3, progressive_start=1,
                    progressive_every=1, pool_size=16, num_eval=0, similarity_weight=0.0)
    settings.update(overrides)
    return EncoderTrainer(EncoderTrainConfig(**settings), G, D)


def test_defaults_keep_the_image_adversarial_term_off():
    assert EncoderTrainConfig().image_adversarial_weight == 0
    G, D = tiny_generator(), tiny_discriminator()
    stats = _trainer(G, D).step()
    assert "image_adversarial" not in stats and "adversarial" in stats
    with pytest.raises(ValueError, match="image_adversarial_weight"):
        EncoderTrainConfig(image_adversarial_weight=-1.0).validate()


def test_in_domain_terms_are_finite_and_the_image_term_falls():
    G, D = tiny_generator(), tiny_discriminator()
    D_before = {k: v.clone() for k, v in D.state_dict().items()}
    # The image adversarial term almost alone (the reconstruction loss needs one non-zero weight), so its
    # own descent is what the encoder follows.
    trainer = _trainer(G, D, mse_weight=1e-6, laplacian_weight=0.0, dfeat_weight=0.0, delta_weight=0.0,
                       w_weight=0.0, adversarial_weight=IN_DOMAIN_PRESET["adversarial_weight"],
                       image_adversarial_weight=1.0, learning_rate=5e-3)
    check = trainer._prior_ws(16, mixing=False)
    with torch.no_grad():
        check_images = G.synthesis(check, noise_mode="const").clamp(-1, 1)

    def image_term():
        with torch.no_grad():
            ws = trainer.encoder.start_ws(len(check_images)) + trainer.encoder(
                check_images, trainer.encoder.avg_image.expand(len(check_images), -1, -1, -1))
            return float(torch.nn.functional.softplus(-D(G.synthesis(ws, noise_mode="const"))).mean())

    before = image_term()
    history = [trainer.step() for _ in range(25)]
    after = image_term()
    for stats in history:
        for key in ("image_adversarial", "adversarial", "latent_d", "loss"):
            assert np.isfinite(stats[key]), (key, stats)
    assert after < before - 1e-3
    assert np.mean([s["image_adversarial"] for s in history[-5:]]) < history[0]["image_adversarial"]
    # D is frozen: the trainer never changes the model's discriminator.
    for name, value in D.state_dict().items():
        assert torch.equal(value, D_before[name]), name
    card = trainer.card()
    assert card["losses"]["image_adversarial"] == 1.0 and "frozen" in card["losses"]["image_discriminator"]


def test_image_adversarial_term_without_d_is_noted_off():
    G = tiny_generator()
    trainer = _trainer(G, None, dfeat_weight=0.0, image_adversarial_weight=0.1)
    assert "image_adversarial" not in trainer.step()
    assert any("image adversarial loss is off" in note for note in trainer.notes)


def test_cli_in_domain_preset_sets_both_weights_and_explicit_flags_win(tmp_path):
    from ganinv.cli import main
    from ganinv.models.checkpoints import save_native

    folder = save_native(tmp_path / "model", tiny_generator(), tiny_discriminator(), card={"name": "tiny"})
    base = ["train-encoder", "--model", str(folder), "--batch-real", "0", "--batch-generated", "2",
            "--max-steps", "1", "--quiet", "--device", "cpu", "--preset", "in-domain"]
    runner = CliRunner()
    out = runner.invoke(main, base + ["--outdir", str(tmp_path / "a")])
    assert out.exit_code == 0, out.output
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["adversarial_weight"] == IN_DOMAIN_PRESET["adversarial_weight"]
    assert config["image_adversarial_weight"] == IN_DOMAIN_PRESET["image_adversarial_weight"] > 0
    assert "image_adversarial" in json.loads((tmp_path / "a" / "stats.jsonl").read_text().splitlines()[-1])
    out = runner.invoke(main, base + ["--outdir", str(tmp_path / "b"), "--image-adversarial-weight", "0.3"])
    assert out.exit_code == 0, out.output
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["image_adversarial_weight"] == 0.3
    assert config["adversarial_weight"] == IN_DOMAIN_PRESET["adversarial_weight"]
    out = runner.invoke(main, base[:-1] + ["bogus", "--outdir", str(tmp_path / "c")])
    assert out.exit_code != 0 and "--preset" in out.output


# ---------------------------------------------------------------- benchmark functions

def _benchmark():
    spec = importlib.util.spec_from_file_location("latent_domain_benchmark", ROOT / "benchmarks" / "latent_domain.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_functions_run_on_a_tiny_model(tmp_path):
    pytest.importorskip("matplotlib")
    from ganinv.models.checkpoints import save_native
    from ganinv.models.registry import load_model

    bench = _benchmark()
    G, D = tiny_generator(), tiny_discriminator()
    model = load_model(save_native(tmp_path / "model", G, D, card={"name": "tiny"}))
    torch.manual_seed(11)
    model = dataclasses.replace(model, encoder=Encoder.for_generator(model.G).eval())
    with torch.no_grad():
        images = G.synthesis(sample_prior(G, 6, seed=3), noise_mode="const").clamp(-1, 1)
    methods = {"optimize-w": ("optimize", dict(space="w", optimize_noise=False, num_steps=3)),
               "encoder": ("encoder", {})}
    torch.manual_seed(12)
    other = Encoder.for_generator(model.G).eval()
    codes = bench.invert_codes(model, images, methods, encoders={"other": other})
    assert set(codes) == {"optimize-w", "encoder", "encoder:other"}
    assert all(c["ws"].shape == (6, G.num_ws, G.w_dim) for c in codes.values())
    assert not torch.equal(codes["encoder"]["ws"], codes["encoder:other"]["ws"])
    prior = sample_prior(G, 200, seed=1)
    rows = bench.overlap_rows(codes, prior, null_ws=sample_prior(G, 6, seed=2), pca_dims=4)
    assert list(rows)[0] == bench.PRIOR_ROW and set(rows) == {bench.PRIOR_ROW, *codes}
    for row in rows.values():
        assert row["frechet_distance"] >= 0 and row["frechet_distance_pca"] >= 0 and 0 <= row["two_sample_accuracy"] <= 1 and row["count"] == 6
    table = bench.format_table(rows, codes)
    assert all(name in table for name in rows)
    path = bench.draw_projection(codes, prior, tmp_path / "pca.png", rows=rows)
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
