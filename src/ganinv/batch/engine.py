"""Many inputs, one job: `invert_many` inverts a list of images on this process or on a Ray cluster.

Every input becomes a `Job` (input path, sha256, result folder). Workers load the model once and invert
jobs one after another; each result folder is written atomically (`InversionResult.save`), so it is
either complete or absent, and a line in `OUTDIR/manifest.jsonl` records it. Rerunning the same call
skips the inputs whose result is complete and was made from the same bytes, and redoes the rest.

Engines:
    "local"  this process, one input after another (no Ray import);
    "ray"    stateful Ray actors (`ray.remote` classes holding the loaded model), fed from the driver
             with a bounded number of jobs in flight per actor; a job whose actor dies (killed, node
             lost) is resubmitted to a fresh actor, up to `max_retries` more times; one progress bar.

Ray is an optional dependency (`pip install ganinv[scale]`), imported only when engine="ray".
"""
from __future__ import annotations

import os
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import GanInvError
from .manifest import Job, Manifest, file_sha256

ENGINES = ("local", "ray")


def result_names(paths: Sequence[Path]) -> list[str]:
    """One result folder name per input, unique (case-insensitively) and deterministic for a given list.

    An input whose stem no other input shares keeps its stem ('photo.png' -> 'photo'). Inputs sharing a
    stem get the stem plus their extension ('a.jpg' -> 'a-jpg', 'a.png' -> 'a-png'), and a numbered
    suffix where that still clashes (the same name in two folders, or another input's own stem)."""
    stems = [p.stem or p.name for p in paths]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem.casefold()] = counts.get(stem.casefold(), 0) + 1
    names: list[str | None] = [stem if counts[stem.casefold()] == 1 else None for stem in stems]
    used = {n.casefold() for n in names if n is not None}
    for i, (path, stem) in enumerate(zip(paths, stems)):
        if names[i] is not None:
            continue
        base = f"{stem}-{path.suffix.lstrip('.').lower()}" if path.suffix else stem
        name, k = base, 2
        while name.casefold() in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name.casefold())
        names[i] = name
    return [str(n) for n in names]


def plan_jobs(paths: Sequence[str | os.PathLike], outdir: str | os.PathLike) -> list[Job]:
    """One job per input file (sha256 of its bytes; unreadable files raise GanInvError naming them)."""
    paths = [Path(p) for p in paths]
    jobs = []
    for path, name in zip(paths, result_names(paths)):
        try:
            digest = file_sha256(path)
        except OSError as e:
            raise GanInvError(f"{path}: cannot read ({e.strerror or e})") from None
        jobs.append(Job(input=str(path), sha256=digest, output=str(Path(outdir) / name)))
    return jobs


class InversionWorker:
    """Loads the model once; `run(job)` inverts one input and writes its result folder atomically.

    Used as it is by the local engine and wrapped by `ray.remote` for the Ray engine."""

    def __init__(self, model: str, method: str, settings: dict, *, device: str = "cpu", seed: int = 0,
                 fit: str = "crop", threads: int | None = None, label: str | None = None,
                 encoder: str | None = None):
        from ..models.registry import load_model, resolve_device
        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(model, device=resolve_device(device))
        if encoder is not None:  # an encoder file given apart from the model (e.g. an official pSp/e4e one)
            from ..models.official_encoders import load_encoder
            self.model.encoder = load_encoder(encoder, device=next(self.model.G.parameters()).device)
        self.method, self.settings, self.seed, self.fit = method, dict(settings), seed, fit
        self.name = label or f"{os.uname().nodename}:{os.getpid()}"

    def run(self, job: Job) -> dict:
        from ..data.io import load_image
        from ..inversion import invert
        G = self.model.G
        started = time.perf_counter()
        target = load_image(job.input, G.img_resolution, G.img_channels, fit=self.fit)
        result = invert(self.model, target, self.method, seed=self.seed, **self.settings)
        result.input = {"path": job.input, "sha256": job.sha256}
        result.save(job.output)
        return {"worker": self.name, "seconds": round(time.perf_counter() - started, 3),
                "invert_seconds": round(result.seconds, 3), "psnr": round(float(result.metrics["psnr"][0]), 3)}


def invert_many(inputs: Sequence[str | os.PathLike], model: str, outdir: str | os.PathLike,
                method: str = "optimize", *, settings: dict | None = None, engine: str = "local",
                address: str | None = None, num_workers: int | None = None, gpus_per_worker: float = 0,
                threads_per_worker: int | None = 1, device: str = "cpu", seed: int = 0, fit: str = "crop",
                max_retries: int = 2, progress: bool = True, encoder: str | None = None,
                on_result: Callable[[Job, dict], Any] | None = None) -> dict:
    """Invert every input into OUTDIR/<name>/, resuming what a previous run left.

    Args:
        inputs: image files.
        model: an embedded model name or a checkpoint path (every worker loads it once).
        settings: the method's settings (checked here, before any worker starts).
        engine: "local" or "ray".
        address: the Ray cluster to join ("auto", "ray://host:10001", ...); None starts a local one.
        num_workers: Ray actors (default: the cluster's CPUs, or its GPUs / gpus_per_worker).
        gpus_per_worker: GPUs each actor reserves (then `device` should be "cuda").
        threads_per_worker: torch threads in each worker.
        max_retries: how many more times a job whose worker died or failed is tried.
        encoder: an encoder file to use instead of the model's own (ganinv.load_encoder).
    Returns:
        {"done": n, "skipped": n, "failed": n, "failures": [{"input", "error"}], "seconds": s}.
    """
    from ..inversion import METHODS
    if engine not in ENGINES:
        raise GanInvError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
    if method not in METHODS:
        raise GanInvError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    try:
        settings = METHODS[method].check_settings(dict(settings or {}))
    except ValueError as e:
        raise GanInvError(str(e)) from None
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(outdir)
    jobs = plan_jobs(inputs, outdir)
    todo = manifest.pending(jobs)
    summary = {"done": 0, "skipped": len(jobs) - len(todo), "failed": 0, "failures": [], "engine": engine}
    started = time.perf_counter()
    from tqdm import tqdm
    bar = tqdm(total=len(jobs), initial=summary["skipped"], desc=f"invert [{method}, {engine}]",
               disable=not progress, dynamic_ncols=True)

    def finish(job: Job, status: str, info: dict) -> None:
        manifest.record(job, status, **info)
        summary["done" if status == "done" else "failed"] += 1
        if status != "done":
            summary["failures"].append({"input": job.input, "error": info.get("error", "")})
        if on_result is not None:
            on_result(job, {"status": status, **info})
        bar.update(1)
        if "psnr" in info:
            bar.set_postfix(psnr=f"{info['psnr']:.2f}", refresh=False)

    worker_args = (model, method, settings)
    worker_kwargs = dict(device=device, seed=seed, fit=fit, threads=threads_per_worker, encoder=encoder)
    try:
        if not todo:
            pass
        elif engine == "local":
            worker = InversionWorker(*worker_args, **worker_kwargs)
            for job in todo:
                _run_local(worker, job, finish, max_retries)
        else:
            _run_ray(todo, worker_args, worker_kwargs, finish, address=address, num_workers=num_workers,
                     gpus_per_worker=gpus_per_worker, max_retries=max_retries)
    finally:
        bar.close()
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _run_local(worker: InversionWorker, job: Job, finish, max_retries: int) -> None:
    for attempt in range(1, max_retries + 2):
        try:
            finish(job, "done", {**worker.run(job), "attempt": attempt})
            return
        except GanInvError as e:  # a bad input fails the same way every time: no retry
            finish(job, "failed", {"error": str(e), "attempt": attempt})
            return
        except Exception as e:  # noqa: BLE001 - recorded in the manifest and retried
            if attempt == max_retries + 1:
                finish(job, "failed", {"error": f"{type(e).__name__}: {e}", "attempt": attempt})


def _import_ray():
    try:
        import ray
    except ImportError:
        raise GanInvError("--engine ray needs Ray: pip install 'ganinv[scale]'") from None
    return ray


def _run_ray(jobs: list[Job], worker_args: tuple, worker_kwargs: dict, finish, *, address: str | None,
             num_workers: int | None, gpus_per_worker: float, max_retries: int, in_flight: int = 2) -> None:
    ray = _import_ray()
    if not ray.is_initialized():
        init = dict(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address is None and num_workers:
            init["num_cpus"] = num_workers
        ray.init(**init)
    if num_workers is None:
        resources = ray.cluster_resources()
        num_workers = (int(resources.get("GPU", 0) // gpus_per_worker) if gpus_per_worker
                       else int(resources.get("CPU", 1)))
    num_workers = max(1, min(num_workers, len(jobs)))
    Worker = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(InversionWorker)
    job_id = uuid.uuid4().hex[:8]
    count = iter(range(1 << 30))

    def start_actor():
        # Named, so a job's worker can be found (and, in tests, killed) by the name its results carry.
        label = f"ganinv-{job_id}-{next(count)}"
        return Worker.options(name=label).remote(*worker_args, **worker_kwargs, label=label)

    actors = [start_actor() for _ in range(num_workers)]
    queue = deque((job, 1) for job in jobs)
    pending: dict = {}  # object ref -> (job, attempt, actor index, the actor it was sent to)

    def submit(index: int) -> None:
        job, attempt = queue.popleft()
        pending[actors[index].run.remote(job)] = (job, attempt, index, actors[index])

    def busy(index: int) -> int:
        return sum(1 for (_, _, i, _) in pending.values() if i == index)

    for index in range(len(actors)):
        while queue and busy(index) < in_flight:
            submit(index)
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        job, attempt, index, actor = pending.pop(ref)
        try:
            finish(job, "done", {**ray.get(ref), "attempt": attempt})
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else e
            if isinstance(cause, GanInvError) or attempt > max_retries:
                finish(job, "failed", {"error": str(cause).strip().splitlines()[-1], "attempt": attempt})
            else:
                queue.append((job, attempt + 1))
        except ray.exceptions.RayActorError:
            # The actor is gone (killed, out of memory, node lost): its jobs come back here one by one;
            # the first replaces it, and each is tried again (first in line: it was already started).
            if attempt > max_retries:
                finish(job, "failed", {"error": "worker died", "attempt": attempt})
            else:
                queue.appendleft((job, attempt + 1))
            if actors[index] is actor:
                actors[index] = start_actor()
        while queue and busy(index) < in_flight:
            submit(index)
    for actor in actors:
        ray.kill(actor)
