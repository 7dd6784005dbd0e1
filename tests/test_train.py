"""Trainer, DiffAugment, classifier, quality measures and model export, on tiny networks and data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ganinv.train.augment import augment_cutout, augment_translation, diff_augment, parse_policy
from ganinv.train.classifier import (evaluate_classifier, head_labels, load_classifier,
                                     save_classifier, train_classifier)
from ganinv.train.quality import frechet_distance, nearest_training_images
from ganinv.train.trainer import TrainConfig, Trainer, TrainingData, networks_from_checkpoint, train

@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny networks run faster on one thread, and this machine's cores are shared.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


TINY = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16, batch_size=8,
            snapshot_kimg=1000, grid_size=4)


def _images(count: int = 48, resolution: int = 16, channels: int = 3, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).rand(count, resolution, resolution, channels) * 255).astype(np.uint8)


# -- DiffAugment ------------------------------------------------------------------------------------


def test_diff_augment_is_seeded_differentiable_and_changes_images():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    x.requires_grad_(True)
    a = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    b = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    c = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert parse_policy("none") == [] and torch.equal(diff_augment(x, "none"), x)
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        parse_policy("color,rotate")


def test_translation_moves_content_and_cutout_zeroes_a_square():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1
    moved = augment_translation(x, torch.Generator().manual_seed(0))
    positions = moved.flatten(1).argmax(1)
    rows, cols = positions // 16, positions % 16
    assert (moved.flatten(1).sum(1) == 1).all()  # shifts of <= 2 px keep the dot inside
    assert (rows - 8).abs().max() <= 2 and (cols - 8).abs().max() <= 2 and len(set(positions.tolist())) > 5
    ones = torch.ones(32, 1, 16, 16)
    cut = augment_cutout(ones, torch.Generator().manual_seed(0))
    zeros = (cut == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0  # an 8x8 square, clipped at the border


# -- trainer ----------------------------------------------------------------------------------------


def test_training_steps_have_finite_losses_and_update_networks():
    torch.manual_seed(0)
    config = TrainConfig(**TINY, r1_interval=2, pl_weight=2.0, pl_interval=2)
    trainer = Trainer(config, TrainingData(_images()))
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    d_before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    seen = set()
    for _ in range(4):
        stats = trainer.step()
        seen.update(stats)
        assert all(np.isfinite(v) for v in stats.values()), stats
    assert {"loss_G", "loss_D", "r1_penalty", "pl_penalty"} <= seen
    assert trainer.kimg == pytest.approx(4 * 8 / 1000)
    assert any(not torch.equal(before[k], v) for k, v in trainer.G.state_dict().items())
    assert any(not torch.equal(d_before[k], v) for k, v in trainer.D.state_dict().items())
    ema = trainer.G_ema.state_dict()
    assert any(not torch.equal(ema[k], v) for k, v in trainer.G.state_dict().items() if v.is_floating_point())
    grid = trainer.sample_grid(4)
    assert grid.shape == (4, 3, 16, 16) and torch.isfinite(grid).all()


def test_fir_convolution_steps_match_the_slice_form():
    import ganinv.models.layers as layers_module

    config = TrainConfig(**TINY, r1_interval=2)
    data = TrainingData(_images(16))
    trainers = []
    for conv in (True, False):
        trainer = Trainer(config, data)
        trainer.fir_convolution = conv
        trainers.append((trainer, [trainer.step() for _ in range(2)]))
    (a, stats_a), (b, stats_b) = trainers
    for x, y in zip(stats_a, stats_b):
        assert x.keys() == y.keys() and all(abs(x[k] - y[k]) < 1e-4 for k in x)
    for name, value in a.G.state_dict().items():
        torch.testing.assert_close(value, b.G.state_dict()[name], atol=1e-4, rtol=1e-4)
    assert layers_module.FIR_CONV_UNDER_AUTOGRAD is False  # only inside the trainer's steps


def test_trains_at_64_pixels_rgb_with_diffaugment():
    config = TrainConfig(**{**TINY, "channel_base": 256, "channel_max": 16}, augment="color,translation,cutout")
    trainer = Trainer(config, TrainingData(_images(16, 64, 3)))
    for _ in range(2):
        stats = trainer.step()
        assert np.isfinite(stats["loss_G"]) and np.isfinite(stats["loss_D"])
    assert trainer.sample_grid(2).shape == (2, 3, 64, 64)


def test_conditional_training_runs():
    images = _images(32)
    labels = np.arange(32) % 3
    config = TrainConfig(**TINY, label_key="class", augment="none")
    trainer = Trainer(config, TrainingData(images, labels, ["a", "b", "c"]))
    assert trainer.G.c_dim == 3 and trainer.D.c_dim == 3
    stats = trainer.step()
    assert np.isfinite(stats["loss_G"]) and np.isfinite(stats["loss_D"])


def test_resume_continues_bit_exactly(tmp_path):
    config = TrainConfig(**TINY, r1_interval=2, pl_weight=1.0, pl_interval=3, mirror=True)
    data = TrainingData(_images(20))  # 20 images, batch 8: epochs wrap inside the run
    straight = train(config, data, tmp_path / "straight", progress=False, max_steps=6)
    train(config, data, tmp_path / "resumed", progress=False, max_steps=3)
    resumed = train(config, data, tmp_path / "resumed", progress=False, max_steps=3)
    assert resumed.step_index == straight.step_index == 6
    for name in ("G", "D", "G_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        mismatched = [k for k in a if not torch.equal(a[k], b[k])]
        assert not mismatched, f"{name} differs after resume: {mismatched[:3]}"
    for opt in ("opt_G", "opt_D"):
        sa, sb = getattr(straight, opt).state_dict()["state"], getattr(resumed, opt).state_dict()["state"]
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    # The checkpoint alone rebuilds G_ema and D.
    G, D, info = networks_from_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert info["step"] == 6 and torch.equal(G.mapping.fc0.weight, straight.G_ema.mapping.fc0.weight)
    assert (tmp_path / "resumed" / "samples_latest.png").is_file()
    assert len((tmp_path / "resumed" / "stats.jsonl").read_text().splitlines()) == 2


def test_resume_refuses_a_different_network(tmp_path):
    data = TrainingData(_images(16))
    train(TrainConfig(**TINY), data, tmp_path, progress=False, max_steps=1)
    other = TrainConfig(**{**TINY, "channel_max": 8})
    with pytest.raises(ValueError, match="channel_max"):
        train(other, data, tmp_path, progress=False, max_steps=1)


# -- classifier -------------------------------------------------------------------------------------


def _labelled_images(count: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Class k is a bright horizontal bar in band k of the image, on noise."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 4, count)
    images = rng.rand(count, 1, 16, 16).astype(np.float32) * 0.6 - 0.8
    for i, label in enumerate(labels):
        images[i, 0, 4 * label:4 * label + 3, :] = 0.8
    return torch.from_numpy(images), labels


def test_classifier_learns_and_round_trips(tmp_path):
    images, labels = _labelled_images(256, 0)
    heads = {"band": ["0", "1", "2", "3"], "parity": ["even", "odd"]}
    targets = {"band": labels, "parity": labels % 2}
    model, losses = train_classifier(images, targets, heads, epochs=3, batch_size=32, base_width=8,
                                     learning_rate=3e-3, feature_dim=32)
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:3])
    test_images, test_labels = _labelled_images(128, 1)
    result = evaluate_classifier(model, test_images, {"band": test_labels, "parity": test_labels % 2})
    assert result["band"]["accuracy"] > 0.8 and result["band"]["count"] == 128
    save_classifier(tmp_path / "clf", model, {"heldout_accuracy": {"band": result["band"]["accuracy"]}})
    loaded = load_classifier(tmp_path / "clf")
    assert loaded.card["heads"] == heads and "heldout_accuracy" in loaded.card
    with torch.no_grad():
        assert torch.equal(loaded(test_images)["band"], model(test_images)["band"])
        assert loaded.features(test_images).shape == (128, 32)
    with pytest.raises(ValueError, match="shape"):
        loaded(torch.zeros(1, 3, 16, 16))


def test_head_labels_use_index_names_or_sorted_values():
    records = [{"class": 2, "class_name": "Pullover"}, {"class": 0, "class_name": "T-shirt"},
               {"class": 1, "class_name": "Trouser"}]
    targets, names = head_labels(records, "class")
    assert names == ["T-shirt", "Trouser", "Pullover"] and targets.tolist() == [2, 0, 1]
    targets, names = head_labels([{"g": "b"}, {"g": "a"}, {"g": "b"}], "g")
    assert names == ["a", "b"] and targets.tolist() == [1, 0, 1]
    targets, _ = head_labels([{"g": "c"}], "g", ["a", "b"])
    assert targets.tolist() == [-1]
    with pytest.raises(ValueError, match="not in the dataset records"):
        head_labels([{"g": "a"}], "missing")


# -- quality ----------------------------------------------------------------------------------------


def test_frechet_distance_matches_closed_forms():
    rng = np.random.RandomState(0)
    a = rng.randn(4000, 5)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    # Same covariance, shifted mean: the distance is the squared shift.
    assert frechet_distance(a, a + 2.0) == pytest.approx(5 * 4.0, rel=1e-6)
    # Isotropic Gaussians of std 1 and 3: per dimension (1 - 3)^2 = 4.
    b = rng.randn(200_000, 2)
    assert frechet_distance(b, 3 * b) == pytest.approx(2 * 4.0, rel=1e-2)


def test_nearest_training_image_finds_a_copy():
    train_images = _images(50, 8, 1, seed=3)
    samples = torch.from_numpy(train_images[[7, 21]]).permute(0, 3, 1, 2).float() / 127.5 - 1
    index, rms = nearest_training_images(samples, train_images, chunk_size=16)
    assert index.tolist() == [7, 21] and np.allclose(rms, 0, atol=1e-6)


# -- export and CLI ---------------------------------------------------------------------------------


def _tiny_dataset(path):
    from ganinv.data.dataset import write_dataset
    images = _images(40, 16, 1, seed=5)
    records = [{"split": "train" if i < 32 else "heldout", "class": i % 2,
                "class_name": ["top", "shoe"][i % 2]} for i in range(40)]
    info = {"name": "tiny", "source_package": "none", "source_version": "0", "license": "test data",
            "split_rule": "first 32 train", "label_fields": ["class", "class_name"], "created_by": "test"}
    write_dataset(path, images, records, info)
    return path


def test_cli_train_classifier_export_and_load(tmp_path):
    from ganinv.cli import main
    from ganinv.models.registry import load_model

    data = _tiny_dataset(tmp_path / "data")
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--data", str(data), "--outdir", str(tmp_path / "run"), "--max-steps", "2",
                                  "--batch", "8", "--z-dim", "16", "--w-dim", "16", "--channel-base", "128",
                                  "--channel-max", "16", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["train-classifier", "--data", str(data), "--outdir", str(tmp_path / "clf"),
                                  "--epochs", "1", "--batch", "8", "--width", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "model"
    result = runner.invoke(main, ["export-model", "--run", str(tmp_path / "run"), "--data", str(data),
                                  "--classifier", str(tmp_path / "clf"), "--outdir", str(out), "--name", "tiny",
                                  "--num-real", "10", "--num-quality-samples", "16", "--quiet"])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "card.json").read_text())
    assert card["name"] == "tiny" and card["default"] is False and card["images_seen_kimg"] == 0.016
    assert card["quality"]["train_vs_heldout_floor"] > 0 and np.isfinite(card["quality"]["ratio"])
    fractions = card["quality"]["class_fractions"]["samples"]["class"]
    assert set(fractions) == {"top", "shoe"} and sum(fractions.values()) == pytest.approx(1, abs=1e-3)
    assert card["weights_storage"]["float16_check"]["max_abs_difference"] >= 0
    assert card["training_data"]["license"] == "test data"
    assert (out / "samples.png").is_file() and (out / "nearest_neighbors.png").is_file()
    model = load_model(out)
    assert model.D is not None and model.classifier is not None
    assert model.real_images.shape == (10, 1, 16, 16) and model.heldout.shape == (8, 1, 16, 16)
    assert model.heldout_labels[0]["class_name"] in ("top", "shoe")
    with torch.no_grad():
        img = model.G(torch.randn(2, model.G.z_dim), None)
        assert img.shape == (2, 1, 16, 16) and torch.isfinite(img).all()
        assert set(model.classifier(img)) == {"class"}
    # A second export into the same folder needs --overwrite; a finished run cannot restart silently.
    again = runner.invoke(main, ["export-model", "--run", str(tmp_path / "run"), "--data", str(data),
                                 "--classifier", str(tmp_path / "clf"), "--outdir", str(out), "--name", "tiny"])
    assert again.exit_code != 0 and "--overwrite" in again.output
    restart = runner.invoke(main, ["train", "--data", str(data), "--outdir", str(tmp_path / "run"), "--no-resume",
                                   "--quiet"])
    assert restart.exit_code != 0 and "exists" in restart.output


@pytest.mark.parametrize("command", [["train"], ["train-classifier"], ["train-encoder"], ["data", "emoji"],
                                     ["data", "fashion-mnist"], ["generate"], ["demo"], ["serve"]])
def test_shared_option_groups_are_listed_in_help(command):
    from ganinv.cli import main

    result = CliRunner().invoke(main, command + ["--help"])
    assert result.exit_code == 0, result.output
    for flag in ("--device [auto|cpu|cuda]", "--seed INTEGER RANGE", "--quiet", "Seed for every random choice."):
        assert flag in result.output, (command, flag)
    if command[0] not in ("serve",):
        assert "--outdir" in result.output
    if command[0] in ("train", "train-encoder"):
        for flag in ("--resume / --no-resume", "--max-steps", "--threads", "--learning-rate, --lr"):
            assert flag in result.output, (command, flag)


def test_sigterm_stops_after_the_step_and_the_run_resumes_bit_exactly(tmp_path, monkeypatch):
    import os
    import signal

    config = TrainConfig(**TINY, augment="none")
    data = TrainingData(_images(16))
    straight = train(config, data, tmp_path / "straight", progress=False, max_steps=4)
    step = Trainer.step

    def step_then_signal(self):
        stats = step(self)
        if self.step_index == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return stats

    monkeypatch.setattr(Trainer, "step", step_then_signal)
    stopped = train(config, data, tmp_path / "run", progress=False, max_steps=10, handle_signals=True)
    assert stopped.step_index == 2
    monkeypatch.setattr(Trainer, "step", step)
    _, _, info = networks_from_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert info["step"] == 2
    resumed = train(config, data, tmp_path / "run", progress=False, max_steps=2)
    assert resumed.step_index == 4
    for name, value in resumed.G_ema.state_dict().items():
        assert torch.equal(value, straight.G_ema.state_dict()[name]), name


# -- starting from an exported snapshot ----------------------------------------------------------------


def _export_tiny_run(tmp_path, data, config, steps: int = 2):
    """A tiny run's G_ema and D saved as a model folder with their card (`Trainer.save_snapshot`)."""
    trainer = train(config, data, tmp_path / "first", progress=False, max_steps=steps)
    trainer.save_snapshot(tmp_path / "snapshot")
    return trainer


def test_init_starts_every_network_from_the_snapshot_and_trains(tmp_path):
    config = TrainConfig(**TINY, r1_interval=2)
    data = TrainingData(_images(16))
    first = _export_tiny_run(tmp_path, data, config)
    for source in (tmp_path / "snapshot", tmp_path / "snapshot" / "model.safetensors"):
        trainer = Trainer(TrainConfig(**TINY, r1_interval=2, seed=7), data)
        trainer.start_from_snapshot(source)
        for name, reference in (("G", first.G_ema), ("G_ema", first.G_ema), ("D", first.D)):
            ours, theirs = getattr(trainer, name).state_dict(), reference.state_dict()
            assert all(torch.equal(ours[k], theirs[k]) for k in theirs), (source, name)
        assert trainer.step_index == 2 and trainer.kimg == first.kimg
        assert not trainer.opt_G.state and not trainer.opt_D.state  # fresh optimizer state
    before = trainer.G.mapping.fc0.weight.clone()
    stats = trainer.step()
    assert np.isfinite(stats["loss_G"]) and np.isfinite(stats["loss_D"]) and "r1_penalty" in stats
    assert not torch.equal(before, trainer.G.mapping.fc0.weight)


def test_init_run_resumes_its_own_checkpoint_and_refuses_other_networks(tmp_path):
    config = TrainConfig(**TINY)
    data = TrainingData(_images(16))
    first = _export_tiny_run(tmp_path, data, config)
    init = TrainConfig(**TINY, init=str(tmp_path / "snapshot"))
    started = train(init, data, tmp_path / "second", progress=False, max_steps=1)
    assert started.step_index == first.step_index + 1
    # The same call again resumes the run folder (the snapshot is read only for a new run).
    resumed = train(init, data, tmp_path / "second", progress=False, max_steps=1)
    assert resumed.step_index == first.step_index + 2
    for name, value in (("channel_max", 8), ("w_dim", 8), ("mapping_layers", 3)):
        other = TrainConfig(**{**TINY, name: value}, init=str(tmp_path / "snapshot"))
        with pytest.raises(ValueError, match=f"{name}={getattr(config, name)!r}, this run asks for {value!r}"):
            train(other, data, tmp_path / f"other_{name}", progress=False, max_steps=1)
        assert not (tmp_path / f"other_{name}").exists()
    with pytest.raises(ValueError, match="img_resolution"):  # the data decide the resolution
        train(init, TrainingData(_images(16, resolution=32)), tmp_path / "other_size", progress=False, max_steps=1)


def test_cli_train_init_errors_in_one_line(tmp_path):
    from ganinv.cli import main

    data = _tiny_dataset(tmp_path / "data")
    runner = CliRunner()
    common = ["--data", str(data), "--batch", "8", "--z-dim", "16", "--w-dim", "16", "--channel-base", "128",
              "--quiet"]
    result = runner.invoke(main, ["train", *common, "--outdir", str(tmp_path / "run"), "--max-steps", "1",
                                  "--channel-max", "16", "--snapshot-networks"])
    assert result.exit_code == 0, result.output
    snapshot = tmp_path / "run" / "snapshots" / "kimg000000"
    assert (snapshot / "model.safetensors").is_file() and (snapshot / "card.json").is_file()
    (tmp_path / "run" / "snapshots" / "kimg000000").rename(tmp_path / "snapshot")
    result = runner.invoke(main, ["train", *common, "--outdir", str(tmp_path / "next"), "--max-steps", "1",
                                  "--channel-max", "16", "--init", str(tmp_path / "snapshot")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["train", *common, "--outdir", str(tmp_path / "bad"), "--max-steps", "1",
                                  "--channel-max", "8", "--init", str(tmp_path / "snapshot")])
    assert result.exit_code != 0 and "channel_max=16, this run asks for 8" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "bad").exists()
    result = runner.invoke(main, ["train", *common, "--outdir", str(tmp_path / "none"), "--max-steps", "1",
                                  "--channel-max", "16", "--init", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "missing: no such model" in result.output


# -- a curriculum: training at a lower resolution, then growing -------------------------------------------


def test_downsample_images_box_filters_by_powers_of_two():
    from ganinv.train.trainer import downsample_images

    images = _images(3, 16)
    small = downsample_images(images, 4)
    expected = images.astype(np.float64).reshape(3, 4, 4, 4, 4, 3).mean(axis=(2, 4))
    assert small.shape == (3, 4, 4, 3) and small.dtype == np.uint8
    assert np.abs(small - expected).max() <= 0.5 + 1e-6 and downsample_images(images, 16) is images
    for bad in (12, 32, 6):
        with pytest.raises(ValueError, match=f"resolution {bad} must be the data's 16 px"):
            downsample_images(images, bad)


def test_grow_starts_the_shared_blocks_from_a_lower_resolution_snapshot(tmp_path):
    data = TrainingData(_images(16, resolution=16))
    low = train(TrainConfig(**TINY, resolution=8), data, tmp_path / "low", progress=False, max_steps=2)
    assert low.G.img_resolution == 8 and low.images.shape[2:] == (8, 8)
    low.save_snapshot(tmp_path / "snapshot8")
    fresh = Trainer(TrainConfig(**TINY, grow=True), data)
    grown = Trainer(TrainConfig(**TINY, grow=True), data)
    grown.start_from_snapshot(tmp_path / "snapshot8")
    for name, reference in (("G", low.G_ema), ("G_ema", low.G_ema), ("D", low.D)):
        ours, theirs, new = (getattr(grown, name).state_dict(), reference.state_dict(),
                             getattr(fresh, name).state_dict())
        shared = [k for k in theirs if k in ours]
        assert shared and all(torch.equal(ours[k], theirs[k]) for k in shared), name
        added = [k for k in ours if k not in theirs]
        assert added and all(torch.equal(ours[k], new[k]) for k in added), name  # fresh initialization
    assert "b8.fromrgb.weight" in low.D.state_dict() and "b8.fromrgb.weight" not in grown.D.state_dict()
    assert "synthesis.b16.torgb.weight" in [k for k in grown.G.state_dict() if k not in low.G.state_dict()]
    assert grown.kimg == low.kimg and grown.step_index == 2
    stats = grown.step()
    assert np.isfinite(stats["loss_G"]) and np.isfinite(stats["loss_D"])
    # Without --grow a resolution change is refused; growing never goes down.
    with pytest.raises(ValueError, match="img_resolution=8, this run's G would have 16 \\(--grow"):
        Trainer(TrainConfig(**TINY), data).start_from_snapshot(tmp_path / "snapshot8")
    grown.save_snapshot(tmp_path / "snapshot16")
    with pytest.raises(ValueError, match="the snapshot is 16 px, above this run's 8 px"):
        Trainer(TrainConfig(**TINY, grow=True, resolution=8), data).start_from_snapshot(tmp_path / "snapshot16")
    wider = TrainConfig(**{**TINY, "channel_base": 256}, grow=True)
    with pytest.raises(ValueError, match="channel_base=128, this run asks for 256"):
        Trainer(wider, data).start_from_snapshot(tmp_path / "snapshot8")


def test_cli_train_resolution_and_grow(tmp_path):
    from ganinv.cli import main

    data = _tiny_dataset(tmp_path / "data")
    runner = CliRunner()
    common = ["--data", str(data), "--batch", "8", "--z-dim", "16", "--w-dim", "16", "--channel-base", "128",
              "--channel-max", "16", "--max-steps", "1", "--quiet"]
    result = runner.invoke(main, ["train", *common, "--outdir", str(tmp_path / "low"), "--resolution", "8",
                                  "--snapshot-networks"])
    assert result.exit_code == 0, result.output
    snapshot = tmp_path / "low" / "snapshots" / "kimg000000"
    assert json.loads((snapshot / "card.json").read_text())["training_settings"]["resolution"] == 8
    result = runner.invoke(main, ["train", *common, "--outdir", str(tmp_path / "high"), "--init", str(snapshot),
                                  "--grow", "--snapshot-networks"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "high" / "snapshots" / "kimg000000" / "card.json").read_text())
    assert card["training_settings"]["grow"] is True and card["training_steps"] == 2
    for args, message in ((["--init", str(snapshot)], "img_resolution=8, this run's G would have 16"),
                          (["--grow"], "--grow needs --init"),
                          (["--resolution", "12"], "resolution 12 must be the data's 16 px")):
        result = runner.invoke(main, ["train", *common, "--outdir", str(tmp_path / "bad"), *args])
        assert result.exit_code != 0 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output and not (tmp_path / "bad").exists()


def test_the_kept_emoji64_run_snapshot_continues_at_the_shipped_models_settings():
    """checkpoints/emoji64-run (the continued emoji64 run's newest snapshot, float16) is what
    `ganinv train --init` and `scripts/gpu_check.sh --init` continue from: same networks as the shipped
    emoji64, at least as far along (the shipped model is one of its snapshots), weights finite."""
    from pathlib import Path

    from ganinv.models.registry import resolve_path
    from ganinv.train.trainer import NETWORK_SETTINGS

    folder = Path(__file__).resolve().parents[1] / "checkpoints" / "emoji64-run"
    card = json.loads((folder / "card.json").read_text())
    shipped = json.loads((Path(resolve_path("emoji64")) / "card.json").read_text())
    settings = card["training_settings"]
    for name in NETWORK_SETTINGS:
        assert settings[name] == shipped["training_settings"][name], name
    assert card["images_seen_kimg"] >= shipped["images_seen_kimg"] and card["weights_dtype"] == "float16"
    data = TrainingData(_images(16, resolution=shipped["img_resolution"]))
    trainer = Trainer(TrainConfig.from_dict({**settings, "init": str(folder)}), data)
    trainer.start_from_snapshot(folder)
    assert trainer.kimg == card["images_seen_kimg"] and trainer.step_index == card["training_steps"]
    for net in (trainer.G, trainer.D):
        assert all(torch.isfinite(v).all() for v in net.state_dict().values() if v.is_floating_point())
    with torch.no_grad():
        images = trainer.G_ema(torch.randn(4, trainer.G.z_dim), None, noise_mode="const")
    assert images.shape == (4, 3, 64, 64) and images.std() > 0.1


# -- widening: more channels from a narrower snapshot ---------------------------------------------------


def test_widen_keeps_the_images_and_logits_and_trains(tmp_path):
    data = TrainingData(_images(16, resolution=16))
    narrow = train(TrainConfig(**TINY), data, tmp_path / "narrow", progress=False, max_steps=2)
    narrow.save_snapshot(tmp_path / "snapshot")
    # channel_base 256: 16 channels at 16 px instead of 8; the 4- and 8-px blocks keep 16.
    config = TrainConfig(**{**TINY, "channel_base": 256}, widen=True)
    wide = Trainer(config, data)
    fresh = Trainer(config, data)
    wide.start_from_snapshot(tmp_path / "snapshot")
    assert wide.G.synthesis.channels[16] == 16 and narrow.G.synthesis.channels[16] == 8
    z = torch.randn([4, TINY["z_dim"]], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = narrow.G_ema(z, None, noise_mode="const")
        for name in ("G", "G_ema"):
            assert torch.allclose(getattr(wide, name)(z, None, noise_mode="const"), before, atol=1e-5), name
        assert torch.allclose(wide.D(before, None), narrow.D(before, None), atol=1e-5)
    # The new channels start as a fresh network would, and they are not dead: a step moves them.
    new_rows = wide.G.synthesis.b16.conv1.weight[8:]
    assert torch.equal(new_rows, fresh.G.synthesis.b16.conv1.weight[8:])
    assert not wide.G.synthesis.b16.conv1.weight[:8, 8:].any()  # old outputs do not read new inputs
    torgb_new = wide.G.synthesis.b16.torgb.weight[:, 8:].clone()
    stats = wide.step()
    assert np.isfinite(stats["loss_G"]) and wide.G.synthesis.b16.torgb.weight[:, 8:].ne(torgb_new).any()
    # Without --widen a width change is refused; widening never narrows; a wider 4-px epilogue keeps the
    # minibatch-std input mapped to its own channel.
    with pytest.raises(ValueError, match="channel_base=128, this run asks for 256"):
        Trainer(TrainConfig(**{**TINY, "channel_base": 256}), data).start_from_snapshot(tmp_path / "snapshot")
    with pytest.raises(ValueError, match="16 channels at 4 px, this run's only 8; --widen never removes"):
        Trainer(TrainConfig(**{**TINY, "channel_max": 8}, widen=True), data).start_from_snapshot(tmp_path / "snapshot")
    with pytest.raises(ValueError, match="--widen and --grow cannot be combined"):
        Trainer(TrainConfig(**TINY, widen=True, grow=True), data).start_from_snapshot(tmp_path / "snapshot")
    wider4 = Trainer(TrainConfig(**{**TINY, "channel_base": 512, "channel_max": 32}, widen=True), data)
    wider4.start_from_snapshot(tmp_path / "snapshot")
    conv = wider4.D.b4.conv.weight
    assert torch.equal(conv[:16, 32], narrow.D.b4.conv.weight[:, 16] * (narrow.D.b4.conv.weight_gain / wider4.D.b4.conv.weight_gain))
    assert not conv[:16, 16:32].any()
    with torch.no_grad():
        assert torch.allclose(wider4.G_ema(z, None, noise_mode="const"), before, atol=1e-5)


def test_cli_train_widen(tmp_path):
    from ganinv.cli import main

    data = _tiny_dataset(tmp_path / "data")
    runner = CliRunner()
    common = ["train", "--data", str(data), "--batch", "8", "--z-dim", "16", "--w-dim", "16", "--channel-max", "16",
              "--max-steps", "1", "--quiet", "--snapshot-networks"]
    done = runner.invoke(main, common + ["--outdir", str(tmp_path / "narrow"), "--channel-base", "128"])
    assert done.exit_code == 0, done.output
    snapshot = tmp_path / "narrow" / "snapshots" / "kimg000000"
    done = runner.invoke(main, common + ["--outdir", str(tmp_path / "wide"), "--channel-base", "256",
                                         "--init", str(snapshot), "--widen"])
    assert done.exit_code == 0, done.output
    card = json.loads((tmp_path / "wide" / "snapshots" / "kimg000000" / "card.json").read_text())
    assert card["training_settings"]["widen"] is True and card["training_settings"]["channel_base"] == 256
    assert card["generator"]["synthesis_kwargs"]["channels"]["16"] == 16
    done = runner.invoke(main, common + ["--outdir", str(tmp_path / "bad"), "--channel-base", "256", "--widen"])
    assert done.exit_code != 0 and "--widen needs --init" in done.output


def test_average_snapshots_is_the_mean_of_the_weights(tmp_path):
    import importlib.util
    from pathlib import Path

    from ganinv.models.registry import load_generator

    spec = importlib.util.spec_from_file_location(
        "average_snapshots", Path(__file__).resolve().parents[1] / "benchmarks" / "average_snapshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = TrainingData(_images(16, resolution=16))
    trainer = train(TrainConfig(**TINY), data, tmp_path / "run", progress=False, max_steps=1)
    run = tmp_path / "run" / "snapshots"
    trainer.save_snapshot(run / "kimg000001")
    trainer.step()
    trainer.save_snapshot(run / "kimg000002")
    trainer.step()
    trainer.save_snapshot(run / "kimg000003")
    out = module.main(["--run", str(tmp_path / "run"), "--count", "2", "--upto", "2", "--out", str(tmp_path / "avg")])
    first, second, mean = (load_generator(str(p)).state_dict() for p in (run / "kimg000001", run / "kimg000002", out))
    key = "synthesis.b16.conv1.weight"
    assert not torch.equal(first[key], second[key])
    assert torch.allclose(mean[key], (first[key] + second[key]) / 2, atol=1e-6)
    assert json.loads((out / "card.json").read_text())["averaged_snapshots"] == ["kimg000001", "kimg000002"]
    with pytest.raises(SystemExit, match="3 snapshots there, --count asks for 5"):
        module.main(["--run", str(tmp_path / "run"), "--count", "5", "--out", str(tmp_path / "x")])
