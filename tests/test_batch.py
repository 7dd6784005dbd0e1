"""Many inputs as one job: unique output names, the manifest, resuming, Ray workers, videos."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_discriminator, tiny_generator
from ganinv.batch import Manifest, invert_many, invert_video, plan_jobs, result_names
from ganinv.errors import GanInvError
from ganinv.inversion.result import InversionResult, is_complete_result
from ganinv.models.checkpoints import save_native

FAST = {"num_steps": 3}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("batch") / "model"
    save_native(folder, tiny_generator(resolution=16), tiny_discriminator(resolution=16), card={"name": "tiny16"})
    return str(folder)


def _images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    paths = []
    for i in range(count):
        path = folder / f"img{i:02d}.png"
        Image.fromarray((rng.rand(16, 16, 3) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _latents(outdir: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p / "latent.npz")["w"] for p in sorted(outdir.iterdir()) if (p / "latent.npz").is_file()}


def test_output_names_are_distinct_and_stable():
    paths = [Path("x/a-2.png"), Path("x/a.jpg"), Path("x/a.png"), Path("y/a.png"), Path("x/b.png")]
    names = result_names(paths)
    assert len(set(names)) == len(names) and names == result_names(paths)
    assert names[0] == "a-2" and names[-1] == "b" and "a-jpg" in names


def test_local_engine_writes_a_manifest_and_resumes_by_content(model_dir, tmp_path):
    paths = _images(tmp_path / "in", 3)
    out = tmp_path / "out"
    first = invert_many(paths, model_dir, out, "optimize", settings=FAST, progress=False)
    assert (first["done"], first["skipped"], first["failed"]) == (3, 0, 0)
    entries = Manifest(out).entries()
    assert [e["status"] for e in entries] == ["done"] * 3 and all(len(e["sha256"]) == 64 for e in entries)
    assert all(is_complete_result(out / p.stem) for p in paths)
    again = invert_many(paths, model_dir, out, "optimize", settings=FAST, progress=False)
    assert (again["done"], again["skipped"]) == (0, 3)
    # Other bytes under the same name: only that input is redone.
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(paths[1])
    third = invert_many(paths, model_dir, out, "optimize", settings=FAST, progress=False)
    assert (third["done"], third["skipped"]) == (1, 2)
    report = json.loads((out / "img01" / "report.json").read_text())
    assert report["input"]["sha256"] == Manifest(out).latest()["img01"]["sha256"]


def test_bad_inputs_fail_alone_and_bad_settings_fail_first(model_dir, tmp_path):
    paths = _images(tmp_path / "in", 2)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not an image")
    summary = invert_many([*paths, broken], model_dir, tmp_path / "out", "optimize", settings=FAST, progress=False)
    assert (summary["done"], summary["failed"]) == (2, 1) and "broken.png" in summary["failures"][0]["error"]
    with pytest.raises(GanInvError, match="num_steps"):
        invert_many(paths, model_dir, tmp_path / "out2", "optimize", settings={"num_steps": -1}, progress=False)
    with pytest.raises(GanInvError, match="engine"):
        invert_many(paths, model_dir, tmp_path / "out3", engine="spark", progress=False)
    with pytest.raises(GanInvError, match="cannot read"):
        plan_jobs([tmp_path / "missing.png"], tmp_path / "out4")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="pip install 'ganinv[scale]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_gives_the_single_process_latents_and_survives_a_killed_worker(model_dir, tmp_path, ray_cluster):
    ray = ray_cluster
    paths = _images(tmp_path / "in", 12)
    local = tmp_path / "local"
    invert_many(paths, model_dir, local, "optimize", settings=FAST, progress=False)
    killed = []

    def kill_first_worker(job, info):
        if not killed and info["status"] == "done":
            killed.append(info["worker"])
            ray.kill(ray.get_actor(info["worker"]))

    distributed = tmp_path / "ray"
    summary = invert_many(paths, model_dir, distributed, "optimize", settings=FAST, engine="ray", num_workers=2,
                          progress=False, on_result=kill_first_worker)
    assert killed and summary["done"] == 12 and summary["failed"] == 0
    done = [e for e in Manifest(distributed).entries() if e["status"] == "done"]
    assert sorted(e["output"] for e in done) == sorted(p.stem for p in paths)  # each exactly once
    assert any(e["attempt"] > 1 for e in done) or len({e["worker"] for e in done}) > 2  # a job moved on
    ours, theirs = _latents(local), _latents(distributed)
    assert ours.keys() == theirs.keys() and len(ours) == 12
    for name in ours:
        np.testing.assert_allclose(theirs[name], ours[name], atol=1e-5)


def test_cli_batch_resumes_after_the_driver_is_killed(model_dir, tmp_path):
    paths = _images(tmp_path / "in", 6)
    out = tmp_path / "out"
    command = [sys.executable, "-c", "from ganinv.cli import entry; entry()", "invert", *map(str, paths),
               "--model", model_dir, "--outdir", str(out), "--engine", "local", "--num-steps", "30", "--quiet"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen(command, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(Manifest(out).entries()) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = len(Manifest(out).entries())
    assert 2 <= finished_before < 6, "the driver should have been killed mid-batch"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    done = [e for e in Manifest(out).entries() if e["status"] == "done"]
    assert sorted(e["output"] for e in done) == sorted(p.stem for p in paths)
    assert all(is_complete_result(out / p.stem) for p in paths)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(p.stem for p in paths)


def test_video_frames_start_from_the_previous_latent(model_dir, tmp_path):
    av = pytest.importorskip("av", reason="pip install 'ganinv[scale]'")
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(4):
            frame = np.full((32, 32, 3), 40 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    summary = invert_video(video, model_dir, tmp_path / "out", "optimize", settings=FAST, progress=False)
    assert summary["done"] == 4
    second = InversionResult.load(tmp_path / "out" / "clip" / "frame_000001", model=model_dir)
    assert second.extras["init"].startswith("given optimize")
    again = invert_video(video, model_dir, tmp_path / "out", "optimize", settings=FAST, progress=False)
    assert (again["done"], again["skipped"]) == (0, 4)
    (tmp_path / "empty.mp4").write_bytes(b"nothing")
    with pytest.raises(GanInvError, match="empty.mp4"):
        invert_video(tmp_path / "empty.mp4", model_dir, tmp_path / "out", "optimize", progress=False)


# ---------------------------------------------------------------------- one batch tensor, several methods

@pytest.mark.parametrize("space", ["w", "w+", "z"])
def test_an_optimize_batch_gives_each_image_what_it_gets_alone(model_dir, pti_targets, space):
    """Each image of a batch sees the random draws and the loss it sees alone (few steps: rounding only)."""
    from ganinv.inversion import invert
    settings = {"num_steps": 4, "space": space, "noise_init": "random"}
    batch = invert(model_dir, pti_targets, "optimize", **settings)
    for i in range(len(pti_targets)):
        alone = invert(model_dir, pti_targets[i:i + 1], "optimize", **settings)
        torch.testing.assert_close(batch.ws[i:i + 1], alone.ws, atol=1e-4, rtol=0)
        torch.testing.assert_close(batch[i].render(), alone.render(), atol=1e-4, rtol=0)


# ---------------------------------------------------------------------- PTI: one tuned generator per target

# locality_alpha below the distance from the pivots to prior samples: each target's locality latents then
# depend on its own pivot (with the default, the tiny model's prior samples themselves are used).
PTI_FAST = {"pivot_steps": 4, "num_steps": 5, "seed": 3, "locality_alpha": 1.0}


@pytest.fixture(scope="module")
def pti_targets(model_dir) -> torch.Tensor:
    from ganinv.models.prior import sample_prior
    G = tiny_generator(resolution=16)
    with torch.no_grad():
        return G.synthesis(sample_prior(G, 3, seed=5) + 0.3).clamp(-1, 1)


@pytest.fixture(scope="module")
def pti_batch(model_dir, pti_targets):
    from ganinv.inversion import invert
    return invert(model_dir, pti_targets, "pti", **PTI_FAST)


def test_pti_batch_gives_each_target_what_it_gets_alone(model_dir, pti_targets, pti_batch):
    from ganinv.inversion import invert
    from ganinv.models.prior import sample_prior
    assert isinstance(pti_batch.G_tuned, list) and len(pti_batch.G_tuned) == 3
    renders = pti_batch.render()
    for i in range(3):
        alone = invert(model_dir, pti_targets[i:i + 1], "pti", **PTI_FAST)
        torch.testing.assert_close(pti_batch.ws[i:i + 1], alone.ws, atol=1e-4, rtol=0)
        torch.testing.assert_close(pti_batch.reconstruction[i:i + 1], alone.reconstruction, atol=1e-4, rtol=0)
        # Each target's own tuned generator renders what the lone run's does, here and far from the pivot.
        torch.testing.assert_close(pti_batch[i].render(), alone.render(), atol=1e-4, rtol=0)
        torch.testing.assert_close(renders[i:i + 1], alone.render(), atol=1e-4, rtol=0)
        far = sample_prior(pti_batch.G_base, 4, seed=9)
        with torch.no_grad():  # the tuned weights themselves, away from the pivot and without the gate
            torch.testing.assert_close(pti_batch.G_tuned[i].tuned_generator.synthesis(far),
                                       alone.G_tuned.tuned_generator.synthesis(far), atol=1e-4, rtol=0)
        assert pti_batch.extras["locality"][i]["locality_ratio"] == pytest.approx(
            alone.extras["locality"]["locality_ratio"], rel=1e-3, abs=1e-6)
    # The generators differ between targets (each was tuned on its own pivot).
    far = pti_batch.ws[:1] + 0.0
    with torch.no_grad():
        first = pti_batch.G_tuned[0].tuned_generator.synthesis(far)
        second = pti_batch.G_tuned[1].tuned_generator.synthesis(far)
    assert (first - second).abs().max() > 1e-3


def test_pti_target_psnr_stops_each_target_on_its_own(model_dir, pti_targets):
    from ganinv.inversion import invert
    from ganinv.inversion.base import psnr_of
    settings = {**PTI_FAST, "num_steps": 8}
    alone = [invert(model_dir, pti_targets[i:i + 1], "pti", **settings) for i in range(3)]
    # A threshold between the targets' first-step PSNRs: some stop at once, the others go on.
    final = sorted(float(psnr_of(r.reconstruction, t)) for r, t in zip(alone, pti_targets.split(1)))
    baseline = [invert(model_dir, pti_targets[i:i + 1], "pti", **{**settings, "num_steps": 1}) for i in range(3)]
    starts = sorted(float(b.metrics["psnr"][0]) for b in baseline)
    threshold = (starts[0] + starts[-1]) / 2
    assert starts[0] < threshold < final[-1]
    stopped = [invert(model_dir, pti_targets[i:i + 1], "pti", **settings, target_psnr=threshold) for i in range(3)]
    batch = invert(model_dir, pti_targets, "pti", **settings, target_psnr=threshold)
    reasons = [r.stop_reason for r in stopped]
    assert len(set(reasons)) > 1, reasons  # the targets stopped at different steps
    assert batch.stop_reason == "; ".join(f"target {i}: {r}" for i, r in enumerate(reasons))
    for i in range(3):
        torch.testing.assert_close(batch.reconstruction[i:i + 1], stopped[i].reconstruction, atol=1e-4, rtol=0)
        torch.testing.assert_close(batch[i].render(), stopped[i].render(), atol=1e-4, rtol=0)


def test_pti_batch_result_saves_one_folder_per_target_and_loads_back(model_dir, pti_batch, tmp_path):
    folders = pti_batch.save(tmp_path / "pti")
    assert [f.name for f in folders] == ["0000", "0001", "0002"]
    assert all((f / "generator").is_dir() for f in folders)
    one = json.loads((folders[1] / "report.json").read_text())
    assert one["extras"]["locality"] == pti_batch.extras["locality"][1]
    loaded = InversionResult.load(tmp_path / "pti", model=model_dir)
    assert len(loaded) == 3 and isinstance(loaded.G_tuned, list)
    torch.testing.assert_close(loaded.ws, pti_batch.ws)
    torch.testing.assert_close(loaded.render(), pti_batch.render(), atol=1e-6, rtol=0)
    single = InversionResult.load(folders[2], model=model_dir)
    torch.testing.assert_close(single.render(), pti_batch[2].render(), atol=1e-6, rtol=0)
    assert loaded.extras["locality"] == [json.loads((f / "report.json").read_text())["extras"]["locality"]
                                         for f in folders]


def test_pti_shared_generator_tunes_one_copy_for_all_targets(model_dir, pti_targets):
    from ganinv.inversion import invert
    shared = invert(model_dir, pti_targets, "pti", **PTI_FAST, shared_generator=True)
    assert not isinstance(shared.G_tuned, list) and len(shared) == 3
