"""Hostile and broken input to what ganinv reads back and writes as outputs: direction files, images,
result folders and zips, and the CLI's batch outputs (name collisions, interrupted overwrites).

Every input is generated here. Each case asserts a one-line GanInvError naming the file (or the correct
handling), never a traceback, a MemoryError, a file read from outside its folder, or a silent wrong result.
"""
from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import warnings
import zipfile
import zlib

import click
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import ganinv.editing as E
import ganinv.inversion.result as result_module
from ganinv.cli import main
from ganinv.cli.common import run_main
from ganinv.cli.invert import result_names
from ganinv.data.io import ImageLoadError, load_image, read_image
from ganinv.editing import DirectionError
from ganinv.errors import GanInvError
from ganinv.inversion.result import (InversionResult, ResultError, is_complete_result, read_result_report,
                                     resolve_result_model)
from ganinv.models.checkpoints import save_native
from conftest import tiny_generator, tiny_result


@pytest.fixture(scope="module")
def G():
    return tiny_generator(resolution=16).requires_grad_(False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, G):
    folder = tmp_path_factory.mktemp("hostile-model") / "tiny"
    save_native(folder, G, None, card={"name": "tiny"})
    return folder


@pytest.fixture(scope="module")
def direction(G):
    return E.find_sefa_directions(G, num=3, num_std_samples=200)


def one_line_error(error: BaseException, *needles: str) -> str:
    text = str(error)
    assert isinstance(error, GanInvError), repr(error)
    assert "\n" not in text and text, text
    for needle in needles:
        assert needle in text, text
    return text


def run_cli(args, capsys, monkeypatch) -> tuple[int, str, str]:
    """The `ganinv` entry point as a user runs it (run_main, not click's test runner)."""
    monkeypatch.setattr(sys, "argv", ["ganinv", *[str(a) for a in args]])
    code = run_main(main)
    out, err = capsys.readouterr()
    return code, out, err


# ====================================================================== direction files


def _direction_variant(direction, folder, name, **changes):
    """A saved direction whose JSON is changed (the sha256 dropped unless given), returns the JSON path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = direction.save(folder / f"{name}.json")
    meta = json.loads(path.read_text())
    meta.pop("sha256")
    meta.update(changes)
    path.write_text(json.dumps(meta))
    return path


def test_direction_vectors_file_outside_its_folder_is_refused(direction, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = elsewhere / "secret.safetensors"
    save_file({"vectors": direction.vectors.clone()}, str(outside))  # loadable, so only the path check refuses
    folder = tmp_path / "dirs"
    (folder / "sub").mkdir(parents=True)
    save_file({"vectors": direction.vectors.clone()}, str(folder / "sub" / "nested.safetensors"))
    cases = {
        "absolute": str(outside),
        "dotdot": "../elsewhere/secret.safetensors",
        "subfolder": "sub/nested.safetensors",
        "link": "link.safetensors",
        "not a string": ["x"],
    }
    for name, vectors_file in cases.items():
        path = _direction_variant(direction, folder, name.replace(" ", "_"), vectors_file=vectors_file)
        if name == "link":
            (folder / "link.safetensors").unlink()
            (folder / "link.safetensors").symlink_to(outside)
        with pytest.raises(DirectionError) as info:
            E.load_direction(str(path))
        one_line_error(info.value, str(path), "vectors_file")
    # a link that stays inside the folder is fine
    (folder / "alias.safetensors").symlink_to(folder / "sub" / "nested.safetensors")
    ok = _direction_variant(direction, folder, "alias", vectors_file="alias.safetensors")
    assert torch.equal(E.load_direction(str(ok))[0].vectors, direction.vectors)


def _npy_with_header(path, shape, data: bytes = b"", dtype="<f4"):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        f.write(data)


def test_direction_npy_vectors_load_and_hostile_ones_are_refused(direction, tmp_path):
    np.save(tmp_path / "good.npy", direction.vectors.numpy())
    good = _direction_variant(direction, tmp_path, "good", vectors_file="good.npy")
    assert torch.equal(E.load_direction(str(good))[0].vectors, direction.vectors)

    nan = direction.vectors.numpy().copy()
    nan[1, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    inf = direction.vectors.numpy().copy()
    inf[0, 0] = np.inf
    save_file({"vectors": torch.from_numpy(inf)}, str(tmp_path / "inf.safetensors"))
    _npy_with_header(tmp_path / "huge.npy", (10 ** 12, 32))  # header claims 128 TB, the file holds nothing
    _npy_with_header(tmp_path / "short.npy", (3, 32), b"\x00" * 40)
    np.save(tmp_path / "ints.npy", np.zeros((3, 32), np.int64))
    (tmp_path / "pickle.npy").write_bytes(b"\x93NUMPY\x01\x00" + b"v\x00{'descr': '|O', 'fortran_order': False, "
                                          b"'shape': (3,), }".ljust(118) + b"\n")
    cases = [("nan", "nan.npy", "NaN"), ("inf", "inf.safetensors", "NaN or inf"), ("huge", "huge.npy", "more than"),
             ("short", "short.npy", "more than"), ("ints", "ints.npy", "floats"), ("pickle", "pickle.npy", "")]
    for name, vectors_file, message in cases:
        path = _direction_variant(direction, tmp_path, f"case_{name}", vectors_file=vectors_file)
        with pytest.raises(DirectionError) as info:
            E.load_direction(str(path))
        one_line_error(info.value, message)


def test_direction_json_overflow_and_nesting_are_one_line_errors(direction, model_dir, tmp_path, capsys,
                                                                monkeypatch):
    base = _direction_variant(direction, tmp_path, "base")
    text = base.read_text()
    huge = "1" + "0" * 400
    cases = {
        "version_1e400": text.replace('"format_version": 1', '"format_version": 1e400'),
        "num_ws_1e400": text.replace(f'"num_ws": {direction.num_ws}', '"num_ws": 1e400'),
        "num_components_1e400": text.replace('"num_components": 3', '"num_components": 1e400'),
        "w_dim_huge_int": text.replace(f'"w_dim": {direction.w_dim}', f'"w_dim": {huge}'),
        "std_nested": text.replace('"std": [', '"std": [' + "[" * 50000 + "]" * 50000 + ", "),
        "std_strings": text.replace('"std": [', '"std": ["x", '),
        "deep": "[" * 100000 + "]" * 100000,
        "settings_deep": text.replace('"settings": {', '"settings": {"x": ' + "[" * 100000 + "]" * 100000 + ", "),
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.json"  # its vectors_file still names base.safetensors
        path.write_text(content)
        with pytest.raises(DirectionError) as info:
            E.load_direction(str(path))
        one_line_error(info.value, str(path))
    # the CLI says it in one line too
    code, out, err = run_cli(["edit", "3", "--model", model_dir, "--direction",
                              tmp_path / "version_1e400.json", "--outdir", tmp_path / "o"], capsys, monkeypatch)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "version_1e400.json" in err and not (tmp_path / "o").exists()


# ====================================================================== images


def _float_tiff(path, value):
    array = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    array[5, 7] = value
    Image.fromarray(array, mode="F").save(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_float_tiff_with_non_finite_values_is_refused(tmp_path, value):
    path = tmp_path / "float.tif"
    _float_tiff(path, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a black image with a warning
        with pytest.raises(ImageLoadError) as info:
            load_image(path, 16, 3)
    one_line_error(info.value, str(path), "NaN or infinite")
    _float_tiff(path, 0.5)  # finite: loads, scaled, not black
    image = load_image(path, 16, 1, fit="stretch")
    assert image.max() > 0.5 and image.min() < -0.5


def _open_fds(path) -> int:
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:
            pass
    return count


def test_image_files_are_closed_whether_loading_fails_or_not(tmp_path):
    full = tmp_path / "full.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8)).save(full)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full.read_bytes()[:600])
    nan = tmp_path / "nan.tif"
    _float_tiff(nan, np.nan)
    frames = [Image.new("RGB", (16, 16), (40 * i, 0, 0)) for i in range(3)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    cases = [(truncated, {}, True), (full, {"max_pixels": 100}, True), (nan, {}, True), (gif, {}, False),
             (full, {}, False)]
    for path, kwargs, fails in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                image = read_image(path, 3, **kwargs)
            except ImageLoadError:
                image = None
            assert (image is None) == fails, path
            assert _open_fds(path) == 0, f"{path} left open"
            if image is not None:
                assert image.size == (64, 64) or image.size == (16, 16)
                assert np.asarray(image).shape[2] == 3  # still usable after the file is closed
            del image
            gc.collect()
        unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert not unclosed, unclosed
    # a caller's own stream is left open for the caller, whether loading fails or not
    for data, fails in [(full.read_bytes(), False), (truncated.read_bytes(), True)]:
        stream = io.BytesIO(data)
        try:
            read_image(stream, 3)
        except ImageLoadError:
            assert fails
        assert not stream.closed


# ====================================================================== result folders


@pytest.fixture(scope="module")
def saved(G, tmp_path_factory):
    return tiny_result(G, tuned=False).save(tmp_path_factory.mktemp("hostile-saved") / "plain")[0]


@pytest.fixture(scope="module")
def saved_tuned(G, tmp_path_factory):
    return tiny_result(G, tuned=True).save(tmp_path_factory.mktemp("hostile-saved") / "tuned")[0]


def _good_w(folder):
    with np.load(folder / "latent.npz") as data:
        return data["w"]


def _npz_with_members(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)


def _npy_bytes(shape, data: bytes = b"", dtype="<f4") -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
    return f.getvalue() + data


def _report_text(folder, old, new):
    path = folder / "report.json"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _hostile_folder_cases():
    huge = "1" + "0" * 400

    def latent_nan(folder, G):
        w = _good_w(folder)
        w[0, 2, 5] = np.nan
        np.savez(folder / "latent.npz", w=w)

    def z_inf(folder, G):
        np.savez(folder / "latent.npz", w=_good_w(folder), z=np.array([[np.inf] + [0.0] * 31], np.float32))

    def npz_rows(key):
        def apply(folder, G):
            members = {"w.npy": _npy_bytes((1, 6, 32), _good_w(folder).tobytes())}
            members[f"{key}.npy"] = _npy_bytes((10 ** 12, 6, 32) if key == "w" else (10 ** 12, 32))
            _npz_with_members(folder / "latent.npz", members)
        return apply

    def npz_lying_header(folder, G):  # right shape in the header, too few bytes behind it
        _npz_with_members(folder / "latent.npz", {"w.npy": _npy_bytes((1, 6, 32), b"\x00" * 12)})

    def noise_nan(folder, G):
        from safetensors.torch import load_file
        noise = load_file(str(folder / "noise.safetensors"))
        noise["b8.conv0"][0, 0, 3, 3] = float("nan")
        save_file(noise, str(folder / "noise.safetensors"))

    def noise_huge(folder, G):
        with open(folder / "noise.safetensors", "wb") as f:
            f.truncate(64 * 2 ** 20)  # sparse: 64 MB of nothing, read neither whole nor at all

    def target_truncated(folder, G):
        data = (folder / "target.png").read_bytes()
        (folder / "target.png").write_bytes(data[:len(data) // 2])

    def target_header_only(folder, G):
        ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
        chunk = b"IHDR" + ihdr
        (folder / "target.png").write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk
                                            + struct.pack(">I", zlib.crc32(chunk)))

    def link(name, make_outside):
        def apply(folder, G):
            outside = folder.parent / f"outside-{name}"
            make_outside(folder, outside)
            path = folder / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            path.symlink_to(outside)
        return apply

    return {
        "report deep": (lambda f, G: (f / "report.json").write_text("[" * 100000 + "]" * 100000), "nested too deeply"),
        "report object deep": (lambda f, G: _report_text(f, '"settings": {', '"settings": {"x": ' + "[" * 100000
                                                         + "]" * 100000 + ", "), "nested too deeply"),
        "format_version 1e400": (lambda f, G: _report_text(f, '"format_version": 1', '"format_version": 1e400'),
                                 "format_version must be an integer"),
        "format_version huge int": (lambda f, G: _report_text(f, '"format_version": 1', f'"format_version": {huge}'),
                                    "newer than this ganinv"),
        "seconds huge int": (lambda f, G: _report_text(f, '"seconds": 2.0', f'"seconds": {huge}'), "'seconds'"),
        "threads huge": (lambda f, G: _report_text(f, '"threads": 1', f'"threads": {huge}'), "'threads'"),
        "report a list": (lambda f, G: (f / "report.json").write_text("[]"), "expected a JSON object"),
        "report a number": (lambda f, G: (f / "report.json").write_text("1e400"), "expected a JSON object"),
        "one NaN in w": (latent_nan, "latent.npz: array 'w' contains NaN"),
        "inf in z": (z_inf, "latent.npz: array 'z' contains NaN"),
        "npz header 10**12 rows": (npz_rows("w"), "latent.npz: latent w has shape (1000000000000, 6, 32)"),
        "npz z header 10**12 rows": (npz_rows("z"), "latent.npz: array 'z' has shape (1000000000000, 32)"),
        "npz header lies": (npz_lying_header, "latent.npz: cannot read array 'w'"),
        "noise one NaN": (noise_nan, "noise map 'b8.conv0' must be finite"),
        "noise huge": (noise_huge, "too large"),
        "noise a fifo": (lambda f, G: ((f / "noise.safetensors").unlink(), os.mkfifo(f / "noise.safetensors")),
                         "not a regular file"),  # reading it would wait forever
        "target truncated": (target_truncated, "target.png: cannot read the image"),
        "target 60000 px header": (target_header_only, "target.png"),
        "latent links outside": (link("latent.npz", lambda f, o: shutil.copy(f / "latent.npz", o)),
                                 "leads outside the result folder"),
        "noise links outside": (link("noise.safetensors", lambda f, o: shutil.copy(f / "noise.safetensors", o)),
                                "leads outside the result folder"),
        "report links outside": (link("report.json", lambda f, o: shutil.copy(f / "report.json", o)),
                                  "leads outside the result folder"),
    }


HOSTILE_FOLDERS = list(_hostile_folder_cases())


@pytest.mark.parametrize("case", HOSTILE_FOLDERS)
def test_hostile_result_folders_give_one_line_errors(G, model_dir, saved, tmp_path, case, capsys, monkeypatch):
    folder = tmp_path / "case"
    shutil.copytree(saved, folder)
    breaks, message = _hostile_folder_cases()[case]
    breaks(folder, G)
    with pytest.raises(ResultError) as info:
        InversionResult.load(folder, model=model_dir)
    one_line_error(info.value, message)
    code, out, err = run_cli(["edit", folder, "--model", model_dir, "--direction", "x", "--outdir",
                              tmp_path / "out"], capsys, monkeypatch)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_tuned_generator_linked_from_outside_is_refused(G, model_dir, saved_tuned, tmp_path):
    folder = tmp_path / "case"
    shutil.copytree(saved_tuned, folder)
    shutil.move(folder / "generator", tmp_path / "elsewhere")
    (folder / "generator").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ResultError) as info:
        InversionResult.load(folder, model=model_dir)
    one_line_error(info.value, "leads outside the result folder")


# ---------------------------------------------------------------------- the model a result names


def _naming(saved, folder, name):
    shutil.copytree(saved, folder)
    report = json.loads((folder / "report.json").read_text())
    report["model"] = {"name": name, "sha256": None}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_a_result_cannot_make_ganinv_load_a_model_outside_it(G, model_dir, saved, tmp_path, capsys, monkeypatch):
    loaded = []
    real_load_model = result_module.load_model
    monkeypatch.setattr(result_module, "load_model", lambda m, *a, **k: loaded.append(m) or real_load_model(m, *a, **k))
    for name, value in [("absolute", str(model_dir)), ("relative", os.path.relpath(model_dir, tmp_path / "x")),
                        ("dotdot", "../../" + model_dir.name), ("home", "~/model")]:
        folder = _naming(saved, tmp_path / name, value)
        with pytest.raises(ResultError) as info:
            InversionResult.load(folder)
        one_line_error(info.value, str(folder), "--model")
        code, out, err = run_cli(["edit", folder, "--direction", "sefa", "--outdir", tmp_path / f"out-{name}"],
                                 capsys, monkeypatch)
        assert code == 1 and "--model" in err and len(err.strip().splitlines()) == 1, err
    assert loaded == []  # nothing was even tried
    # the model the user names is loaded as before
    assert InversionResult.load(tmp_path / "absolute", model=model_dir).G_base is not None
    # an embedded name is taken as is; a model folder inside the result is found there
    assert resolve_result_model(_naming(saved, tmp_path / "embedded", "emoji64")) == "emoji64"
    inside = _naming(saved, tmp_path / "inside", "base")
    shutil.copytree(model_dir, inside / "base")
    result = InversionResult.load(inside)
    assert torch.allclose(result.render(), tiny_result(G, tuned=False).render(), atol=1e-5)
    (inside / "base").rename(inside / "gone")
    (inside / "base").symlink_to(model_dir)  # a link out of the folder does not count as inside
    with pytest.raises(ResultError, match="--model"):
        InversionResult.load(inside)


# ---------------------------------------------------------------------- zips


def _zip_of(folder, path, extra: dict | None = None, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, "result/" + p.relative_to(folder).as_posix())
        for name, content in (extra or {}).items():
            if isinstance(content, zipfile.ZipInfo):
                zf.writestr(content, b"/etc/passwd")
            else:
                zf.writestr(name, content)
    return path


def test_hostile_zips_are_refused_before_anything_large_is_written(model_dir, saved, tmp_path, monkeypatch):
    link = zipfile.ZipInfo("result/link")
    link.external_attr = (0o120777 << 16)
    good = _zip_of(saved, tmp_path / "good.zip")
    assert InversionResult.load(good, model=model_dir) is not None
    cases = {
        "link member": (_zip_of(saved, tmp_path / "link.zip", {"result/x": link}), "is a link"),
        "absolute member": (_zip_of(saved, tmp_path / "abs.zip", {"/tmp/ganinv-abs-evil": b"x"}), "unsafe path"),
        "dotdot member": (_zip_of(saved, tmp_path / "dotdot.zip", {"result/../../evil": b"x"}), "unsafe path"),
        # 64 MB of zeros in 64 KB: a bomb, refused by its compression ratio without unpacking it
        "bomb": (_zip_of(saved, tmp_path / "bomb.zip", {"result/pad.bin": b"\x00" * (64 * 2 ** 20)}),
                 "compression ratio"),
    }
    for name, (path, message) in cases.items():
        with pytest.raises(ResultError) as info:
            InversionResult.load(path, model=model_dir)
        one_line_error(info.value, str(path), message)
    assert not os.path.exists("/tmp/ganinv-abs-evil") and not (tmp_path.parent / "evil").exists()
    # the caps on count, per-file and total size
    sizes = [p.stat().st_size for p in saved.rglob("*") if p.is_file()]
    for attribute, value, message in [("MAX_ZIP_MEMBERS", len(sizes) - 1, "files in the zip"),
                                      ("MAX_ZIP_MEMBER_BYTES", max(sizes) - 1, "per file"),
                                      ("MAX_ZIP_BYTES", sum(sizes) - 1, f"at most {sum(sizes) - 1:,}")]:
        with monkeypatch.context() as patch:
            patch.setattr(result_module, attribute, value)
            with pytest.raises(ResultError) as info:
                InversionResult.load(good, model=model_dir)
            one_line_error(info.value, message)


def test_zip_extraction_counts_the_bytes_it_writes(model_dir, saved, tmp_path, monkeypatch):
    """A member that unpacks to more than its header declares is stopped while it is written."""
    good = _zip_of(saved, tmp_path / "good.zip")
    real_open = zipfile.ZipFile.open

    def lying_open(self, name, *args, **kwargs):
        handle = real_open(self, name, *args, **kwargs)
        info = name if isinstance(name, zipfile.ZipInfo) else self.getinfo(name)
        if info.filename.endswith("latent.npz"):
            info.file_size = 10  # the header now says 10 bytes; the data is larger
        return handle

    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    with pytest.raises(ResultError) as info:
        InversionResult.load(good, model=model_dir)
    one_line_error(info.value, "more bytes than declared")


# ====================================================================== CLI outputs: collisions


def test_result_names_are_unique_and_deterministic(tmp_path):
    from pathlib import Path
    paths = [Path(p) for p in ["x/a-2.png", "x/a.jpg", "x/a.png", "y/a.png", "x/a-png.gif", "x/B.png", "x/b.jpg",
                               "x/solo.webp"]]
    names = result_names(paths)
    assert names == ["a-2", "a-jpg", "a-png-2", "a-png-3", "a-png", "B-png", "b-jpg", "solo"]
    assert len({n.casefold() for n in names}) == len(names) and result_names(paths) == names
    assert result_names([Path("a.png")]) == ["a"]


def _photos(folder, names, offset=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        array = np.full((16, 16, 3), 40 * i + 20 + offset, np.uint8)
        array[::4, ::4] = 255 - 10 * i
        Image.fromarray(array).save(folder / name)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _results(outdir):
    return sorted(p.name for p in outdir.iterdir())


def test_colliding_stems_get_one_result_each_and_skip_existing_checks_the_input(model_dir, tmp_path, capsys,
                                                                                 monkeypatch):
    photos = tmp_path / "photos"
    _photos(photos, ["a-2.png", "a.jpg", "a.png"])
    out = tmp_path / "out"
    common = ["invert", photos, "--model", model_dir, "--steps", "1", "--outdir", out, "--quiet"]
    code, _, err = run_cli(common, capsys, monkeypatch)
    assert code == 0, err
    expected = {"a-2": "a-2.png", "a-jpg": "a.jpg", "a-png": "a.png"}
    assert _results(out) == sorted(expected)
    for name, source in expected.items():
        report = read_result_report(out / name)
        assert report["input"]["sha256"] == _sha(photos / source) and report["input"]["path"].endswith(source)
        assert is_complete_result(out / name)
    stamps = {name: (out / name / "report.json").stat().st_mtime_ns for name in expected}

    # --skip-existing: each is done, for this very input
    code, out_text, err = run_cli(common[:-1] + ["--skip-existing"], capsys, monkeypatch)
    assert code == 0 and out_text.count("already done") == 3, (out_text, err)
    assert all((out / n / "report.json").stat().st_mtime_ns == stamps[n] for n in expected)

    # --overwrite: still exactly one result per input
    code, _, err = run_cli(common + ["--overwrite"], capsys, monkeypatch)
    assert code == 0 and _results(out) == sorted(expected), err
    assert all(read_result_report(out / n)["input"]["sha256"] == _sha(photos / s) for n, s in expected.items())

    # the input changed since: redone, not skipped
    _photos(photos, ["a.png"], offset=90)
    code, out_text, err = run_cli(common[:-1] + ["--skip-existing"], capsys, monkeypatch)
    assert code == 0 and out_text.count("already done") == 2, (out_text, err)
    assert read_result_report(out / "a-png")["input"]["sha256"] == _sha(photos / "a.png")

    # a folder holding another input's result is never taken for this one, nor replaced
    shutil.rmtree(out / "a-png")
    shutil.copytree(out / "a-jpg", out / "a-png")
    before = (out / "a-png" / "latent.npz").read_bytes()
    code, out_text, err = run_cli(common[:-1] + ["--skip-existing"], capsys, monkeypatch)
    assert code == 1 and "another input" in err and "a.jpg" in err, (out_text, err)
    assert (out / "a-png" / "latent.npz").read_bytes() == before


def test_inputs_that_are_not_files_are_skipped_without_reading_them(model_dir, tmp_path, capsys, monkeypatch):
    _photos(tmp_path, ["good.png"])
    os.mkfifo(tmp_path / "pipe.png")  # hashing or decoding it would wait forever
    code, _, err = run_cli(["invert", tmp_path / "pipe.png", tmp_path / "missing.png", tmp_path / "good.png",
                            "--model", model_dir, "--steps", "1", "--outdir", tmp_path / "out", "--quiet"],
                           capsys, monkeypatch)
    assert code == 1 and "pipe.png: not a file" in err and "missing.png: no such file" in err, err
    assert _results(tmp_path / "out") == ["good"]


def test_overwrite_replaces_the_whole_folder_pti_then_encoder_free_method(model_dir, tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    _photos(photos, ["p.png"])
    out = tmp_path / "out"
    code, _, err = run_cli(["invert", photos / "p.png", "--model", model_dir, "--method", "pti", "--set",
                            "pivot_steps=1", "--steps", "1", "--outdir", out, "--quiet"], capsys, monkeypatch)
    assert code == 0, err
    assert (out / "p" / "generator").is_dir()
    code, _, err = run_cli(["invert", photos / "p.png", "--model", model_dir, "--method", "optimize", "--steps", "1",
                            "--set", "optimize_noise=false", "--outdir", out, "--overwrite", "--quiet"],
                           capsys, monkeypatch)
    assert code == 0, err
    assert sorted(p.name for p in (out / "p").iterdir()) == ["latent.npz", "reconstruction.png", "report.json",
                                                             "target.png"]
    assert _results(out) == ["p"]  # nothing hidden left beside it
    loaded = InversionResult.load(out / "p", model=model_dir)
    assert loaded.G_tuned is None and loaded.noise is None and loaded.method == "optimize"
    with Image.open(out / "p" / "reconstruction.png") as im:
        written = np.asarray(im.convert("RGB")).astype(int)
    rendered = ((loaded.render()[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(int)
    assert np.abs(written - rendered).max() <= 1  # the re-render is the saved reconstruction


def test_edit_overwrite_leaves_no_frames_of_the_earlier_run(model_dir, direction, tmp_path, capsys, monkeypatch):
    path = direction.save(tmp_path / "dirs")
    out = tmp_path / "edit"
    common = ["edit", "3", "--model", model_dir, "--direction", f"{path}:0", "--outdir", out, "--quiet"]
    assert run_cli(common + ["--strength", "-3:3:7"], capsys, monkeypatch)[0] == 0
    assert len(list((out / "frames").iterdir())) == 7
    code, _, err = run_cli(common + ["--strength", "1", "--overwrite"], capsys, monkeypatch)
    assert code == 0, err
    assert [p.name for p in (out / "frames").iterdir()] == ["frame_000.png"]
    assert json.loads((out / "edit.json").read_text())["frames"] == ["frames/frame_000.png"]


# ====================================================================== CLI outputs: interruptions


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_interrupted_overwrite_keeps_the_old_result_whole(G, model_dir, tmp_path, monkeypatch):
    folder = tiny_result(G, tuned=True).save(tmp_path / "r")[0]
    before = _snapshot(folder)
    new = tiny_result(G, tuned=False)
    new.ws = new.ws + 0.5
    calls = []

    def failing_save_image(image, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the reconstruction: latent.npz and target.png are already written
            raise KeyboardInterrupt
        return real_save_image(image, path, *args, **kwargs)

    real_save_image = result_module.save_image
    monkeypatch.setattr(result_module, "save_image", failing_save_image)
    with pytest.raises(KeyboardInterrupt):
        new.save(folder)
    monkeypatch.undo()
    assert _snapshot(folder) == before and is_complete_result(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # the half-built folder is gone
    # completed, it is exactly the new result
    new.save(folder)
    loaded = InversionResult.load(folder, model=model_dir)
    assert loaded.G_tuned is None and torch.allclose(loaded.ws, new.ws)
    assert not (folder / "generator").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_killed_between_the_renames_is_absent_not_complete_and_redone(G, model_dir, tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    _photos(photos, ["p.png", "q.png"])
    out = tmp_path / "out"
    common = ["invert", photos, "--model", model_dir, "--steps", "1", "--outdir", out, "--quiet"]
    assert run_cli(common, capsys, monkeypatch)[0] == 0
    real_rename = os.rename
    renames = []

    def rename(src, dst):  # the old folder goes aside, then "the process dies": nothing else is renamed
        renames.append((src, dst))
        if len(renames) > 1:
            raise KeyboardInterrupt
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        tiny_result(G, tuned=False).save(out / "p")
    monkeypatch.setattr(os, "rename", real_rename)
    assert not (out / "p").exists() and not is_complete_result(out / "p")
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert len(hidden) == 1 and hidden[0].startswith(".p.old-")  # the old result, set aside, not a result
    code, out_text, err = run_cli(common[:-1] + ["--skip-existing"], capsys, monkeypatch)
    assert code == 0 and out_text.count("already done") == 1, (out_text, err)
    assert _results(out) == ["p", "q"]  # redone, and the set-aside folder cleaned up
    assert read_result_report(out / "p")["input"]["sha256"] == _sha(photos / "p.png")


def test_save_refuses_to_replace_a_folder_that_is_not_a_result(G, tmp_path, capsys, monkeypatch, model_dir):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ResultError) as info:
        tiny_result(G, tuned=False).save(folder)
    one_line_error(info.value, str(folder), "notes.txt")
    assert (folder / "notes.txt").read_text() == "keep me" and _results(tmp_path) == ["mine"]
    _photos(tmp_path / "photos", ["mine.png"])
    code, _, err = run_cli(["invert", tmp_path / "photos", "--model", model_dir, "--steps", "1", "--outdir",
                            tmp_path, "--overwrite", "--quiet"], capsys, monkeypatch)
    assert code == 1 and "notes.txt" in err and (folder / "notes.txt").exists(), err


# ====================================================================== the CLI's last line of defence


def test_run_main_prints_one_line_for_every_error(capsys, monkeypatch):
    @click.group()
    def group():
        pass

    @group.command()
    @click.argument("kind")
    def boom(kind):
        if kind == "ganinv":
            raise GanInvError("first line\nsecond line")
        if kind == "oserror":
            raise PermissionError(13, "Permission denied", "/some/file")
        raise RecursionError("maximum recursion depth exceeded")

    for kind, needle in [("ganinv", "first line second line"), ("oserror", "/some/file: Permission denied"),
                         ("bug", "please report")]:
        monkeypatch.setattr(sys, "argv", ["ganinv", "boom", kind])
        code = run_main(group)
        err = capsys.readouterr().err
        assert code == 1 and len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err, err
