"""One storage format (safetensors + a versioned JSON card) for generators, encoders, classifiers and
directions; one prior sampler; and `models/` importing nothing from the layers above it."""
import ast
import json
import pathlib

import numpy as np
import pytest
import torch

from ganinv.editing.direction import Direction, DirectionError, load_direction, sample_prior_ws
from ganinv.models import storage
from ganinv.models.checkpoints import CheckpointError, load_native, save_native
from ganinv.models.classifier import Classifier, load_classifier, save_classifier
from ganinv.models.encoder import Encoder, load_encoder, save_encoder
from ganinv.models.prior import compute_w_avg, sample_prior, w_stats
from ganinv.utils import atomic_path, z_from_seed
from conftest import tiny_discriminator, tiny_generator

MODELS_DIR = pathlib.Path(__file__).resolve().parent.parent / "src" / "ganinv" / "models"


def _tiny_classifier() -> Classifier:
    torch.manual_seed(3)
    model = Classifier(3, 16, {"kind": ["a", "b", "c"]}, base_width=4, max_width=8, feature_dim=8)
    with torch.no_grad():  # non-default batch-norm statistics, so a roundtrip that dropped them would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _direction(G) -> Direction:
    vectors = torch.nn.functional.normalize(torch.randn(3, G.w_dim, generator=torch.Generator().manual_seed(1)), dim=1)
    return Direction(name="test dir", method="test", space="w", vectors=vectors, layers=[0, 1], std=[1.0, 2.0, 3.0],
                     num_ws=G.num_ws, w_dim=G.w_dim, scores=[3.0, 2.0, 1.0], score_name="score")


# ---------------------------------------------------------------------- roundtrips, one per kind


def test_generator_roundtrip(tmp_path):
    G, D = tiny_generator(), tiny_discriminator()
    extra = {"gate.pivots": torch.randn(2, G.num_ws, G.w_dim)}
    folder = save_native(tmp_path / "g", G, D, card={"name": "tiny"}, extra_tensors=extra)
    G2, D2, card, extra2 = load_native(folder)
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        assert torch.equal(G(z), G2(z))
        assert torch.equal(D(G(z)), D2(G(z)))
    assert torch.equal(extra2["gate.pivots"], extra["gate.pivots"])
    assert card["format"] == "ganinv-model" and card["format_version"] == 1
    assert card["sha256"] == storage.sha256_file(folder / storage.WEIGHTS_FILE)


def test_encoder_roundtrip(tmp_path):
    G = tiny_generator()
    encoder = Encoder.for_generator(G, base_width=64, max_width=16, pyramid_width=8).eval()
    encoder.set_active_offsets(2)
    save_encoder(tmp_path / "enc", encoder, {"name": "tiny-encoder"})
    loaded = load_encoder(tmp_path / "enc")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x, loaded.avg_image), encoder(x, encoder.avg_image))
    assert int(loaded.active_offsets) == 2 and loaded.card["format"] == "ganinv-encoder"
    assert loaded.card["sha256"] == storage.sha256_file(tmp_path / "enc" / storage.WEIGHTS_FILE)


def test_classifier_roundtrip(tmp_path):
    model = _tiny_classifier()
    save_classifier(tmp_path / "clf", model, {"name": "tiny-classifier"})
    loaded = load_classifier(tmp_path / "clf")
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x)["kind"], model(x)["kind"])
    assert loaded.card["heads"] == {"kind": ["a", "b", "c"]} and loaded.card["format"] == "ganinv-classifier"


def test_direction_roundtrip(tmp_path):
    G = tiny_generator()
    direction = _direction(G)
    json_path = direction.save(tmp_path)
    assert json_path.name == "test_dir.json" and (tmp_path / "test_dir.safetensors").is_file()
    meta = json.loads(json_path.read_text())
    assert meta["format"] == "ganinv-direction" and meta["format_version"] == 1
    assert meta["sha256"] == storage.sha256_file(tmp_path / "test_dir.safetensors")
    loaded, index = load_direction(f"{json_path}:2", model=G)
    assert index == 2 and torch.equal(loaded.vectors, direction.vectors)
    assert torch.equal(loaded.std, direction.std) and loaded.layers == [0, 1] and loaded.scores == [3.0, 2.0, 1.0]


def test_shipped_files_load_through_storage():
    """The cards and direction files under assets/ were written before this module and still load."""
    from ganinv.models.registry import available_models, load_model
    if not available_models():
        pytest.skip("no embedded model in this build")
    model = load_model(available_models()[0])
    assert model.encoder is not None and model.classifier is not None
    for name in model.directions:
        direction, _ = load_direction(name, model=model)
        assert len(direction) >= 1


# ---------------------------------------------------------------------- refusals


def _resave_with(folder: pathlib.Path, change) -> None:
    """Rewrite a saved folder's tensors through `change` with a matching sha256 (a consistent but wrong file)."""
    card = json.loads((folder / storage.CARD_FILE).read_text())
    tensors = storage.load_tensors(folder / storage.WEIGHTS_FILE)
    change(tensors)
    storage.save_folder(folder, tensors, card, card["format"], card["format_version"])


@pytest.mark.parametrize("kind", ["generator", "encoder", "classifier"])
def test_a_tampered_tensor_shape_is_refused_naming_the_key(tmp_path, kind):
    G = tiny_generator()
    folder = tmp_path / kind
    if kind == "generator":
        save_native(folder, G)
        key, load = "G.mapping.fc0.weight", load_native
    elif kind == "encoder":
        save_encoder(folder, Encoder.for_generator(G, base_width=64, max_width=16, pyramid_width=8))
        key, load = "stem.weight", load_encoder
    else:
        save_classifier(folder, _tiny_classifier())
        key, load = "feature.weight", load_classifier
    _resave_with(folder, lambda t: t.__setitem__(key, t[key][:, :-1].clone()))
    with pytest.raises(CheckpointError, match="shape mismatch") as info:
        load(folder)
    message = str(info.value)
    assert "\n" not in message and str(folder / storage.WEIGHTS_FILE) in message
    assert key.removeprefix("G.") in message


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    folder = save_classifier(tmp_path / "clf", _tiny_classifier())
    _resave_with(folder, lambda t: t.pop("feature.bias"))
    with pytest.raises(CheckpointError, match="missing tensor feature.bias"):
        load_classifier(folder)
    _resave_with(folder, lambda t: t.update({"feature.bias": torch.zeros(8), "zzz.extra": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="unexpected tensor zzz.extra"):
        load_classifier(folder)


def test_a_truncated_file_is_refused(tmp_path):
    folder = save_native(tmp_path / "g", tiny_generator())
    weights = folder / storage.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    # The card's sha256 catches it first; without the hash check the reader itself refuses it.
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_native(folder)
    with pytest.raises(CheckpointError, match="cannot read safetensors") as info:
        load_native(folder, verify_hash=False)
    assert str(weights) in str(info.value) and "\n" not in str(info.value)
    for size in (0, 5, 12):
        path = tmp_path / f"cut{size}.safetensors"
        path.write_bytes(weights.read_bytes()[:size])
        with pytest.raises(CheckpointError, match=f"cut{size}.safetensors: cannot read safetensors"):
            storage.load_tensors(path)


def test_a_truncated_direction_file_is_refused(tmp_path):
    json_path = _direction(tiny_generator()).save(tmp_path)
    tensors = tmp_path / "test_dir.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:40])
    with pytest.raises(DirectionError, match="test_dir.safetensors: sha256 does not match"):
        load_direction(str(json_path))


@pytest.mark.parametrize("change,match", [
    ({"format": "something-else"}, "not a ganinv classifier card"),
    ({"format_version": 99}, "format_version 99 is newer"),
    ({"format_version": "one"}, "is not a number"),
])
def test_a_wrong_card_is_refused_naming_the_file(tmp_path, change, match):
    folder = save_classifier(tmp_path / "clf", _tiny_classifier())
    card_path = folder / storage.CARD_FILE
    card_path.write_text(json.dumps({**json.loads(card_path.read_text()), **change}))
    with pytest.raises(CheckpointError, match=match) as info:
        load_classifier(folder)
    assert str(card_path) in str(info.value)


def test_weights_that_do_not_match_the_card_are_refused(tmp_path):
    folder = save_encoder(tmp_path / "enc", Encoder.for_generator(tiny_generator(), base_width=64, max_width=16,
                                                                  pyramid_width=8))
    weights = folder / storage.WEIGHTS_FILE
    storage.save_tensors(weights, {"stem.weight": torch.zeros(1)})  # a valid file, not the one the card names
    with pytest.raises(CheckpointError, match="sha256 does not match the card") as info:
        load_encoder(folder)
    assert str(weights) in str(info.value)


def test_missing_files_are_file_not_found_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="card.json: encoder card not found"):
        load_encoder(tmp_path / "nowhere")
    folder = save_classifier(tmp_path / "clf", _tiny_classifier())
    (folder / storage.WEIGHTS_FILE).unlink()
    with pytest.raises(storage.MissingFileError, match="model.safetensors: classifier weights file not found"):
        load_classifier(folder)
    with pytest.raises(CheckpointError, match="no card.json"):
        load_native(tmp_path / "empty")


# ---------------------------------------------------------------------- atomic writes


def test_a_crash_inside_the_atomic_block_leaves_the_old_file(tmp_path):
    path = tmp_path / "t.safetensors"
    storage.save_tensors(path, {"a": torch.ones(3)})
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash")
    assert torch.equal(storage.load_tensors(path)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


def test_a_crash_while_saving_a_model_leaves_the_old_model(tmp_path, monkeypatch):
    G = tiny_generator(seed=0)
    folder = save_native(tmp_path / "g", G, card={"name": "old"})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    original = pathlib.Path.write_bytes

    def crash_half_way(self, data):
        original(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_bytes", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_native(folder, tiny_generator(seed=1), card={"name": "new"})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    G2, _, card, _ = load_native(folder)
    assert card["name"] == "old"
    with torch.no_grad():
        z = torch.randn(1, G.z_dim)
        assert torch.equal(G2(z), G(z))


# ---------------------------------------------------------------------- prior sampling


def test_prior_samples_follow_gen_images_seeds():
    G = tiny_generator()
    for seed in (0, 7, 123):
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim).astype(np.float32))
        with torch.no_grad():
            expected = G.mapping(z, None)
        assert torch.equal(sample_prior(G, 1, seed=seed), expected)
        # n samples of a seed start with the single sample of that seed (batched matmuls may round differently).
        assert torch.equal(z_from_seed(seed, G.z_dim, 5)[:1], z)
        assert torch.allclose(sample_prior(G, 5, seed=seed)[:1], expected, atol=1e-6)
    assert not torch.equal(sample_prior(G, 2, seed=1), sample_prior(G, 2, seed=2))
    assert torch.equal(sample_prior_ws(G, 4, seed=3), sample_prior(G, 4, seed=3))
    truncated = sample_prior(G, 4, seed=3, truncation_psi=0.5)
    w_avg = G.mapping.w_avg
    assert torch.allclose(truncated, w_avg + 0.5 * (sample_prior(G, 4, seed=3) - w_avg), atol=1e-5)
    mean, std = w_stats(G, num_samples=500, seed=4)
    assert torch.allclose(mean, sample_prior(G, 500, seed=4)[:, 0].mean(dim=0)) and std > 0
    assert torch.allclose(compute_w_avg(G, num_samples=500, seed=4), mean)
    with pytest.raises(ValueError, match="unconditional"):
        sample_prior(G, 2, c=1)


def test_conditional_prior_labels_follow_one_convention():
    G = tiny_generator(c_dim=3)
    seen = []
    original = G.mapping.forward

    def spy(z, c, **kwargs):
        seen.append(c.clone())
        return original(z, c, **kwargs)

    G.mapping.forward = spy
    sample_prior(G, 5, seed=0)
    assert seen[-1].argmax(dim=1).tolist() == [0, 1, 2, 0, 1]
    sample_prior(G, 4, seed=0, c=2)
    assert seen[-1].argmax(dim=1).tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="out of range"):
        sample_prior(G, 2, c=3)
    with pytest.raises(ValueError, match=r"c must have shape"):
        sample_prior(G, 2, c=torch.zeros(2, 4))


def test_old_import_paths_still_work():
    import ganinv.inversion.base as base
    import ganinv.inversion.encoder_net as encoder_net
    import ganinv.native as native
    import ganinv.train.classifier as train_classifier
    assert base.w_stats is w_stats
    assert encoder_net.Encoder is Encoder and encoder_net.load_encoder is load_encoder
    assert train_classifier.Classifier is Classifier and train_classifier.load_classifier is load_classifier
    assert native.load_module_folder is storage.load_module and native.save_module_folder is storage.save_module


# ---------------------------------------------------------------------- layering


def test_models_imports_nothing_from_the_layers_above():
    above = ("inversion", "editing", "invert", "edit", "train", "app", "cli")
    offenders = []
    for path in sorted(MODELS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level >= 2:  # from ..X import ...
                    target = (node.module or "").split(".")[0]
                    names = [target] if target else [a.name for a in node.names]
                elif node.level == 0 and (node.module or "").startswith("ganinv."):
                    names = [node.module.split(".")[1]]
                else:
                    continue
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith("ganinv.")]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} imports {name}" for name in names if name in above]
    assert len(list(MODELS_DIR.glob("*.py"))) >= 8
    assert offenders == []
