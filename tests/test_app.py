"""The web UI's logic without a browser: uploads, directions, sessions, streamed inversion, exports, and
that the Gradio app builds (the end-to-end browser test is tests/test_app_browser.py)."""
import io
import json
import os
import threading
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ganinv.app.session import (MAX_SLIDERS, STRENGTH_LIMIT, AppError, DirectionLibrary, InversionProgress,
                                SessionStore, Workspace, available_methods, default_method, display_image,
                                inversion_settings, read_upload, result_from_sample, sample_seeds, sample_subject,
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


# ---------------------------------------------------------------------- sessions, edits, exports


def test_sessions_are_isolated_and_evicted(model, library, workspace):
    store = SessionStore(workspace, max_sessions=2)
    a, b = store.get("aaa"), store.get("bbb")
    assert a is store.get("aaa") and a is not b
    a.set_target(_target(model), "a.png")
    assert b.target is None and b.result is None
    a.folder.mkdir(parents=True)
    store.get("ccc")  # over capacity: the least recently used (bbb) goes, not the active ones
    assert "bbb" not in store and "aaa" in store and len(store) == 2
    store.drop("aaa")
    assert "aaa" not in store and not a.folder.exists() and a.stop.is_set()
    with pytest.raises(AppError, match="no session"):
        store.get(None)


def test_render_edits_reset_and_export_roundtrip(model, library, inverted, workspace, model_dir):
    session = SessionStore(workspace).get("s1")
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
    session = SessionStore(workspace).get("s2")
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

    outputs = handlers["on_layers"]("sefa", "0,2", 2, Request())
    preset_update, layers_update, _, first_slider = outputs[:4]
    assert first_slider["label"].startswith("SeFa 0,2 #0") and preset_update["value"] is None
    assert context.sessions.get("layers-test").sliders[0].direction.layers == [0, 2]
    coarse = library.groups["coarse"]
    outputs = handlers["on_layers"]("sefa", f"{coarse[0]}-{coarse[-1]}", 2, Request())
    assert outputs[0]["value"] == "coarse"  # the preset buttons follow a range that equals a preset
    sliders_before = list(context.sessions.get("layers-test").sliders)
    for text, message in [("1-x", "bad layer range '1-x'"), ("  ", "Type a layer range")]:
        with pytest.warns(UserWarning, match=message):  # shown as a warning toast; nothing else changes
            outputs = handlers["on_layers"]("sefa", text, 2, Request())
        assert all(o == gr.skip() for o in outputs)
        assert context.sessions.get("layers-test").sliders == sliders_before
    # picking a preset clears the box; a typed range stays in force when the count changes
    outputs = handlers["on_preset"]("sefa", "fine", 2, Request())
    assert outputs[1]["value"] == "" and outputs[3]["label"].startswith("SeFa fine #0")
    outputs = handlers["on_directions"]("ganspace", "fine", "1-2", 3, Request())
    assert outputs[3]["label"].startswith("GANSpace 1-2 #0")
    assert len(context.sessions.get("layers-test").sliders) == 3


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
    session = SessionStore(workspace).get("gray")
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
    session = SessionStore(workspace).get("pkl")
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
    session = SessionStore(workspace).get(method)
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
