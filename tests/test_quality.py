"""Fréchet distance, precision/recall, degradations, the shape embedding and its SimCLR training."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ganinv.metrics.quality import (degrade_images, embed_images, frechet_distance, gaussian_blur, knn_radii,
                                    measure_quality, precision_recall, shuffle_patches)
from ganinv.models.embedding import ShapeEmbedding, load_embedding, save_embedding
from ganinv.models.registry import ASSETS, available_models, load_model
from ganinv.train.embedding import augment_view, nt_xent_loss, train_embedding

ROOT = Path(__file__).resolve().parents[1]


def _gaussian(n: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.RandomState(seed).randn(n, dim) * scale + shift


# ---------------------------------------------------------------------------------------------
# Fréchet distance


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = _gaussian(500, 16, 0)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    # Same covariance, means 0 and d per dimension: FD = |mu_a - mu_b|^2 = dim * d^2 (+ sampling error).
    a, b = _gaussian(20000, 4, 0), _gaussian(20000, 4, 1, shift=1.5)
    assert frechet_distance(a, b) == pytest.approx(4 * 1.5 ** 2, rel=0.03)


def test_frechet_distance_of_scaled_gaussians_matches_the_closed_form():
    # Isotropic covariances s_a^2 I and s_b^2 I: FD = dim * (s_a - s_b)^2.
    a, b = _gaussian(20000, 3, 0, scale=1.0), _gaussian(20000, 3, 1, scale=2.0)
    assert frechet_distance(a, b) == pytest.approx(3 * 1.0, rel=0.05)


def test_frechet_distance_rejects_mismatched_features():
    with pytest.raises(ValueError, match="same F"):
        frechet_distance(np.zeros([5, 3]), np.zeros([5, 4]))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros([1, 3]), np.zeros([5, 3]))


# ---------------------------------------------------------------------------------------------
# Precision and recall (Kynkäänniemi et al. 2019)


def test_knn_radii_on_a_line():
    points = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    assert knn_radii(points, k=1).tolist() == [1.0, 1.0, 1.0, 1.0, 7.0]
    assert knn_radii(points, k=3).tolist() == [3.0, 2.0, 2.0, 3.0, 9.0]


def test_precision_recall_of_identical_sets_is_one():
    x = _gaussian(300, 8, 0)
    assert precision_recall(x, x) == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_of_far_apart_sets_is_zero():
    assert precision_recall(_gaussian(300, 8, 0), _gaussian(300, 8, 1, shift=100.0)) == \
        {"precision": 0.0, "recall": 0.0}


def test_mode_collapse_keeps_precision_and_loses_recall():
    # Reference: two well-separated clusters. Evaluated: samples from one of them only.
    reference = np.concatenate([_gaussian(300, 4, 0), _gaussian(300, 4, 1, shift=50.0)])
    collapsed = _gaussian(300, 4, 2)
    result = precision_recall(reference, collapsed)
    assert result["precision"] > 0.9
    assert 0.3 < result["recall"] < 0.6  # about half of the reference (one cluster) is covered


def test_recall_by_group_names_the_cluster_a_collapsed_set_misses():
    reference = np.concatenate([_gaussian(300, 4, 0), _gaussian(300, 4, 1, shift=50.0)])
    first = np.arange(600) < 300
    result = precision_recall(reference, _gaussian(300, 4, 2), groups={"kept": first, "missed": ~first})
    assert result["recall_by_group"]["kept"] > 0.7
    assert result["recall_by_group"]["missed"] == 0.0
    # The overall recall is the groups' recall weighted by their sizes.
    assert result["recall"] == pytest.approx(np.mean(list(result["recall_by_group"].values())))
    with pytest.raises(ValueError, match="bool mask over the 600"):
        precision_recall(reference, reference, groups={"short": first[:10]})
    with pytest.raises(ValueError, match="holds no reference point"):
        precision_recall(reference, reference, groups={"empty": np.zeros(600, bool)})


def test_snapshot_quality_recall_rows_from_labels():
    spec = importlib.util.spec_from_file_location("snapshot_quality", ROOT / "benchmarks" / "snapshot_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    records = [{"group": "People", "subgroup": "hands"}, {"group": "People", "subgroup": "person"},
               {"group": "Objects", "subgroup": "tool"}, {"group": "People", "subgroup": "hand-prop"}]
    masks = module.group_masks(records, "group, hands=subgroup:hands+hand-prop")
    assert list(masks) == ["People", "Objects", "hands"]  # a field's values most frequent first
    assert masks["People"].tolist() == [True, True, False, True]
    assert masks["hands"].tolist() == [True, False, False, True]
    for bad, message in [("colour", "no label field"), ("hands=subgroup:paws", "no reference image"),
                         ("hands=subgroup", "NAME=FIELD:VALUE"), ("group,People=group:People", "twice")]:
        with pytest.raises(SystemExit, match=message):
            module.group_masks(records, bad)
    rows = module._mean_row([{"recall": 0.5, "recall_by_group": {"a": 0.2}},
                             {"recall": 0.7, "recall_by_group": {"a": 0.4}}])
    assert rows["recall"] == pytest.approx(0.6) and rows["recall_by_group"]["a"] == pytest.approx(0.3)
    assert rows["recall_by_group"]["a_sd"] == pytest.approx(np.std([0.2, 0.4], ddof=1))


def test_precision_recall_lie_in_unit_interval_and_need_more_than_k_points():
    result = precision_recall(_gaussian(200, 5, 0), _gaussian(150, 5, 1, shift=0.7, scale=1.3))
    assert all(0.0 <= v <= 1.0 for v in result.values())
    assert 0.0 < result["precision"] < 1.0 and 0.0 < result["recall"] < 1.0
    with pytest.raises(ValueError, match="at least 4"):
        precision_recall(_gaussian(10, 2, 0), _gaussian(3, 2, 1))


# ---------------------------------------------------------------------------------------------
# Degradations


def test_shuffle_patches_moves_pixels_but_keeps_them():
    images = torch.rand(3, 2, 8, 8)
    shuffled = shuffle_patches(images, 4, seed=0)
    assert not torch.equal(shuffled, images)
    assert torch.equal(shuffled.flatten(1).sort(dim=1).values, images.flatten(1).sort(dim=1).values)
    assert torch.equal(shuffle_patches(images, 1), images)
    assert torch.equal(shuffle_patches(images, 4, seed=5), shuffle_patches(images, 4, seed=5))
    with pytest.raises(ValueError, match="divide"):
        shuffle_patches(images, 3)


def test_blur_keeps_constants_and_smooths_edges():
    constant = torch.full([1, 3, 16, 16], 0.25)
    assert torch.allclose(gaussian_blur(constant, 1.5), constant, atol=1e-6)
    edge = torch.zeros(1, 1, 16, 16)
    edge[..., 8:] = 1.0
    blurred = gaussian_blur(edge, 1.0)
    assert blurred[0, 0, 0, 7] > 0.1 and blurred[0, 0, 0, 8] < 0.9
    assert blurred.sum().item() == pytest.approx(edge.sum().item(), rel=1e-4)
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade_images(edge, "noise:1")


# ---------------------------------------------------------------------------------------------
# The embedding network and its training


def test_embedding_shapes_storage_and_errors(tmp_path):
    net = ShapeEmbedding(3, 16, base_width=4, max_width=8, projection_dim=5)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert net.features(x).shape == (2, net.feature_dim)
    projected = net(x)
    assert projected.shape == (2, 5) and torch.allclose(projected.norm(dim=1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match=r"\[N, 3, 16, 16\]"):
        net.features(torch.zeros(1, 1, 16, 16))
    save_embedding(tmp_path / "emb", net.eval(), {"note": "test"})
    loaded = load_embedding(tmp_path / "emb")
    assert loaded.card["note"] == "test"
    assert torch.allclose(loaded.features(x), net.features(x), atol=1e-6)


def test_nt_xent_prefers_matching_pairs():
    z = torch.nn.functional.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    other = torch.nn.functional.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    assert nt_xent_loss(z, z, 0.2) < nt_xent_loss(z, other, 0.2)


def test_augment_view_is_seeded_and_in_range():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    a = augment_view(x, torch.Generator().manual_seed(3))
    b = augment_view(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, augment_view(x, torch.Generator().manual_seed(4)))


def test_simclr_training_lowers_the_loss_and_is_deterministic():
    torch.set_num_threads(1)
    # Images with distinct shapes (a square at a different place each) that views must tell apart.
    images = -torch.ones(16, 1, 16, 16)
    for i in range(16):
        y, x = divmod(i, 4)
        images[i, :, 1 + 3 * y:5 + 3 * y, 1 + 3 * x:5 + 3 * x] = 1.0
    model, losses = train_embedding(images, steps=60, batch_size=16, learning_rate=3e-3, base_width=8,
                                    max_width=16, seed=0)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.2
    first = train_embedding(images, steps=3, batch_size=16, base_width=8, max_width=16, seed=0)[1]
    second = train_embedding(images, steps=3, batch_size=16, base_width=8, max_width=16, seed=0)[1]
    assert first == second


def test_measure_quality_needs_equal_set_sizes():
    net = ShapeEmbedding(1, 8, base_width=4, max_width=4).eval()
    images = torch.rand(10, 1, 8, 8) * 2 - 1
    with pytest.raises(ValueError, match="as many"):
        measure_quality(net, images, images[:6], {"small": images[:5]})
    result = measure_quality(net, images, images[:6], {"same": images[:6]})
    assert result["sets"]["same"]["fd_ratio"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# The shipped embeddings (genuine trained weights)


SHIPPED = [name for name in available_models() if (ASSETS / name / "embedding").is_dir()]


def test_every_embedded_model_ships_a_shape_embedding_and_its_numbers():
    for name in available_models():
        model = load_model(name)
        assert model.embedding is not None, f"{name} has no embedding/"
        quality = model.card.get("shape_quality")
        assert quality, f"{name}'s card has no shape_quality field"
        assert quality["embedding_sha256"] == model.embedding.card["sha256"], \
            f"{name}: shape_quality was measured with a different embedding than the one shipped"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_embedding_sees_shape(name):
    """Held-out real images are closer to training images than the same images with their parts shuffled
    or blurred, in Fréchet distance and in precision, with the images that ship with the model."""
    torch.set_num_threads(2)
    model = load_model(name)
    reference = model.real_images  # 300 training images
    heldout = model.heldout[:200]
    features = {"reference": embed_images(model.embedding, reference)}
    floor = embed_images(model.embedding, heldout)
    fd_floor = frechet_distance(floor, features["reference"])
    precision_floor = precision_recall(features["reference"], floor)["precision"]
    classifier_reference = embed_images(model.classifier, reference)
    classifier_floor = frechet_distance(embed_images(model.classifier, heldout), classifier_reference)
    for kind in ("shuffle:4", "blur:2"):
        damaged_images = degrade_images(heldout, kind, seed=0)
        damaged = embed_images(model.embedding, damaged_images)
        ratio = frechet_distance(damaged, features["reference"]) / fd_floor
        assert ratio > 1.5, kind
        assert precision_recall(features["reference"], damaged)["precision"] < precision_floor, kind
        if kind.startswith("blur"):
            # The reason the embedding exists: the classifier's space barely notices lost sharpness.
            classifier_ratio = frechet_distance(embed_images(model.classifier, damaged_images),
                                                classifier_reference) / classifier_floor
            assert ratio > classifier_ratio, (ratio, classifier_ratio)
