"""Editing: direction finders, Direction files, edits of results, latent operations, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ganinv
import ganinv.editing as E
from ganinv.editing import Direction, DirectionError
from ganinv.inversion.base import InversionResult
from ganinv.models.stylegan2 import Generator

from conftest import tiny_result

STD_SAMPLES = 1000  # prior samples for the strength unit: enough for tests, fast


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32))
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models gain nothing from threads, and on a shared 2-core machine two threads each can make
    # these tests many times slower; restore the setting for the rest of the session.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def G() -> Generator:
    return tiny_generator(0)


def brightness_labeller(images: torch.Tensor) -> torch.Tensor:
    """A fake attribute: brighter than the batch median."""
    mean = images.mean(dim=(1, 2, 3))
    return (mean > mean.median()).long()


class FakeClassifier(torch.nn.Module):
    """Stands in for Model.classifier (ganinv.train.classifier.Classifier): forward(img in [-1, 1]) ->
    {head: logits}, class names in `head_classes`."""

    head_classes = {"skin_tone": ["none", "1", "2", "3", "4", "5", "mixed"],
                    "gender": ["man", "woman", "person", "none"], "bright": [""]}

    def __init__(self, img_numel: int):
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        self.projection = torch.nn.Parameter(torch.randn(img_numel, 10, generator=gen), requires_grad=False)

    def forward(self, images):
        features = images.flatten(1) @ self.projection / images[0].numel() ** 0.5
        return {"skin_tone": torch.cat([features[:, :6], features[:, :1]], dim=1) * 3,
                "gender": features[:, 6:10] * 3,
                "bright": (images.mean(dim=(1, 2, 3)) * 10).unsqueeze(1)}


def finder_settings(name: str) -> dict:
    common = dict(num_std_samples=STD_SAMPLES)
    return {
        "sefa": dict(num=4, layers="0-2", **common),
        "ganspace": dict(num=4, num_samples=2000, **common),
        "interfacegan": dict(labeller=brightness_labeller, num_samples=300, **common),
        "stylespace": dict(labeller=brightness_labeller, num=3, num_samples=200, **common),
        "voynov": dict(num=3, steps=30, batch_size=12, **common),
        "steerability": dict(transformations="brightness,shift_x", steps=20, **common),
    }[name]


@pytest.fixture(scope="module")
def found(G) -> dict[str, Direction]:
    return {name: E.find_directions(name, G, **finder_settings(name)) for name in E.FINDERS}


# ---------------------------------------------------------------------- registry, Direction basics


def test_registry_is_explicit_and_complete():
    assert list(E.FINDERS) == ["sefa", "ganspace", "interfacegan", "stylespace", "voynov", "steerability"]
    for name, spec in E.FINDERS.items():
        assert spec.name == name and callable(spec.find) and spec.summary and spec.paper
        # What the entry says it takes, its defaults hold.
        assert spec.samples_prior == ("num_samples" in spec.defaults), name
    with pytest.raises(ValueError, match="unknown direction finder"):
        E.find_directions("nope", None)


@pytest.mark.parametrize("name", list(E.FINDERS))
def test_every_finder_roundtrips_and_edits(G, found, tmp_path, name):
    direction = found[name]
    assert direction.method == name
    assert direction.num_ws == G.num_ws and direction.w_dim == G.w_dim
    assert torch.all(direction.std > 0)
    path = direction.save(tmp_path)
    assert path.name == f"{E.safe_file_stem(direction.name)}.json"
    assert (tmp_path / f"{path.stem}.safetensors").is_file()
    loaded = Direction.load(path)
    assert torch.equal(loaded.vectors, direction.vectors)
    assert torch.allclose(loaded.std, direction.std)
    assert loaded.layers == direction.layers and loaded.space == direction.space
    assert loaded.scores == pytest.approx(direction.scores)
    # strength 0 is the identity, a large strength changes the image
    latent = E.latent_from_seed(G, 3)
    base = latent.render()
    assert torch.allclose(E.edit(latent, loaded, 0.0), base, atol=1e-6)
    assert (E.edit(latent, loaded, 3.0) - base).abs().mean() > 1e-3
    frames = E.edit_sweep(latent, loaded, "-3:3:5")
    assert frames.shape == (5, 3, 16, 16)
    assert torch.allclose(frames[2], base[0], atol=1e-5)


def test_apply_strength_zero_is_identity_and_only_touches_layers(G, found):
    direction = found["sefa"]  # layers 0-2
    ws = E.sample_prior_ws(G, 4, seed=1)
    assert torch.equal(direction.apply(ws, 0.0, index=1), ws)
    edited = direction.apply(ws, 2.5, index=1)
    untouched = [i for i in range(G.num_ws) if i not in direction.layers]
    assert torch.equal(edited[:, untouched], ws[:, untouched])
    # strength is in prior std units: the coordinate along the vector moves by strength * std
    moved = (edited[:, direction.layers] - ws[:, direction.layers]) @ direction.vectors[1]
    assert torch.allclose(moved, torch.full_like(moved, 2.5 * float(direction.std[1])), atol=1e-5)
    # per-sample strengths, and a [N, w_dim] input broadcast to w+
    per_sample = direction.apply(ws, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert torch.equal(per_sample[0], ws[0]) and not torch.equal(per_sample[3], ws[3])
    assert direction.apply(ws[:, 0], 1.0).shape == ws.shape
    with pytest.raises(DirectionError, match="shape"):
        direction.apply(torch.zeros(2, 5, 32), 1.0)
    with pytest.raises(DirectionError, match="out of range"):
        direction.apply(ws, 1.0, index=10)


def test_strength_unit_is_prior_std(G, found):
    # GANSpace: the std along a principal axis equals the square root of its variance
    direction = found["ganspace"]
    assert direction.std.numpy() == pytest.approx(np.sqrt(direction.scores), rel=0.1)
    ws = E.sample_prior_ws(G, 3000, seed=99)
    coords = ws[:, 0] @ direction.vectors[0]
    assert float(coords.std()) == pytest.approx(float(direction.std[0]), rel=0.1)


def test_stylespace_offsets_only_touch_chosen_channel(G, found):
    direction = found["stylespace"]
    assert direction.space == "s"
    offsets = direction.style_offsets(2.0, index=0)
    assert len(offsets) == 1
    (layer_name, offset), = offsets.items()
    assert int((offset != 0).sum()) == 1
    assert float(offset.abs().max()) == pytest.approx(2.0 * float(direction.std[0]), rel=1e-6)
    assert direction.labels[0][1:].startswith(layer_name)
    with pytest.raises(DirectionError, match="StyleSpace"):
        direction.apply(E.sample_prior_ws(G, 2), 1.0)


# ---------------------------------------------------------------------- SeFa


def test_sefa_orthonormal_sorted_with_sign_convention(G):
    direction = E.find_sefa_directions(G, layers="all", num=G.w_dim, num_std_samples=STD_SAMPLES)
    v = direction.vectors.double()
    assert torch.allclose(v @ v.t(), torch.eye(G.w_dim, dtype=torch.float64), atol=1e-5)
    scores = np.array(direction.scores)
    assert np.all(np.diff(scores) <= 1e-9)
    peaks = v.gather(1, v.abs().argmax(dim=1, keepdim=True))
    assert torch.all(peaks > 0)
    assert direction.layers == list(range(G.num_ws))


def _independent_sefa(G, names: list[str], normalize: bool):
    """SVD of the stacked affine weights of explicitly named layers."""
    rows = []
    for name in names:
        block, layer = name.split(".")
        weight = getattr(getattr(G.synthesis, block), layer).affine.weight.detach().double()
        if normalize:
            weight = weight / weight.norm(dim=1, keepdim=True)
        rows.append(weight)
    _, singular, vh = torch.linalg.svd(torch.cat(rows), full_matrices=False)
    return singular.square(), vh


@pytest.mark.parametrize("layers,names", [
    ("0-1", ["b4.conv1", "b8.conv0"]),
    ("3-5", ["b16.conv0", "b16.conv1", "b16.torgb"]),  # num_ws = 6: index 5 is read by the final toRGB only
    ("all", ["b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1", "b16.torgb"]),
])
@pytest.mark.parametrize("normalize", [True, False])
def test_sefa_equals_independent_decomposition(G, layers, names, normalize):
    assert G.num_ws == 6
    direction = E.find_sefa_directions(G, layers=layers, num=8, normalize=normalize, num_std_samples=STD_SAMPLES)
    eigenvalues, vh = _independent_sefa(G, names, normalize)
    assert np.array(direction.scores) == pytest.approx(eigenvalues[:8].numpy(), rel=1e-6)
    cosines = (direction.vectors.double() @ vh[:8].t()).diagonal().abs()
    assert torch.all(cosines > 1 - 1e-5)
    assert direction.settings["variant"].startswith("official" if normalize else "rosinality")


def test_sefa_larger_eigenvalue_changes_images_more(G):
    # Same step length in W for every component (unit vectors x 2), image change averaged over 16 seeds.
    direction = E.find_sefa_directions(G, num=G.w_dim, num_std_samples=STD_SAMPLES)
    ws = E.sample_prior_ws(G, 16, seed=5)
    with torch.no_grad():
        base = G.synthesis(ws)
        moved = (ws.unsqueeze(0) + 2.0 * direction.vectors[:, None, None, :]).flatten(0, 1)  # [K*16, ...]
        images = G.synthesis(moved).reshape(G.w_dim, 16, *base.shape[1:])
        change = (images - base.unsqueeze(0)).square().flatten(1).mean(dim=1).numpy()
    assert change[:4].mean() > 1.5 * change[-4:].mean()
    assert change[0] > change[-1]
    assert np.corrcoef(change, direction.scores)[0, 1] > 0.4


# ---------------------------------------------------------------------- InterFaceGAN


def test_interfacegan_recovers_planted_direction(G):
    ws = E.sample_prior_ws(G, 3000, seed=11)
    w = ws[:, 0]
    gen = torch.Generator().manual_seed(3)
    planted = torch.randn(G.w_dim, generator=gen)
    planted /= planted.norm()
    labels = ((w - w.mean(0)) @ planted > 0).long()
    flip = torch.rand(len(labels), generator=gen) < 0.05  # 5% label noise
    labels[flip] = 1 - labels[flip]
    for kind in ("logistic", "svm"):
        direction = E.find_interfacegan_direction(G, ws=ws, labels=labels, classifier=kind, attribute="planted",
                                                  num_std_samples=STD_SAMPLES)
        cosine = float(direction.vectors[0] @ planted)
        assert cosine >= 0.9, (kind, cosine)
        assert direction.scores[0] > 0.85  # held-out accuracy
        assert direction.score_name == "heldout_accuracy"
        assert direction.settings["num_heldout"] == 600


def test_interfacegan_needs_both_classes(G):
    ws = E.sample_prior_ws(G, 50)
    with pytest.raises(ValueError, match="positive"):
        E.find_interfacegan_direction(G, ws=ws, labels=torch.ones(50, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        E.find_interfacegan_direction(G)


def test_conditional_projection_is_orthogonal():
    gen = torch.Generator().manual_seed(0)
    primary = torch.randn(32, generator=gen)
    conditions = torch.randn(3, 32, generator=gen)
    conditions[2] = conditions[0] + 0.5 * conditions[1]  # dependent: Gram-Schmidt must drop it
    result = E.project_out(primary, conditions)
    assert float(result.norm()) == pytest.approx(1.0, abs=1e-6)
    for condition in conditions:
        assert abs(float(result @ condition)) < 1e-5
    # one condition: n1 - (n1.n2) n2, normalized
    n1, n2 = primary / primary.norm(), conditions[0] / conditions[0].norm()
    expected = n1 - (n1 @ n2) * n2
    assert torch.allclose(E.project_out(n1, n2.unsqueeze(0)), expected / expected.norm(), atol=1e-6)
    assert float(primary @ result) > 0  # still points the same way
    with pytest.raises(ValueError, match="span"):
        E.project_out(conditions[0] + conditions[1], conditions[:2])


def test_conditional_direction_objects(G, found):
    primary = found["interfacegan"]
    condition = found["sefa"]
    conditioned = E.condition_direction(primary, [(condition, 0), (condition, 1)], G, num_std_samples=STD_SAMPLES)
    assert abs(float(conditioned.vectors[0] @ condition.vectors[0])) < 1e-5
    assert abs(float(conditioned.vectors[0] @ condition.vectors[1])) < 1e-5
    assert conditioned.settings["conditioned_on"] == [f"{condition.name}:0", f"{condition.name}:1"]
    ws = E.sample_prior_ws(G, 200, seed=2)
    labels = (ws[:, 0, 0] > ws[:, 0, 0].median()).long()
    direct = E.find_interfacegan_direction(G, ws=ws, labels=labels, conditions=[condition],
                                           num_std_samples=STD_SAMPLES)
    assert torch.all((condition.vectors @ direct.vectors[0]).abs() < 1e-5)


def test_classifier_attributes_and_default_directions(G, tmp_path):
    model = ganinv.Model(G=G, card={"name": "tiny"}, classifier=FakeClassifier(3 * 16 * 16))
    heads = E.classifier_heads(model)
    spec = E.parse_attribute("skin_tone:1,2/4,5", heads)
    assert spec.positive == (1, 2) and spec.negative == (4, 5) and spec.slug == "skin_tone_1-2_vs_4-5"
    for bad, message in (("nose", "unknown classifier head"), ("gender", "say which"),
                         ("gender:robot", "not a class"), ("gender:man/man", "both sides")):
        with pytest.raises(ValueError, match=message):
            E.parse_attribute(bad, heads)
    assert E.default_attributes(heads) == ["skin_tone:1,2/4,5", "gender:man/woman", "bright"]
    summary = E.compute_default_directions(model, tmp_path, num=3, num_samples=300, num_std_samples=STD_SAMPLES)
    written = {entry["name"] for entry in summary if "file" in entry}
    assert {"sefa_all", "sefa_coarse", "sefa_fine", "ganspace"} <= written
    assert "interfacegan_bright" in written
    handled = {entry["name"] for entry in summary}
    assert {"interfacegan_skin_tone_1-2_vs_4-5", "interfacegan_gender_man_vs_woman"} <= handled
    for name in written:
        loaded, _ = E.load_direction(tmp_path / f"{name}.json", model=model)
        assert loaded.name == name
    bright = E.load_direction(tmp_path / "interfacegan_bright.json")[0]
    assert bright.scores[0] > 0.8  # brightness is easy to separate in W
    assert bright.settings["label_source"] == "classifier head bright"
    assert E.layer_groups(G) == {"coarse": [0, 1, 2], "fine": [3, 4, 5]}


# ---------------------------------------------------------------------- edits of inversion results


def test_edit_of_tuned_result_uses_tuned_weights_and_noise(G, found):
    result = tiny_result(G, tuned=True)
    direction = found["sefa"]
    edited_ws = direction.apply(result.ws, 2.0, index=0)
    image = E.edit(result, direction, 2.0)
    with torch.no_grad():
        # result.render (and so edit) returns display images, clamped to [-1, 1].
        expected = result.G_tuned.synthesis(edited_ws, noise_mode="const", noise=result.noise).clamp(-1, 1)
        with_base = G.synthesis(edited_ws, noise_mode="const", noise=result.noise).clamp(-1, 1)
        without_noise = result.G_tuned.synthesis(edited_ws, noise_mode="const").clamp(-1, 1)
    assert torch.allclose(image, expected, atol=1e-6)
    assert (image - with_base).abs().mean() > 1e-3
    assert (image - without_noise).abs().mean() > 1e-4
    assert torch.allclose(E.edit(result, direction, 0.0), result.render(), atol=1e-6)
    # StyleSpace edits of a tuned result also render with the tuned generator
    s_direction = found["stylespace"]
    offsets = s_direction.style_offsets(2.0)
    with torch.no_grad():
        expected_s = result.G_tuned.synthesis(result.ws, noise=result.noise, style_offsets=offsets).clamp(-1, 1)
    assert torch.allclose(E.edit(result, s_direction, 2.0), expected_s, atol=1e-6)
    # the package and the module are callable as ganinv.edit(result, direction, strength)
    assert torch.allclose(ganinv.edit(result, direction, 2.0), image)


def test_edit_many_and_bare_ws(G, found):
    ws = E.sample_prior_ws(G, 2, seed=8)
    a = E.edit_many(ws, [(found["sefa"], 0, 1.0), (found["stylespace"], 1, -2.0)], G=G)
    assert a.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="G="):
        E.edit(ws, found["sefa"], 1.0)


# ---------------------------------------------------------------------- latent operations


def test_interpolation_endpoints_reproduce_inputs(G):
    a, b = E.latent_from_seed(G, 1), E.latent_from_seed(G, 2)
    for space in ("w", "z"):
        frames = E.interpolate(a, b, num_frames=5, space=space)
        assert frames.shape == (5, 3, 16, 16)
        # A batch of frames and a single image take different (equivalent) modulated-conv code paths,
        # which round differently in the last bits.
        assert torch.allclose(frames[0], a.render()[0], atol=1e-5)
        assert torch.allclose(frames[-1], b.render()[0], atol=1e-5)
        assert (frames[2] - frames[0]).abs().mean() > 1e-3
    # a tuned result with its own noise at one end (a result is a subject as it is), a seed at the other
    result = tiny_result(G, tuned=True)
    frames = E.interpolate(result, b, num_frames=4)
    assert torch.allclose(frames[0], result.render()[0], atol=1e-6)
    assert torch.allclose(frames[-1], b.render()[0], atol=1e-6)
    with pytest.raises(ValueError, match="z at both ends"):
        E.interpolate(result, b, space="z")


def test_slerp_and_lerp():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 16, generator=gen)
    assert torch.equal(E.slerp(a, b, 0), a) and torch.equal(E.slerp(a, b, 1), b)
    mid = E.slerp(a, b, 0.5)
    angle = lambda x, y: torch.arccos((x @ y) / (x.norm() * y.norm()))  # noqa: E731
    assert float(angle(a, mid)) == pytest.approx(float(angle(mid, b)), rel=1e-4)
    assert torch.allclose(E.lerp(a, b, 0.25), a + 0.25 * (b - a))


def test_style_mixing(G):
    a, b = E.latent_from_seed(G, 1), E.latent_from_seed(G, 2)
    assert torch.equal(E.style_mix(a.ws, b.ws, []), a.ws)
    mixed = E.mix_latents(a, b, [])
    assert torch.equal(mixed.render(), a.render())
    coarse = E.style_mix(a.ws, b.ws, "0-2")
    assert torch.equal(coarse[:, :3], b.ws[:, :3]) and torch.equal(coarse[:, 3:], a.ws[:, 3:])
    assert torch.equal(E.style_mix(a.ws, b.ws, "all"), b.ws)


def test_analogy(G):
    w1, w2, w3 = (E.latent_from_seed(G, s).ws for s in (1, 2, 3))
    assert torch.equal(E.analogy(w1, w2, w2), w1)
    assert torch.allclose(E.analogy(w2, w2, w3), w3, atol=1e-6)
    assert torch.allclose(E.analogy(w1, w2, w3, 0.5), w1 + 0.5 * (w3 - w2))


# ---------------------------------------------------------------------- direction files


def test_bad_direction_files_give_clear_errors(G, found, tmp_path):
    path = found["sefa"].save(tmp_path / "good.json")
    tensors = tmp_path / "good.safetensors"
    meta = json.loads(path.read_text())
    # The cases below change the vectors on purpose: without the recorded sha256 they reach the content checks.
    recorded_sha256 = meta.pop("sha256")

    def write(name: str, data, vectors: torch.Tensor | None = torch.zeros(4, 32)):
        from safetensors.torch import save_file
        (tmp_path / f"{name}.json").write_text(data if isinstance(data, str) else json.dumps(data))
        if vectors is not None:
            save_file({"vectors": vectors}, str(tmp_path / f"{name}.safetensors"))
        return tmp_path / f"{name}.json"

    cases = [
        (tmp_path / "absent.json", "not found"),
        (write("badjson", "{not json"), "not valid JSON"),
        (write("foreign", {"hello": 1}), "not a ganinv direction"),
        (write("missing", {**meta, "vectors_file": "missing.safetensors"}, vectors=None), "vectors file not found"),
        (write("shape", {**meta, "vectors_file": "shape.safetensors"}, torch.zeros(4, 31)), r"shape \[K, 32\]"),
        (write("count", {**meta, "vectors_file": "count.safetensors"}, torch.zeros(3, 32)), "3 components|says 4"),
        (write("space", {**meta, "space": "q", "vectors_file": "space.safetensors"}), "space must be"),
        (write("layers", {**meta, "layers": [0, 9], "vectors_file": "layers.safetensors"}), "out of range"),
        (write("newer", {**meta, "format_version": 99, "vectors_file": "newer.safetensors"}), "newer"),
        (write("nofields", {"format": "ganinv-direction", "name": "x"}), "missing fields"),
        (write("tampered", {**meta, "sha256": recorded_sha256, "vectors_file": "tampered.safetensors"}),
         "tampered.safetensors: sha256 does not match"),
    ]
    (tmp_path / "corrupt.json").write_text(json.dumps({**meta, "vectors_file": "corrupt.safetensors"}))
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00garbage")
    cases.append((tmp_path / "corrupt.json", "cannot read safetensors"))
    for bad_path, message in cases:
        with pytest.raises(DirectionError, match=message):
            E.load_direction(str(bad_path))
    with pytest.raises(DirectionError, match="components"):
        E.load_direction(f"{path}:7")
    with pytest.raises(DirectionError, match="no such direction"):
        E.load_direction("does-not-exist")
    with pytest.raises(DirectionError, match="folder"):
        E.load_direction(str(tmp_path))
    other = Generator(z_dim=32, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                      mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32))
    with pytest.raises(DirectionError, match="w_dim=16"):
        E.load_direction(str(path), model=other)
    # good specs: path, path without suffix, the safetensors path, NAME:i via the model's directions
    assert E.load_direction(str(path))[1] is None
    assert E.load_direction(str(tensors) + ":2")[1] == 2
    assert E.load_direction(str(tmp_path / "good"))[0].name == found["sefa"].name
    model = ganinv.Model(G=G, directions={"good": path})
    direction, index = E.load_direction("good:3", model=model)
    assert index == 3 and torch.equal(direction.vectors, found["sefa"].vectors)


def test_parse_strengths():
    assert E.parse_strengths("-3:3:7") == [-3, -2, -1, 0, 1, 2, 3]
    assert E.parse_strengths("-1,0.5") == [-1, 0.5]
    assert E.parse_strengths("2") == [2.0]
    for bad in ("1:2", "a,b", "1:2:0", ""):
        with pytest.raises(ValueError, match="bad strengths"):
            E.parse_strengths(bad)


# ---------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, G):
    from ganinv.models.checkpoints import save_native
    folder = tmp_path_factory.mktemp("tiny-model")
    save_native(folder, G, None, card={"name": "tiny"})
    return folder


def _invoke(args):
    from click.testing import CliRunner

    from ganinv.cli import main
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_cli_directions_edit_mix_interpolate(model_dir, tmp_path):
    from PIL import Image
    out = tmp_path / "dirs"
    r = _invoke(["directions", "sefa", "--model", model_dir, "--layers", "0-1", "--num", "3",
                 "--out", out, "--device", "cpu", "--strengths", "-2:2:3"])
    assert r.exit_code == 0, r.output
    assert (out / "sefa_0-1.json").is_file() and (out / "sefa_0-1.safetensors").is_file()
    with Image.open(out / "sefa_0-1_preview.png") as im:  # 3 rows x 3 columns of 16 px + 2 px padding
        assert im.size == (3 * 18 + 2, 3 * 18 + 2)
    r = _invoke(["directions", "sefa", "--model", model_dir, "--outdir", out, "--layers", "0-1"])
    assert r.exit_code == 1 and "--overwrite" in r.output

    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({str(s): int(s % 2) for s in range(40)}))
    r = _invoke(["directions", "interfacegan", "--model", model_dir, "--labels", labels, "--name", "odd",
                 "--condition", f"{out / 'sefa_0-1.json'}:0", "--outdir", out])
    assert r.exit_code == 0, r.output
    assert (out / "odd.json").is_file()
    r = _invoke(["directions", "interfacegan", "--model", model_dir, "--outdir", out])
    assert r.exit_code == 1 and "--attribute" in r.output

    edit_dir = tmp_path / "edit"
    r = _invoke(["edit", "5", "--model", model_dir, "--direction", f"{out / 'sefa_0-1.json'}:1",
                 "--strength", "-3:3:5", "--outdir", edit_dir])
    assert r.exit_code == 0, r.output
    assert len(list((edit_dir / "frames").glob("frame_*.png"))) == 5
    with Image.open(edit_dir / "edit.gif") as gif:
        assert gif.n_frames == 8  # forward 5, back 3
    assert json.loads((edit_dir / "edit.json").read_text())["component"] == 1
    r = _invoke(["edit", "5", "--model", model_dir, "--direction", tmp_path / "nothing.json",
                 "--outdir", tmp_path / "e2"])
    assert r.exit_code == 1 and "not found" in r.output

    r = _invoke(["mix", "1", "2", "--model", model_dir, "--layers", "0-3", "--outdir", tmp_path / "mix"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mix" / "grid.png").is_file()
    r = _invoke(["interpolate", "1", "seed2", "--model", model_dir, "--frames", "4", "--space", "z",
                 "--outdir", tmp_path / "interp"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "interp" / "frames").glob("*.png"))) == 4


@pytest.mark.parametrize("name", list(E.FINDERS))
def test_cli_directions_runs_every_finder_from_its_entry(model_dir, tmp_path, name):
    """The CLI reads what a finder needs from FINDERS: labels, prior samples, conditions."""
    spec = E.FINDERS[name]
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({str(s): int(s % 2) for s in range(40)}))
    args = ["directions", name, "--model", model_dir, "--outdir", tmp_path / "out", "--num", "2", "--name", "d"]
    if spec.samples_prior:
        args += ["--num-samples", "40"]
    if "steps" in spec.defaults:
        args += ["--steps", "5"]
    r = _invoke(args + (["--labels", labels] if spec.needs_labels else []))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "d.json").is_file()
    if spec.needs_labels:
        r = _invoke(args + ["--overwrite"])  # no labels and no classifier
        assert r.exit_code == 1 and "--attribute" in r.output
    else:
        r = _invoke(args + ["--overwrite", "--labels", labels])
        assert r.exit_code == 1 and "do not apply" in r.output
    if not spec.samples_prior:
        r = _invoke(args + ["--overwrite", "--num-samples", "40"])
        assert r.exit_code == 1 and "does not apply" in r.output
    if not spec.takes_conditions:
        r = _invoke(args + ["--overwrite", "--condition", tmp_path / "out" / "d.json"]
                    + (["--labels", labels] if spec.needs_labels else []))
        assert r.exit_code == 1 and "--condition does not apply" in r.output
    r = _invoke(["directions", "teleport", "--model", model_dir, "--outdir", tmp_path / "x"])
    assert r.exit_code == 1 and "unknown direction finder" in r.output


def test_cli_edit_of_saved_tunedtiny_result(G, model_dir, tmp_path):
    result = tiny_result(G, tuned=True)
    result.model_name = "tiny"
    result.save(tmp_path / "result")
    direction = E.find_sefa_directions(G, num=2, num_std_samples=STD_SAMPLES)
    direction_path = direction.save(tmp_path)
    out = tmp_path / "edited"
    r = _invoke(["edit", tmp_path / "result", "--model", model_dir, "--direction", f"{direction_path}:0",
                 "--strength", "2", "--outdir", out])
    assert r.exit_code == 0, r.output
    from ganinv.data.io import to_uint8
    from PIL import Image
    with Image.open(out / "frames" / "frame_000.png") as im:
        written = np.asarray(im.convert("RGB"))
    loaded = InversionResult.load(tmp_path / "result", model=str(model_dir))
    expected = to_uint8(E.edit(loaded, direction, 2.0))[0]
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1
    with torch.no_grad():
        base_image = G.synthesis(direction.apply(loaded.ws, 2.0), noise_mode="const", noise=loaded.noise)
    base_render = to_uint8(base_image)[0]
    assert np.abs(written.astype(int) - base_render.astype(int)).mean() > 1  # tuned weights were used


def test_attribute_with_slash_in_class_name():
    heads = {"class": ["T-shirt/top", "Trouser", "Bag"]}
    spec = E.parse_attribute("class:T-shirt/top", heads)
    assert spec.positive == (0,) and spec.negative is None
    spec = E.parse_attribute("class:Trouser/Bag", heads)
    assert spec.positive == (1,) and spec.negative == (2,)


# ---------------------------------------------------------------------- editability measurement


def test_measure_edit_sees_the_planted_attribute_and_the_tuned_generator(G, found):
    classifier = FakeClassifier(3 * 16 * 16)
    model = ganinv.Model(G=G, card={"name": "tiny"}, classifier=classifier)
    direction = found["interfacegan"]  # brightness boundary
    sampled = E.Latent(ws=E.sample_prior_ws(G, 24, seed=5), G=G)
    m = E.measure_edit(sampled, direction, classifier, "bright", "-2,-1,0,1,2", model=model, label="sampled")
    assert m.strengths == [-2.0, -1.0, 1.0, 2.0] and m.num_subjects == 24  # strength 0 is the reference
    # brightness log-odds rise with the strength, on both sides of zero
    assert m.score_change[0] < m.score_change[1] < 0 < m.score_change[2] < m.score_change[3]
    assert m.pixel_mse[3] > m.pixel_mse[2] > 0 and m.pixel_mse[0] > m.pixel_mse[1] > 0
    assert all(o is not None and 0 <= o <= 1 for o in m.other_change)  # two other heads move a little
    assert all(f is None or 0 <= f <= 1 for f in m.flip_rate) and m.flip_rate[3] > 0
    manual = torch.stack([classifier(E.edit(sampled, direction, 2.0))["bright"][:, 0]
                          - classifier(sampled.render())["bright"][:, 0]]).mean()
    assert abs(m.at(2.0)["score_change"] - float(manual)) < 1e-4
    assert E.editability_ratio(m, m) == pytest.approx([1.0] * 4)

    # A list of results: each renders with its own (tuned) generator, so the numbers change.
    plain, tuned = tiny_result(G, tuned=False), tiny_result(G, tuned=True)
    m_plain = E.measure_edit([plain, plain], direction, classifier, "bright", "-2,2", model=model)
    m_tuned = E.measure_edit([tuned, tuned], direction, classifier, "bright", "-2,2", model=model)
    assert m_plain.num_subjects == 2
    assert m_plain.score_change != pytest.approx(m_tuned.score_change, abs=1e-5)
    single = E.measure_edit(plain, direction, classifier, "bright", "-2,2", model=model)
    assert single.score_change == pytest.approx(m_plain.score_change, abs=1e-5)

    with pytest.raises(ValueError, match="non-zero strength"):
        E.measure_edit(sampled, direction, classifier, "bright", "0", model=model)
    with pytest.raises(ValueError, match="needs a classifier"):
        E.measure_edit(sampled, direction, None, "bright", "1", model=model)
    with pytest.raises(ValueError, match="unknown classifier head"):
        E.measure_edit(sampled, direction, classifier, "nose", "1", model=model)
    with pytest.raises(ValueError, match="strength 5"):
        m.at(5.0)
    with pytest.raises(ValueError, match="strengths differ"):
        E.editability_ratio(m, m_plain)
