"""Data-parallel training under torchrun with two CPU processes (gloo): networks stay equal on every
process, losses are finite, process 0 writes the run, and a run resumes."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from test_train import _tiny_dataset

TESTS = Path(__file__).resolve().parent


def _torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_processes_keep_equal_networks_and_finite_losses(tmp_path):
    out = tmp_path / "report.json"
    done = _torchrun(str(TESTS / "ddp_worker.py"), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["world_size"] == 2 and report["local_batch"] == 4
    assert report["kimg"] == 3 * 8 / 1000  # the global batch counts
    first, second = report["checksums"]
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) for a, b in zip(first, second)), (first, second)
    assert all(math.isfinite(v) for step in report["losses"] for v in step)
    # The processes draw different data (otherwise two processes would only repeat one's work).
    assert report["first_image_means"][0] != report["first_image_means"][1]


def test_torchrun_cli_run_resumes_and_only_process_zero_writes(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    run = tmp_path / "run"
    args = ["-m", "ganinv", "train", "--data", str(data), "--outdir", str(run), "--batch", "8", "--z-dim", "16",
            "--w-dim", "16", "--channel-base", "128", "--channel-max", "16", "--device", "cpu", "--quiet"]
    first = _torchrun(*args, "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert int(state["step_index"]) == 2 and int(state["num_images_seen"]) == 16
    lines = (run / "stats.jsonl").read_text().splitlines()
    assert len(lines) == 1  # one final snapshot, written once (by process 0)
    second = _torchrun(*args, "--max-steps", "3")
    assert second.returncode == 0, second.stderr[-3000:]
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert int(state["step_index"]) == 5
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temporary files left
