"""Web UI slider latency: from a slider change in the browser to the edited image shown there.

Starts `ganinv serve` on localhost (CPU), drives headless Chromium with Playwright (Debian's
/usr/bin/chromium, no browser download), uploads an image, inverts it with the UI's default method
(`--steps` sets the step count when that method has one; `encoder`, the default for a model that ships
an encoder, has none), then moves the edit sliders N times. Each move is timed inside the page: t0 is
taken right before the slider's `input` event is dispatched, t1 when the new edited <img> has loaded
and a frame has been painted with it (image `load` event, then two animation frames). Reported: the
median (and mean, p90) over the moves, next to the pure render time of the same edit in-process
(`EditorSession.render`: the generator call) and the server handler's time (render + upscale + PNG
encode), at the server's thread count.

    python benchmarks/ui_latency.py                       # emoji64 if installed, else a 64 px native model
    python benchmarks/ui_latency.py --model PATH --moves 30 --threads 1 --json out/ui_latency.json

Target: median < 200 ms for the 64 px default model on CPU, >= 20 moves.
Timings are wall clock; run without other load on the machine for numbers to quote.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

INSTALL_TIMER = """() => {
    window.__latencies = [];
    const root = document.querySelector('#edited');
    const seen = new WeakSet();
    const finish = (img) => {
        const t0 = window.__t0;
        requestAnimationFrame(() => requestAnimationFrame(() => {
            window.__latencies.push({loaded: window.__t_loaded - t0, painted: performance.now() - t0,
                                     src: img.src});
        }));
    };
    const watch = (img) => {
        if (window.__t0 === undefined) return;
        const done = () => { window.__t_loaded = performance.now(); finish(img); };
        if (img.complete && img.naturalWidth && !seen.has(img)) { seen.add(img); done(); }
        else img.addEventListener('load', done, {once: true});
    };
    new MutationObserver((mutations) => {
        for (const m of mutations) {
            if (m.type === 'attributes' && m.target.tagName === 'IMG') watch(m.target);
            for (const node of m.addedNodes || []) {
                if (node.tagName === 'IMG') watch(node);
                else if (node.querySelectorAll) node.querySelectorAll('img').forEach(watch);
            }
        }
    }).observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""

MOVE = """([selector, value]) => {
    const el = document.querySelector(selector);
    const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
    window.__t0 = performance.now();
    setter.call(el, String(value));
    el.dispatchEvent(new Event('input', {bubbles: true}));
}"""


def make_model(folder: Path, channel_base: int, channel_max: int) -> Path:
    """A 64 px native model with random weights (same architecture family as the embedded emoji64)."""
    from ganinv.models.checkpoints import save_native
    from ganinv.models.stylegan2 import Discriminator, Generator

    torch.manual_seed(0)
    G = Generator(z_dim=128, c_dim=0, w_dim=128, img_resolution=64, img_channels=3,
                  mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max)).eval()
    D = Discriminator(c_dim=0, img_resolution=64, img_channels=3, channel_base=channel_base,
                      channel_max=channel_max).eval()
    save_native(folder, G, D, card={"name": f"random64_{channel_base}_{channel_max}"})
    return folder


def test_image(path: Path) -> Path:
    yy, xx = np.mgrid[0:96, 0:128]
    photo = np.stack([xx * 2, yy * 2, xx + yy], -1).astype(np.uint8)
    photo[30:70, 40:90] = [250, 200, 30]
    Image.fromarray(photo).save(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, threads: int, workdir: Path) -> subprocess.Popen:
    env = dict(os.environ, GANINV_THREADS=str(threads), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-c", "from ganinv.cli import entry; entry()", "serve", "--model", model,
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--workdir", str(workdir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    ready = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ganinv serve: http"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(180):
        process.kill()
        raise SystemExit("ganinv serve did not start:\n" + "".join(lines))
    return process


def measure_in_browser(url: str, image: Path, moves: int, steps: int, seed: int,
                       chromium: str) -> tuple[list[dict], str]:
    from playwright.sync_api import sync_playwright

    rng = random.Random(seed)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.wait_for_selector("#edit-0 input[type=range]")
        page.set_input_files("#upload input[type=file]", str(image))
        page.wait_for_selector("#preview img")
        if page.locator("#steps input[type=number]").is_visible():
            page.fill("#steps input[type=number]", str(steps))
            page.press("#steps input[type=number]", "Enter")
        # else the UI's default method has no step count (e.g. `encoder` for a model that ships one)
        page.click("#invert")
        page.wait_for_selector("#progress [data-state=done]", timeout=600_000)
        page.wait_for_selector("#edited img")
        metrics = page.inner_text("#metrics")
        page.evaluate(INSTALL_TIMER)
        num_sliders = page.locator(".edit-slider input[type=range]:visible").count()
        results = []
        values = [0.0] * num_sliders
        for move in range(moves + 1):  # the first move warms up and is dropped
            index = move % num_sliders
            value = round(rng.uniform(-3, 3), 1)
            if value == values[index]:
                value = round(-value + 0.1, 1)
            values[index] = value
            count = page.evaluate("window.__latencies.length")
            page.evaluate(MOVE, [f"#edit-{index} input[type=range]", value])
            page.wait_for_function("(n) => window.__latencies.length > n", arg=count, timeout=30_000)
            page.wait_for_timeout(150)  # let the page settle; moves do not overlap
            if move:
                results.append(page.evaluate("(n) => window.__latencies[n]", count))
        browser.close()
    return results, metrics


def render_times(model_path: str, threads: int, reps: int = 30) -> dict:
    """In-process: the generator call of one edit (EditorSession.render) and the handler's full work."""
    from ganinv.app.session import DirectionLibrary, EditorSession, display_image, result_from_sample
    from ganinv.models.registry import load_model

    torch.set_num_threads(threads)
    model = load_model(model_path)
    library = DirectionLibrary(model)
    session = EditorSession("bench", Path(tempfile.gettempdir()) / "ganinv-bench-unused")
    session.set_sliders(library.sliders("sefa", "all", 5))
    session.set_result(result_from_sample(model, 0, 0.7))
    rng = random.Random(0)
    render, handler = [], []
    for rep in range(reps + 3):
        strengths = [round(rng.uniform(-3, 3), 1) for _ in range(5)]
        start = time.perf_counter()
        edited = session.render(strengths)
        middle = time.perf_counter()
        import io
        display_image(edited).save(io.BytesIO(), format="PNG")
        end = time.perf_counter()
        if rep >= 3:
            render.append((middle - start) * 1000)
            handler.append((end - start) * 1000)
    return {"render_ms_median": statistics.median(render), "handler_ms_median": statistics.median(handler),
            "generator_parameters": sum(p.numel() for p in model.G.parameters()), "model": model.name,
            "resolution": model.G.img_resolution}


def summarize(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"median": statistics.median(values), "mean": statistics.fmean(values),
            "p90": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
            "min": ordered[0], "max": ordered[-1], "count": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model name or path (default: emoji64 if installed, "
                        "else a random 64 px native model made in a temp folder)")
    parser.add_argument("--channel-base", type=int, default=4096, help="for the made-up model")
    parser.add_argument("--channel-max", type=int, default=128, help="for the made-up model")
    parser.add_argument("--moves", type=int, default=30, help="slider moves timed (>= 20)")
    parser.add_argument("--steps", type=int, default=20, help="optimize steps of the inversion before editing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server (GANINV_THREADS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chromium", default=os.environ.get("GANINV_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if args.moves < 20:
        parser.error("--moves must be at least 20")

    with tempfile.TemporaryDirectory(prefix="ganinv-ui-latency-") as tmp:
        tmp_path = Path(tmp)
        model = args.model
        if model is None:
            from ganinv.models.registry import available_models
            model = "emoji64" if "emoji64" in available_models() else str(
                make_model(tmp_path / "model64", args.channel_base, args.channel_max))
        image = test_image(tmp_path / "photo.png")
        (tmp_path / "work").mkdir()
        port = free_port()
        process = start_server(model, port, args.threads, tmp_path / "work")
        try:
            latencies, metrics = measure_in_browser(f"http://127.0.0.1:{port}/", image, args.moves,
                                                    args.steps, args.seed, args.chromium)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        offline = render_times(model, args.threads)

    shown = summarize([r["painted"] for r in latencies])
    loaded = summarize([r["loaded"] for r in latencies])
    report = {
        "model": offline["model"], "resolution": offline["resolution"],
        "generator_parameters": offline["generator_parameters"], "device": "cpu", "server_threads": args.threads,
        "moves": len(latencies), "slider_to_image_shown_ms": shown, "slider_to_image_loaded_ms": loaded,
        "render_ms_median": offline["render_ms_median"], "handler_ms_median": offline["handler_ms_median"],
        "inversion": metrics, "load_average": os.getloadavg(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    print(f"model {report['model']} ({report['resolution']} px, G {report['generator_parameters'] / 1e6:.2f}M "
          f"parameters), CPU, server threads {args.threads}, load average {report['load_average'][0]:.2f}")
    print(f"slider change -> edited image shown in the browser, {shown['count']} moves: median "
          f"{shown['median']:.1f} ms (mean {shown['mean']:.1f}, p90 {shown['p90']:.1f}, max {shown['max']:.1f}); "
          f"image loaded: median {loaded['median']:.1f} ms")
    print(f"pure render of the edit (generator call): median {report['render_ms_median']:.1f} ms; "
          f"server handler (render + upscale + PNG): median {report['handler_ms_median']:.1f} ms")
    print(f"target: median < 200 ms -> {'met' if shown['median'] < 200 else 'NOT met'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
