"""Where one StyleGAN2 training step's time goes, and speed options A/B'd side by side in one run.

Builds one `Trainer` per arm with a model card's training settings (default: the embedded emoji64's),
times every phase of `Trainer.step` (data, G forward, augment, D forward, R1, D backward, D optimizer,
G's D forward, G backward, G optimizer, EMA) through its `phase_timer` hook, and runs the arms'
steps interleaved (arm A step 1, arm B step 1, arm A step 2, ...), so that load on a shared machine hits
every arm alike. Reports, per arm, the median of each phase over the steps where it ran, the phase's
share of the mean step (R1 runs every `r1_interval` steps, so its mean cost is amortized), and the
median step time and mean step time with their ratios to the first arm.

    python benchmarks/train_step.py --threads 1 --steps 32
    python benchmarks/train_step.py --threads 1 --steps 16 --r1-interval 4 \
        --arms baseline,previous,fir_slices,contiguous_D,channels_last_G,adam_foreach,adam_loop,ema_foreach,sanitize_checked

Arms (each changes one thing against the trainer as it is):
  baseline         the trainer as it is (on the CPU: D and its inputs channels-last, FIR filters as convolutions)
  contiguous_D     D's weights and inputs in the default (NCHW-contiguous) memory format
  channels_last_G  G's weights channels-last too
  adam_foreach     torch.optim.Adam(foreach=True) instead of the fused kernel (same rule)
  adam_loop        the per-parameter Python loop Adam (same rule)
  ema_foreach      the EMA update as fused multi-tensor (torch._foreach) calls, same arithmetic
  sanitize_checked nan_to_num on the gradients only when a fused norm finds a non-finite one
  fir_slices       FIR filters as shifted slices (Trainer.fir_convolution off: the inference form)
  previous         fir_slices and contiguous_D together: the trainer before these two changes
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ganinv.models.checkpoints import read_card
from ganinv.models.registry import resolve_path
from ganinv.train.trainer import TrainConfig, Trainer, TrainingData, load_training_data

NETWORK_AND_LOSS_SETTINGS = ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "d_channel_base",
                             "d_channel_max", "mbstd_group_size", "batch_size", "g_learning_rate",
                             "d_learning_rate", "betas", "r1_gamma", "r1_interval", "pl_weight", "pl_interval",
                             "style_mixing_prob", "ema_kimg", "ema_rampup", "augment", "mirror", "seed")


def config_from_card(model: str, **overrides) -> TrainConfig:
    """The training settings on a model's card (network, loss and optimizer; not the schedule)."""
    settings = read_card(resolve_path(model))["training_settings"]
    config = TrainConfig.from_dict({k: v for k, v in settings.items() if k in NETWORK_AND_LOSS_SETTINGS})
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _ema_foreach(trainer: Trainer):
    """The EMA update in fused multi-tensor calls (same arithmetic as the trainer's loop)."""
    @torch.no_grad()
    def update() -> None:
        ema_images = trainer.ema_kimg * 1000
        if trainer.config.ema_rampup is not None:
            ema_images = min(ema_images, trainer.num_images_seen * trainer.config.ema_rampup)
        beta = 0.5 ** (trainer.config.batch_size / max(ema_images, 1e-8))
        ema_params, params = list(trainer.G_ema.parameters()), [p.detach() for p in trainer.G.parameters()]
        torch._foreach_copy_(ema_params, torch._foreach_lerp(params, ema_params, beta))
        torch._foreach_copy_(list(trainer.G_ema.buffers()), list(trainer.G.buffers()))
    return update


def _sanitize_checked(net: torch.nn.Module) -> None:
    """nan_to_num on the gradients only when one fused norm call finds a non-finite one (same result)."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if grads and not torch.stack(torch._foreach_norm(grads)).isfinite().all():
        for grad in grads:
            torch.nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5, out=grad)


def _replace_adam(trainer: Trainer, **kwargs) -> None:
    for name in ("opt_G", "opt_D"):
        old = getattr(trainer, name)
        group = old.param_groups[0]
        setattr(trainer, name, torch.optim.Adam(group["params"], lr=group["lr"], betas=group["betas"],
                                                eps=group["eps"], **kwargs))


def _memory_format(trainer: Trainer, D: torch.memory_format, G: torch.memory_format | None = None) -> None:
    trainer.D.to(memory_format=D)
    trainer.input_memory_format = D
    if G is not None:
        trainer.G.to(memory_format=G)


# arm name -> (changes to a fresh trainer, context around each step)
ARMS = {
    "baseline": (lambda t: None, None),
    "contiguous_D": (lambda t: _memory_format(t, torch.contiguous_format), None),
    "channels_last_G": (lambda t: _memory_format(t, torch.channels_last, torch.channels_last), None),
    "adam_foreach": (lambda t: _replace_adam(t, foreach=True), None),
    "adam_loop": (lambda t: _replace_adam(t, foreach=False), None),
    "ema_foreach": (lambda t: setattr(t, "_update_ema", _ema_foreach(t)), None),
    "sanitize_checked": (lambda t: setattr(t, "_sanitize", _sanitize_checked), None),
    "fir_slices": (lambda t: setattr(t, "fir_convolution", False), None),
    "previous": (lambda t: (setattr(t, "fir_convolution", False), _memory_format(t, torch.contiguous_format)), None),
}


class PhaseTimes:
    """Collects wall time per phase name for the current step."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.current[name] += time.perf_counter() - start


def measure(config: TrainConfig, data: TrainingData, arms: list[str], steps: int, warmup: int) -> dict:
    """Interleaved steps of every arm; per arm the phase and step times (seconds) of the timed steps."""
    trainers, timers, records = {}, {}, {}
    for arm in arms:
        trainer = Trainer(config, data)
        ARMS[arm][0](trainer)
        timers[arm] = PhaseTimes()
        trainer.phase_timer = timers[arm]
        trainers[arm] = trainer
        records[arm] = {"steps": [], "phases": defaultdict(list)}
    for index in range(warmup + steps):
        for arm in arms:
            trainer, timer = trainers[arm], timers[arm]
            timer.current.clear()
            around = ARMS[arm][1]
            start = time.perf_counter()
            with (around() if around else contextlib.nullcontext()):
                trainer.step()
            elapsed = time.perf_counter() - start
            if index >= warmup:
                records[arm]["steps"].append(elapsed)
                for name, seconds in timer.current.items():
                    records[arm]["phases"][name].append(seconds)
                records[arm]["phases"]["(other)"].append(elapsed - sum(timer.current.values()))
    return records


def summarize(records: dict, steps: int) -> dict:
    arms = list(records)
    base = records[arms[0]]
    out = {}
    for arm in arms:
        rec = records[arm]
        phases = {name: {"median_ms": 1000 * statistics.median(times), "runs": len(times),
                         "mean_per_step_ms": 1000 * sum(times) / steps}
                  for name, times in rec["phases"].items()}
        median, mean = statistics.median(rec["steps"]), statistics.mean(rec["steps"])
        out[arm] = {"phases": phases, "median_step_ms": 1000 * median, "mean_step_ms": 1000 * mean,
                    "median_ratio_to_first": median / statistics.median(base["steps"]),
                    "mean_ratio_to_first": mean / statistics.mean(base["steps"])}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="emoji64", help="read the training settings from this model's card")
    parser.add_argument("--data", default=None, help="dataset folder (default: random images at the card's size)")
    parser.add_argument("--arms", default="baseline", help=f"comma list of {', '.join(ARMS)}")
    parser.add_argument("--steps", type=int, default=32, help="timed steps per arm (R1 runs every r1_interval)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--r1-interval", type=int, default=None, help="override the card's (to time R1 more often)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    overrides = {"r1_interval": args.r1_interval} if args.r1_interval else {}
    config = config_from_card(args.model, **overrides)
    if args.data:
        data = load_training_data(args.data)
    else:
        card = read_card(resolve_path(args.model))
        size, channels = card["training_data"]["resolution"], card["training_data"]["channels"]
        data = TrainingData((np.random.RandomState(0).rand(512, size, size, channels) * 255).astype(np.uint8))
    records = measure(config, data, arms, args.steps, args.warmup)
    summary = summarize(records, args.steps)
    for arm, result in summary.items():
        result["images_per_second"] = config.batch_size / (result["mean_step_ms"] / 1000)
    print(f"{args.steps} steps per arm after {args.warmup} warm-up, {args.threads} thread(s), batch "
          f"{config.batch_size}, r1_interval {config.r1_interval}, settings of {args.model}")
    for arm, result in summary.items():
        print(f"\n{arm}: median step {result['median_step_ms']:.1f} ms (x{result['median_ratio_to_first']:.3f}), "
              f"mean {result['mean_step_ms']:.1f} ms (x{result['mean_ratio_to_first']:.3f}), "
              f"{result['images_per_second']:.1f} img/s")
        for name, phase in result["phases"].items():
            print(f"  {name:14s} median {phase['median_ms']:8.2f} ms over {phase['runs']:3d} steps; "
                  f"mean per step {phase['mean_per_step_ms']:8.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": config.to_dict(), "threads": args.threads,
                                               "steps": args.steps, "arms": summary}, indent=1))


if __name__ == "__main__":
    main()
