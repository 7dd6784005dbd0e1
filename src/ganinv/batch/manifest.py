"""The batch manifest: one JSON line per finished attempt at an input, appended as results complete.

`OUTDIR/manifest.jsonl` records, for every input of a batch, the input path, its sha256, the result
folder, the status (`done` or `failed`), the attempt number, the worker and the timings. The last line
for an output folder is its current state. A line is written with one `write` and flushed to disk, and a
torn last line (the process was killed while writing it) is ignored on reading, so the file stays
readable whatever happens to the process that writes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..inversion.result import is_complete_result, result_input_sha256

MANIFEST_FILE = "manifest.jsonl"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Job:
    """One input of a batch: where it comes from, what it hashes to, and the folder its result goes to."""

    input: str
    sha256: str
    output: str

    @property
    def name(self) -> str:
        return Path(self.output).name


class Manifest:
    """Append-only JSON-lines record of a batch in `outdir/manifest.jsonl`."""

    def __init__(self, outdir: str | os.PathLike):
        self.path = Path(outdir) / MANIFEST_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def entries(self) -> list[dict]:
        """Every readable line, in order (a torn or foreign line is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, "rb") as f:
            for raw in f:
                try:
                    entry = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("output"), str):
                    out.append(entry)
        return out

    def latest(self) -> dict[str, dict]:
        """Output folder name -> its last entry."""
        return {entry["output"]: entry for entry in self.entries()}

    def record(self, job: Job, status: str, **fields) -> dict:
        entry = {"input": job.input, "sha256": job.sha256, "output": job.name, "status": status,
                 "time": round(time.time(), 3), **fields}
        line = (json.dumps(entry, default=str) + "\n").encode("utf-8")
        with open(self.path, "ab") as f:
            if f.tell() > 0:
                # A torn line left by a killed writer would swallow this one: start on a fresh line.
                with open(self.path, "rb") as check:
                    check.seek(-1, os.SEEK_END)
                    if check.read(1) != b"\n":
                        line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return entry

    def pending(self, jobs: list[Job]) -> list[Job]:
        """The jobs that still need work: all but those whose result folder is complete and was made
        from this very input (the sha256 in the manifest's last line for it, or in its report)."""
        latest = self.latest()
        return [job for job in jobs if not _is_done(job, latest.get(job.name))]


def _is_done(job: Job, entry: dict | None) -> bool:
    folder = Path(job.output)
    if not is_complete_result(folder):
        return False
    if entry is not None and entry.get("status") == "done":
        return entry.get("sha256") == job.sha256
    return result_input_sha256(folder) == job.sha256
