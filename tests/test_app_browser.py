"""End to end in headless Chromium: `ganinv serve` on localhost with a tiny model; upload, invert with live
progress, move a slider, reset, download the result zip and load it back, upload a corrupt file, sample seeds.

Needs Debian's `chromium` (/usr/bin/chromium, or $GANINV_CHROMIUM) and Playwright's Python package (no
browser download: Playwright drives the system Chromium). Playwright comes with the `test` extra; without
Chromium the test skips, except under CI=true where it fails. A screenshot of each step is kept in
$GANINV_TEST_ARTIFACTS/app_browser (default: the test's tmp folder).
"""
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganinv.inversion import InversionResult
from ganinv.models.checkpoints import save_native
from conftest import tiny_discriminator, tiny_generator

CHROMIUM = os.environ.get("GANINV_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SET_SLIDER = """([selector, value]) => {
    const el = document.querySelector(selector);
    const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
    setter.call(el, String(value));
    el.dispatchEvent(new Event('input', {bubbles: true}));
}"""
WATCH_PROGRESS = """() => {
    window.__progress = [];
    const root = document.querySelector('#progress');
    const record = () => { const p = root.querySelector('.ganinv-progress');
        if (p) window.__progress.push([p.dataset.state, parseFloat(p.dataset.fraction),
                                       !!document.querySelector('#reconstruction img')]); };
    new MutationObserver(record).observe(root, {subtree: true, childList: true, attributes: true});
}"""


def _require_chromium():
    """The one optional system piece here (conftest turns the skip into a failure under CI=true)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"needs Chromium at {CHROMIUM}: apt-get install -y chromium (or set GANINV_CHROMIUM)")


@pytest.fixture(scope="module")
def requirements():
    """Checked without importing the heavy packages (the server process imports gradio itself)."""
    import importlib.util
    # Both come with `pip install -e ".[ui,test]"`: missing is an error, not a skip.
    assert importlib.util.find_spec("playwright") is not None, 'playwright missing: pip install -e ".[test]"'
    assert importlib.util.find_spec("gradio") is not None, 'gradio missing: pip install -e ".[ui]"'
    _require_chromium()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = os.environ.get("GANINV_TEST_ARTIFACTS")
    folder = Path(root) / "app_browser" if root else tmp_path_factory.mktemp("app_browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, requirements):
    """`ganinv serve` in a subprocess, as a user starts it; the browser launches while it boots."""
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("serve")
    model_dir = root / "tiny16"
    save_native(model_dir, tiny_generator(resolution=16), tiny_discriminator(resolution=16), card={"name": "tiny16"})
    rng = np.random.RandomState(0)
    np.savez(model_dir / "heldout.npz", images=rng.randint(0, 255, (4, 16, 16, 3)).astype(np.uint8),
             labels_json=json.dumps(["one", "two", "three", "four"]))
    workdir = root / "work"
    workdir.mkdir()
    port = _free_port()
    env = dict(os.environ, GANINV_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-c", "from ganinv.cli import entry; entry()", "serve", "--model", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--workdir", str(workdir),
               "--max-upload-mb", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    ready = threading.Event()

    def read_output():
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ganinv serve: http"):
                ready.set()

    threading.Thread(target=read_output, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            if not ready.wait(90):
                pytest.fail("ganinv serve did not start:\n" + "".join(lines))
            yield {"url": f"http://127.0.0.1:{port}/", "port": port, "model_dir": model_dir, "workdir": workdir,
                   "process": process, "lines": lines, "browser": browser}
            browser.close()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture(scope="module")
def browser(server):
    return server["browser"]


def _image_bytes(page, selector: str) -> bytes:
    src = page.get_attribute(selector, "src")
    response = page.request.get(src)
    assert response.ok, f"{src}: {response.status}"
    return response.body()


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def _write_inputs(folder: Path) -> tuple[Path, Path, Path]:
    yy, xx = np.mgrid[0:90, 0:120]
    photo = np.stack([xx * 2, yy * 2, xx + yy], -1).astype(np.uint8)
    photo[30:60, 40:80] = [250, 200, 30]
    photo_path = folder / "photo.png"
    Image.fromarray(photo).save(photo_path)
    other_path = folder / "other.jpg"
    Image.fromarray(255 - photo).save(other_path, quality=90)
    corrupt_path = folder / "corrupt.png"
    corrupt_path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"definitely not image data " * 20)
    big_path = folder / "big.png"  # over the server's --max-upload-mb 1
    big_path.write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.RandomState(0).bytes(1_500_000))
    return photo_path, other_path, corrupt_path, big_path


def test_upload_invert_edit_download_in_chromium(server, browser, artifacts, tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # InversionResult.load(zip) extracts there
    started = time.perf_counter()
    photo, other, corrupt, big = _write_inputs(tmp_path)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    shot = lambda name: page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)  # noqa: E731

    # 1. the page loads, with the default SeFa sliders and the held-out examples
    page.goto(server["url"])
    page.wait_for_selector("#edit-0 input[type=range]")
    page.wait_for_function("() => document.querySelectorAll('#examples img').length === 4")
    page.wait_for_function("() => document.querySelector('#edit-0').innerText.includes('SeFa all #0')")
    shot("01_loaded")

    # 2. a held-out example can be picked; an upload replaces it, and the preview shows the square crop
    page.locator("#examples .thumbnail-item").nth(1).click()
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Held-out example two')")
    page.wait_for_selector("#preview img")
    page.set_input_files("#upload input[type=file]", str(photo))
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('photo.png')")
    preview = _pixels(_image_bytes(page, "#preview img"))
    assert preview.shape[0] == preview.shape[1] and preview.std() > 10
    shot("02_uploaded")

    # 3. invert with a live progress bar; the reconstruction and the edited image appear
    page.fill("#steps input[type=number]", "60")
    page.press("#steps input[type=number]", "Enter")
    page.evaluate(WATCH_PROGRESS)
    page.click("#invert")
    page.wait_for_selector("#progress [data-state=done]", timeout=60_000)
    page.wait_for_selector("#edited img")
    states = page.evaluate("window.__progress")
    # live progress: partial fractions while running, with the reconstruction already on screen
    assert any(state == "running" and 0 < fraction < 1 and shown for state, fraction, shown in states), states
    assert "psnr" in page.inner_text("#metrics")
    shot("03_inverted")

    # 4. moving a slider changes the displayed edited image; reset brings the reconstruction back
    before = _image_bytes(page, "#edited img")
    src_before = page.get_attribute("#edited img", "src")
    page.evaluate(SET_SLIDER, ["#edit-0 input[type=range]", 3])
    page.wait_for_function("(s) => { const i = document.querySelector('#edited img'); return i && i.src !== s; }",
                           arg=src_before)
    after = _image_bytes(page, "#edited img")
    assert np.abs(_pixels(after) - _pixels(before)).mean() > 0.5
    shot("04_slider_moved")
    src_after = page.get_attribute("#edited img", "src")
    page.click("#reset")
    page.wait_for_function("(s) => { const i = document.querySelector('#edited img'); return i && i.src !== s; }",
                           arg=src_after)
    assert np.array_equal(_pixels(_image_bytes(page, "#edited img")), _pixels(before))
    assert page.input_value("#edit-0 input[type=range]") == "0"
    page.click("#family label:has-text('GANSpace')")
    page.wait_for_function("() => document.querySelector('#edit-0').innerText.includes('GANSpace all #0')")
    page.click("#preset label:has-text('coarse')")
    page.wait_for_function("() => document.querySelector('#edit-0').innerText.includes('GANSpace coarse #0')")
    # any layer range, as the CLI takes it; text that is not one gives a clear message
    page.fill("#layers input, #layers textarea", "0,2")
    page.press("#layers input, #layers textarea", "Enter")
    page.wait_for_function("() => document.querySelector('#edit-0').innerText.includes('GANSpace 0,2 #0')")
    page.fill("#layers input, #layers textarea", "1-x")
    page.press("#layers input, #layers textarea", "Enter")
    page.wait_for_function("() => [...document.querySelectorAll('.toast-body')].some("
                           "t => t.innerText.includes(\"bad layer range '1-x'\"))")
    assert "GANSpace 0,2 #0" in page.inner_text("#edit-0")  # the sliders stay as they were
    shot("04b_layer_range")
    page.evaluate(SET_SLIDER, ["#edit-1 input[type=range]", -2])
    page.wait_for_function("(s) => { const i = document.querySelector('#edited img'); return i && i.src !== s; }",
                           arg=page.get_attribute("#edited img", "src"))

    # 5. downloads: the edited PNG at the model's resolution, and the result zip that loads back
    page.click("#export")
    zip_link = page.wait_for_selector("#downloads a[href*='.zip']")
    with page.expect_download() as download:
        zip_link.click()
    zip_path = tmp_path / "result.zip"
    download.value.save_as(zip_path)
    result = InversionResult.load(zip_path, model=server["model_dir"])
    assert result.method == "optimize" and tuple(result.ws.shape) == (1, result.generator.num_ws, 32)
    png_link = page.wait_for_selector("#downloads a[href*='.png']")
    with page.expect_download() as download:
        png_link.click()
    png_path = tmp_path / "edited.png"
    download.value.save_as(png_path)
    with Image.open(png_path) as im:
        assert im.size == (16, 16)
    shot("05_downloads")

    # 6. a corrupt upload gives a friendly message, and the app keeps working
    page.set_input_files("#upload input[type=file]", str(corrupt))
    page.wait_for_selector("#status .ganinv-error")
    assert "Could not use 'corrupt.png' as an image" in page.inner_text("#status")
    shot("06_corrupt_upload")
    page.set_input_files("#upload input[type=file]", str(big))
    page.wait_for_function("() => [...document.querySelectorAll('.toast-body')].some("
                           "t => t.innerText.includes('exceed the maximum allowed size'))")
    shot("06b_too_large_upload")
    page.set_input_files("#upload input[type=file]", str(other))
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('other.jpg')")
    assert page.locator("#status .ganinv-error").count() == 0

    # 7. the sampling tab draws seeds with truncation
    page.get_by_role("tab", name="Sample seeds").click()
    page.fill("#seeds textarea, #seeds input", "0-5")
    page.click("#sample")
    page.wait_for_function("() => { const images = [...document.querySelectorAll('#samples img')];"
                           " return images.length >= 6 && images.every(i => i.complete && i.naturalWidth > 0); }")
    assert "6 samples" in page.inner_text("#sample-status")
    shot("07_samples")

    # offline: every request the page made went to the app itself
    hosts = {url.split("/")[2] for url in requested if url.startswith("http")}
    assert hosts == {f"127.0.0.1:{server['port']}"}, hosts
    context.close()
    assert time.perf_counter() - started < 60

def test_face_photo_pick_invert_edit_download_pasted(server, browser, artifacts, tmp_path):
    """A photo with two faces: both are found and shown, the largest is chosen by default, the other can be
    picked, inverted and edited, and the downloads hold the edited crop and the full photo with it pasted in."""
    pytest.importorskip("dlib", reason="the faces extra (dlib-bin) is not installed")
    from test_faces import two_face_photo

    canvas, _ = two_face_photo()
    photo_path = tmp_path / "two_faces.jpg"
    Image.fromarray(canvas).save(photo_path, quality=92)
    with Image.open(photo_path) as im:
        uploaded = np.asarray(im.convert("RGB")).astype(np.int16)
    context = browser.new_context(viewport={"width": 1400, "height": 1200}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server["url"])
    page.wait_for_selector("#edit-0 input[type=range]")
    page.set_input_files("#upload input[type=file]", str(photo_path))
    page.wait_for_function("() => document.querySelector('#faces-note').innerText.includes('2 face(s) found')")
    page.wait_for_selector("#faces-image img")
    assert page.is_checked("#face-choice input[value='Face 0']")  # the larger face
    assert "face 0 is aligned" in page.inner_text("#status")
    page.screenshot(path=str(artifacts / "10_faces_found.png"), full_page=True)
    page.click("#face-choice label:has-text('Face 1')")
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('face 1 is aligned')")
    page.fill("#steps input[type=number]", "5")
    page.press("#steps input[type=number]", "Enter")
    page.click("#invert")
    page.wait_for_selector("#progress [data-state=done]", timeout=90_000)
    page.wait_for_selector("#edited img")
    src = page.get_attribute("#edited img", "src")
    page.evaluate(SET_SLIDER, ["#edit-0 input[type=range]", 3])
    page.wait_for_function("(s) => { const i = document.querySelector('#edited img'); return i && i.src !== s; }",
                           arg=src)
    page.click("#export-face")
    files = {}
    for kind in ("edited", "pasted"):
        link = page.wait_for_selector(f"#face-downloads a[href*='-{kind}-']")
        with page.expect_download() as download:
            link.click()
        files[kind] = tmp_path / f"{kind}.png"
        download.value.save_as(files[kind])
    page.screenshot(path=str(artifacts / "11_face_downloads.png"), full_page=True)
    with Image.open(files["edited"]) as im:
        assert im.size == (16, 16)
    with Image.open(files["pasted"]) as im:
        pasted = np.asarray(im.convert("RGB")).astype(np.int16)
    assert pasted.shape == uploaded.shape
    changed = np.argwhere(np.abs(pasted - uploaded).max(axis=2) > 0)
    assert len(changed) > 100
    # Only face 1 (the right-hand one, centred near x = 590) changed.
    assert changed[:, 1].min() > 400 and abs(changed[:, 1].mean() - 590) < 80
    context.close()


def test_long_inversion_does_not_block_other_sessions(server, browser, artifacts, tmp_path):
    """Session A runs a long inversion; meanwhile session B (another browser context) sees none of A's
    images and can sample, pick a sample and edit it; then A stops early and still gets a result."""
    photo, *_ = _write_inputs(tmp_path)
    context_a = browser.new_context(viewport={"width": 1400, "height": 1000})
    context_b = browser.new_context(viewport={"width": 1400, "height": 1000})
    a, b = context_a.new_page(), context_b.new_page()
    for page in (a, b):
        page.set_default_timeout(30_000)
        page.goto(server["url"])
        page.wait_for_selector("#edit-0 input[type=range]")
    a.set_input_files("#upload input[type=file]", str(photo))
    a.wait_for_selector("#preview img")
    a.fill("#steps input[type=number]", "3000")
    a.press("#steps input[type=number]", "Enter")
    a.click("#invert")
    a.wait_for_function("() => { const p = document.querySelector('#progress .ganinv-progress');"
                        " return p && p.dataset.state === 'running' && parseFloat(p.dataset.fraction) > 0; }")
    # B: a fresh session shows nothing of A's
    assert b.locator("#preview img").count() == 0 and b.locator("#reconstruction img").count() == 0
    started = time.perf_counter()
    b.get_by_role("tab", name="Sample seeds").click()
    b.click("#sample")
    b.wait_for_function("() => document.querySelectorAll('#samples img').length >= 8")
    b.locator("#samples .thumbnail-item").first.click()
    b.wait_for_function("() => document.querySelector('#sample-status').innerText.includes('Seed 0')")
    b.get_by_role("tab", name="Invert & edit").click()
    b.wait_for_selector("#edited img")
    src = b.get_attribute("#edited img", "src")
    b.evaluate(SET_SLIDER, ["#edit-0 input[type=range]", -3])
    b.wait_for_function("(s) => { const i = document.querySelector('#edited img'); return i && i.src !== s; }", arg=src)
    elapsed = time.perf_counter() - started
    assert a.get_attribute("#progress .ganinv-progress", "data-state") == "running", "A should still be inverting"
    b.screenshot(path=str(artifacts / "08_other_session_during_inversion.png"), full_page=True)
    assert elapsed < 20, f"session B waited {elapsed:.1f} s behind A's inversion"
    # A stops early and still gets its result
    a.click("#stop")
    a.wait_for_selector("#progress [data-state=done]")
    assert "stopped" in a.inner_text("#metrics")
    a.wait_for_selector("#edited img")
    a.screenshot(path=str(artifacts / "09_stopped_early.png"), full_page=True)
    context_a.close()
    context_b.close()


def test_active_page_survives_a_flood_and_a_new_page_is_told_the_server_is_full(server, browser):
    """A page with an edit keeps it while 80 new connections arrive from the same address at once (they
    used to evict the oldest sessions); once that address holds its share of sessions, all in use, a newly
    opened page is told so instead of pushing an active one out."""
    import urllib.error
    import urllib.request
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server["url"])
    page.wait_for_selector("#edit-0 input[type=range]")
    page.get_by_role("tab", name="Sample seeds").click()
    page.fill("#seeds textarea, #seeds input", "0-20000000")  # refused at once, nothing built
    page.click("#sample")
    page.wait_for_function("() => document.querySelector('#sample-status').innerText.includes('at most 32')")
    page.fill("#seeds textarea, #seeds input", "3-4")
    page.click("#sample")
    page.wait_for_function("() => document.querySelectorAll('#samples img').length === 2")
    page.locator("#samples .thumbnail-item").first.click()
    page.wait_for_function("() => document.querySelector('#sample-status').innerText.includes('Seed 3')")
    page.get_by_role("tab", name="Invert & edit").click()
    page.wait_for_selector("#edited img")
    refused = []
    for i in range(80):
        request = urllib.request.Request(server["url"] + "gradio_api/run/on_load", method="POST",
                                         data=json.dumps({"data": [None], "session_hash": f"flood{i}"}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            outputs = json.loads(urllib.request.urlopen(request, timeout=30).read())["data"]
        except urllib.error.HTTPError as e:
            refused.append(str(e.read()))
        else:
            if "ganinv-error" in str(outputs[1]):
                refused.append(str(outputs[1]))
    assert refused and all("Too many editing sessions from your address" in m for m in refused), refused[:2]
    src = page.get_attribute("#edited img", "src")
    page.evaluate(SET_SLIDER, ["#edit-0 input[type=range]", 2])
    page.wait_for_function("(s) => { const i = document.querySelector('#edited img'); return i && i.src !== s; }",
                           arg=src)
    page.click("#export")
    page.wait_for_selector("#downloads a[href*='.zip']")  # was: "Nothing to download yet"
    newcomer = context.browser.new_context().new_page()
    newcomer.goto(server["url"])
    newcomer.wait_for_function("() => (document.querySelector('#status .ganinv-error')?.innerText || '')"
                               ".includes('Too many editing sessions from your address')")
    newcomer.context.close()
    context.close()


def test_server_cleans_its_workspace_on_shutdown(server):
    """Runs after the browser test (same module): SIGTERM stops the server and its workspace is gone."""
    workdir = server["workdir"]
    assert any(workdir.iterdir()), "the server should have a workspace while running"
    process = server["process"]
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    assert not any(workdir.iterdir()), list(workdir.iterdir())
    assert "Traceback" not in "".join(server["lines"]), "".join(server["lines"])


def test_browser_dependencies():
    """Playwright's Python package comes with the `test` extra; Chromium is the Debian package."""
    import playwright.sync_api  # noqa: F401
    _require_chromium()
    assert shutil.which(CHROMIUM) or os.access(CHROMIUM, os.X_OK)

