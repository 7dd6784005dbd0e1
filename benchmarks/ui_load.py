"""Web UI under load: many concurrent clients against one `ganinv serve`, and one huge upload.

Starts `ganinv serve` (CPU, default: the embedded emoji64 model) on 127.0.0.1 in a subprocess, then:

1. warm-up: one client uploads a photo, inverts it (`--method`, default `encoder`, which the
   embedded models ship) and moves a slider `--moves` times;
2. `--rounds` rounds of `--clients` concurrent clients (threads, each its own Gradio connection through
   `gradio_client`, as a browser tab is), each doing the same: upload its own photo, invert, move a slider
   `--moves` times; each slider move is timed from the request to the edited image downloaded;
3. huge uploads: while one client keeps moving a slider, another uploads a `--big-pixels` image (within
   the server's pixel cap: decoded and downscaled) and then one 20% over the cap (refused from its header);
   reported: what the server answered, how long it took, and the slider latencies during the upload.

Errors are counted (any exception, any error shown instead of a result); server memory is the resident
set (VmRSS) of the server process, read at start, after the warm-up, after each round and at the end,
plus the peak sampled every 50 ms. Bounded: `--clients` and `--moves` set the work, every call has a
timeout, and the defaults finish in a few minutes on a 2-core machine.

    python benchmarks/ui_load.py                              # emoji64, 8 clients x 20 moves, 2 rounds
    python benchmarks/ui_load.py --clients 16 --moves 30 --json out/ui_load.json

Timings are wall clock on whatever else the machine runs; quote them with the load average printed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

#: Seconds any single request may take before it counts as an error.
CALL_TIMEOUT = 120.0
NUM_VISIBLE_SLIDERS = 5


# ------------------------------------------------------------------------------------------ inputs


def make_photo(path: Path, seed: int, size: tuple[int, int] = (160, 120)) -> Path:
    """A small synthetic photo (gradients and a few coloured blocks), different for every seed."""
    rng = np.random.RandomState(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    photo = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], -1).astype(np.uint8)
    for _ in range(4):
        x, y = rng.randint(0, width - 30), rng.randint(0, height - 30)
        photo[y:y + rng.randint(10, 30), x:x + rng.randint(10, 30)] = rng.randint(0, 255, 3)
    Image.fromarray(photo).save(path)
    return path


def make_big_image(path: Path, pixels: int) -> Path:
    """A PNG with about `pixels` pixels (3:2) that still compresses to a few MB (smooth gradients), so
    that the upload passes the size limit and the pixel cap is what decides."""
    height = int(round((pixels / 1.5) ** 0.5))
    width = pixels // height
    row = (np.arange(width) * 255 // max(width - 1, 1)).astype(np.uint8)
    column = (np.arange(height) * 255 // max(height - 1, 1)).astype(np.uint8)
    image = np.empty((height, width, 3), np.uint8)
    image[:, :, 0] = row[None, :]
    image[:, :, 1] = column[:, None]
    image[:, :, 2] = 128
    Image.fromarray(image).save(path, compress_level=9)
    return path


# ------------------------------------------------------------------------------------------ one client


@dataclass
class ClientReport:
    """What one simulated user saw."""

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    upload_ms: float | None = None
    invert_ms: float | None = None


class UIClient:
    """One browser tab's worth of requests, through `gradio_client` (its own connection and session)."""

    def __init__(self, url: str, download_dir: Path, name: str = "client") -> None:
        from gradio_client import Client

        self.name = name
        self.client = Client(url, verbose=False, download_files=str(download_dir))
        self.values = [0.0] * 10
        self.call("/on_load")

    def call(self, api_name: str, *args):
        return self.client.submit(*args, api_name=api_name).result(timeout=CALL_TIMEOUT)

    def upload(self, path: Path) -> str:
        """Upload a file; returns the status text the page would show (an error or the accepted note)."""
        from gradio_client import handle_file

        outputs = self.call("/on_upload", handle_file(str(path)), "crop")
        return str(outputs[2])

    def invert(self, method: str | None, steps: int = 20) -> str:
        outputs = self.call("/on_invert", method, steps, steps)
        progress = str(outputs[0])
        if 'data-state="done"' not in progress:
            raise RuntimeError(f"inversion did not finish: {progress[:200]}")
        return progress

    def move(self, rng: random.Random) -> float:
        """Move one of the visible sliders to a new value; returns the seconds until the edited image
        was received."""
        index = rng.randrange(NUM_VISIBLE_SLIDERS)
        value = round(rng.uniform(-3, 3), 1)
        if value == self.values[index]:
            value = round(-value + 0.1, 1)
        self.values[index] = value
        start = time.perf_counter()
        image = self.call("/on_slide", *self.values)
        elapsed = time.perf_counter() - start
        if not image or not Path(str(image)).is_file():
            raise RuntimeError(f"slider move returned no image ({image!r})")
        return elapsed

    def close(self) -> None:
        self.client.close()  # ends the heartbeat: the server closes this connection's session


def run_client(url: str, photo: Path, moves: int, method: str | None, steps: int, seed: int,
               download_dir: Path, name: str = "client") -> ClientReport:
    """Upload, invert, then `moves` slider moves; every failure is recorded, never raised."""
    report = ClientReport(name)
    rng = random.Random(seed)
    client = None
    try:
        client = UIClient(url, download_dir, name)
        start = time.perf_counter()
        status = client.upload(photo)
        report.upload_ms = (time.perf_counter() - start) * 1000
        if "ganinv-error" in status:
            raise RuntimeError(f"upload refused: {status[:200]}")
        start = time.perf_counter()
        client.invert(method, steps)
        report.invert_ms = (time.perf_counter() - start) * 1000
        for _ in range(moves):
            try:
                report.latencies_ms.append(client.move(rng) * 1000)
            except Exception as e:  # noqa: BLE001 - counted
                report.errors.append(f"move: {type(e).__name__}: {e}"[:300])
    except Exception as e:  # noqa: BLE001 - counted
        report.errors.append(f"{type(e).__name__}: {e}"[:300])
    finally:
        if client is not None:
            client.close()
    return report


def run_clients(url: str, photos: list[Path], moves: int, method: str | None, steps: int, download_dir: Path,
                seed: int = 0) -> list[ClientReport]:
    """One thread per photo, all at once (a barrier lines up their starts)."""
    reports: list[ClientReport | None] = [None] * len(photos)
    barrier = threading.Barrier(len(photos))

    def work(i: int) -> None:
        barrier.wait()
        reports[i] = run_client(url, photos[i], moves, method, steps, seed + i, download_dir, f"client{i}")

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(photos))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CALL_TIMEOUT * (moves + 3))
    return [r if r is not None else ClientReport(f"client{i}", errors=["did not finish in time"])
            for i, r in enumerate(reports)]


def upload_during_moves(url: str, photo: Path, big: Path, method: str | None, steps: int, download_dir: Path,
                        seed: int = 0) -> dict:
    """Client A keeps moving a slider while client B uploads `big`; the upload's outcome and duration,
    and A's slider latencies while the upload was in flight."""
    mover = UIClient(url, download_dir, "mover")
    uploader = UIClient(url, download_dir, "uploader")
    rng = random.Random(seed)
    try:
        status = mover.upload(photo)
        if "ganinv-error" in status:
            raise RuntimeError(f"upload refused: {status[:200]}")
        mover.invert(method, steps)
        window: dict = {}
        errors: list[str] = []

        def upload() -> None:
            window["start"] = time.perf_counter()
            try:
                window["status"] = uploader.upload(big)
            except Exception as e:  # noqa: BLE001 - counted
                window["status"] = f"error: {type(e).__name__}: {e}"
                errors.append(window["status"])
            window["end"] = time.perf_counter()

        thread = threading.Thread(target=upload, daemon=True)
        moves: list[tuple[float, float]] = []
        thread.start()
        deadline = time.perf_counter() + CALL_TIMEOUT
        while (thread.is_alive() or len(moves) < 3) and time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                latency = mover.move(rng)
                moves.append((start, latency))
            except Exception as e:  # noqa: BLE001 - counted
                errors.append(f"move: {type(e).__name__}: {e}"[:300])
        thread.join(CALL_TIMEOUT)
        overlaps = [(start, lat) for start, lat in moves
                    if window.get("start", 0) <= start + lat and start <= window.get("end", 0)]
        during = [lat * 1000 for _, lat in overlaps]
        return {"file_mb": big.stat().st_size / 2 ** 20, "upload_s": window.get("end", 0) - window.get("start", 0),
                "status": _plain_text(window.get("status", "")), "moves_during_upload": len(during),
                "slider_ms_during_upload": summarize(during) if during else None, "errors": errors}
    finally:
        mover.close()
        uploader.close()


def _plain_text(markdown_or_html: str) -> str:
    import re
    return re.sub(r"<[^>]+>|\*\*", "", str(markdown_or_html)).strip()


# ------------------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, threads: int, workdir: Path, extra: list[str]) -> subprocess.Popen:
    env = dict(os.environ, GANINV_THREADS=str(threads), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-c", "from ganinv.cli import entry; entry()", "serve", "--model", model,
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--workdir", str(workdir), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    ready = threading.Event()
    process.lines = []  # type: ignore[attr-defined]

    def read() -> None:
        for line in process.stdout:
            process.lines.append(line)  # type: ignore[attr-defined]
            if line.startswith("ganinv serve: http"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(180):
        process.kill()
        raise SystemExit("ganinv serve did not start:\n" + "".join(process.lines))  # type: ignore[attr-defined]
    return process


def rss_mb(pid: int) -> float:
    """Resident set size of a process (Linux /proc), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class PeakRSS:
    """Samples a process's RSS every `interval` seconds in a thread; `.peak` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def reset(self) -> float:
        peak, self.peak = self.peak, 0.0
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# ------------------------------------------------------------------------------------------ report


def summarize(values: list[float]) -> dict:
    ordered = sorted(values)

    def percentile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {"count": len(values), "p50": statistics.median(values), "p95": percentile(0.95),
            "mean": statistics.fmean(values), "max": ordered[-1]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="emoji64", help="model name or path")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients per round (>= 1)")
    parser.add_argument("--moves", type=int, default=20, help="slider moves per client (>= 1)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --clients clients")
    parser.add_argument("--method", default="encoder", help="inversion method (the model must offer it)")
    parser.add_argument("--steps", type=int, default=20, help="steps, for a method that has them")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server (GANINV_THREADS)")
    parser.add_argument("--big-pixels", type=int, default=40_000_000, help="pixels of the huge upload")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.moves <= 1000 or not 1 <= args.rounds <= 10:
        parser.error("--clients 1-64, --moves 1-1000, --rounds 1-10")

    with tempfile.TemporaryDirectory(prefix="ganinv-ui-load-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "work").mkdir()
        downloads = tmp_path / "downloads"
        photos = [make_photo(tmp_path / f"photo{i}.png", args.seed + i) for i in range(args.clients + 2)]
        started = time.perf_counter()
        big = make_big_image(tmp_path / "big.png", args.big_pixels)
        over = make_big_image(tmp_path / "over.png", int(args.big_pixels * 1.2))
        print(f"made the {args.big_pixels / 1e6:.0f} MP ({big.stat().st_size / 2 ** 20:.1f} MB) and "
              f"{args.big_pixels * 1.2 / 1e6:.0f} MP images in {time.perf_counter() - started:.1f} s", flush=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        process = start_server(args.model, port, args.threads, tmp_path / "work",
                               ["--max-sessions-per-client", str(max(16, args.clients + 4))])
        peak = PeakRSS(process.pid)
        rss = {"start": rss_mb(process.pid)}
        try:
            began = time.perf_counter()
            warm = run_client(url, photos[-1], args.moves, args.method, args.steps, args.seed, downloads, "warm-up")
            rss["after_warm_up"] = rss_mb(process.pid)
            rounds = []
            for r in range(args.rounds):
                round_start = time.perf_counter()
                peak.reset()
                reports = run_clients(url, photos[:args.clients], args.moves, args.method, args.steps, downloads,
                                      seed=args.seed + 100 * (r + 1))
                latencies = [x for rep in reports for x in rep.latencies_ms]
                errors = [f"{rep.name}: {e}" for rep in reports for e in rep.errors]
                rss[f"after_round_{r + 1}"] = rss_mb(process.pid)
                rounds.append({"seconds": time.perf_counter() - round_start, "errors": len(errors),
                               "error_messages": errors[:10], "moves": len(latencies),
                               "slider_ms": summarize(latencies) if latencies else None,
                               "upload_ms_median": statistics.median([rep.upload_ms for rep in reports
                                                                      if rep.upload_ms is not None] or [0]),
                               "invert_ms_median": statistics.median([rep.invert_ms for rep in reports
                                                                      if rep.invert_ms is not None] or [0]),
                               "peak_rss_mb": peak.reset()})
                print(f"round {r + 1}: {args.clients} clients x {args.moves} moves, {len(errors)} errors, slider "
                      + (f"p50 {rounds[-1]['slider_ms']['p50']:.0f} ms p95 {rounds[-1]['slider_ms']['p95']:.0f} ms"
                         if latencies else "n/a") + f", {rounds[-1]['seconds']:.1f} s", flush=True)
            big_runs = {}
            for label, path in (("within_cap", big), ("over_cap", over)):
                peak.reset()
                result = upload_during_moves(url, photos[args.clients], path, args.method, args.steps, downloads,
                                             seed=args.seed + 7)
                result["peak_rss_mb"] = peak.reset()
                result["pixels"] = Image.open(path).size
                big_runs[label] = result
                print(f"huge upload {label} ({result['pixels'][0]}x{result['pixels'][1]}, {result['file_mb']:.1f} MB): "
                      f"{result['upload_s']:.2f} s -> {result['status'][:120]!r}; slider during it: "
                      + (f"{result['moves_during_upload']} moves, p50 {result['slider_ms_during_upload']['p50']:.0f} "
                         f"ms, max {result['slider_ms_during_upload']['max']:.0f} ms"
                         if result["slider_ms_during_upload"] else "no move overlapped"), flush=True)
            time.sleep(1.0)
            rss["end"] = rss_mb(process.pid)
            total_seconds = time.perf_counter() - began
        finally:
            peak.stop()
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        server_log = "".join(process.lines)  # type: ignore[attr-defined]

    total_errors = (len(warm.errors) + sum(r["errors"] for r in rounds)
                    + sum(len(b["errors"]) for b in big_runs.values()))
    report = {
        "benchmark": "ui_load", "model": args.model, "clients": args.clients, "moves": args.moves,
        "rounds": rounds, "warm_up": {"errors": warm.errors, "slider_ms": summarize(warm.latencies_ms)
                                      if warm.latencies_ms else None},
        "huge_uploads": big_runs, "rss_mb": rss, "errors_total": total_errors,
        "tracebacks_in_server_log": server_log.count("Traceback"),
        "server_log_errors": [block[-600:] for block in server_log.split("Traceback")[1:]][:5],
        "seconds": total_seconds,
        "server_threads": args.threads, "load_average": os.getloadavg(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
    }
    print("server RSS (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    print(f"errors: {total_errors}; tracebacks in the server log: {report['tracebacks_in_server_log']}; "
          f"total {total_seconds:.0f} s; load average {report['load_average'][0]:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
