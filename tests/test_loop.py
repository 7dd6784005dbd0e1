"""The shared training loop (`ganinv.train.loop`) on a toy trainer: counting, stopping, resuming, signals."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from ganinv.train.loop import CHECKPOINT_FILE, STATS_FILE, TrainingLoop, read_state, save_state


class ToyTrainer:
    """A random walk driven by its own seeded generator: a resumed run is bit-exact only if the loop
    restores the whole state and runs every step exactly once."""

    def __init__(self, seed: int = 0, images_per_step: int = 1, on_step=None):
        self.device = torch.device("cpu")
        self.training_seconds = 0.0
        self.generator = torch.Generator().manual_seed(seed)
        self.value = torch.zeros(4)
        self.step_index = 0
        self.images_per_step = images_per_step
        self.on_step = on_step

    @property
    def images_seen(self) -> int:
        return self.step_index * self.images_per_step

    def step(self) -> dict[str, float]:
        self.value = self.value + torch.randn(4, generator=self.generator)
        self.step_index += 1
        if self.on_step is not None:
            self.on_step(self)
        return {"norm": float(self.value.norm())}

    def save_checkpoint(self, path):
        return save_state({"value": self.value, "rng": self.generator.get_state(), "step_index": self.step_index,
                           "training_seconds": self.training_seconds}, path)

    def load_checkpoint(self, path) -> None:
        state = read_state(path)
        self.value, self.step_index = state["value"], int(state["step_index"])
        self.generator.set_state(state["rng"])
        self.training_seconds = float(state["training_seconds"])


def _loop(trainer, run_dir, total=10, snapshot_every=4, **kwargs):
    return TrainingLoop(trainer, run_dir, count=lambda: trainer.images_seen, total=total,
                        snapshot_every=snapshot_every, progress=False,
                        stats_head=lambda rate: {"step": trainer.step_index}, **kwargs)


def _stat_steps(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / STATS_FILE).read_text().splitlines()]


def test_runs_to_total_with_periodic_and_final_snapshots(tmp_path):
    trainer = ToyTrainer()
    evaluated, written = [], []
    loop = _loop(trainer, tmp_path, evaluate=lambda: evaluated.append(trainer.step_index) or {"eval": 1.5},
                 artifacts=lambda stats, evaluation: written.append((trainer.step_index, evaluation)))
    assert loop.run() == "total"
    assert trainer.step_index == 10 and trainer.training_seconds > 0
    assert _stat_steps(tmp_path) == [4, 8, 10] and evaluated == [4, 8, 10]
    assert written == [(4, {"eval": 1.5}), (8, {"eval": 1.5}), (10, {"eval": 1.5})]
    line = json.loads((tmp_path / STATS_FILE).read_text().splitlines()[-1])
    assert line["eval"] == 1.5 and line["norm"] == round(float(trainer.value.norm()), 5)
    assert {"time", "threads", "device"} <= set(line)
    assert int(read_state(tmp_path / CHECKPOINT_FILE)["step_index"]) == 10
    # Nothing left to do: no step, no new snapshot.
    assert loop.run() == "total" and loop.steps_done == 0 and _stat_steps(tmp_path) == [4, 8, 10]


def test_snapshots_follow_the_count_when_a_step_adds_several_units(tmp_path):
    trainer = ToyTrainer(images_per_step=3)
    loop = _loop(trainer, tmp_path, total=20, snapshot_every=5)
    loop.run()
    # Counts 3, 6, 9, ..., 21: snapshots when 5, 10, 15 and 20 are crossed.
    assert _stat_steps(tmp_path) == [2, 4, 5, 7]


def test_stop_flag_ends_the_run_after_the_current_step(tmp_path):
    holder = {}

    def stop_at_three(trainer):
        if trainer.step_index == 3:
            holder["loop"].stop.request()

    trainer = ToyTrainer(on_step=stop_at_three)
    loop = holder["loop"] = _loop(trainer, tmp_path, total=100, snapshot_every=50)
    assert loop.run() == "stop_requested"
    assert trainer.step_index == 3 and _stat_steps(tmp_path) == [3]
    assert int(read_state(tmp_path / CHECKPOINT_FILE)["step_index"]) == 3


def test_resume_continues_the_count_bit_exactly(tmp_path):
    straight = ToyTrainer()
    _loop(straight, tmp_path / "straight").run()

    first = ToyTrainer()
    assert _loop(first, tmp_path / "resumed").run(max_steps=3) == "max_steps"
    assert first.step_index == 3
    second = ToyTrainer()
    loop = _loop(second, tmp_path / "resumed")
    assert loop.resume() and second.step_index == 3
    loop.run()
    assert second.step_index == 10 and torch.equal(second.value, straight.value)
    # One rolling checkpoint; the stats continue where the first call left off.
    assert _stat_steps(tmp_path / "resumed") == [3, 4, 8, 10]
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == [CHECKPOINT_FILE, STATS_FILE]
    assert not _loop(ToyTrainer(), tmp_path / "fresh").resume()


def test_max_seconds_stops_the_call(tmp_path):
    trainer = ToyTrainer()
    assert _loop(trainer, tmp_path, total=10 ** 9).run(max_seconds=0.0) == "max_seconds"
    assert trainer.step_index == 0 and not (tmp_path / CHECKPOINT_FILE).exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_leaves_a_valid_resume_file(tmp_path, signum):
    previous = signal.getsignal(signum)

    def signal_at_two(trainer):
        if trainer.step_index == 2:
            os.kill(os.getpid(), signum)

    trainer = ToyTrainer(on_step=signal_at_two)
    loop = _loop(trainer, tmp_path, total=100, snapshot_every=50, handle_signals=True)
    assert loop.run() == "stop_requested"
    assert trainer.step_index == 2
    assert signal.getsignal(signum) is previous
    resumed = ToyTrainer()
    loop = _loop(resumed, tmp_path, total=5, snapshot_every=50)
    assert loop.resume() and resumed.step_index == 2 and torch.equal(resumed.value, trainer.value)
    loop.run()
    straight = ToyTrainer()
    _loop(straight, tmp_path / "straight", total=5).run()
    assert torch.equal(resumed.value, straight.value)


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / CHECKPOINT_FILE
    save_state({"step_index": 1}, path)
    with pytest.raises(Exception):
        save_state({"step_index": 2, "bad": lambda: None}, path)  # a lambda cannot be pickled
    assert read_state(path)["step_index"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        read_state(tmp_path / "missing.pt")


def test_config_for_run_keeps_a_runs_settings_except_the_schedule(tmp_path):
    from dataclasses import dataclass

    from ganinv.train.loop import RunConfig, config_for_run

    @dataclass
    class Settings(RunConfig):
        width: int = 8
        betas: tuple[float, float] = (0.0, 0.99)
        total: int = 10

    assert Settings.from_dict(Settings(betas=(0.5, 0.9)).to_dict()) == Settings(betas=(0.5, 0.9))
    with pytest.raises(ValueError, match="unknown training settings"):
        Settings.from_dict({"height": 3})
    asked = Settings(width=16, total=50)
    assert config_for_run(asked, tmp_path, resume=True, schedule=["total"]) is asked  # no checkpoint yet
    save_state({"config": json.dumps(Settings(width=4, betas=(0.1, 0.2)).to_dict())}, tmp_path / CHECKPOINT_FILE)
    resumed = config_for_run(asked, tmp_path, resume=True, schedule=["total"])
    assert resumed == Settings(width=4, betas=(0.1, 0.2), total=50)
    with pytest.raises(FileExistsError) as error:
        config_for_run(asked, tmp_path, resume=False, schedule=["total"])
    assert error.value.filename == str(tmp_path / CHECKPOINT_FILE)
