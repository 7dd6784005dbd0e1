"""The GPU checklist (scripts/gpu_check.sh) as a dry run on the CPU, and the checkpoint packing it uses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_train import _tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_speed  # noqa: E402
import pack_run  # noqa: E402


def _train(data: Path, run: Path, steps: int) -> None:
    from click.testing import CliRunner
    from ganinv.cli import main
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--outdir", str(run), "--max-steps", str(steps),
                                       "--batch", "8", "--z-dim", "16", "--w-dim", "16", "--channel-base", "128",
                                       "--channel-max", "16", "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_dry_run_leaves_logs_speed_samples_and_a_resumable_packed_checkpoint(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path))
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--dry-run",
                           "--data", str(data), "--out", str(out), "--budget", "400"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "log.txt").read_text()
    for step in ("tests", "speed", "train"):
        assert f"{step} exit=0" in log, log
    speed = json.loads((out / "gpu_speed.json").read_text())
    assert speed["generator"][0]["img_per_s"] > 0 and speed["inversion"][0]["method"] == "encoder"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and (out / "samples.png").is_file()  # what a lent machine hands back
    run = tmp_path / "resumed"
    pack_run.unpack(out / "packed", run)
    _train(data, run, steps=5)  # five more steps after the dry run's three
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert int(state["step_index"]) == 8


def test_init_continues_a_snapshot_at_its_own_settings_and_hands_back_a_float16_snapshot(tmp_path):
    from click.testing import CliRunner
    from ganinv.cli import main

    data = _tiny_dataset(tmp_path / "data")
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--outdir", str(tmp_path / "run"), "--max-steps",
                                       "2", "--batch", "8", "--z-dim", "16", "--w-dim", "16", "--channel-base", "128",
                                       "--channel-max", "16", "--gamma", "0.4", "--augment", "color", "--quiet",
                                       "--snapshot-networks"])
    assert result.exit_code == 0, result.output
    snapshot = sorted((tmp_path / "run" / "snapshots").iterdir())[-1]
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path))
    script = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--dry-run", "--data", str(data)]
    done = subprocess.run([*script, "--out", str(out), "--steps", "train", "--init", str(snapshot)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "log.txt").read_text()
    assert "train exit=0" in log and "tests exit" not in log and "speed exit" not in log, log
    card = json.loads((out / "snapshot" / "card.json").read_text())
    settings = card["training_settings"]
    assert card["weights_dtype"] == "float16" and card["training_steps"] == 2 + 3
    assert (settings["r1_gamma"], settings["augment"], settings["channel_max"]) == (0.4, "color", 16)
    assert not (out / "packed").exists()
    # --widen-to: the same snapshot continued with more channels (channel_base 256: 16 at 16 px, not 8).
    wide = tmp_path / "wide"
    done = subprocess.run([*script, "--out", str(wide), "--steps", "train", "--init", str(snapshot),
                           "--widen-to", "256,16"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    card = json.loads((wide / "snapshot" / "card.json").read_text())
    assert card["training_settings"]["widen"] is True and card["training_settings"]["channel_base"] == 256
    assert card["generator"]["synthesis_kwargs"]["channels"]["16"] == 16
    for flags in (["--widen-to", "256"], ["--widen-to", "256,16", "--init", ""]):
        bad = subprocess.run([*script, "--out", str(tmp_path / "bad"), "--init", str(snapshot), *flags],
                             env=env, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "--widen-to takes BASE,MAX" in bad.stderr
    bad = subprocess.run([*script, "--out", str(tmp_path / "bad"), "--init", str(snapshot), "--resume-from", "x"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "exclude each other" in bad.stderr


def test_pack_reduces_until_it_fits_and_unpack_restores_float32(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    run = tmp_path / "run"
    _train(data, run, steps=2)
    full = (run / "checkpoint.pt").stat().st_size / 2 ** 20
    manifest = pack_run.pack(run, tmp_path / "packed", part_mb=0.05, max_total_mb=0.8 * full)
    assert manifest["level"] != "float32" and len(manifest["parts"]) > 1
    original = torch.load(run / "checkpoint.pt", weights_only=True)
    restored = torch.load(pack_run.unpack(tmp_path / "packed", tmp_path / "back"), weights_only=True)
    for key, value in original["G"].items():
        assert restored["G"][key].dtype == value.dtype
        assert torch.allclose(restored["G"][key], value, atol=1e-2, rtol=1e-2)
    with pytest.raises(SystemExit, match="not replaced"):  # the run folder is as far along: kept
        pack_run.unpack(tmp_path / "packed", run)
    assert pack_run.unpack(tmp_path / "packed", run, force=True) == run / "checkpoint.pt"
    (tmp_path / "packed" / "checkpoint.part01").write_bytes(b"truncated")
    with pytest.raises(SystemExit, match="sha256"):
        pack_run.unpack(tmp_path / "packed", tmp_path / "again")
    with pytest.raises(SystemExit, match="even reduced"):
        pack_run.pack(run, tmp_path / "tiny", max_total_mb=0.001)


def _fake_official_repo(root: Path, bias_act_init: str) -> Path:
    ops = root / "torch_utils" / "ops"
    ops.mkdir(parents=True)
    (root / "torch_utils" / "__init__.py").write_text("")
    (ops / "__init__.py").write_text("")
    (ops / "bias_act.py").write_text(f"def _init():\n    {bias_act_init}\n")
    (ops / "upfirdn2d.py").write_text("def _init():\n    return True\n")
    return root


def test_official_plugin_build_runs_apart_and_reports_failure_or_lateness(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    built = gpu_speed.start_plugin_build(str(_fake_official_repo(tmp_path / "ok", "return True")))
    assert gpu_speed.wait_for_plugin_build(built, time.monotonic() + 60) is None
    assert Path(os.environ["TORCH_EXTENSIONS_DIR"]).is_dir()  # a fresh folder, shared with this process
    failed = gpu_speed.start_plugin_build(str(_fake_official_repo(tmp_path / "bad", "return False")))
    assert "bias_act plugin did not build" in gpu_speed.wait_for_plugin_build(failed, time.monotonic() + 60)
    slow = gpu_speed.start_plugin_build(str(_fake_official_repo(tmp_path / "slow", "import time; time.sleep(60)")))
    start = time.monotonic()
    assert gpu_speed.wait_for_plugin_build(slow, start + 2) == "build not finished in time"
    assert time.monotonic() - start < 20 and slow.poll() is not None  # killed, not waited for
