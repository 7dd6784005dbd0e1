"""Data-parallel training across processes (torchrun), for the StyleGAN2 trainer and the encoder trainer.

Every process holds a full copy of the networks, trains on its own share of each batch, and averages the
gradients of every network over all processes before each optimizer step (an all-reduce of one flat
buffer per network, as DistributedDataParallel does; done explicitly because R1 and the path-length
regularizer differentiate through gradients, which the DDP wrapper does not support). Buffers that a
step updates from its own data (the mapping network's w_avg) are averaged too, so the networks stay equal
on every process. Process 0 alone writes checkpoints, snapshots, stats and progress.

Started by `torchrun --nproc_per_node N -m ganinv train ...` (the environment variables WORLD_SIZE,
RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT that torchrun sets); gloo on CPUs, NCCL on CUDA GPUs.
Outside torchrun every function here is a no-op and training runs as one process.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_environment(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (when WORLD_SIZE > 1); returns the device this process
    uses (on CUDA, the GPU numbered LOCAL_RANK)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


_left_group = False


def shutdown() -> None:
    """Leave the process group once every process is done with it. Tearing it down while another process
    still talks to it can abort this one (gloo's threads: "terminate called without an active exception")."""
    global _left_group
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
            _left_group = True
        dist.destroy_process_group()


def exit_worker(code: int = 0) -> None:
    """End a process that has left a multi-process group (after `shutdown`) now, skipping the interpreter's
    teardown; a no-op in a single-process run. A gloo worker whose group was destroyed cleanly can still
    abort at exit in torch's C++ teardown (SIGABRT, "terminate called without an active exception"): once
    in 67 runs of tests/ddp_worker.py, after both processes had returned from destroy_process_group. Call
    it only when every file is written and closed."""
    if not _left_group:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def local_share(total: int, what: str = "batch") -> int:
    """This process's share of a global batch of `total` (which must divide evenly)."""
    size = world_size()
    if total % size:
        raise ValueError(f"{what} {total} does not divide over {size} processes")
    return total // size


def average_gradients(module: nn.Module) -> None:
    """Replace every gradient of `module` by its mean over the processes (one all-reduce)."""
    if not is_active():
        return
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def average_buffers(module: nn.Module) -> None:
    """Average the floating-point buffers of `module` over the processes (w_avg and the like)."""
    if not is_active():
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world_size()


def average_scalar(value: torch.Tensor) -> torch.Tensor:
    if not is_active():
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / world_size()


def broadcast_module(module: nn.Module) -> None:
    """Copy process 0's parameters and buffers to every process."""
    if not is_active():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def any_process(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every process when `flag` is true on any (so all stop at the same step)."""
    if not is_active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def process_seed(seed: int) -> int:
    """The seed of this process's random draws: the run's seed on process 0 (so one process reproduces a
    single-process run), a different one on every other process."""
    return seed if rank() == 0 else (seed + 1_000_003 * rank()) % 2 ** 63
