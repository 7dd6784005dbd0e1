"""Kill a batch inversion (SIGKILL, no chance to clean up) and resume it with --skip-existing: every input
ends with exactly one complete result folder, for the right input (its sha256), and no half-written or
temporary folder is taken for a result or left behind."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganinv.cli import main
from ganinv.cli.common import run_main
from ganinv.inversion.result import is_complete_result, read_result_report
from ganinv.models.checkpoints import save_native
from conftest import tiny_generator

SRC = Path(__file__).resolve().parent.parent / "src"
INPUTS = ["p0.png", "p1.png", "a.png", "a.jpg", "p3.png"]
NAMES = {"p0": "p0.png", "p1": "p1.png", "a-png": "a.png", "a-jpg": "a.jpg", "p3": "p3.png"}

# The CLI as a user runs it; with GANINV_TEST_STALL set, it stops for good right after writing the second
# result's target.png (inside the folder being built), and says so in the marker file: a kill lands mid-write.
RUNNER = r"""
import os, sys, time
from pathlib import Path
stall = os.environ.get("GANINV_TEST_STALL")
if stall:
    import ganinv.inversion.result as result_module
    real_save_image = result_module.save_image
    written = []

    def save_image(image, path, *args, **kwargs):
        out = real_save_image(image, path, *args, **kwargs)
        if Path(path).name == "target.png":
            written.append(path)
            if len(written) == 2:
                Path(stall).write_text(str(path))
                time.sleep(600)
        return out

    result_module.save_image = save_image
from ganinv.cli import entry
sys.argv = ["ganinv"] + sys.argv[1:]
entry()
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume-model") / "tiny"
    save_native(folder, tiny_generator(resolution=16), None, card={"name": "tiny"})
    return folder


def _photos(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, name in enumerate(INPUTS):
        array = np.full((16, 16, 3), 30 * i + 20, np.uint8)
        array[i::5, ::3] = 250
        Image.fromarray(array).save(folder / name, quality=95)
    return folder


def _start(photos: Path, model_dir: Path, out: Path, stall: Path | None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               GANINV_THREADS="1", OMP_NUM_THREADS="1")
    if stall is not None:
        env["GANINV_TEST_STALL"] = str(stall)
    command = [sys.executable, "-c", RUNNER, "invert", str(photos), "--model", str(model_dir), "--steps", "3",
               "--outdir", str(out), "--quiet"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the batch ended (rc {process.returncode}) before the kill: {err.decode()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the batch did not get far enough in time")
        time.sleep(0.02)


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


def _resume_and_check(photos: Path, model_dir: Path, out: Path, capsys, monkeypatch) -> None:
    done_before = {n: (out / n / "report.json").stat().st_mtime_ns for n in NAMES if is_complete_result(out / n)}
    assert done_before
    monkeypatch.setattr(sys, "argv", ["ganinv", "invert", str(photos), "--model", str(model_dir), "--steps", "3",
                                      "--outdir", str(out), "--skip-existing"])
    code = run_main(main)
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert stdout.count("already done") == len(done_before), stdout
    # exactly one folder per input, each complete and for its own input; nothing hidden left over
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)
    for name, source in NAMES.items():
        assert is_complete_result(out / name), name
        recorded = read_result_report(out / name)["input"]
        assert recorded["sha256"] == hashlib.sha256((photos / source).read_bytes()).hexdigest(), name
        assert Path(recorded["path"]).name == source
    for name, stamp in done_before.items():  # finished results were not redone
        assert (out / name / "report.json").stat().st_mtime_ns == stamp


def test_sigkill_mid_write_then_resume(model_dir, tmp_path, capsys, monkeypatch):
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "out"
    marker = tmp_path / "stalled"
    process = _start(photos, model_dir, out, stall=marker)
    _wait_for(marker.exists, process)
    _kill(process)
    # killed while writing the second result (a folder's images in name order: a.jpg, a.png, p0...): the
    # first is complete, the second exists only as a hidden, half-built folder nothing takes for a result
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    hidden = [p for p in out.iterdir() if p.name.startswith(".")]
    assert visible == ["a-jpg"] and is_complete_result(out / "a-jpg")
    assert len(hidden) == 1 and hidden[0].name.startswith(".a-png.partial-") and (hidden[0] / "target.png").exists()
    assert not is_complete_result(out / "a-png") and not (out / "a-png").exists()
    _resume_and_check(photos, model_dir, out, capsys, monkeypatch)


def test_sigkill_at_any_moment_after_the_first_result_then_resume(model_dir, tmp_path, capsys, monkeypatch):
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "out"
    process = _start(photos, model_dir, out, stall=None)
    _wait_for(lambda: (out / "p0" / "report.json").exists(), process)
    _kill(process)
    for folder in out.iterdir():  # whatever exists under a result's name is complete
        assert folder.name.startswith(".") or is_complete_result(folder), folder
    _resume_and_check(photos, model_dir, out, capsys, monkeypatch)
