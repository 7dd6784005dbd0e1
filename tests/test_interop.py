"""Other projects' files: published edit directions in, rosinality checkpoints and latents out.

Direction files are written at test time with the saving idioms of their projects (np.save of an
InterFaceGAN normal, torch.save of an e4e direction tensor or PCA dict, np.savez of a GANSpace
decomposition, pickle.dump of a GANSpace saved edit). Each edit is checked against the arithmetic the
owning project's code performs, written out here. Exported generators are checked against rosinality's
own Generator through the references of tests/fixtures/make_rosinality_export.py.
"""
import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import FIXTURES, tiny_generator, tiny_result
from ganinv.cli import main
from ganinv.editing import edit, load_direction, prior_std
from ganinv.editing.direction import DirectionError
from ganinv.editing.published import (import_direction, load_any_direction, read_published_direction,
                                      source_strength, strength_to_reach)
from ganinv.models.checkpoints import load_rosinality, save_native
from ganinv.models.export import ExportError, export_rosinality, rosinality_state_dict
from ganinv.models.local import locally_tuned
from ganinv.models.prior import sample_prior
from ganinv.models.stylegan2 import Generator

NUM_STD = 2000  # prior samples for the strength unit; enough for a tiny model, fast


@pytest.fixture(scope="module")
def G():
    return tiny_generator(seed=3)


def _unit(rs, *shape):
    v = rs.randn(*shape)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _ws(G, n=3, seed=5):
    """Prior ws with a different w at every index (as an inversion's w+ result)."""
    ws = sample_prior(G, n, seed=seed)
    return ws + 0.2 * torch.randn(ws.shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- directions


def test_interfacegan_boundary_edit_equals_theirs(G, tmp_path):
    rs = np.random.RandomState(0)
    boundary = _unit(rs, 1, G.w_dim)  # float64 [1, w_dim], as train_boundary.py saves it
    path = tmp_path / "attr_w_boundary.npy"
    np.save(path, boundary)
    d = import_direction(path, G, num_std_samples=NUM_STD)
    assert d.space == "w" and d.layers == list(range(G.num_ws)) and d.method == "interfacegan"
    assert d.settings["source"]["format"] == "interfacegan-npy"
    assert d.settings["layers_from"].startswith("all")
    n = torch.from_numpy(boundary).float()
    ws = _ws(G)
    # Their W+ manipulation: every index moves by a * n.
    for a in (-2.5, 0.7, 3.0):
        theirs = ws + a * n.reshape(1, 1, -1)
        ours = d.apply(ws, source_strength(d, a))
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # Their single-code manipulation moves w to signed distance `dist` from the boundary.
    w = ws[:, 0]
    for dist in (-3.0, 1.5):
        theirs = w + (dist - w @ n.t()) * n
        ours = d.apply(w, strength_to_reach(d, w, dist))
        torch.testing.assert_close(ours, theirs.unsqueeze(1).expand(-1, G.num_ws, -1), atol=1e-5, rtol=0)
    # Strength 1 is one prior standard deviation along the normal.
    coords = sample_prior(G, NUM_STD, seed=0)[:, 0] @ n.t()
    assert float(d.std[0]) == pytest.approx(float(coords.std()), rel=1e-4)


def test_e4e_direction_tensors_equal_theirs(G, tmp_path):
    rs = np.random.RandomState(1)
    flat = torch.from_numpy(_unit(rs, 1, G.w_dim)).float()
    torch.save(flat, tmp_path / "age.pt")
    torch.save(flat.unsqueeze(1).repeat(1, 18, 1), tmp_path / "pose.pt")  # one vector repeated (e4e's pose.pt)
    per_layer = torch.from_numpy(_unit(rs, 1, G.num_ws, G.w_dim)).float()
    torch.save(per_layer, tmp_path / "layered.pt")
    ws = _ws(G)
    for name, vector, space in (("age", flat, "w"), ("pose", flat, "w"), ("layered", per_layer, "w+")):
        d = import_direction(tmp_path / f"{name}.pt", G, num_std_samples=NUM_STD)
        assert d.space == space and d.settings["source"]["format"] == "e4e-interfacegan-pt"
        factor = 2.0
        theirs = ws + factor * (vector.reshape(1, 1, -1) if space == "w" else vector)  # latent + factor * direction
        torch.testing.assert_close(d.apply(ws, source_strength(d, factor)), theirs, atol=1e-5, rtol=0)
    # A per-index direction made for another number of ws indices does not fit.
    torch.save(torch.from_numpy(_unit(rs, 1, G.num_ws + 2, G.w_dim)).float(), tmp_path / "other.pt")
    with pytest.raises(DirectionError, match=f"num_ws={G.num_ws}"):
        import_direction(tmp_path / "other.pt", G)


def _pca_basis(rs, k, dim):
    q, _ = np.linalg.qr(rs.randn(dim, k))
    return q.T.astype(np.float32)  # [k, dim], orthonormal rows


def test_e4e_ganspace_edit_equals_theirs(G, tmp_path):
    rs = np.random.RandomState(2)
    comp = torch.from_numpy(_pca_basis(rs, 6, G.w_dim)).unsqueeze(1)  # [K, 1, w_dim]
    mean = torch.from_numpy(rs.randn(1, G.w_dim).astype(np.float32) * 0.1)
    std = torch.from_numpy(np.linspace(3.0, 1.0, 6).astype(np.float32))
    torch.save({"mean": mean, "comp": comp, "std": std}, tmp_path / "ffhq_pca.pt")
    ws = _ws(G)
    for pca_idx, start, end, strength in ((0, 0, G.num_ws, 2.0), (3, 1, 4, -4.0), (5, 2, 3, 7.0)):
        d = import_direction(tmp_path / "ffhq_pca.pt", G, layers=f"{start}-{end - 1}", num_std_samples=NUM_STD)
        assert d.space == "w" and len(d) == 6 and d.layers == list(range(start, end))
        # e4e's ganspace.edit: the coordinate of the first w along the component (from the mean, in std
        # units) is set to `strength` on ws start:end.
        theirs = ws.clone()
        for i in range(ws.shape[0]):
            coord = ((ws[i, 0] - mean[0]) @ comp[pca_idx, 0]) / std[pca_idx]
            theirs[i, start:end] += (strength - coord) * comp[pca_idx, 0] * std[pca_idx]
        ours = d.apply(ws, strength_to_reach(d, ws, strength, pca_idx), pca_idx)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_ganspace_npz_and_saved_edit_equal_theirs(G, tmp_path):
    rs = np.random.RandomState(3)
    comp = _pca_basis(rs, 5, G.w_dim)[:, None, :]
    stdev = np.array([2.0, 1.5, 1.2, 1.0, 0.8], dtype=np.float32)
    np.savez_compressed(tmp_path / "decomp.npz", act_comp=comp, act_mean=np.zeros((1, G.w_dim), np.float32),
                        act_stdev=stdev, lat_comp=comp, lat_mean=np.zeros((1, G.w_dim), np.float32),
                        lat_stdev=stdev, var_ratio=stdev / stdev.sum(), random_stdevs=stdev)
    ws = _ws(G)
    d = import_direction(tmp_path / "decomp.npz", G, layers="1-3", num_std_samples=NUM_STD)
    assert d.settings["source"]["format"] == "ganspace-npz" and d.layers == [1, 2, 3]
    sigma, c = 2.5, 2
    theirs = ws.clone()
    theirs[:, 1:4] += torch.from_numpy(comp[c] * stdev[c] * sigma)  # z_deltas[l] += comp * stdev * coord
    torch.testing.assert_close(d.apply(ws, source_strength(d, sigma, c), c), theirs, atol=1e-5, rtol=0)

    # GANSpace's interactive tool saves one named edit with its own ws range (end excluded).
    params = {"name": "Light direction", "sigma_range": np.float64(-2.8), "component_index": 3,
              "act_comp": comp[3], "lat_comp": comp[3], "latent_space": "W", "act_stdev": 1.0,
              "lat_stdev": float(stdev[3]), "model_name": "StyleGAN2", "output_class": "tiny",
              "decomposition": {"name": "ipca", "components": 5}, "edit_type": "latent", "use_slerp": False,
              "truncation": 0.9, "edit_start": 2, "edit_end": 4, "example_seed": 7}
    with open(tmp_path / "light.pkl", "wb") as f:
        pickle.dump(params, f)
    d = import_direction(tmp_path / "light.pkl", G, num_std_samples=NUM_STD)
    assert d.layers == [2, 3] and d.settings["layers_from"] == "file" and d.name == "Light direction"
    theirs = ws.clone()
    theirs[:, 2:4] += torch.from_numpy(comp[3, 0] * stdev[3] * sigma)
    torch.testing.assert_close(d.apply(ws, source_strength(d, sigma)), theirs, atol=1e-5, rtol=0)
    with pytest.raises(DirectionError, match="num_ws"):
        import_direction(tmp_path / "light.pkl", tiny_generator(resolution=4))  # its range 2:4 does not fit


def test_edits_equal_the_projects_own_functions(G, tmp_path):
    """Against outputs of InterFaceGAN's linear_interpolate and e4e's ganspace.edit on the same inputs
    (tests/fixtures/make_published_edit_refs.py)."""
    ref = np.load(FIXTURES / "published_edits_ref.npz")
    assert G.num_ws == ref["ws"].shape[1] and G.w_dim == ref["ws"].shape[2]
    np.save(tmp_path / "attr_w_boundary.npy", ref["boundary"])
    d = import_direction(tmp_path / "attr_w_boundary.npy", G, num_std_samples=NUM_STD)
    start, end, steps = ref["distances"]
    w, wplus = torch.from_numpy(ref["ws"][0, :1]), torch.from_numpy(ref["ws"][:1])
    for k, distance in enumerate(np.linspace(start, end, int(steps))):
        ours = d.apply(w, strength_to_reach(d, w, float(distance)))
        theirs = torch.from_numpy(ref["interfacegan_w"][k]).float()
        torch.testing.assert_close(ours[0], theirs.expand(G.num_ws, -1), atol=1e-5, rtol=0)
        ours = d.apply(wplus, source_strength(d, float(distance)))
        torch.testing.assert_close(ours[0], torch.from_numpy(ref["interfacegan_wplus"][k]).float(), atol=1e-5, rtol=0)
    torch.save({"mean": torch.from_numpy(ref["mean"]), "comp": torch.from_numpy(ref["comp"]),
                "std": torch.from_numpy(ref["std"])}, tmp_path / "pca.pt")
    ws = torch.from_numpy(ref["ws"])
    edits = ref["edits"]
    for j, (pca_idx, first, stop, strength) in enumerate(edits):
        pca_idx, first, stop = int(pca_idx), int(first), int(stop)
        d = import_direction(tmp_path / "pca.pt", G, layers=f"{first}-{stop - 1}", num_std_samples=NUM_STD)
        ours = d.apply(ws, strength_to_reach(d, ws, float(strength), pca_idx), pca_idx)
        for i in range(ws.shape[0]):  # their output lists every edit of the first latent, then the next
            theirs = torch.from_numpy(ref["e4e_ganspace"][i * len(edits) + j])
            torch.testing.assert_close(ours[i], theirs, atol=1e-4, rtol=0)


def test_strength_unit_is_the_prior_std(G, tmp_path):
    """A GANSpace file whose lat_stdev is our own prior std converts 1:1."""
    rs = np.random.RandomState(4)
    comp = torch.from_numpy(_pca_basis(rs, 3, G.w_dim))
    std = prior_std(G, "w", comp, list(range(G.num_ws)), num_samples=NUM_STD, seed=0)
    np.savez(tmp_path / "own.npz", lat_comp=comp.numpy()[:, None], lat_mean=np.zeros((1, G.w_dim), np.float32),
             lat_stdev=std.numpy())
    d = import_direction(tmp_path / "own.npz", G, num_std_samples=NUM_STD, seed=0)
    assert d.settings["strength_per_source_unit"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def _write_bad(tmp_path, name, writer):
    path = tmp_path / name
    writer(path)
    return path


@pytest.mark.parametrize("name, writer, match", [
    ("wide_w_boundary.npy", lambda p: np.save(p, np.ones((1, 512))), "512-dimensional .*w_dim=32"),
    ("wide.pt", lambda p: torch.save(torch.ones(1, 512), p), "512-dimensional .*w_dim=32"),
    ("wide_pca.pt", lambda p: torch.save({"comp": torch.ones(3, 1, 512), "mean": torch.zeros(1, 512),
                                          "std": torch.ones(3)}, p), "512-dimensional"),
    ("wide.npz", lambda p: np.savez(p, lat_comp=np.ones((3, 1, 512), np.float32),
                                    lat_mean=np.zeros((1, 512), np.float32), lat_stdev=np.full(3, 2, np.float32)),
     "512-dimensional"),
    ("stylegan2-ffhq_style_ipca_c80_n1000000.npz",
     lambda p: np.savez(p, lat_comp=np.ones((3, 1, 32), np.float32), lat_mean=np.zeros((1, 32), np.float32),
                        lat_stdev=np.full(3, 2, np.float32)), "lives in Z"),
    ("zdecomp.npz", lambda p: np.savez(p, lat_comp=np.ones((3, 1, 32), np.float32),
                                       lat_mean=np.zeros((1, 32), np.float32), lat_stdev=np.ones(3, np.float32)),
     "lives in Z"),
    ("matrix.npy", lambda p: np.save(p, np.ones((3, 32))), r"shape \[w_dim\], \[1, w_dim\]"),
    ("ints.npy", lambda p: np.save(p, np.ones((1, 32), dtype=np.int64)), "floating point"),
    ("objects.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "not a readable"),
    ("nan.npy", lambda p: np.save(p, np.full((1, 32), np.nan)), "NaN"),
    ("zero.pt", lambda p: torch.save(torch.zeros(1, 32), p), "zero vector"),
    ("empty.npz", lambda p: p.write_bytes(b""), "empty"),
    ("latent.npz", lambda p: np.savez(p, w=np.zeros((1, 6, 32), np.float32)), "latent"),
    ("ckpt.pt", lambda p: torch.save({"state_dict": {}, "opts": {}}, p), "model checkpoint"),
    ("badpca.pt", lambda p: torch.save({"comp": torch.ones(3, 1, 32), "mean": torch.zeros(1, 32),
                                        "std": torch.ones(2)}, p), "2 standard deviations for 3"),
    ("stylegan_ffhq_age_boundary.npy", lambda p: np.save(p, np.ones((1, 32))), "lives in Z"),
    ("zspace.pkl", lambda p: p.write_bytes(pickle.dumps({"lat_comp": np.ones((1, 32)), "lat_stdev": 1.0,
                                                         "edit_start": 0, "edit_end": 2, "latent_space": "Z"})),
     "Z space"),
    ("garbage.pt", lambda p: p.write_bytes(b"PK\x03\x04 not a zip"), "not a readable"),
])
def test_bad_direction_files_give_one_line(G, tmp_path, name, writer, match):
    path = _write_bad(tmp_path, name, writer)
    with pytest.raises(DirectionError, match=match) as info:
        import_direction(path, G, num_std_samples=NUM_STD)
    message = str(info.value)
    assert "\n" not in message and name in message


def test_z_named_files_accepted_when_declared_w(G, tmp_path):
    np.save(tmp_path / "stylegan_ffhq_age_boundary.npy", _unit(np.random.RandomState(5), 1, G.w_dim))
    d = import_direction(tmp_path / "stylegan_ffhq_age_boundary.npy", G, source_space="w", num_std_samples=NUM_STD)
    assert d.space == "w"
    comp = _pca_basis(np.random.RandomState(6), 2, G.w_dim)[:, None]
    for stem in ("stylegan2-ffhq_style_ipca_c80_n1000000_w", "stylegan2-ffhq_style_ipca_c80_n1000000_w_seed3"):
        np.savez(tmp_path / f"{stem}.npz", lat_comp=comp, lat_mean=np.zeros((1, G.w_dim), np.float32),
                 lat_stdev=np.array([1.5, 1.2], np.float32))
        assert len(import_direction(tmp_path / f"{stem}.npz", G, num_std_samples=NUM_STD)) == 2


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_direction_pickle",))


def test_pickled_code_is_refused_without_running(G, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, payload in (("edit.pkl", {"lat_comp": _Boom(), "lat_stdev": 1.0, "edit_start": 0, "edit_end": 1}),
                          ("evil.pt", {"comp": _Boom()})):
        path = tmp_path / name
        if name.endswith(".pkl"):
            path.write_bytes(pickle.dumps(payload))
        else:
            torch.save(payload, path)
        with pytest.raises(DirectionError, match="refus"):
            read_published_direction(path)
    assert not (tmp_path / "pwned_by_direction_pickle").exists()


def test_direct_use_equals_imported_and_saved(G, tmp_path):
    np.save(tmp_path / "smile_w_boundary.npy", _unit(np.random.RandomState(6), 1, G.w_dim))
    direct, index = load_any_direction(f"{tmp_path / 'smile_w_boundary.npy'}:0", model=G)
    assert index == 0
    imported = import_direction(tmp_path / "smile_w_boundary.npy", G)
    saved = load_direction(imported.save(tmp_path / "out"), model=G)[0]
    ws = _ws(G)
    for other in (imported, saved):
        torch.testing.assert_close(direct.apply(ws, 2.0), other.apply(ws, 2.0), atol=0, rtol=0)
    # ganinv.edit with the file spec renders the same as with the Direction.
    spec = str(tmp_path / "smile_w_boundary.npy")
    torch.testing.assert_close(edit(ws[:1], spec, 1.5, G=G, model=G), edit(ws[:1], imported, 1.5, G=G))
    # A native direction spec still goes to ganinv's own loader.
    assert load_any_direction(str(imported.save(tmp_path / "out2")), model=G)[0].name == imported.name


def test_cli_directions_import_and_edit(tmp_path):
    G = tiny_generator(seed=3)
    save_native(tmp_path / "model", G, card={"name": "tiny"})
    np.save(tmp_path / "smile_w_boundary.npy", _unit(np.random.RandomState(7), 1, G.w_dim))
    runner = CliRunner()
    res = runner.invoke(main, ["directions", "import", str(tmp_path / "smile_w_boundary.npy"), "--model",
                               str(tmp_path / "model"), "--outdir", str(tmp_path / "dirs"), "--layers", "0-3"])
    assert res.exit_code == 0, res.output
    assert "their 1.0 = strength" in res.output
    d = load_direction(tmp_path / "dirs" / "smile_w_boundary.json", model=G)[0]
    assert d.layers == [0, 1, 2, 3] and d.settings["source"]["format"] == "interfacegan-npy"
    assert (tmp_path / "dirs" / "smile_w_boundary_preview.png").is_file()
    res = runner.invoke(main, ["edit", "2", "--model", str(tmp_path / "model"), "--direction",
                               str(tmp_path / "smile_w_boundary.npy"), "--strength", "-2,0,2",
                               "--outdir", str(tmp_path / "edit")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "edit" / "strip.png").is_file()
    # The finders are still reached through the same command.
    res = runner.invoke(main, ["directions", "sefa", "--model", str(tmp_path / "model"), "--num", "2",
                               "--outdir", str(tmp_path / "sefa")])
    assert res.exit_code == 0, res.output
    # One-line errors: a direction of the wrong width.
    np.save(tmp_path / "wide_w_boundary.npy", np.ones((1, 512)))
    for args in (["directions", "import", str(tmp_path / "wide_w_boundary.npy"), "--model", str(tmp_path / "model"),
                  "--outdir", str(tmp_path / "d2")],
                 ["edit", "2", "--model", str(tmp_path / "model"), "--direction", str(tmp_path / "wide_w_boundary.npy"),
                  "--outdir", str(tmp_path / "e2")]):
        res = runner.invoke(main, args)
        assert res.exit_code != 0 and "512-dimensional" in res.output and "w_dim=32" in res.output
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["find", "import"])
def test_cli_direction_commands_share_preview_and_output_options(command, tmp_path):
    """`directions METHOD` and `directions import` take the same --strengths, --preview-seed, --upscale,
    --outdir/--out and --overwrite, meaning the same."""
    from PIL import Image

    G = tiny_generator(seed=3)
    save_native(tmp_path / "model", G, card={"name": "tiny"})
    np.save(tmp_path / "smile_w_boundary.npy", _unit(np.random.RandomState(7), 1, G.w_dim))
    head = (["directions", "sefa", "--num", "2"] if command == "find"
            else ["directions", "import", str(tmp_path / "smile_w_boundary.npy")])
    rows = 2 if command == "find" else 1
    runner = CliRunner()

    def run(out, *extra):
        return runner.invoke(main, [*head, "--model", str(tmp_path / "model"), "--name", "d", "--out", str(out),
                                    "--strengths", "-2:2:3", "--upscale", "2", "--quiet", *extra])

    res = run(tmp_path / "a", "--preview-seed", "1")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a" / "d.json").is_file() and (tmp_path / "a" / "d.safetensors").is_file()
    with Image.open(tmp_path / "a" / "d_preview.png") as im:  # 3 columns of 16 px + 2 px padding, upscaled 2x
        assert im.size == (2 * (3 * 18 + 2), 2 * (rows * 18 + 2))
        first = np.asarray(im)
    res = run(tmp_path / "a", "--preview-seed", "2")
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = run(tmp_path / "a", "--preview-seed", "2", "--overwrite")
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "a" / "d_preview.png") as im:
        assert not np.array_equal(np.asarray(im), first)  # another preview subject
    res = run(tmp_path / "b", "--preview-seed", "1")
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "b" / "d_preview.png") as im:
        assert np.array_equal(np.asarray(im), first)
    res = runner.invoke(main, [*head, "--model", str(tmp_path / "model")])
    assert res.exit_code != 0 and "--outdir" in res.output


# ---------------------------------------------------------------------------------------------- export


def _fixture_script():
    spec = importlib.util.spec_from_file_location("make_rosinality_export", FIXTURES / "make_rosinality_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("recipe", ["stock", "custom"])
def test_export_renders_as_rosinality_code_did(recipe, tmp_path):
    """The exported file has exactly the keys and shapes of rosinality's Generator.state_dict(), and
    renders (read back by ganinv) what rosinality's own code rendered from it."""
    script = _fixture_script()
    ref = np.load(FIXTURES / script.reference_name(recipe))
    path = tmp_path / f"{recipe}.pt"
    args = script.export(recipe, path)
    assert (args["channel_multiplier"] is None) == (recipe == "custom")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert sorted(ckpt) == ["args", "g_ema", "ganinv", "latent_avg"]
    theirs = dict(zip(ref["keys"].tolist(), ref["shapes"].tolist()))
    ours = {k: ";".join(map(str, v.shape)) for k, v in ckpt["g_ema"].items()}
    assert ours == theirs
    G, _, info = load_rosinality(path)
    assert info["w_avg_source"] == "checkpoint latent_avg"
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(z, None), torch.from_numpy(ref["latent"]), atol=1e-5, rtol=0)
        torch.testing.assert_close(G(z, None), torch.from_numpy(ref["img"]), atol=1e-4, rtol=0)
        torch.testing.assert_close(G.synthesis(torch.from_numpy(ref["ws_plus"])), torch.from_numpy(ref["img_plus"]),
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(G(z, None, truncation_psi=0.7), torch.from_numpy(ref["img_trunc"]),
                                   atol=1e-4, rtol=0)
        # The generator before export renders the same (the export, not only the reader, is right).
        original = script.build_generator(recipe)
        torch.testing.assert_close(original(z, None), torch.from_numpy(ref["img"]), atol=1e-4, rtol=0)


def test_export_then_reimport_gives_identical_images(tmp_path):
    G = tiny_generator(seed=9)
    export_rosinality(G, tmp_path / "g.pt", allow_custom_channels=True)
    G2, _, _ = load_rosinality(tmp_path / "g.pt")
    ws = _ws(G, n=4)
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(G2.synthesis(ws), G.synthesis(ws), atol=1e-6, rtol=0)
        torch.testing.assert_close(G2.mapping(z, None), G.mapping(z, None), atol=0, rtol=0)
    torch.testing.assert_close(G2.mapping.w_avg, G.mapping.w_avg, atol=0, rtol=0)
    assert G2.synthesis.channels == G.synthesis.channels


def _variant(**changes):
    kwargs = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=8, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channels={"4": 512, "8": 512}))
    for key, value in changes.items():
        if key in ("architecture", "resample_filter"):
            kwargs["synthesis_kwargs"] = dict(kwargs["synthesis_kwargs"], **{key: value})
        elif key == "layer_features":
            kwargs["mapping_kwargs"] = dict(kwargs["mapping_kwargs"], layer_features=value)
        else:
            kwargs[key] = value
    return Generator(**kwargs)


@pytest.mark.parametrize("changes, match", [
    (dict(img_channels=1), "1-channel"),
    (dict(c_dim=4), "conditional"),
    (dict(z_dim=16), "z_dim=16 differs from w_dim=32"),
    (dict(layer_features=64), "mapping layer 0 is 32->64"),
    (dict(architecture="resnet"), "'resnet' architecture"),
    (dict(resample_filter=[1, 2, 1]), "resample filter"),
    (dict(synthesis_kwargs=dict(channels={"4": 64, "8": 32})), "channel widths"),
])
def test_export_refuses_what_rosinality_cannot_express(tmp_path, changes, match):
    with pytest.raises(ExportError, match=match) as info:
        export_rosinality(_variant(**changes), tmp_path / "g.pt")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "g.pt").exists()


def test_export_accepts_rosinality_widths():
    # 512 channels up to 32 px need no flag; the mapping's learning rate is folded into its weights.
    G = _variant(mapping_kwargs=dict(num_layers=2, lr_multiplier=0.5))
    sd = rosinality_state_dict(G)
    torch.testing.assert_close(sd["style.1.weight"], G.mapping.fc0.weight.detach() * 50)


def _gated_result(G):
    result = tiny_result(G, tuned=True)
    result.G_tuned = locally_tuned(G, result.G_tuned, result.ws)
    return result


def test_cli_convert_tuned_result_and_export_latents(tmp_path):
    G = tiny_generator(seed=11)
    save_native(tmp_path / "model", G, card={"name": "tiny"})
    result = _gated_result(G)
    result.save(tmp_path / "result")
    runner = CliRunner()
    res = runner.invoke(main, ["convert", str(tmp_path / "result"), str(tmp_path / "tuned.pt"), "--to", "rosinality",
                               "--custom-channels"])
    assert res.exit_code == 0, res.output
    assert "BARE tuned weights" in res.output and "noise" in res.output
    ckpt = torch.load(tmp_path / "tuned.pt", map_location="cpu", weights_only=True)
    assert "bare tuned generator" in ckpt["ganinv"]["weights"] and ckpt["ganinv"]["tuned_by"] == "pti"
    G2, _, _ = load_rosinality(tmp_path / "tuned.pt")
    bare = result.G_tuned.tuned_generator
    with torch.no_grad():
        # The file's noise buffers are the result's noise maps: constant noise renders the reconstruction.
        torch.testing.assert_close(G2.synthesis(result.ws, noise_mode="const"),
                                   bare.synthesis(result.ws, noise_mode="const", noise=result.noise), atol=1e-5, rtol=0)
    # Refuses to overwrite, and refuses custom widths without the flag.
    res = runner.invoke(main, ["convert", str(tmp_path / "result"), str(tmp_path / "tuned.pt"), "--to", "rosinality"])
    assert res.exit_code != 0 and "overwrite" in res.output
    res = runner.invoke(main, ["convert", str(tmp_path / "model"), str(tmp_path / "base.pt"), "--to", "rosinality"])
    assert res.exit_code != 0 and "--custom-channels" in res.output and len(res.output.strip().splitlines()) == 1

    # Latents: e4e's latents.pt and NVIDIA's projected_w.npz.
    second = tiny_result(G, tuned=False)
    second.ws = second.ws + 0.5
    second.save(tmp_path / "result2")
    sources = [str(tmp_path / "result"), str(tmp_path / "result2")]
    res = runner.invoke(main, ["export-latent", *sources, "--to", "e4e", "--out", str(tmp_path / "latents.pt"),
                               "--model", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    latents = torch.load(tmp_path / "latents.pt", weights_only=True)
    assert isinstance(latents, torch.Tensor) and tuple(latents.shape) == (2, G.num_ws, G.w_dim)
    torch.testing.assert_close(latents, torch.cat([result.ws, second.ws]).float())
    res = runner.invoke(main, ["export-latent", *sources, "--to", "nvidia", "--out", str(tmp_path / "projected_w.npz"),
                               "--model", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "projected_w.npz", allow_pickle=False) as data:
        assert data.files == ["w"]
        np.testing.assert_array_equal(data["w"], latents.numpy())


def test_cli_convert_refuses_result_without_tuned_generator(tmp_path):
    G = tiny_generator(seed=12)
    tiny_result(G, tuned=False).save(tmp_path / "result")
    res = CliRunner().invoke(main, ["convert", str(tmp_path / "result"), str(tmp_path / "x.pt"), "--to", "rosinality"])
    assert res.exit_code != 0 and "no tuned generator" in res.output


def test_convert_native_path_unchanged(tmp_path):
    """--to native (the default) still writes a model folder, here from an exported rosinality file."""
    G = tiny_generator(seed=13)
    export_rosinality(G, tmp_path / "g.pt", allow_custom_channels=True)
    res = CliRunner().invoke(main, ["convert", str(tmp_path / "g.pt"), str(tmp_path / "native")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "native" / "model.safetensors").is_file()
