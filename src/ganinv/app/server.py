"""`ganinv serve`: the Gradio web UI over `session.py`.

Upload (or pick a held-out example) -> preview of the crop the model sees -> invert with live progress ->
sliders for SeFa (Shen & Zhou, CVPR 2021) / GANSpace (Härkönen et al., NeurIPS 2020) / shipped
InterFaceGAN (Shen et al., CVPR 2020) directions -> edited image -> downloads; plus a tab sampling
seeds with truncation.

Offline by construction: analytics off, no share link, no server-side rendering, no browser-side run
history (which could be synced to a hub), system fonts (no web-font downloads); every file goes to the
app's temporary Workspace, removed on shutdown. This module avoids `from __future__ import annotations`
on purpose: Gradio finds the `gr.Request` parameter of a handler from its (evaluated) annotation.
"""
import os

# Set before Gradio is imported: it reads these at import time in some versions.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("GRADIO_SSR_MODE", "False")

import html  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Optional  # noqa: E402

import gradio as gr  # noqa: E402

from ..inversion import METHODS, InversionResult  # noqa: E402
from ..models.registry import Model, load_model, resolve_device
from ..utils import parse_seeds  # noqa: E402
from .faces import face_controls, face_export_controls, wire_face_step  # noqa: E402
from .session import (DEFAULT_MAX_UPLOAD_MB, FITS, MAX_EXAMPLES, MAX_SEEDS, MAX_SLIDERS, MAX_UI_STEPS,  # noqa: E402
                      STRENGTH_LIMIT, AppError, DirectionLibrary, InversionProgress, SessionHandle, SessionStore,
                      Workspace, available_methods, default_method, display_image, inversion_settings, read_upload,
                      sample_seeds, step_controls, stream_inversion)

CSS = """
#preview img, #reconstruction img, #edited img, #examples img, #samples img { image-rendering: pixelated; }
.ganinv-progress { font-size: 0.9em; }
.ganinv-progress .bar { height: 10px; border-radius: 5px; background: var(--neutral-200); overflow: hidden; }
.ganinv-progress .fill { height: 100%; background: var(--color-accent); transition: width 0.15s; }
.ganinv-progress .text { margin-top: 4px; font-family: ui-monospace, monospace; }
#status p, #sample-status p { margin: 0; }
.ganinv-error { color: #b91c1c; font-weight: 600; }
#examples .grid-container { grid-template-columns: repeat(auto-fill, minmax(56px, 1fr)) !important;
                            grid-auto-rows: auto !important; }
#examples .gallery-item, #examples .thumbnail-item { height: auto !important; aspect-ratio: 1 / 1; }
#examples .caption-label { display: none; }
"""

DEFAULT_COUNT = 5


@dataclass
class AppContext:
    """What the handlers share: the model, its direction library and the per-session store."""

    model: Model
    workspace: Workspace
    library: DirectionLibrary
    sessions: SessionStore
    max_upload_mb: float


def _progress_html(fraction: float, text: str, state: str = "running") -> str:
    percent = max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="ganinv-progress" data-state="{state}" data-fraction="{fraction:.3f}">'
            f'<div class="bar"><div class="fill" style="width:{percent:.1f}%"></div></div>'
            f'<div class="text">{html.escape(text)}</div></div>')


def _error_markdown(message: str) -> str:
    return f'<span class="ganinv-error">⚠ {html.escape(message)}</span>'


def _metrics_text(result: InversionResult) -> str:
    parts = [f"**{result.method}**", f"{result.seconds:.1f} s"]
    for key in ("psnr", "ssim", "psnr_const_noise"):
        values = result.metrics.get(key)
        if isinstance(values, list) and values:
            parts.append(f"{key} {float(values[0]):.2f}")
    if result.stop_reason:
        parts.append(f"stop: {result.stop_reason}")
    return " · ".join(parts)


def _example_images(model: Model) -> tuple[list, list[int]]:
    if model.heldout is None or len(model.heldout) == 0:
        return [], []
    count = min(MAX_EXAMPLES, len(model.heldout))
    indices = sorted({round(i * (len(model.heldout) - 1) / max(count - 1, 1)) for i in range(count)})
    items = []
    for i in indices:
        label = None
        if model.heldout_labels is not None and i < len(model.heldout_labels):
            raw = model.heldout_labels[i]
            if isinstance(raw, dict):
                raw = raw.get("name") or raw.get("label") or next(iter(raw.values()), "")
            label = str(raw)[:40]
        items.append((display_image(model.heldout[i:i + 1], 128), label or f"held-out #{i}"))
    return items, indices


def build_app(model: Model, workspace: Workspace, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
              max_concurrent_inversions: int = 1, seed: int = 0,
              library: Optional[DirectionLibrary] = None, max_sessions: int = 64,
              max_sessions_per_client: int = 16) -> tuple:
    """The Gradio Blocks app and its AppContext. Directions of the default preset are found here, so
    the first page load is instant. At most `max_sessions` editing sessions are held, and
    `max_sessions_per_client` per client address (see SessionStore)."""
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.cache_dir)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workspace.root / "examples")
    library = library or DirectionLibrary(model)
    context = AppContext(model=model, workspace=workspace, library=library, sessions=SessionStore(
        workspace, max_sessions=max_sessions, max_per_client=max_sessions_per_client),
                         max_upload_mb=max_upload_mb)
    G = model.G
    methods = available_methods(model)
    method0 = default_method(model)
    steps0, first0 = step_controls(method0)
    families = library.families()
    presets = library.presets()
    max_count = library.max_count()
    count0 = min(DEFAULT_COUNT, max_count)
    initial_sliders = library.sliders("sefa", "all", count0)  # also warms the cache
    examples, example_indices = _example_images(model)
    max_bytes = int(max_upload_mb * 2 ** 20)

    def find_session(handle, request: gr.Request):
        """The session of this connection (its server-side handle), created on its first request; AppError
        when a new session is refused (the server or this client is full of active sessions)."""
        client = getattr(getattr(request, "client", None), "host", None)
        return context.sessions.session_for(handle, client=client, connection=getattr(request, "session_hash", None))

    def session_of(handle, request: gr.Request):
        """find_session for an event handler: a refusal is shown as an error message."""
        try:
            return find_session(handle, request)
        except AppError as e:
            raise gr.Error(str(e), print_exception=False) from None

    def slider_updates(session, value_only: bool = False) -> list:
        updates = []
        for i in range(MAX_SLIDERS):
            if i < len(session.sliders):
                if value_only:
                    updates.append(gr.update(value=session.strengths[i]))
                else:
                    updates.append(gr.update(visible=True, label=session.sliders[i].label,
                                             value=session.strengths[i]))
            else:
                updates.append(gr.update(visible=False, value=0))
        return updates

    def edited_image(session):
        return None if session.subject is None else display_image(session.render())

    # ------------------------------------------------------------------ handlers

    def on_load(handle, request: gr.Request):
        try:
            session = find_session(handle, request)
        except AppError as e:  # shown on the page (an error raised by a load event would stay invisible)
            return handle, _error_markdown(str(e)), *([gr.skip()] * MAX_SLIDERS)
        if not session.sliders:
            session.set_sliders(initial_sliders)
        return handle, gr.skip(), *slider_updates(session)

    def on_unload(request: gr.Request):
        context.sessions.drop_connection(getattr(request, "session_hash", None))

    def load_upload(session, path, fit):
        try:
            target = read_upload(path, model, fit=fit, max_bytes=max_bytes)
        except AppError as e:
            gr.Warning(str(e))
            return gr.skip(), _error_markdown(str(e)), gr.skip(), gr.skip(), gr.skip()
        session.set_target(target, Path(path).name)
        session.upload_path = str(path)
        note = (f"**{html.escape(Path(path).name)}** → {G.img_resolution}×{G.img_resolution} "
                f"({'center crop' if fit == 'crop' else 'letterboxed'}). Choose a method and press Invert.")
        return display_image(target), note, None, None, _progress_html(0, "ready", "idle")

    def on_upload(handle, path, fit, request: gr.Request):
        # The file box is emptied again so that the next image can be dropped right away.
        if not path:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return (None, *load_upload(session_of(handle, request), path, fit))

    def on_fit(handle, fit, request: gr.Request):
        session = session_of(handle, request)
        if not session.upload_path or not Path(session.upload_path).is_file():
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return load_upload(session, session.upload_path, fit)

    def on_example(handle, evt: gr.SelectData, request: gr.Request):
        session = session_of(handle, request)
        index = example_indices[evt.index]
        name = examples[evt.index][1]
        session.set_target(model.heldout[index:index + 1], name)
        session.upload_path = None
        note = (f"Held-out example **{html.escape(name)}** (never seen in training). "
                "Choose a method and press Invert.")
        return display_image(session.target), note, None, None, _progress_html(0, "ready", "idle")

    def on_method(method):
        main, first = step_controls(method)
        spec = METHODS[method]
        summary = f"*{html.escape(spec.summary)}*" + (f" — {html.escape(spec.paper)}" if spec.paper else "")
        return (gr.update(visible=main is not None, value=main or 1),
                gr.update(visible=first is not None, value=first or 1), summary)

    def on_invert(handle, method, steps, first_steps, request: gr.Request):
        session = session_of(handle, request)
        if session.target is None:
            raise gr.Error("Upload an image or pick an example first.")
        if method not in methods:
            raise gr.Error(f"Unknown method {method!r}.")
        main, first = step_controls(method)
        settings = inversion_settings(method, steps if main is not None else None,
                                      first_steps if first is not None else None)
        if not session.lock.acquire(blocking=False):
            raise gr.Error("An inversion is already running in this session; press Stop first.")
        skip_sliders = [gr.skip()] * MAX_SLIDERS
        try:
            session.stop.clear()
            target = session.target
            yield (_progress_html(0, f"{method}: starting"), gr.skip(), gr.skip(), "", *skip_sliders)
            for event in stream_inversion(model, target, method, settings, seed=seed, stop=session.stop):
                if isinstance(event, InversionProgress):
                    image = display_image(event.image) if event.image is not None else gr.skip()
                    yield (_progress_html(event.fraction, f"{method}: {event.text()}"), image, gr.skip(), gr.skip(),
                           *skip_sliders)
                elif session.target is not target:  # a new image arrived meanwhile: this result is stale
                    yield (_progress_html(0, "stopped: the image changed; press Invert again", "idle"), None,
                           gr.skip(), "", *skip_sliders)
                else:
                    session.set_result(event)
                    yield (_progress_html(1, f"{method}: done in {event.seconds:.1f} s", "done"),
                           display_image(event.reconstruction), edited_image(session), _metrics_text(event),
                           *slider_updates(session, value_only=True))
        except (AppError, ValueError) as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # noqa: BLE001 - shown to the user; the app keeps serving
            raise gr.Error(f"The inversion failed ({type(e).__name__}: {e}).") from None
        finally:
            session.lock.release()

    def on_stop(handle, request: gr.Request):
        session_of(handle, request).stop.set()

    def show_directions(session, family, layers, count, **shown):
        """Slider updates for a family and layer range (a preset or any range the CLI takes); `shown`
        sets what the preset buttons (preset_value=) or the range box (box_value=) show."""
        try:
            session.set_sliders(library.sliders(family, layers, int(count)))
        except (AppError, ValueError) as e:
            return bad_directions(str(e))
        tunable = family in ("sefa", "ganspace")
        preset_value = {"value": shown["preset_value"]} if "preset_value" in shown else {}
        box_value = {"value": shown["box_value"]} if "box_value" in shown else {}
        return (gr.update(interactive=tunable, **preset_value), gr.update(interactive=tunable, **box_value),
                gr.update(interactive=tunable), *slider_updates(session), edited_image(session))

    def bad_directions(message):
        # A warning toast (a raised gr.Error would also log a traceback on the server); nothing changes.
        gr.Warning(message)
        return (gr.skip(),) * (4 + MAX_SLIDERS)

    def on_directions(handle, family, preset, layers_text, count, request: gr.Request):
        # A typed layer range, while present, wins over the preset buttons.
        layers = layers_text.strip() if layers_text and layers_text.strip() else (preset or "all")
        return show_directions(session_of(handle, request), family, layers, count)

    def on_preset(handle, family, preset, count, request: gr.Request):
        return show_directions(session_of(handle, request), family, preset, count, box_value="")

    def on_layers(handle, family, layers_text, count, request: gr.Request):
        if not layers_text or not layers_text.strip():
            return bad_directions("Type a layer range (e.g. 0-1, 2-5, 6-, 0,2,4-5) or pick a preset.")
        try:
            name, _ = library.layer_choice(layers_text)
        except AppError as e:
            return bad_directions(str(e))
        # The preset buttons show the preset the range equals, or none.
        return show_directions(session_of(handle, request), family, layers_text.strip(), count,
                               preset_value=name if name in presets else None)

    def on_slide(request: gr.Request, handle, *values):
        session = session_of(handle, request)
        if session.subject is None:
            session.edits(list(values))
            return gr.skip()
        return display_image(session.render(list(values)))

    def on_reset(handle, request: gr.Request):
        session = session_of(handle, request)
        session.strengths = [0.0] * len(session.sliders)
        return (*slider_updates(session, value_only=True), edited_image(session))

    def on_export(handle, request: gr.Request):
        session = session_of(handle, request)
        try:
            png, archive = session.export()
        except AppError as e:
            raise gr.Error(str(e)) from None
        return [str(png), str(archive)]

    def on_sample(handle, seeds_text, psi, request: gr.Request):
        session = session_of(handle, request)
        try:
            seeds = parse_seeds(seeds_text, max_count=MAX_SEEDS)  # counted before any list is built
            images = sample_seeds(model, seeds, float(psi))
        except (AppError, ValueError) as e:
            message = str(e) if isinstance(e, AppError) else f"Bad seeds: {e}."
            return gr.skip(), _error_markdown(message)
        session.samples = [(seed, float(psi)) for seed, _ in images]
        return ([(display_image(img, 128), f"seed {seed}") for seed, img in images],
                f"{len(images)} samples at ψ = {float(psi):.2f}. Click one to edit it in the first tab.")

    def on_pick_sample(handle, evt: gr.SelectData, request: gr.Request):
        session = session_of(handle, request)
        if not 0 <= evt.index < len(session.samples):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), *([gr.skip()] * MAX_SLIDERS)
        seed, psi = session.samples[evt.index]
        image = session.set_sample(model, seed, psi)
        session.upload_path = None
        note = f"Seed {seed} (ψ = {psi:.2f}) is now the subject: move the sliders in **Invert & edit**."
        return (note, display_image(image), display_image(image), edited_image(session),
                f"sample seed {seed}", *slider_updates(session, value_only=True))

    # ------------------------------------------------------------------ layout

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    card = model.card or {}
    header = (f"## ganinv — invert and edit\nModel **{html.escape(model.name)}**: "
              f"{G.img_resolution}×{G.img_resolution}, {G.img_channels} channel(s), {G.num_ws} ws × {G.w_dim}, "
              f"device {next(G.parameters()).device}. "
              + (html.escape(str(card.get("summary", ""))) if card.get("summary") else ""))
    with gr.Blocks(title="ganinv", analytics_enabled=False, delete_cache=(1800, 2 * 3600)) as demo:
        # The connection's key to its EditorSession: server-side only, issued by the store; when Gradio
        # discards a closed connection's state, the session is closed with it.
        # (An instance, not the class: each connection gets its own empty copy and no load event is added.)
        handle = gr.State(SessionHandle(), delete_callback=context.sessions.release)
        gr.Markdown(header)
        with gr.Tabs():
            with gr.Tab("Invert & edit", id="edit"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=280):
                        upload = gr.File(label=f"Upload an image (max {max_upload_mb:g} MB)", file_count="single",
                                         type="filepath", elem_id="upload", height=120)
                        if examples:
                            example_gallery = gr.Gallery(value=examples, label="…or pick a held-out example",
                                                         columns=6, height=190, allow_preview=False,
                                                         object_fit="contain", elem_id="examples", format="png",
                                                         interactive=False)
                        fit = gr.Radio(list(FITS), value="crop", label="Fit to a square", elem_id="fit")
                        preview = gr.Image(label="What the model sees", type="pil", format="png", interactive=False,
                                           height=260, elem_id="preview", buttons=[])
                        status = gr.Markdown("Upload an image to start.", elem_id="status")
                        face_step = face_controls()
                    with gr.Column(scale=1, min_width=280):
                        method = gr.Radio(methods, value=method0, label="Inversion method", elem_id="method")
                        method_info = gr.Markdown(on_method(method0)[2])
                        steps = gr.Slider(1, MAX_UI_STEPS, value=steps0 or 1, step=1, label="Steps",
                                          visible=steps0 is not None, elem_id="steps")
                        first_steps = gr.Slider(1, MAX_UI_STEPS, value=first0 or 1, step=1,
                                                label="First-stage steps (pivot / h(x))", visible=first0 is not None,
                                                elem_id="first-steps")
                        with gr.Row():
                            invert_button = gr.Button("Invert", variant="primary", elem_id="invert")
                            stop_button = gr.Button("Stop", elem_id="stop")
                        progress = gr.HTML(_progress_html(0, "idle", "idle"), elem_id="progress")
                        reconstruction = gr.Image(label="Reconstruction", type="pil", format="png",
                                                  interactive=False, height=260, elem_id="reconstruction", buttons=[])
                        metrics = gr.Markdown("", elem_id="metrics")
                    with gr.Column(scale=1, min_width=280):
                        family = gr.Radio([(label, key) for key, label in families.items()], value="sefa",
                                          label="Directions", elem_id="family")
                        preset = gr.Radio(presets, value="all", label="Layers (coarse = pose/shape, fine = "
                                          "colour/detail)", elem_id="preset")
                        layers_box = gr.Textbox("", label=f"…or any ws indices 0-{G.num_ws - 1} (e.g. 0-1, 2-5, "
                                                "6-, 0,2,4-5; Enter applies)", placeholder="0-1",
                                                elem_id="layers", max_lines=1)
                        count = gr.Slider(1, max_count, value=count0, step=1, label="Number of directions",
                                          elem_id="count")
                        sliders = [gr.Slider(-STRENGTH_LIMIT, STRENGTH_LIMIT, value=0, step=0.1,
                                             label=initial_sliders[i].label if i < count0 else f"direction {i}",
                                             visible=i < count0,
                                             elem_id=f"edit-{i}", elem_classes="edit-slider")
                                   for i in range(MAX_SLIDERS)]
                        reset = gr.Button("Reset sliders", elem_id="reset")
                        edited = gr.Image(label="Edited", type="pil", format="png", interactive=False, height=260,
                                          elem_id="edited", buttons=[])
                        export = gr.Button("Prepare downloads (edited PNG + result zip)", elem_id="export")
                        downloads = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                            elem_id="downloads")
                        face_export_controls(face_step)
            with gr.Tab("Sample seeds", id="sample"):
                with gr.Row():
                    seeds_box = gr.Textbox("0-7", label="Seeds (e.g. 0-7 or 1,5,42)", elem_id="seeds")
                    psi = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Truncation ψ", elem_id="psi")
                    sample_button = gr.Button("Generate", variant="primary", elem_id="sample")
                sample_status = gr.Markdown("", elem_id="sample-status")
                samples = gr.Gallery(label="Samples", columns=8, height=420, allow_preview=False,
                                     object_fit="contain", elem_id="samples", format="png", interactive=False)

        # ------------------------------------------------------------------ events
        demo.load(on_load, handle, [handle, status, *sliders], queue=False, show_progress="hidden")
        demo.unload(on_unload)
        upload_outputs = [preview, status, reconstruction, edited, progress]
        upload_event = upload.upload(on_upload, [handle, upload, fit], [upload, *upload_outputs], queue=False,
                                     show_progress="minimal")
        wire_face_step(face_step, upload_event, model=model, handle=handle, session_of=session_of,
                       display_image=display_image, preview=preview, status=status, reconstruction=reconstruction,
                       edited=edited)
        fit.change(on_fit, [handle, fit], upload_outputs, queue=False, show_progress="hidden")
        if examples:
            example_gallery.select(on_example, handle, upload_outputs, queue=False, show_progress="hidden")
        method.change(on_method, method, [steps, first_steps, method_info], queue=False, show_progress="hidden")
        invert_event = invert_button.click(
            on_invert, [handle, method, steps, first_steps], [progress, reconstruction, edited, metrics, *sliders],
            concurrency_limit=max_concurrent_inversions, concurrency_id="inversion", show_progress="hidden")
        stop_button.click(on_stop, handle, None, queue=False, show_progress="hidden")
        del invert_event  # stopping goes through the session's flag, so a stopped run still returns its result
        direction_outputs = [preset, layers_box, count, *sliders, edited]
        for control in (family, count):  # user changes only (.input), latest value wins
            control.input(on_directions, [handle, family, preset, layers_box, count], direction_outputs,
                          trigger_mode="always_last", show_progress="minimal")
        preset.input(on_preset, [handle, family, preset, count], direction_outputs, trigger_mode="always_last",
                     show_progress="minimal")
        layers_box.submit(on_layers, [handle, family, layers_box, count], direction_outputs, trigger_mode="always_last",
                          show_progress="minimal")
        for slider in sliders:
            slider.input(on_slide, [handle, *sliders], edited, queue=False, trigger_mode="always_last",
                         show_progress="hidden")
        reset.click(on_reset, handle, [*sliders, edited], queue=False, show_progress="hidden")
        export.click(on_export, handle, downloads, show_progress="minimal")
        sample_button.click(on_sample, [handle, seeds_box, psi], [samples, sample_status], show_progress="minimal")
        samples.select(on_pick_sample, handle, [sample_status, preview, reconstruction, edited, status, *sliders],
                       queue=False, show_progress="hidden")
    demo.queue(max_size=64, default_concurrency_limit=4)
    # Downloads are written under the workspace's session folders, which may lie outside the system temp
    # folder (--workdir): Gradio may serve the exports from there and nothing else outside its cache.
    demo.ganinv_launch_kwargs = dict(theme=theme, css=CSS, max_file_size=max_bytes,
                                     allowed_paths=[str(workspace.root / "sessions")])
    return demo, context


def serve(model: Model | str | None = None, *, host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_concurrent_inversions: int = 1, seed: int = 0,
          workdir: str | os.PathLike | None = None, quiet: bool = False,
          on_ready: Optional[Callable[[str, Workspace], None]] = None, max_sessions: int = 64,
          max_sessions_per_client: int = 16) -> None:
    """Load the model, start the app on host:port and block until interrupted (Ctrl-C or SIGTERM); the
    temporary workspace is removed on the way out."""

    workspace = Workspace(workdir)
    demo = None
    previous_handler = None
    try:
        bundle = load_model(model, device=resolve_device(device))
        demo, context = build_app(bundle, workspace, max_upload_mb=max_upload_mb,
                                  max_concurrent_inversions=max_concurrent_inversions, seed=seed,
                                  max_sessions=max_sessions, max_sessions_per_client=max_sessions_per_client)
        if threading.current_thread() is threading.main_thread():
            def on_sigterm(signum, frame):  # noqa: ARG001
                raise KeyboardInterrupt
            previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
        demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, quiet=True,
                    show_error=False, ssr_mode=False, mcp_server=False, pwa=False, enable_monitoring=False,
                    prevent_thread_lock=True, run_history=False,
                    footer_links=["gradio", "settings"], **demo.ganinv_launch_kwargs)
        url = f"http://{host}:{demo.server_port}/"
        if on_ready is not None:
            on_ready(url, workspace)
        if not quiet:
            print(f"ganinv serve: {url} (model {bundle.name}, workspace {workspace.root}); Ctrl-C to stop",
                  flush=True)
        demo.block_thread()
    finally:
        if demo is not None:
            try:
                demo.close()
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        workspace.cleanup()


__all__ = ["build_app", "serve", "AppContext"]
