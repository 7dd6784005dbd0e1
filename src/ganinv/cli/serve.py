"""`ganinv serve`: the web UI (upload, invert with live progress, edit with sliders, download)."""
from __future__ import annotations

import click

from .common import UserError, common_options, model_option, set_threads
from ..models.checkpoints import CheckpointError


@click.command("serve")
@model_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 exposes the app to your network).")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--max-upload-mb", default=10.0, show_default=True, type=click.FloatRange(0.01, 500),
              help="Largest accepted upload, in megabytes.")
@click.option("--max-concurrent-inversions", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Inversions that run at once; later ones wait in a queue (edits never wait).")
@click.option("--max-sessions", default=64, show_default=True, type=click.IntRange(1, 10_000),
              help="Editing sessions held at once; only idle ones are closed to make room, else a new one "
                   "is refused.")
@click.option("--max-sessions-per-client", default=16, show_default=True, type=click.IntRange(1, 10_000),
              help="Editing sessions one client address may hold.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Parent folder of the app's temporary workspace (default: the system temp folder); "
                   "the workspace is removed on exit.")
@common_options
def serve(model, host, port, device, max_upload_mb, max_concurrent_inversions, max_sessions,
          max_sessions_per_client, workdir, seed, quiet):
    """Start the web UI for a model and serve it until Ctrl-C. --seed seeds every inversion."""
    try:
        from ..app import server
    except ImportError as e:
        raise UserError(f"the web UI needs gradio ({e}); install it with: pip install 'ganinv[ui]'") from None
    set_threads()
    try:
        server.serve(model, host=host, port=port, device=device, max_upload_mb=max_upload_mb,
                     max_concurrent_inversions=max_concurrent_inversions, seed=seed, workdir=workdir, quiet=quiet,
                     max_sessions=max_sessions, max_sessions_per_client=max_sessions_per_client)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        if "port" in str(e).lower() or getattr(e, "errno", None) in (98, 48):
            raise UserError(f"cannot listen on {host}:{port} ({e}); choose another --port") from None
        raise
    except KeyboardInterrupt:
        pass


COMMANDS = [serve]
