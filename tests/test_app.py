"""The web UI's logic without a browser: uploads, directions, sessions, streamed inversion, exports, and
that the Gradio app builds (the end-to-end browser test is tests/test_app_browser.py)."""
import io
import json
import os
import socket
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ganinv.app.session import (MAX_SLIDERS, STRENGTH_LIMIT, AppError, DirectionLibrary, InversionProgress,
                                SessionHandle, SessionStore, Workspace, available_methods, default_method,
                                display_image, inversion_settings, read_upload, result_from_sample, sample_seeds, sample_subject,
                                step_controls, stream_inversion)
from ganinv.editing import Direction
from ganinv.inversion import METHODS, InversionResult, invert
from ganinv.models.checkpoints import save_native
from ganinv.models.registry import load_model
from conftest import tiny_discriminator, tiny_generator


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app") / "tiny16"
    G = tiny_generator(resolution=16)
    save_native(folder, G, tiny_discriminator(resolution=16), card={"name": "tiny16"})
    rng = np.random.RandomState(0)
    np.savez(folder / "heldout.npz", images=rng.randint(0, 255, (3, 16, 16, 3)).astype(np.uint8),
             labels_json=json.dumps(["a", "b", "c"]))
    vector = torch.randn(1, G.w_dim, generator=torch.Generator().manual_seed(1))
    Direction(name="interfacegan_bright", method="interfacegan", space="w", vectors=vector / vector.norm(),
              layers=list(range(G.num_ws)), std=torch.tensor([1.0]), num_ws=G.num_ws, w_dim=G.w_dim,
              settings={"attribute": "bright"}).save(folder / "directions")
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


@pytest.fixture(scope="module")
def library(model):
    return DirectionLibrary(model, num_std_samples=500, ganspace_samples=500)


@pytest.fixture(scope="module")
def inverted(model):
    target = _target(model)
    return invert(model, target, "optimize", num_steps=8)


def _target(model, seed=3):
    with torch.no_grad():
        w = model.G.mapping(torch.randn(1, model.G.z_dim, generator=torch.Generator().manual_seed(seed)), None,
                            truncation_psi=0.7)
        return model.G.synthesis(w).clamp(-1, 1)


def _png_bytes(size=(40, 24), mode="RGB"):
    array = (np.arange(size[0] * size[1] * 3).reshape(size[1], size[0], 3) % 251).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path, monkeypatch):
    """Temporary folders made during a test (InversionResult.load of a zip extracts into one) go under
    its tmp_path, which pytest removes."""
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture
def workspace():
    ws = Workspace()
    yield ws
    ws.cleanup()


# ---------------------------------------------------------------------- workspace and uploads


def test_workspace_is_one_temporary_folder_removed_on_cleanup():
    ws = Workspace()
    assert ws.root.is_dir() and ws.root.name.startswith("ganinv-serve-")
    assert ws.cache_dir.parent == ws.root
    assert ws.session_dir("../../etc/passwd").parent == ws.root / "sessions"  # no path tricks
    ws.cleanup()
    assert not ws.root.exists()


def test_upload_is_fitted_to_the_model(model, tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(_png_bytes((40, 24)))
    crop = read_upload(path, model, fit="crop")
    pad = read_upload(path, model, fit="pad")
    assert crop.shape == pad.shape == (1, 3, 16, 16)
    assert crop.min() >= -1 and crop.max() <= 1
    assert not torch.equal(crop, pad)
    assert torch.allclose(pad[0, :, 0, :], torch.ones(3, 16))  # letterbox bands are white
    gray = tmp_path / "gray.png"
    gray.write_bytes(_png_bytes((20, 20), mode="L"))
    assert read_upload(gray, model).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "Could not use 'bad.png' as an image"),
    (b"hello, I am a text file\n", "Could not use 'bad.png' as an image"),
    (b"", "Could not use 'bad.png' as an image"),
])
def test_bad_uploads_give_a_friendly_message(model, tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(AppError, match=message) as info:
        read_upload(path, model)
    assert "Please upload a PNG" in str(info.value)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(_png_bytes((64, 64))[:200])
    with pytest.raises(AppError, match="Could not use"):
        read_upload(truncated, model)


def test_upload_size_limit(model, tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png_bytes((40, 40)))
    with pytest.raises(AppError, match="the limit is"):
        read_upload(path, model, max_bytes=100)
    with pytest.raises(AppError, match="unknown fit"):
        read_upload(path, model, fit="stretch")


def test_display_image_upscales_pixel_exact():
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    pil = display_image(image, 256)
    assert pil.size == (256, 256)
    small = pil.resize((16, 16), Image.NEAREST)
    assert np.array_equal(np.asarray(small), np.asarray(display_image(image, 16)))


# ---------------------------------------------------------------------- methods and directions


@pytest.mark.parametrize("method", list(METHODS))
def test_step_controls_map_to_settings_the_method_accepts(method):
    main, first = step_controls(method)
    settings = inversion_settings(method, 7, 5)
    assert set(settings) <= set(METHODS[method].defaults)
    if main is not None:
        assert settings["num_steps"] == 7
    if first is not None:
        assert 5 in [settings.get(k) for k in ("pivot_steps", "h_steps")]
    assert inversion_settings(method, 10 ** 9).get("num_steps", 0) <= 3000
    with pytest.raises(AppError, match="unknown method"):
        inversion_settings("nope")


def test_methods_offered_depend_on_the_model(model):
    methods = available_methods(model)
    assert {"optimize", "pti", "clone"} <= set(methods)
    assert "encoder" not in methods  # the tiny model has no encoder
    assert default_method(model) == "optimize"


def test_direction_library_presets_families_and_cache(model, library):
    assert library.presets()[0] == "all" and "coarse" in library.presets()
    assert set(library.families()) == {"sefa", "ganspace", "shipped"}
    sefa = library.sliders("sefa", "all", 3)
    assert [s.index for s in sefa] == [0, 1, 2]
    assert "eigenvalue" in sefa[0].label
    eigenvalues = sefa[0].direction.scores
    assert eigenvalues == sorted(eigenvalues, reverse=True)
    coarse = library.sliders("sefa", "coarse", 2)
    assert coarse[0].direction.layers == library.groups["coarse"]
    assert library.sliders("sefa", "all", 99)[-1].index == library.max_count() - 1 <= MAX_SLIDERS - 1
    assert library.sliders("sefa", "all", 2)[0].direction is sefa[0].direction  # found once, cached
    ganspace = library.sliders("ganspace", "fine", 2)
    assert ganspace[0].direction.method == "ganspace" and ganspace[0].direction.layers == library.groups["fine"]
    shipped = library.sliders("shipped")
    assert [s.label for s in shipped] == ["bright"]
    with pytest.raises(AppError, match="unknown layer preset"):
        library.sliders("sefa", "middle-ish", 2)


def test_direction_library_takes_any_layer_range(library):
    """As the CLI's --layers: '0-1', '2-5', '6-', '0,2,4-5', 'all'; a range equal to a preset is that preset."""
    num_ws = library.model.G.num_ws
    picked = library.sliders("sefa", "0,2", 2)
    assert picked[0].direction.layers == [0, 2] and picked[0].label.startswith("SeFa 0,2 #0")
    assert library.layer_choice(" 4- ") == (f"4-{num_ws - 1}", list(range(4, num_ws)))
    assert library.layer_choice("0,2,4-5") == ("0,2,4-5", [0, 2, 4, 5])
    coarse = library.groups["coarse"]
    assert library.layer_choice(f"{coarse[0]}-{coarse[-1]}") == ("coarse", coarse)
    assert library.sliders("sefa", f"0-{coarse[-1]}", 2)[0].direction is library.direction("sefa", "coarse")
    assert library.layer_choice("all") == ("all", list(range(num_ws)))
    assert library.sliders("ganspace", "1-2", 2)[0].direction.layers == [1, 2]
    for text, message in [("7-x", "bad layer range '7-x'"), (f"{num_ws}-", "select no ws index"),
                          ("0,99", "out of range"), ("", "no layers given"), ("5-2", "select no ws index"),
                          ("fine-ish", "unknown layer preset")]:
        with pytest.raises(AppError, match=message) as info:
            library.sliders("sefa", text, 2)
        assert "0-1, 2-5, 6-" in str(info.value) and "\n" not in str(info.value)


def test_typed_layer_ranges_are_cached_within_a_bound(model, monkeypatch):
    import ganinv.app.session as session_module
    monkeypatch.setattr(session_module, "MAX_CACHED_RANGES", 2)
    fresh = DirectionLibrary(model, num_std_samples=200)
    first = fresh.direction("sefa", "0,2")
    assert fresh.direction("sefa", "0,2") is first  # cached
    all_layers = fresh.direction("sefa", "all")
    fresh.direction("sefa", "1,3")
    fresh.direction("sefa", "0,2")  # recently used again: kept
    fresh.direction("sefa", "2,4")
    assert fresh.direction("sefa", "0,2") is first and fresh.direction("sefa", "all") is all_layers
    assert ("sefa", "1,3") not in fresh._cache  # the least recently used typed range was dropped


def test_shipped_sefa_directions_are_used_when_present(model_dir, tmp_path):
    import shutil
    folder = tmp_path / "with_sefa"
    shutil.copytree(model_dir, folder)
    bundle = load_model(folder)
    shipped = DirectionLibrary(bundle, num_std_samples=200).direction("sefa", "all")
    shipped.name = "sefa_all"
    shipped.settings["marker"] = "shipped"
    shipped.save(folder / "directions")
    bundle = load_model(folder)
    assert DirectionLibrary(bundle, num_std_samples=200).direction("sefa", "all").settings.get("marker") == "shipped"


def test_shipped_trained_finders_get_their_own_families(model_dir, tmp_path):
    """Voynov-Babenko and steerability directions shipped beside a model are offered as families."""
    import shutil
    from ganinv.editing import find_directions
    folder = tmp_path / "with_trained"
    shutil.copytree(model_dir, folder)
    bundle = load_model(folder)
    find_directions("voynov", bundle, num=2, steps=2, batch_size=4, num_std_samples=100).save(folder / "directions")
    find_directions("steerability", bundle, transformations="zoom,brightness", steps=2, batch_size=4,
                    num_std_samples=100).save(folder / "directions")
    library = DirectionLibrary(load_model(folder), num_std_samples=200, ganspace_samples=300)
    assert {"voynov", "steerability"} <= set(library.families())
    walks = library.sliders("steerability", count=5)
    assert [s.label for s in walks] == ["Steerability walks zoom", "Steerability walks brightness"]
    voynov = library.sliders("voynov", count=1)
    assert [s.index for s in voynov] == [0]
    assert voynov[0].label == f"Voynov-Babenko {voynov[0].direction.labels[0].removeprefix('voynov ')}"
    assert "voynov" not in voynov[0].label
    assert all(s.direction.method != "voynov" for s in library.sliders("shipped"))
    bare = DirectionLibrary(load_model(model_dir), num_std_samples=200, ganspace_samples=300)
    assert "voynov" not in bare.families()
    with pytest.raises(AppError, match="ships no Voynov-Babenko"):
        bare.sliders("voynov")


# ---------------------------------------------------------------------- sessions, edits, exports


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_sessions_are_isolated_and_only_idle_ones_are_evicted(model, library, workspace):
    clock = FakeClock()
    store = SessionStore(workspace, max_sessions=2, min_idle_seconds=60, clock=clock)
    a, b = store.create(client="1.1.1.1"), store.create(client="2.2.2.2")
    assert store.get(a.session_id) is a and a is not b
    a.set_target(_target(model), "a.png")
    assert b.target is None and b.result is None
    a.folder.mkdir(parents=True)
    with pytest.raises(AppError, match="server is busy"):  # both active: the new one is refused, none evicted
        store.create(client="3.3.3.3")
    assert a.session_id in store and b.session_id in store
    clock.now += 61
    store.get(a.session_id)  # a is used again; b stays idle
    c = store.create(client="3.3.3.3")  # room is made by closing the least recently used idle session
    assert b.session_id not in store and a.session_id in store and c.session_id in store and len(store) == 2
    assert b.stop.is_set()
    store.drop(a.session_id)
    assert a.session_id not in store and not a.folder.exists() and a.stop.is_set()
    assert store.get(None) is None and store.get("no-such-key") is None


def test_render_edits_reset_and_export_roundtrip(model, library, inverted, workspace, model_dir):
    session = SessionStore(workspace).create()
    with pytest.raises(AppError, match="Invert an image first"):
        session.render()
    session.set_target(inverted.target, "t.png")
    session.set_sliders(library.sliders("sefa", "all", 3) + library.sliders("shipped"))
    session.set_result(inverted)
    assert session.strengths == [0.0] * 4
    base = session.render([0, 0, 0, 0])
    assert torch.equal(base, inverted.reconstruction)
    edited = session.render([2.0, 0, 0, 0])
    assert (edited - base).abs().mean() > 1e-3  # a slider move changes the image
    assert torch.equal(session.render([2.0, 0, 0, 0]), edited)  # deterministic
    both = session.render([2.0, 0, 0, -1.5])
    assert not torch.equal(both, edited)  # the shipped InterFaceGAN slider adds its own edit
    session.render([99, 0, 0, 0])
    assert session.strengths[0] == STRENGTH_LIMIT  # clamped to the slider range
    session.render([2.0, 0, 0, -1.5])
    png, archive = session.export()
    assert png.parent == archive.parent == session.folder and str(png).startswith(str(workspace.root))
    with Image.open(png) as im:
        assert im.size == (16, 16)
        assert np.array_equal(np.asarray(im), np.asarray(display_image(both, 16)))
    loaded = InversionResult.load(archive, model=model_dir)
    assert torch.allclose(loaded.ws, inverted.ws)
    assert torch.allclose(loaded.render(), inverted.reconstruction, atol=1e-5)
    with zipfile.ZipFile(archive) as zf:
        edit = json.loads(zf.read("edit/edit.json"))
        assert [e["strength"] for e in edit["edits"]] == [2.0, -1.5]
        assert "edit/directions/sefa_all.safetensors" in zf.namelist()
    # the edit in the zip reproduces the edited image
    from ganinv.editing import edit_many, load_direction
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(workspace.root / "unzipped")
    edits = []
    for entry in edit["edits"]:
        path, index = entry["direction"].rsplit(":", 1)
        direction, _ = load_direction(str(workspace.root / "unzipped" / "edit" / path))
        edits.append((direction, int(index), entry["strength"]))
    assert torch.allclose(edit_many(loaded, edits), both, atol=1e-5)


def test_new_target_clears_the_result(model, inverted, workspace):
    session = SessionStore(workspace).create()
    session.set_result(inverted)
    session.stop.clear()
    session.set_target(_target(model, seed=9), "other.png")
    assert session.result is None
    assert session.stop.is_set()  # a running inversion of the previous image is asked to stop
    with pytest.raises(AppError, match="Nothing to download"):
        session.export()


# ---------------------------------------------------------------------- streamed inversion


def test_stream_inversion_reports_progress_then_the_result(model):
    target = _target(model)
    events = list(stream_inversion(model, target, "optimize", inversion_settings("optimize", 12, preview_every=2),
                                   min_interval=0.0))
    progress = [e for e in events if isinstance(e, InversionProgress)]
    assert isinstance(events[-1], InversionResult) and events[-1].stop_reason == "num_steps"
    assert progress and all(0 <= p.fraction <= 1 for p in progress)
    assert [p.step for p in progress] == sorted(p.step for p in progress)
    assert any(p.image is not None and p.image.shape == (1, 3, 16, 16) for p in progress)
    assert "step" in progress[-1].text()


def test_stop_ends_the_inversion_early_with_a_result(model):
    stop = threading.Event()
    result = None
    for event in stream_inversion(model, _target(model), "optimize", {"num_steps": 2000}, stop=stop,
                                  min_interval=0.0):
        if isinstance(event, InversionProgress) and event.step >= 3:
            stop.set()
        if isinstance(event, InversionResult):
            result = event
    assert result is not None and "stopped" in result.stop_reason
    assert len(result.history) < 2000


def test_closing_the_stream_stops_the_worker(model):
    before = {t.name for t in threading.enumerate()}
    stream = stream_inversion(model, _target(model), "optimize", {"num_steps": 5000}, min_interval=0.0)
    next(stream)
    stream.close()
    alive = [t for t in threading.enumerate() if t.name.startswith("ganinv-invert") and t.name not in before]
    assert not [t for t in alive if t.is_alive()]


def test_stream_inversion_raises_method_errors(model):
    with pytest.raises(ValueError, match="unknown settings"):
        list(stream_inversion(model, _target(model), "optimize", {"num_stepz": 3}))


# ---------------------------------------------------------------------- sampling


def test_sample_seeds_follow_the_seed_convention(model):
    from ganinv.editing.ops import latent_from_seed
    images = sample_seeds(model, [0, 5], 0.7)
    assert [seed for seed, _ in images] == [0, 5]
    expected = latent_from_seed(model, 5, truncation_psi=0.7).render()
    assert torch.allclose(images[1][1], expected, atol=1e-5)
    subject = sample_subject(model, 5, 0.7)
    assert not isinstance(subject, InversionResult) and subject.label == "seed 5"
    assert torch.allclose(subject.render(), expected, atol=1e-5)
    result = result_from_sample(model, 5, 0.7)  # the record a sample's export writes
    assert torch.allclose(result.render(), expected, atol=1e-5) and result.method == "sample"
    assert result.settings == {"seed": 5, "truncation_psi": 0.7} and torch.equal(result.target, result.reconstruction)
    with pytest.raises(AppError, match="at most"):
        sample_seeds(model, list(range(100)), 0.7)
    with pytest.raises(AppError, match="at least one seed"):
        sample_seeds(model, [], 0.7)


# ---------------------------------------------------------------------- the Gradio app and the CLI


def _require_gradio():
    import gradio  # noqa: F401  (the `ui` extra: pip install -e ".[ui,test]")


def test_gradio_app_builds_offline_with_all_controls(model, library, workspace):
    _require_gradio()
    from ganinv.app.server import build_app
    demo, context = build_app(model, workspace, max_upload_mb=2, library=library)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert os.environ["GRADIO_TEMP_DIR"] == str(workspace.cache_dir)
    ids = {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    for needed in ("upload", "examples", "fit", "preview", "method", "steps", "invert", "stop", "progress",
                   "reconstruction", "family", "preset", "layers", "count", "edit-0", f"edit-{MAX_SLIDERS - 1}",
                   "reset", "edited", "export", "downloads", "seeds", "psi", "samples"):
        assert needed in ids, needed
    assert demo.ganinv_launch_kwargs["max_file_size"] == 2 * 2 ** 20
    inversion = [fn for fn in demo.fns.values() if fn.concurrency_id == "inversion"]
    assert len(inversion) == 1 and inversion[0].concurrency_limit == 1
    assert context.sessions.workspace is workspace


def test_gradio_layer_range_box_applies_any_range_and_reports_bad_text(model, library, workspace):
    _require_gradio()
    import gradio as gr
    from ganinv.app.server import build_app
    demo, context = build_app(model, workspace, library=library)
    handlers = {fn.fn.__name__: fn.fn for fn in demo.fns.values() if fn.fn is not None}

    class Request:
        session_hash = "layers-test"
        client = None

    handle = SessionHandle()

    outputs = handlers["on_layers"](handle, "sefa", "0,2", 2, Request())
    preset_update, layers_update, _, first_slider = outputs[:4]
    assert first_slider["label"].startswith("SeFa 0,2 #0") and preset_update["value"] is None
    assert context.sessions.get(handle.key).sliders[0].direction.layers == [0, 2]
    coarse = library.groups["coarse"]
    outputs = handlers["on_layers"](handle, "sefa", f"{coarse[0]}-{coarse[-1]}", 2, Request())
    assert outputs[0]["value"] == "coarse"  # the preset buttons follow a range that equals a preset
    sliders_before = list(context.sessions.get(handle.key).sliders)
    for text, message in [("1-x", "bad layer range '1-x'"), ("  ", "Type a layer range")]:
        with pytest.warns(UserWarning, match=message):  # shown as a warning toast; nothing else changes
            outputs = handlers["on_layers"](handle, "sefa", text, 2, Request())
        assert all(o == gr.skip() for o in outputs)
        assert context.sessions.get(handle.key).sliders == sliders_before
    # picking a preset clears the box; a typed range stays in force when the count changes
    outputs = handlers["on_preset"](handle, "sefa", "fine", 2, Request())
    assert outputs[1]["value"] == "" and outputs[3]["label"].startswith("SeFa fine #0")
    outputs = handlers["on_directions"](handle, "ganspace", "fine", "1-2", 3, Request())
    assert outputs[3]["label"].startswith("GANSpace 1-2 #0")
    assert len(context.sessions.get(handle.key).sliders) == 3


def test_cli_serve_is_registered_and_reports_bad_models():
    _require_gradio()
    from ganinv.cli import main
    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "--max-upload-mb" in result.output and "--port" in result.output
    result = runner.invoke(main, ["serve", "--model", "/no/such/model", "--port", "7999"], standalone_mode=True)
    assert result.exit_code == 1 and "no such model" in result.output


def test_grayscale_model_uploads_renders_and_exports(tmp_path, workspace):
    folder = tmp_path / "gray"
    save_native(folder, tiny_generator(resolution=16, channels=1), None, card={"name": "gray16"})
    gray = load_model(folder)
    path = tmp_path / "colour.png"
    path.write_bytes(_png_bytes((30, 20)))
    target = read_upload(path, gray)
    assert target.shape == (1, 1, 16, 16)
    assert display_image(target).mode == "L"
    session = SessionStore(workspace).create()
    session.set_sliders(DirectionLibrary(gray, num_std_samples=200).sliders("sefa", "all", 2))
    image = session.set_sample(gray, 1, 0.7)
    assert not isinstance(session.subject, InversionResult)  # a prior sample is edited as it is
    assert torch.equal(session.target, image) and torch.equal(session.render(), image)
    assert session.render([1.5, 0]).shape == (1, 1, 16, 16)
    png, archive = session.export()
    with Image.open(png) as im:
        assert im.mode == "L" and im.size == (16, 16)
    loaded = InversionResult.load(archive, model=folder)
    assert loaded.method == "sample" and loaded.settings == {"seed": 1, "truncation_psi": 0.7}
    assert torch.allclose(loaded.render(), image, atol=1e-5)


def test_works_with_an_nvidia_pickle(fixtures_dir, workspace):
    """Any model ganinv loads: the official stylegan2-ada fixture pickle, used as is."""
    pkl = os.path.join(fixtures_dir, "sg2ada_res32.pkl")
    bundle = load_model(pkl)
    session = SessionStore(workspace).create()
    session.set_sliders(DirectionLibrary(bundle, num_std_samples=200).sliders("sefa", "coarse", 2))
    target = sample_seeds(bundle, [4], 0.5)[0][1]
    session.set_target(target, "seed4")
    result = [e for e in stream_inversion(bundle, target, "optimize", {"num_steps": 3}, min_interval=0.0)][-1]
    session.set_result(result)
    assert session.render([2.0, 0]).shape == target.shape
    _, archive = session.export()
    assert InversionResult.load(archive, model=pkl).ws.shape == result.ws.shape


@pytest.mark.parametrize("method", [name for name, spec in METHODS.items() if spec.tunes_generator])
def test_tuning_methods_stream_edit_and_export_their_generator(model, model_dir, library, workspace, method):
    target = _target(model, seed=11)
    settings = inversion_settings(method, 4, 4, preview_every=1)
    events = list(stream_inversion(model, target, method, settings, min_interval=0.0))
    result = events[-1]
    assert isinstance(result, InversionResult) and result.G_tuned is not None
    session = SessionStore(workspace).create()
    session.set_sliders(library.sliders("sefa", "all", 2))
    session.set_result(result)
    edited = session.render([2.0, 0])
    _, archive = session.export()
    with zipfile.ZipFile(archive) as zf:
        assert any(name.startswith("result/generator/") for name in zf.namelist())
    loaded = InversionResult.load(archive, model=model_dir)
    assert loaded.G_tuned is not None
    from ganinv.editing import edit_many
    assert torch.allclose(edit_many(loaded, [(session.sliders[0].direction, 0, 2.0)]), edited, atol=1e-4)


def test_models_with_an_encoder_offer_instant_inversion(model):
    assert "encoder" in METHODS
    import dataclasses
    from ganinv.models.encoder import Encoder
    with_encoder = dataclasses.replace(model, encoder=Encoder.for_generator(model.G).eval())
    assert default_method(with_encoder) == "encoder"
    assert {"encoder", "hybrid"} <= set(available_methods(with_encoder))
    assert step_controls("encoder") == (None, None)  # instant: no steps control
    result = list(stream_inversion(with_encoder, _target(model), "encoder", inversion_settings("encoder")))[-1]
    assert isinstance(result, InversionResult) and result.method == "encoder"


# ---------------------------------------------------------------------- hostile clients and load


def test_session_keys_are_issued_by_the_server(workspace):
    """Keys are random and made by the store; a key nobody was issued reaches nothing and creates nothing."""
    import copy
    store = SessionStore(workspace)
    assert store.get("chosen-by-a-client") is None and len(store) == 0
    handle = SessionHandle()
    session = store.session_for(handle, client="192.0.2.1", connection="tab-1")
    assert handle.key == session.session_id and len(session.session_id) >= 32
    assert store.session_for(handle, client="192.0.2.1") is session  # the same connection finds it again
    keys = {store.create(client=f"192.0.2.{i}").session_id for i in range(2, 12)} | {session.session_id}
    assert len(keys) == 11
    assert copy.deepcopy(handle).key is None  # each connection's copy of the initial state starts empty
    assert session.session_id not in repr(handle)
    store.drop_connection("tab-1")  # the tab closed
    assert session.session_id not in store
    renewed = store.session_for(handle, client="192.0.2.1")  # a closed session is replaced, not revived
    assert renewed is not session and handle.key == renewed.session_id


def test_an_active_session_survives_a_flood_of_new_sessions(model, inverted, library, workspace):
    """Issue 19: one client opening 64+ sessions evicted everyone else's. Now each client has its own cap,
    only idle sessions make room (least recently used first), and when no session is idle the new one is
    refused with a message."""
    clock = FakeClock()
    store = SessionStore(workspace, max_sessions=64, max_per_client=16, min_idle_seconds=300, clock=clock)
    victim_handle = SessionHandle()
    victim = store.session_for(victim_handle, client="192.0.2.1")  # the oldest session of all
    victim.set_sliders(library.sliders("sefa", "all", 2))
    victim.set_target(inverted.target, "t.png")
    victim.set_result(inverted)
    victim.render([1.5, 0])
    idle = [store.create(client=f"192.0.2.{i}") for i in range(2, 6)]
    idle[0].set_target(inverted.target, "t.png")
    idle[0].set_result(inverted)
    inverting = store.create(client="192.0.2.9")
    inverting.lock.acquire()  # an inversion is running: never evicted, however long it takes
    clock.now += 400  # everyone but the victim has been idle for a while
    store.get(victim.session_id)
    messages = set()
    for _ in range(100):  # one address
        clock.now += 0.05
        try:
            store.create(client="203.0.113.7")
        except AppError as e:
            messages.add(str(e))
    assert sum(s.client == "203.0.113.7" for s in store._sessions.values()) == 16
    for i in range(100):  # then many addresses
        clock.now += 0.05
        try:
            store.create(client=f"198.51.100.{i}")
        except AppError as e:
            messages.add(str(e))
    assert len(store) == 64
    assert any("from your address" in m for m in messages) and any("server is busy" in m for m in messages)
    assert all("\n" not in m for m in messages)
    assert store.session_for(victim_handle, client="192.0.2.1") is victim and inverting.session_id in store
    assert not any(s.session_id in store for s in idle)  # the idle sessions made room
    assert idle[0].subject is None and idle[0].target is None  # and their tensors were let go
    png, archive = victim.export()
    assert png.is_file() and archive.is_file()
    inverting.lock.release()


def test_seed_ranges_are_counted_before_anything_is_built():
    """Issue 19: '0-20000000' became a list of 20 million seeds before the 32-seed cap was checked."""
    import tracemalloc
    from ganinv.utils import parse_seeds
    assert parse_seeds("0,3,5-7") == [0, 3, 5, 6, 7] and parse_seeds("4294967295") == [4294967295]
    tracemalloc.start()
    try:
        for text in ("0-20000000", "0-4294967295", "1,2,0-99999999999"):
            with pytest.raises(ValueError) as info:
                parse_seeds(text, max_count=32)
            assert "\n" not in str(info.value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak
    with pytest.raises(ValueError, match="at most 32"):
        parse_seeds("0-20000000", max_count=32)
    for text in ("0-4294967296", "-1", "4294967296", "5-2", "x", "1-y", ""):
        with pytest.raises(ValueError):
            parse_seeds(text)
    with pytest.raises(ValueError, match="out of range"):
        parse_seeds([1, 2 ** 32])
    with pytest.raises(ValueError, match="at most 1,000,000"):  # a default bound for the CLI too
        parse_seeds("0-4294967295")


def test_gradio_sample_tab_refuses_huge_seed_ranges_cheaply(model, library, workspace):
    _require_gradio()
    import tracemalloc
    from ganinv.app.server import build_app
    demo, context = build_app(model, workspace, library=library)
    handlers = {fn.fn.__name__: fn.fn for fn in demo.fns.values() if fn.fn is not None}

    class Request:
        session_hash = "seeds"
        client = None

    handle = SessionHandle()
    handlers["on_sample"](handle, "0", 0.7, Request())  # the session exists
    tracemalloc.start()
    try:
        gallery, message = handlers["on_sample"](handle, "0-2000000", 0.7, Request())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak  # checked first: without the fix the next ranges would exhaust memory
    assert "ganinv-error" in message and "at most 32" in message
    for text in ("0-4294967295", "0-4294967296", "9" * 50):
        gallery, message = handlers["on_sample"](handle, text, 0.7, Request())
        assert "ganinv-error" in message and "\n" not in message and len(message) < 300
    gallery, message = handlers["on_sample"](handle, "3-5", 0.7, Request())
    assert [caption for _, caption in gallery] == ["seed 3", "seed 4", "seed 5"]


def test_export_is_atomic(model, library, workspace, monkeypatch):
    """A failure while writing the download leaves no partial file where the download is served from."""
    session = SessionStore(workspace).create()
    session.set_sliders(library.sliders("sefa", "all", 2))
    session.set_sample(model, 1, 0.7)
    real_write = Path.write_bytes

    def half_then_fail(self, data):
        real_write(self, data[:len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError):
        session.export()
    monkeypatch.setattr(Path, "write_bytes", real_write)
    assert sorted(p.name for p in session.folder.iterdir()) == []
    png, archive = session.export()
    assert sorted(p.name for p in session.folder.iterdir()) == sorted([png.name, archive.name])
    assert InversionResult.load(archive, model=model).method == "sample"


def test_huge_uploads_are_refused_from_the_header_and_large_ones_decoded_a_few_at_a_time(model, tmp_path,
                                                                                          monkeypatch):
    import time
    import zlib
    import struct
    import ganinv.app.session as session_module
    # a 12000 x 4000 PNG header with a tiny, bogus body: refused before any pixel is decoded
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 4000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    started = time.perf_counter()
    with pytest.raises(AppError, match="48,000,000 pixels exceeds"):
        read_upload(bomb, model)
    assert time.perf_counter() - started < 1.0
    # large (but allowed) uploads: at most MAX_LARGE_DECODES decode at once
    monkeypatch.setattr(session_module, "LARGE_UPLOAD_PIXELS", 100)
    monkeypatch.setattr(session_module, "_large_decodes", threading.BoundedSemaphore(1))
    running, most = [0], [0]
    lock = threading.Lock()
    real_load = session_module.load_image

    def slow_load(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return real_load(*args, **kwargs)

    monkeypatch.setattr(session_module, "load_image", slow_load)
    path = tmp_path / "large.png"
    path.write_bytes(_png_bytes((40, 24)))
    small = tmp_path / "small.png"
    small.write_bytes(_png_bytes((8, 8)))
    threads = [threading.Thread(target=read_upload, args=(path, model)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
    assert read_upload(small, model).shape == (1, 3, 16, 16)  # small uploads never wait for the slots


@pytest.fixture(scope="module")
def live_server(model_dir, tmp_path_factory):
    """The Gradio app served in this process on a free localhost port."""
    _require_gradio()
    from ganinv.app.server import build_app
    bundle = load_model(model_dir)
    workspace = Workspace(tmp_path_factory.mktemp("live"))
    demo, context = build_app(bundle, workspace, library=DirectionLibrary(bundle, num_std_samples=300,
                                                                          ganspace_samples=300))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                show_error=False, **demo.ganinv_launch_kwargs)
    try:
        yield {"url": f"http://127.0.0.1:{demo.server_port}/", "context": context,
               "downloads": tmp_path_factory.mktemp("downloads")}
    finally:
        demo.close()
        workspace.cleanup()


def _load_benchmark_client():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ui_load.py"
    spec = importlib.util.spec_from_file_location("ganinv_bench_ui_load", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_active_session_survives_a_flood_over_http(live_server, tmp_path):
    """End to end: a user inverts an image, then 80 new connections arrive from another tab at once; the
    user's session keeps its result (the download works), and the flood is told the server is full."""
    import httpx
    bench = _load_benchmark_client()
    url = live_server["url"]
    victim = bench.UIClient(url, live_server["downloads"], "victim")
    try:
        victim.upload(bench.make_photo(tmp_path / "photo.png", 0))
        victim.invert("optimize", 2)
        refused = []
        with httpx.Client(timeout=30) as http:
            for i in range(80):
                response = http.post(url + "gradio_api/run/on_load", json={"data": [None], "session_hash": f"f{i}"})
                if response.status_code != 200 or "ganinv-error" in response.text:  # refused, with a message
                    refused.append(response.text)
        downloads = victim.call("/on_export")  # was: "Nothing to download yet", the session evicted
        assert sorted(Path(str(p)).suffix for p in downloads) == [".png", ".zip"]
        assert victim.move(__import__("random").Random(0)) < 30
        assert refused and all("editing sessions" in message for message in refused), refused[:3]
    finally:
        victim.close()
        store = live_server["context"].sessions
        for i in range(80):
            store.drop_connection(f"f{i}")  # leaves room for the next test's clients


def test_load_benchmark_client_logic(live_server):
    """The client side of benchmarks/ui_load.py (2 clients, 2 moves) against an in-process server."""
    bench = _load_benchmark_client()
    folder = live_server["downloads"]
    photos = [bench.make_photo(folder / f"photo{i}.png", i) for i in range(2)]
    reports = bench.run_clients(live_server["url"], photos, moves=2, method="optimize", steps=2, download_dir=folder)
    assert [r.errors for r in reports] == [[], []]
    assert [len(r.latencies_ms) for r in reports] == [2, 2] and all(x > 0 for r in reports for x in r.latencies_ms)
    summary = bench.summarize([x for r in reports for x in r.latencies_ms])
    assert summary["count"] == 4 and summary["p50"] <= summary["p95"] <= summary["max"]
