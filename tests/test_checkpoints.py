"""Checkpoint loading: parity with the official implementations, safety, error messages, native format."""
import argparse
import os
import pickle
import pickletools
import sys
import types

import numpy as np
import pytest
import torch

from ganinv.models.checkpoints import (CheckpointError, UnsafeCheckpoint, load_checkpoint, load_native,
                                       load_nvidia_pickle, load_rosinality, save_native)
from conftest import tiny_discriminator, tiny_generator


def _max_diff(a, b):
    return (a - torch.as_tensor(b)).abs().max().item()


def test_nvidia_pickle_parity(fixtures_dir):
    G, D, info = load_nvidia_pickle(os.path.join(fixtures_dir, "sg2ada_res32.pkl"))
    ref = np.load(os.path.join(fixtures_dir, "sg2ada_res32_ref.npz"))
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        ws = G.mapping(z, None)
        ws_trunc = G.mapping(z, None, truncation_psi=0.7)
        assert _max_diff(ws, ref["ws"]) < 1e-5
        assert _max_diff(ws_trunc, ref["ws_trunc"]) < 1e-5
        assert _max_diff(G.mapping.w_avg, ref["w_avg"]) < 1e-6
        img = G.synthesis(ws, noise_mode="const")
        img_trunc = G(z, None, truncation_psi=0.7, noise_mode="const")
        assert _max_diff(img, ref["img"]) < 1e-4
        assert _max_diff(img_trunc, ref["img_trunc"]) < 1e-4
        # Both forms of the modulated convolution agree with the official output.
        assert _max_diff(G.synthesis(ws, fused_modconv=True), ref["img"]) < 1e-4
        assert _max_diff(G.synthesis(ws, fused_modconv=False), ref["img"]) < 1e-4
        assert _max_diff(D(img), ref["d_logits"]) < 1e-4
        assert _max_diff(D(img_trunc), ref["d_logits_trunc"]) < 1e-4
        assert _max_diff(D(torch.cat([img, img_trunc])), ref["d_logits_cat8"]) < 1e-4
        # The test is sensitive: constant noise off changes the image far beyond the tolerance.
        assert _max_diff(G.synthesis(ws, noise_mode="none"), ref["img"]) > 1e-2


@pytest.mark.parametrize("name", ["rosinality_res32.pt", "rosinality_res32_converted.pt"])
def test_rosinality_parity(fixtures_dir, rosinality_converted, name):
    path = rosinality_converted if name == "rosinality_res32_converted.pt" else os.path.join(fixtures_dir, name)
    G, D, info = load_rosinality(path)
    ref = np.load(os.path.join(fixtures_dir, "rosinality_res32_ref.npz"))
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        ws = G.mapping(z, None)
        assert _max_diff(ws, ref["latent"]) < 1e-5
        img = G.synthesis(ws, noise_mode="const")
        assert _max_diff(img, ref["img"]) < 1e-4
        w_avg = torch.from_numpy(ref["mean_latent"])[0]
        ws_trunc = w_avg.lerp(ws, 0.7)
        assert _max_diff(ws_trunc, ref["latent_trunc"]) < 1e-5
        img_trunc = G.synthesis(ws_trunc)
        assert _max_diff(img_trunc, ref["img_trunc"]) < 1e-4
        if name == "rosinality_res32_converted.pt":
            assert D is None
            assert info["w_avg_source"] == "checkpoint latent_avg"
            # latent_avg is the truncation latent: G's own truncation matches the official one.
            assert _max_diff(G.synthesis(G.mapping(z, None, truncation_psi=0.7)), ref["img_trunc"]) < 1e-4
        else:
            assert info["w_avg_source"].startswith("computed")
            assert _max_diff(D(img), ref["d_logits"]) < 1e-4
            assert _max_diff(D(img_trunc), ref["d_logits_trunc"]) < 1e-4
            assert _max_diff(D(torch.cat([img, img_trunc])), ref["d_logits_cat8"]) < 1e-4
    assert G.synthesis.channels == {4: 64, 8: 64, 16: 48, 32: 32}


def _load_train_checkpoint(path):
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def test_rosinality_parity_reads_g_ema_not_g(fixtures_dir, tmp_path):
    """The train.py file's `g` differs from `g_ema` (in its noise buffers): a reader that took `g` would
    miss the reference by far more than the tolerance."""
    data = _load_train_checkpoint(os.path.join(fixtures_dir, "rosinality_res32.pt"))
    path = tmp_path / "g_as_g_ema.pt"
    torch.save({"g_ema": data["g"]}, path)
    G, _, _ = load_rosinality(path)
    ref = np.load(os.path.join(fixtures_dir, "rosinality_res32_ref.npz"))
    with torch.no_grad():
        img = G.synthesis(G.mapping(torch.from_numpy(ref["z"]), None), noise_mode="const")
    assert _max_diff(img, ref["img"]) > 1e-1


def _recorded_fixtures(fixtures_dir):
    """(name, bytes, sha256) rows of the table in tests/fixtures/README.md."""
    rows = []
    for line in open(os.path.join(fixtures_dir, "README.md"), encoding="utf-8"):
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and len(cells[2]) == 64 and cells[1].replace(",", "").isdigit():
            rows.append((cells[0], int(cells[1].replace(",", "")), cells[2]))
    return rows


def test_vendored_fixtures_match_their_recorded_sha256(fixtures_dir):
    import hashlib
    rows = _recorded_fixtures(fixtures_dir)
    data_files = {name for name in os.listdir(fixtures_dir) if name.endswith((".pt", ".pkl", ".npz"))}
    assert data_files and {name for name, _, _ in rows} == data_files
    for name, size, sha256 in rows:
        content = open(os.path.join(fixtures_dir, name), "rb").read()
        assert len(content) == size, name
        assert hashlib.sha256(content).hexdigest() == sha256, name
    # Every official format (StyleGAN2 and 3 pickles, rosinality, pSp/e4e/ReStyle) in a few MB, not a checkout.
    assert sum(size for _, size, _ in rows) < 6.5e6


def test_vendored_train_checkpoint_keeps_train_py_structure(fixtures_dir):
    """The reduced rosinality file still has what train.py writes: every key in order, both optimizers'
    param groups (their moments dropped), and `g` with the same names and shapes as `g_ema`."""
    data = _load_train_checkpoint(os.path.join(fixtures_dir, "rosinality_res32.pt"))
    assert list(data) == ["g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"]
    assert {k: v.shape for k, v in data["g"].items()} == {k: v.shape for k, v in data["g_ema"].items()}
    for key, count in (("g_optim", 56), ("d_optim", 23)):
        assert data[key]["state"] == {} and data[key]["param_groups"][0]["params"] == list(range(count))
    assert data["args"].size == 32 and data["args"].latent == 128


def _strip_frames(data: bytes) -> bytes:
    """Remove FRAME opcodes so the byte stream can be edited (frames are optional)."""
    out = bytearray()
    last = 0
    for op, arg, pos in pickletools.genops(data):
        if op.name == "FRAME":
            out += data[last:pos]
            last = pos + 9
    out += data[last:]
    return bytes(out)


def test_pickle_written_with_numpy2_module_names(fixtures_dir, tmp_path):
    data = _strip_frames(open(os.path.join(fixtures_dir, "sg2ada_res32.pkl"), "rb").read())
    old = b"\x8c\x15numpy.core.multiarray"
    assert old in data
    patched = data.replace(old, b"\x8c\x16numpy._core.multiarray")
    path = tmp_path / "numpy2.pkl"
    path.write_bytes(patched)
    G2, _, _ = load_nvidia_pickle(path)
    G1, _, _ = load_nvidia_pickle(os.path.join(fixtures_dir, "sg2ada_res32.pkl"))
    for (k1, v1), (k2, v2) in zip(G1.state_dict().items(), G2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_a_command_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    with pytest.raises(UnsafeCheckpoint, match="system"):
        load_nvidia_pickle(path)
    with pytest.raises(UnsafeCheckpoint):
        load_checkpoint(path)
    assert not marker.exists()


def test_nested_torch_stream_cannot_run_code(tmp_path):
    """torch.storage._load_from_bytes is re-routed to a weights-only load."""
    marker = tmp_path / "pwned2"
    inner = pickle.dumps(_Evil(marker), protocol=2)

    class Loader:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (inner,))

    path = tmp_path / "nested.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Loader()}))
    with pytest.raises(CheckpointError):
        load_nvidia_pickle(path)
    assert not marker.exists()


def _fake_persistence_module():
    mod = types.ModuleType("torch_utils.persistence")
    pkg = types.ModuleType("torch_utils")

    def _reconstruct_persistent_obj(meta):
        return meta

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg.persistence = mod
    return pkg, mod


def test_truncated_stylegan3_generator_record_gives_clear_error(tmp_path, monkeypatch):
    pkg, mod = _fake_persistence_module()
    monkeypatch.setitem(sys.modules, "torch_utils", pkg)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)

    class Record:
        def __init__(self, meta):
            self.meta = meta

        def __reduce__(self):
            return (mod._reconstruct_persistent_obj, (self.meta,))

    freqs = torch.zeros(512, 2)
    meta = {"type": "class", "version": 6, "module_src": "# source removed", "class_name": "Generator",
            "state": {"_parameters": {}, "_buffers": {}, "_modules": {
                "synthesis": Record({"type": "class", "version": 6, "module_src": "# source removed",
                                     "class_name": "SynthesisNetwork",
                                     "state": {"_parameters": {}, "_modules": {
                                         "input": Record({"type": "class", "version": 6, "module_src": "",
                                                          "class_name": "SynthesisInput",
                                                          "state": {"_buffers": {"freqs": freqs}}})}}})},
                      "_init_kwargs": {"z_dim": 512}}}
    path = tmp_path / "sg3.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Record(meta)}))
    with pytest.raises(CheckpointError, match=r"sg3\.pkl: .*img_resolution") as info:  # kwargs lack the sizes
        load_nvidia_pickle(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"hello, not a checkpoint", "unrecognized"),
])
def test_bad_files_give_clear_errors(tmp_path, content, match):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert "bad.pkl" in str(info.value)


def test_truncated_pickle_and_pt(fixtures_dir, tmp_path):
    for name in ("sg2ada_res32.pkl", "rosinality_res32.pt"):
        data = open(os.path.join(fixtures_dir, name), "rb").read()
        path = tmp_path / name
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert name in str(info.value)


def test_rosinality_with_unknown_global_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "evil": _Evil(tmp_path / "x")}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "x").exists()


def test_native_roundtrip_and_validation(tmp_path):
    G = tiny_generator(resolution=16)
    D = tiny_discriminator(resolution=16)
    save_native(tmp_path / "m", G, D, card={"name": "tiny"})
    G2, D2, card, _ = load_native(tmp_path / "m")
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(G(z), G2(z))
        img = G(z)
        assert torch.equal(D(img), D2(img))
    assert card["name"] == "tiny" and card["num_ws"] == G.num_ws
    # fp16 storage stays close.
    save_native(tmp_path / "h", G, D, card={"name": "tiny"}, dtype=torch.float16)
    G3, _, _, _ = load_native(tmp_path / "h")
    with torch.no_grad():
        assert (G(z) - G3(z)).abs().max() < 0.05
    # A corrupted weight file is detected by its hash.
    weights = tmp_path / "m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_native(tmp_path / "m")


def test_native_card_mismatch_is_reported(tmp_path):
    import json
    G = tiny_generator(resolution=16)
    save_native(tmp_path / "m", G, None, card={"name": "tiny"})
    card_path = tmp_path / "m" / "card.json"
    card = json.loads(card_path.read_text())
    card["generator"]["synthesis_kwargs"]["channels"]["16"] = 8
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_native(tmp_path / "m")
