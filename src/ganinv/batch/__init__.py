"""Many inputs: a batch engine (this process or a Ray cluster) with a resumable manifest, and videos.

    invert_many(inputs, model, outdir, method, engine="local" | "ray", ...)  -- see engine.py
    invert_video(path, model, outdir, method, ...)                          -- see video.py
"""
from .engine import ENGINES, InversionWorker, invert_many, plan_jobs, result_names
from .manifest import MANIFEST_FILE, Job, Manifest, file_sha256
from .video import VIDEO_SUFFIXES, invert_video, is_video, read_frames

__all__ = ["ENGINES", "InversionWorker", "invert_many", "plan_jobs", "result_names", "MANIFEST_FILE", "Job",
           "Manifest", "file_sha256", "VIDEO_SUFFIXES", "invert_video", "is_video",
           "read_frames"]
