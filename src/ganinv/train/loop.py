"""The one training loop under every ganinv trainer (the StyleGAN2 trainer and the encoder trainer).

A trainer supplies what is particular to it: `step()` trains one batch and returns float statistics,
`save_checkpoint(path)` / `load_checkpoint(path)` write and read its whole state, and it keeps a
`training_seconds` counter and a `device`. `TrainingLoop` owns the rest:

- the progress count (images shown or steps, read through `count()` after every step) and when to stop:
  at `total`, after `max_steps` steps or `max_seconds` seconds of this call, or when the stop flag is set
  (by `stop.request()` or by SIGINT/SIGTERM with `handle_signals`); a step is never interrupted;
- one rolling resume checkpoint, `RUN/checkpoint.pt`, always written atomically, so a run killed at any
  moment leaves either the previous or the new checkpoint, never a partial one;
- snapshots each time the count crosses a multiple of `snapshot_every`, and once more when the loop ends:
  the checkpoint, the trainer's own artifacts and a line of `RUN/stats.jsonl`;
- a progress bar (tqdm) and the throughput in count units per second, measured over windows of 10 s;
- under torchrun (`ganinv.train.distributed`), files and the progress bar on process 0 only, and every
  stop decision taken by all processes together, so they always run the same number of steps.
"""
from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
import dataclasses
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence, TypeVar

import torch
from tqdm import tqdm

from ..utils import atomic_path, write_json
from . import distributed

CHECKPOINT_FILE = "checkpoint.pt"
STATS_FILE = "stats.jsonl"
CONFIG_FILE = "config.json"
RATE_WINDOW_SECONDS = 10.0


class RunConfig:
    """Base of a trainer's settings dataclass: the JSON form stored in its checkpoint and config.json."""

    settings_name = "training settings"  # for errors

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown {cls.settings_name} {unknown}")
        # JSON has no tuples: restore the fields whose default is one.
        data = {k: tuple(v) if isinstance(fields[k].default, tuple) else v for k, v in data.items()}
        return cls(**data)


Config = TypeVar("Config", bound=RunConfig)


def config_for_run(config: Config, run_dir: str | Path, *, resume: bool, schedule: Sequence[str]) -> Config:
    """The settings a run goes on with: `config` for a new run; for a run with a checkpoint (and
    `resume`), the checkpoint's own settings, of which only the `schedule` fields (when to stop, how
    often to snapshot) come from `config`. Raises FileExistsError when a checkpoint exists and
    `resume` is off."""
    checkpoint = Path(run_dir) / CHECKPOINT_FILE
    if not checkpoint.is_file():
        return config
    if not resume:
        raise FileExistsError(17, "a training checkpoint exists", str(checkpoint))
    saved = type(config).from_dict(json.loads(read_state(checkpoint)["config"]))
    for name in schedule:
        setattr(saved, name, getattr(config, name))
    return saved


class Trainable(Protocol):
    """What the loop needs from a trainer."""

    device: torch.device
    training_seconds: float

    def step(self) -> dict[str, float]: ...

    def save_checkpoint(self, path: str | Path) -> Path: ...

    def load_checkpoint(self, path: str | Path) -> None: ...


class StopFlag:
    """Ask a running loop to end after the current step; also a signal handler that does so."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True

    def __call__(self, signum, frame) -> None:
        self.requested = True


@contextmanager
def stop_on_signals(flag: StopFlag, enabled: bool = True) -> Iterator[StopFlag]:
    """Route SIGTERM and SIGINT to `flag` inside the block; the previous handlers come back after it."""
    previous = {}
    try:
        if enabled:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, flag)
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def save_state(state: dict, path: str | Path) -> Path:
    """Write a training state with `torch.save`, atomically (a temporary file renamed over `path`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def read_state(path: str | Path, device: str | torch.device = "cpu", what: str = "training checkpoint") -> dict:
    """A training state written by `save_state` (tensors and plain data only: weights-only loading)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what}")
    return torch.load(path, map_location=device, weights_only=True)


def stats_line(head: dict, stats: dict[str, float], device: str | torch.device, tail: dict | None = None) -> dict:
    """One line of stats.jsonl: the trainer's counters, wall time, threads, device, the last step's
    statistics (rounded) and any evaluation."""
    return {**head, "time": time.time(), "threads": torch.get_num_threads(), "device": str(device),
            **{k: round(v, 5) for k, v in stats.items()}, **(tail or {})}


def append_stats(run_dir: str | Path, line: dict) -> None:
    with open(Path(run_dir) / STATS_FILE, "a") as f:
        f.write(json.dumps(line) + "\n")


@dataclass
class TrainingLoop:
    """Runs `trainer.step()` until done, with resume, stop flag, signals, snapshots and stats.

    Args:
        trainer: see `Trainable`.
        run_dir: the run folder (created): checkpoint.pt, config.json, stats.jsonl and the trainer's files.
        count: the progress count after the steps so far (images shown, or steps).
        total: the loop ends when `count()` reaches this.
        snapshot_every: a snapshot each time `count()` reaches a multiple of this.
        unit, unit_scale: the progress bar's unit ("img", "step") and whether it abbreviates (k, M).
        progress: show the progress bar.
        handle_signals: SIGINT/SIGTERM set the stop flag while `run()` runs.
        postfix: `postfix(stats, rate)` -> the progress bar's fields after a step.
        stats_head: `stats_head(rate)` -> the trainer's counters that open each stats.jsonl line.
        evaluate: called at each snapshot before the checkpoint is written (its state may go into the
            checkpoint); returns fields that close the stats line.
        artifacts: `artifacts(stats, evaluation)` writes the trainer's own snapshot files after the
            checkpoint (sample grids, an exported network).
        stop: the stop flag; `stop.request()` ends `run()` after the current step.
    """

    trainer: Trainable
    run_dir: Path
    _: KW_ONLY
    count: Callable[[], int]
    total: int
    snapshot_every: int
    unit: str = "step"
    unit_scale: bool = False
    progress: bool = True
    handle_signals: bool = False
    postfix: Callable[[dict[str, float], float], dict] | None = None
    stats_head: Callable[[float], dict] | None = None
    evaluate: Callable[[], dict] | None = None
    artifacts: Callable[[dict[str, float], dict], None] | None = None
    stop: StopFlag = field(default_factory=StopFlag)
    rate: float = field(default=0.0, init=False)  # count units per second
    steps_done: int = field(default=0, init=False)  # in the latest run()
    stats: dict[str, float] = field(default_factory=dict, init=False)  # of the latest step

    def __post_init__(self) -> None:
        if self.snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1, got {self.snapshot_every}")
        self.run_dir = Path(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def resume(self) -> bool:
        """Load the run's resume checkpoint when there is one; True when it was loaded."""
        if not self.checkpoint.is_file():
            return False
        self.trainer.load_checkpoint(self.checkpoint)
        return True

    def write_config(self, config: dict) -> None:
        if distributed.is_main():
            write_json(self.run_dir / CONFIG_FILE, config)

    def snapshot(self) -> None:
        """Checkpoint (atomic), the trainer's artifacts and one stats line, for the current state."""
        if not distributed.is_main():
            return
        evaluation = self.evaluate() if self.evaluate is not None else {}
        self.trainer.save_checkpoint(self.checkpoint)
        if self.artifacts is not None:
            self.artifacts(self.stats, evaluation)
        head = self.stats_head(self.rate) if self.stats_head is not None else {}
        append_stats(self.run_dir, stats_line(head, self.stats, self.trainer.device, evaluation))

    def run(self, max_steps: int | None = None, max_seconds: float | None = None) -> str:
        """Train until a stop condition; returns why it stopped: "total", "max_steps", "max_seconds"
        or "stop_requested". Writes a final snapshot when steps ran since the last one."""
        trainer = self.trainer
        start_count = count = int(self.count())
        next_snapshot = (count // self.snapshot_every + 1) * self.snapshot_every
        last_snapshot = None
        self.steps_done = 0
        self.rate = 0.0
        bar = tqdm(total=self.total, initial=count, unit=self.unit, unit_scale=self.unit_scale,
                   disable=not (self.progress and distributed.is_main()), mininterval=2.0, dynamic_ncols=True)
        started = time.perf_counter()
        window_start, window_count = started, 0
        reason = "total"
        try:
            with stop_on_signals(self.stop, self.handle_signals):
                while True:
                    if count >= self.total:
                        reason = "total"
                        break
                    if distributed.any_process(self.stop.requested, trainer.device):
                        reason = "stop_requested"
                        break
                    if max_steps is not None and self.steps_done >= max_steps:
                        reason = "max_steps"
                        break
                    if max_seconds is not None and distributed.any_process(
                            time.perf_counter() - started >= max_seconds, trainer.device):
                        reason = "max_seconds"
                        break
                    step_started = time.perf_counter()
                    self.stats = trainer.step()
                    trainer.training_seconds += time.perf_counter() - step_started
                    self.steps_done += 1
                    previous, count = count, int(self.count())
                    window_count += count - previous
                    now = time.perf_counter()
                    if now - window_start >= RATE_WINDOW_SECONDS:
                        self.rate = window_count / (now - window_start)
                        window_start, window_count = now, 0
                    elif self.rate == 0.0:
                        self.rate = (count - start_count) / (now - started)
                    bar.update(count - previous)
                    if self.postfix is not None:
                        bar.set_postfix(**self.postfix(self.stats, self.rate), refresh=False)
                    if count >= next_snapshot:
                        self.snapshot()
                        last_snapshot = count
                        while next_snapshot <= count:
                            next_snapshot += self.snapshot_every
                if self.steps_done and last_snapshot != count:
                    self.snapshot()
        finally:
            bar.close()
        return reason


__all__ = ["CHECKPOINT_FILE", "RunConfig", "STATS_FILE", "StopFlag", "Trainable", "TrainingLoop", "append_stats",
           "config_for_run", "read_state", "save_state", "stop_on_signals", "stats_line"]
