"""Pack a training run's rolling checkpoint into parts small enough to travel, and unpack them again.

A machine that hands back at most a few files of limited size cannot return a wide network's full
resume checkpoint (G, G_ema, D and two Adam moments each, float32). `pack` keeps what fits, in this
order of preference, until the whole is under `--max-total-mb`: everything float32; Adam moments in
bfloat16; G, D and G_ema weights in float16 as well. The result is split into `checkpoint.part00, ...`
of at most `--part-mb` each, with `pack.json` recording the sha256 of every part and what was reduced.
`unpack` checks the parts, joins them and casts every reduced tensor back to float32, so
`ganinv train --outdir RUN` resumes from it (a reduced checkpoint resumes with the rounding it records).
`unpack` into a run folder whose checkpoint has seen as many images or more is refused (it would set the
run back) unless `--force`.

    python scripts/pack_run.py pack RUN_DIR OUT_DIR [--part-mb 15] [--max-total-mb 56]
    python scripts/pack_run.py unpack OUT_DIR RUN_DIR [--force]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import torch

NETWORKS = ("G", "D", "G_ema")
OPTIMIZERS = ("opt_G", "opt_D")
# (name, optimizer moments dtype, network weights dtype), tried in order.
LEVELS = (("float32", None, None), ("bf16-moments", torch.bfloat16, None),
          ("bf16-moments-fp16-weights", torch.bfloat16, torch.float16))


def _cast_floats(tree, dtype):
    """The same nested structure with every float32 tensor cast to dtype (others kept)."""
    if isinstance(tree, torch.Tensor):
        return tree.to(dtype) if tree.dtype == torch.float32 else tree
    if isinstance(tree, dict):
        return {k: _cast_floats(v, dtype) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cast_floats(v, dtype) for v in tree)
    return tree


def _restore_floats(tree):
    if isinstance(tree, torch.Tensor):
        return tree.float() if tree.dtype in (torch.bfloat16, torch.float16) else tree
    if isinstance(tree, dict):
        return {k: _restore_floats(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_restore_floats(v) for v in tree)
    return tree


def _serialize(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def pack(run_dir: Path, out_dir: Path, part_mb: float = 15.0, max_total_mb: float = 56.0) -> dict:
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    for level, moments, weights in LEVELS:
        reduced = dict(state)
        if moments is not None:
            for key in OPTIMIZERS:
                opt = dict(reduced[key])
                # Adam's step counters stay as saved; only the moment tensors are rounded.
                opt["state"] = {i: {k: (v.to(moments) if k != "step" and v.dtype == torch.float32 else v)
                                    for k, v in s.items()} for i, s in opt["state"].items()}
                reduced[key] = opt
        if weights is not None:
            for key in NETWORKS:
                reduced[key] = _cast_floats(reduced[key], weights)
        data = _serialize(reduced)
        if len(data) <= max_total_mb * 2 ** 20:
            break
    else:
        raise SystemExit(f"{run_dir}: checkpoint is {len(data) / 2 ** 20:.1f} MB even reduced; "
                         f"the limit is {max_total_mb} MB (train narrower networks)")
    out_dir.mkdir(parents=True, exist_ok=True)
    step = int(part_mb * 2 ** 20)
    parts = []
    for index, start in enumerate(range(0, len(data), step)):
        chunk = data[start:start + step]
        name = f"checkpoint.part{index:02d}"
        (out_dir / name).write_bytes(chunk)
        parts.append({"file": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {"format": "ganinv-packed-checkpoint", "level": level, "parts": parts,
                "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                "step_index": int(state["step_index"]), "num_images_seen": int(state["num_images_seen"])}
    (out_dir / "pack.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def unpack(packed_dir: Path, run_dir: Path, force: bool = False) -> Path:
    manifest = json.loads((packed_dir / "pack.json").read_text())
    if manifest.get("format") != "ganinv-packed-checkpoint":
        raise SystemExit(f"{packed_dir}/pack.json: not a packed ganinv checkpoint")
    data = b""
    for part in manifest["parts"]:
        name = Path(part["file"]).name  # parts live beside pack.json, nowhere else
        chunk = (packed_dir / name).read_bytes()
        if hashlib.sha256(chunk).hexdigest() != part["sha256"]:
            raise SystemExit(f"{packed_dir / name}: sha256 does not match pack.json (incomplete transfer?)")
        data += chunk
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise SystemExit(f"{packed_dir}: joined parts do not match pack.json")
    state = _restore_floats(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    target = run_dir / "checkpoint.pt"
    if target.is_file() and not force:
        here = int(torch.load(target, map_location="cpu", weights_only=True)["num_images_seen"])
        if here >= int(state["num_images_seen"]):
            raise SystemExit(f"{target} has seen {here / 1000:.1f} kimg, the packed one "
                             f"{int(state['num_images_seen']) / 1000:.1f}: not replaced (--force replaces it)")
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(target)
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("run_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--part-mb", type=float, default=15.0)
    p.add_argument("--max-total-mb", type=float, default=56.0)
    u = sub.add_parser("unpack")
    u.add_argument("packed_dir", type=Path)
    u.add_argument("run_dir", type=Path)
    u.add_argument("--force", action="store_true", help="replace a checkpoint that has seen as many images or more")
    args = parser.parse_args(argv)
    if args.command == "pack":
        print(json.dumps(pack(args.run_dir, args.out_dir, args.part_mb, args.max_total_mb)))
    else:
        print(unpack(args.packed_dir, args.run_dir, args.force))


if __name__ == "__main__":
    sys.exit(main())
