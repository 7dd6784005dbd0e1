"""The subject type (ganinv.latent.Latent) and InversionResult: one renders like the other, results save
and load in the documented folder format, older folders still load, and broken folders give one-line
errors; the CLI's combined edits."""
from __future__ import annotations

import copy
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import ganinv.editing as E
from ganinv.cli import main
from ganinv.inversion.base import InversionResult as ReExported
from ganinv.inversion.result import (InversionResult, is_complete_result, read_result_report,
                                  result_model_name)
from ganinv.latent import Latent, as_latent, latent_from_seed
from ganinv.models.checkpoints import save_native
from conftest import tiny_generator, tiny_result


@pytest.fixture(scope="module")
def G():
    return tiny_generator(resolution=16).requires_grad_(False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, G):
    folder = tmp_path_factory.mktemp("result-model") / "tiny"
    save_native(folder, G, None, card={"name": "tiny"})
    return folder


@pytest.fixture(scope="module")
def direction(G):
    return E.find_sefa_directions(G, num=3, num_std_samples=500)


# ---------------------------------------------------------------------- one subject type


def test_an_inversion_result_is_a_latent_and_edits_directly(G, direction):
    result = tiny_result(G, tuned=True)
    assert ReExported is InversionResult  # the older import path still works
    assert isinstance(result, Latent) and result.G is result.generator is result.G_tuned
    assert result.G_base is G and result.label == "pti result" and len(result) == 1
    assert as_latent(result) is result and E.latent_from_result(result) is result  # no wrapping
    # edit renders with the result's tuned generator and noise maps
    ws = direction.apply(result.ws, 2.0, index=0)
    with torch.no_grad():
        expected = result.G_tuned.synthesis(ws, noise_mode="const", noise=result.noise).clamp(-1, 1)
    assert torch.allclose(E.edit(result, direction, 2.0), expected, atol=1e-6)
    assert torch.allclose(result.render(), result.reconstruction, atol=1e-6)
    assert not torch.allclose(result.render(noise=False), result.render())  # noise=False: constant noise
    # style mixing and interpolation take results and seeds alike
    seed = latent_from_seed(G, 3)
    mixed = E.mix_latents(result, seed, "0-2")
    assert type(mixed) is Latent and mixed.G is result.G_tuned and mixed.noise is result.noise
    assert torch.equal(mixed.ws[:, 3:], result.ws[:, 3:]) and torch.equal(mixed.ws[:, :3], seed.ws[:, :3])
    frames = E.interpolate(result, seed, num_frames=3)
    assert torch.allclose(frames[0], result.render()[0], atol=1e-6)
    assert torch.allclose(frames[-1], seed.render()[0], atol=1e-6)


def test_latent_constructor_and_indexing(G):
    tuned = copy.deepcopy(G)
    ws = E.sample_prior_ws(G, 2, seed=1)
    plain = Latent(ws, G)
    assert plain.G is G and plain.G_base is G and plain.G_tuned is None
    with_tuned = Latent(ws=ws, G=tuned, G_base=G)
    assert with_tuned.G is tuned and with_tuned.G_tuned is tuned and with_tuned.G_base is G
    assert Latent(ws, G_base=G, G_tuned=tuned).G is tuned
    second = with_tuned[1]
    assert type(second) is Latent and torch.equal(second.ws, ws[1:2]) and second.G is tuned
    with pytest.raises(ValueError, match="needs the generator"):
        Latent(ws)
    with pytest.raises(ValueError, match=r"ws must have shape \[N, 6, 32\]"):
        Latent(ws[:, :2], G)
    with pytest.raises(IndexError):
        plain[2]
    # a batch result indexes to one target with its own metrics, noise and time share
    batch = tiny_result(G, tuned=False, batch=2)
    one = batch[np.int64(1)]
    assert type(one) is InversionResult and len(one) == 1 and one.metrics == {"psnr": [31.0]}
    assert torch.equal(one.ws, batch.ws[1:]) and torch.equal(one.noise["b8.conv0"], batch.noise["b8.conv0"][1:])
    assert one.seconds == pytest.approx(2.0) and torch.equal(one.target, batch.target[1:])


def test_from_subject_makes_a_result_record_of_a_sample(G, model_dir, tmp_path):
    seed = latent_from_seed(G, 7, truncation_psi=0.7)
    record = InversionResult.from_subject(seed, method="sample", space="w", settings={"seed": 7},
                                          model_name="tiny")
    assert torch.allclose(record.reconstruction, seed.render()) and torch.equal(record.target, record.reconstruction)
    record.save(tmp_path / "sample")
    loaded = InversionResult.load(tmp_path / "sample", model=model_dir)
    assert loaded.method == "sample" and loaded.settings == {"seed": 7}
    assert torch.allclose(loaded.z, seed.z) and torch.allclose(loaded.render(), seed.render(), atol=1e-6)


# ---------------------------------------------------------------------- folder format and loading


def test_save_writes_the_documented_folder_and_loads_back(G, model_dir, tmp_path):
    result = tiny_result(G, tuned=True)
    folder = result.save(tmp_path / "r")[0]
    assert {p.name for p in folder.iterdir()} == {"latent.npz", "noise.safetensors", "generator", "target.png",
                                                  "reconstruction.png", "report.json"}
    with np.load(folder / "latent.npz") as data:
        assert data.files == ["w"] and data["w"].shape == (1, G.num_ws, G.w_dim) and data["w"].dtype == np.float32
    report = read_result_report(folder)
    assert report["format_version"] == 1 and report["model"] == {"name": "tiny", "sha256": None}
    assert report["tuned_generator"] is True and report["history"] == [{"step": 0, "loss": 1.0}]
    assert result_model_name(folder) == "tiny" and is_complete_result(folder)
    loaded = InversionResult.load(folder, model=model_dir)
    assert loaded.G_tuned is not None and loaded.label == "pti result"
    assert torch.allclose(loaded.render(), result.render(), atol=1e-5)
    assert loaded.metrics == {"psnr": [30.0]} and loaded.extras == {"note": "test"} and loaded.threads == 1
    # a zip of the folder: the report can be read without unpacking, and the result loads
    archive = tmp_path / "r.zip"
    archive.write_bytes(result.to_zip())
    assert result_model_name(archive) == "tiny"
    assert torch.allclose(InversionResult.load(archive, model=model_dir).render(), result.render(), atol=1e-5)


def _write_old_folder(folder, G, ws) -> None:
    """A result folder exactly as earlier versions wrote it (optimize, no noise file)."""
    folder.mkdir(parents=True)
    with open(folder / "latent.npz", "wb") as f:
        np.savez(f, w=ws.numpy().astype(np.float32))
    with torch.no_grad():
        image = G.synthesis(ws, noise_mode="const").clamp(-1, 1)
    array = ((image[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(array).save(folder / "target.png")
    Image.fromarray(array).save(folder / "reconstruction.png")
    (folder / "report.json").write_text(json.dumps({
        "format_version": 1, "ganinv_version": "0.1.0", "model": {"name": "tiny", "sha256": None},
        "method": "optimize", "space": "w", "settings": {"num_steps": 5, "seed": 0},
        "metrics": {"psnr": [21.5], "ssim": [0.5], "mse": [0.03]}, "seconds": 1.5, "device": "cpu",
        "threads": 2, "stop_reason": "num_steps", "history": [{"step": 0, "loss": 0.5}],
        "num_ws": G.num_ws, "w_dim": G.w_dim, "tuned_generator": False, "extras": {}}))


def test_folders_written_before_still_load(G, model_dir, tmp_path):
    ws = E.sample_prior_ws(G, 1, seed=5)
    _write_old_folder(tmp_path / "old", G, ws)
    assert is_complete_result(tmp_path / "old")
    loaded = InversionResult.load(tmp_path / "old", model=model_dir)
    assert loaded.method == "optimize" and loaded.space == "w" and loaded.threads == 2
    assert torch.equal(loaded.ws, ws) and loaded.noise is None and loaded.G_tuned is None
    with torch.no_grad():
        assert torch.allclose(loaded.render(), G.synthesis(ws, noise_mode="const").clamp(-1, 1), atol=1e-6)
    # a sparse report (fields missing) loads with defaults
    (tmp_path / "old" / "report.json").write_text(json.dumps({"format_version": 1, "model": {"name": "tiny"}}))
    sparse = InversionResult.load(tmp_path / "old", model=model_dir)
    assert sparse.method == "?" and sparse.metrics == {} and sparse.history == []


def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _corrupt(name):
    """Each entry: (what it breaks, function(folder, G), text the error must contain)."""
    def write(rel, content):
        def apply(folder, G):
            path = folder / rel
            if path.is_dir():
                shutil.rmtree(path)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return apply

    def remove(rel):
        def apply(folder, G):
            path = folder / rel
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return apply

    def report_with(**changes):
        def apply(folder, G):
            report = json.loads((folder / "report.json").read_text())
            report.update(changes)
            (folder / "report.json").write_text(json.dumps(report))
        return apply

    def npz(**arrays):
        def apply(folder, G):
            _npz(folder / "latent.npz", **{k: v(G) if callable(v) else v for k, v in arrays.items()})
        return apply

    def noise_file(tensors):
        def apply(folder, G):
            from safetensors.torch import save_file
            save_file(tensors(G), str(folder / "noise.safetensors"))
        return apply

    cases = {
        "report not JSON": (write("report.json", "{not json"), "invalid JSON"),
        "report a list": (write("report.json", "[1, 2]"), "expected a JSON object"),
        "report binary": (write("report.json", b"\xff\xfe\x00"), "invalid JSON"),
        "format_version text": (report_with(format_version="one"), "format_version must be an integer"),
        "format_version newer": (report_with(format_version=99), "newer than this ganinv"),
        "seconds text": (report_with(seconds="fast"), "'seconds' must be a number"),
        "metrics a list": (report_with(metrics=[1]), "'metrics' must be an object"),
        "threads a bool": (report_with(threads=True), "'threads' must be an integer"),
        "model a string": (report_with(model="tiny"), "'model' must be an object"),
        "no report": (remove("report.json"), "no report.json"),
        "no latent": (remove("latent.npz"), "latent.npz is missing"),
        "latent garbage": (write("latent.npz", b"PK\x03\x04garbage"), "latent.npz: cannot read"),
        "latent text": (write("latent.npz", "hello"), "latent.npz: not an .npz archive"),
        "latent without w": (npz(z=np.zeros((1, 32), np.float32)), "no array 'w'"),
        "w wrong shape": (npz(w=np.zeros((1, 3, 32), np.float32)), "model expects [1, 6, 32]"),
        "w two targets": (npz(w=np.zeros((2, 6, 32), np.float32)), "model expects [1, 6, 32]"),
        "w NaN": (npz(w=np.full((1, 6, 32), np.nan, np.float32)), "NaN or inf"),
        "w strings": (npz(w=np.array([["a"] * 32] * 6)[None]), "dtype"),
        "z wrong shape": (npz(w=np.zeros((1, 6, 32), np.float32), z=np.zeros((1, 5), np.float32)),
                          "array 'z' has shape"),
        "noise garbage": (write("noise.safetensors", b"\x00" * 10), "noise.safetensors: cannot read"),
        "noise unknown layer": (noise_file(lambda G: {"b99.conv0": torch.zeros(1, 1, 4, 4)}),
                                "not a noise layer"),
        "noise wrong size": (noise_file(lambda G: {"b8.conv0": torch.zeros(1, 1, 3, 3)}), "expected [1, 1, 8, 8]"),
        "no target": (remove("target.png"), "target.png is missing"),
        "target garbage": (write("target.png", b"\x89PNG\r\n\x1a\nbroken"), "cannot read the image"),
        "target wrong size": (lambda folder, G: Image.new("RGB", (20, 16)).save(folder / "target.png"),
                              "the model's is 16x16"),
        "generator garbage": (lambda folder, G: (folder / "generator" / "model.safetensors").write_bytes(b"x" * 64),
                              "generator"),
        "generator missing": (remove("generator"), "generator/ is missing"),
    }
    return cases[name]


CORRUPTIONS = [
    "report not JSON", "report a list", "report binary", "format_version text", "format_version newer",
    "seconds text", "metrics a list", "threads a bool", "model a string", "no report", "no latent",
    "latent garbage", "latent text", "latent without w", "w wrong shape", "w two targets", "w NaN", "w strings",
    "z wrong shape", "noise garbage", "noise unknown layer", "noise wrong size", "no target", "target garbage",
    "target wrong size", "generator garbage", "generator missing",
]


@pytest.fixture(scope="module")
def saved_tuned(G, tmp_path_factory):
    return tiny_result(G, tuned=True).save(tmp_path_factory.mktemp("saved") / "tuned")[0]


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_broken_result_folders_give_one_line_errors(G, model_dir, saved_tuned, tmp_path, case):
    folder = tmp_path / "broken"
    shutil.copytree(saved_tuned, folder)
    breaks, message = _corrupt(case)
    breaks(folder, G)
    with pytest.raises(ValueError) as info:
        InversionResult.load(folder, model=model_dir)
    text = str(info.value)
    assert message in text and "\n" not in text and str(folder) in text, text
    assert not is_complete_result(folder) or case not in ("no report", "report not JSON", "generator missing")
    # the CLI says the same in one line, with no traceback
    r = CliRunner().invoke(main, ["edit", str(folder), "--model", str(model_dir), "--direction", "sefa_all",
                                  "--outdir", str(tmp_path / "out")])
    assert r.exit_code == 1 and "Traceback" not in r.output and message in r.output, r.output


def test_broken_zips_give_one_line_errors(G, model_dir, saved_tuned, tmp_path):
    cases = {}
    cases["not a zip"] = (b"just some bytes", "not an inversion result")
    for name, members, message in [
        ("two results", {"a/report.json": "{}", "b/report.json": "{}"}, "found 2"),
        ("no result", {"readme.txt": "hi"}, "found 0"),
        ("unsafe path", {"../evil/report.json": "{}"}, "unsafe path"),
    ]:
        buffer = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(buffer, "w") as zf:
            for member, content in members.items():
                zf.writestr(member, content)
        cases[name] = (buffer.read_bytes(), message)
    # a stored member whose bytes changed after zipping (CRC mismatch)
    crc = tmp_path / "crc.zip"
    with zipfile.ZipFile(crc, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("result/report.json", json.dumps({"format_version": 1, "method": "optimize"}))
    data = crc.read_bytes()
    cases["changed bytes"] = (data.replace(b'"optimize"', b'"optimizE"'), "corrupt or unsupported zip")
    # a result whose latent is broken: the message names the file inside the zip
    broken = tmp_path / "broken-folder"
    shutil.copytree(saved_tuned, broken)
    (broken / "latent.npz").write_bytes(b"PK\x03\x04garbage")
    with zipfile.ZipFile(tmp_path / "inner.zip", "w") as zf:
        for p in sorted(broken.rglob("*")):
            if p.is_file():
                zf.write(p, "result/" + p.relative_to(broken).as_posix())
    cases["broken member"] = ((tmp_path / "inner.zip").read_bytes(), "case-broken_member.zip:result/latent.npz: "
                              "cannot read")
    for name, (content, message) in cases.items():
        path = tmp_path / f"case-{name.replace(' ', '_')}.zip"
        path.write_bytes(content)
        with pytest.raises(ValueError) as info:
            InversionResult.load(path, model=model_dir)
        assert message in str(info.value) and "\n" not in str(info.value) and "ganinv-result-" not in str(info.value)
    assert not (tmp_path.parent / "evil").exists()


def test_result_helpers_on_what_is_not_a_result(tmp_path):
    assert not is_complete_result(tmp_path / "nothing") and not is_complete_result(tmp_path)
    with pytest.raises(ValueError, match="not an inversion result"):
        read_result_report(tmp_path)
    with pytest.raises(ValueError, match="no such result"):
        result_model_name(tmp_path / "nothing")
    (tmp_path / "report.json").write_text(json.dumps({"format_version": 1, "model": {"name": "emoji64"}}))
    assert result_model_name(tmp_path) == "emoji64"
    assert not is_complete_result(tmp_path)  # the report alone is not a complete folder


# ---------------------------------------------------------------------- CLI


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_edit_combines_several_directions(G, model_dir, direction, tmp_path):
    direction_path = direction.save(tmp_path)
    result = tiny_result(G, tuned=True)
    result.save(tmp_path / "result")
    out = tmp_path / "combined"
    r = _invoke(["edit", tmp_path / "result", "--model", model_dir, "--direction", f"{direction_path}:0",
                 "--strength", "2", "--direction", f"{direction_path}:1", "--strength", "-1.5", "--outdir", out])
    assert r.exit_code == 0, r.output
    record = json.loads((out / "edit.json").read_text())
    assert [(e["component"], e["strengths"]) for e in record["edits"]] == [(0, [2.0]), (1, [-1.5])]
    assert len(record["frames"]) == 1
    loaded = InversionResult.load(tmp_path / "result", model=model_dir)
    from ganinv.data.io import to_uint8
    expected = to_uint8(E.edit_many(loaded, [(direction, 0, 2.0), (direction, 1, -1.5)]))[0]
    only_first = to_uint8(E.edit(loaded, direction, 2.0, index=0))[0]
    with Image.open(out / "frames" / "frame_000.png") as im:
        written = np.asarray(im.convert("RGB")).astype(int)
    assert np.abs(written - expected.astype(int)).max() <= 1
    assert np.abs(written - only_first.astype(int)).mean() > 0.5  # the second edit is applied too

    # a sweep of one edit with the other held fixed: frame k = edit_many at the k-th strength
    r = _invoke(["edit", "4", "--model", model_dir, "--direction", f"{direction_path}:0", "--strength", "-2:2:3",
                 "--direction", f"{direction_path}:2", "--strength", "1", "--outdir", tmp_path / "sweep"])
    assert r.exit_code == 0, r.output
    frames = sorted((tmp_path / "sweep" / "frames").glob("frame_*.png"))
    assert len(frames) == 3
    seed = latent_from_seed(G, 4)
    for frame, strength in zip(frames, (-2.0, 0.0, 2.0)):
        with Image.open(frame) as im:
            written = np.asarray(im.convert("RGB")).astype(int)
        expected = to_uint8(E.edit_many(seed, [(direction, 0, strength), (direction, 2, 1.0)]))[0].astype(int)
        assert np.abs(written - expected).max() <= 1

    # the single pair and its default sweep keep working
    r = _invoke(["edit", "4", "--model", model_dir, "--direction", f"{direction_path}:1", "--outdir",
                 tmp_path / "single"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "single" / "edit.json").read_text())["strengths"] == [-3, -2, -1, 0, 1, 2, 3]


@pytest.mark.parametrize("args, message", [
    (["--strength", "1"], "give one --strength per --direction (got 2 --direction and 1 --strength)"),
    ([], "give one --strength per --direction (got 2 --direction and 0 --strength)"),
    (["--strength", "-1:1:3", "--strength", "0:1:4"], "same count"),
    (["--strength", "1", "--strength", "2", "--strength", "3"], "got 2 --direction and 3 --strength"),
])
def test_cli_edit_pairs_mismatch_is_one_clear_error(model_dir, direction, tmp_path, args, message):
    path = direction.save(tmp_path)
    r = CliRunner().invoke(main, ["edit", "4", "--model", str(model_dir), "--direction", f"{path}:0",
                                  "--direction", f"{path}:1", *args, "--outdir", str(tmp_path / "out")])
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], r.output


def test_cli_edit_names_the_model_of_a_result_and_resumes_only_complete_folders(G, model_dir, tmp_path):
    # the model named in report.json is found without --model when it is not embedded: a clear error
    tiny_result(G, tuned=False).save(tmp_path / "r")
    r = CliRunner().invoke(main, ["edit", str(tmp_path / "r"), "--direction", "x", "--outdir", str(tmp_path / "o")])
    assert r.exit_code == 1 and "tiny" in r.output and "Traceback" not in r.output
    (tmp_path / "r" / "report.json").write_text("{broken")
    r = CliRunner().invoke(main, ["edit", str(tmp_path / "r"), "--direction", "x", "--outdir", str(tmp_path / "o")])
    assert r.exit_code == 1 and "invalid JSON" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["edit", str(tmp_path / "missing"), "--direction", "x", "--outdir",
                                  str(tmp_path / "o")])
    assert r.exit_code == 1 and "neither a seed nor an existing result folder" in r.output


def test_cli_invert_skip_existing_redoes_folders_that_are_not_complete(G, model_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 60 * i + 20, np.uint8)).save(photos / f"p{i}.png")
    out = tmp_path / "out"
    common = ["invert", str(photos), "--model", str(model_dir), "--method", "optimize", "--steps", "2",
              "--outdir", str(out), "--quiet"]
    assert CliRunner().invoke(main, common).exit_code == 0
    assert all(is_complete_result(out / f"p{i}") for i in range(3))
    (out / "p0" / "latent.npz").unlink()  # a file lost after the report was written
    (out / "p1" / "report.json").write_text("{truncated")  # a report cut short
    stamp = (out / "p2" / "report.json").stat().st_mtime_ns
    r = CliRunner().invoke(main, common + ["--skip-existing"])
    assert r.exit_code == 0, r.output
    assert is_complete_result(out / "p0") and is_complete_result(out / "p1")
    assert (out / "p2" / "report.json").stat().st_mtime_ns == stamp  # complete: left alone
