"""Web UI (`ganinv serve`): upload or pick an image, invert it with live progress, edit it with direction
sliders, download the edit and the result.

`session` holds the framework-free logic (tested directly); `server` builds the Gradio app on it and is
imported only when serving, so `import ganinv.app` does not need Gradio.
"""
from __future__ import annotations

from .session import (AppError, DirectionLibrary, EditorSession, InversionProgress, SessionHandle,  # noqa: F401
                      SessionStore, SliderSpec, Workspace, available_methods, display_image, read_upload,
                      stream_inversion)


def serve(*args, **kwargs) -> None:
    """Start the web UI (see `ganinv.app.server.serve`); needs the `ui` extra (gradio)."""
    from .server import serve as _serve
    _serve(*args, **kwargs)


def build_app(*args, **kwargs):
    """The Gradio app and its context (see `ganinv.app.server.build_app`)."""
    from .server import build_app as _build_app
    return _build_app(*args, **kwargs)


__all__ = ["serve", "build_app", "AppError", "DirectionLibrary", "EditorSession", "InversionProgress",
           "SessionHandle", "SessionStore", "SliderSpec", "Workspace", "available_methods", "display_image",
           "read_upload", "stream_inversion"]
