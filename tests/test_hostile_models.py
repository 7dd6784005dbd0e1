"""Hostile and broken model files: every one gives a one-line GanInvError naming the file, or loads correctly.

Organised by category: NVIDIA pickles, PyTorch `.pt` files, native model folders and cards, safetensors
files, the files ganinv writes (permissions, atomic config), and the CLI. Every input is generated here.
"""
import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import textwrap
import time
import types
import zipfile

import numpy as np
import pytest
import torch

import ganinv
from ganinv.errors import GanInvError
from ganinv.models import storage
from ganinv.models.checkpoints import (MAX_PARAMETERS, CheckpointError, UnsafeCheckpoint, discriminator_parameters,
                                       generator_parameters, load_checkpoint, load_native, load_nvidia_pickle,
                                       load_rosinality, save_native)
from ganinv.models.registry import load_model
from ganinv.models.stylegan2 import Discriminator, Generator
from ganinv.utils import atomic_path, write_json
from conftest import tiny_discriminator, tiny_generator
from test_checkpoints import _Evil, _fake_persistence_module


def one_line_error(excinfo, path) -> str:
    """The error is a GanInvError whose message is one line naming `path`."""
    error = excinfo.value
    assert isinstance(error, GanInvError), type(error)
    message = str(error)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ============================================================================ NVIDIA pickles


class _Record:
    """Pickles like an object of NVIDIA's torch_utils.persistence (needs the `persistence` fixture)."""

    def __init__(self, meta, reconstruct):
        self.meta, self.reconstruct = meta, reconstruct

    def __reduce__(self):
        return (self.reconstruct, (self.meta,))


@pytest.fixture
def record(monkeypatch):
    pkg, mod = _fake_persistence_module()
    monkeypatch.setitem(sys.modules, "torch_utils", pkg)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)

    def make(class_name="Generator", kwargs=None, tensors=None, modules=None, state=None):
        full_state = {"_parameters": dict(tensors or {}), "_buffers": {}, "_modules": dict(modules or {}),
                      "_init_kwargs": {} if kwargs is None else kwargs}
        full_state.update(state or {})
        return _Record({"type": "class", "version": 6, "module_src": "# source removed", "class_name": class_name,
                        "state": full_state}, mod._reconstruct_persistent_obj)
    return make


def _generator_record(record, G, change=None):
    tensors = {k: v.clone() for k, v in G.state_dict().items()}
    if change is not None:
        change(tensors)
    return record("Generator", kwargs=G.init_kwargs, tensors=tensors)


def test_a_handmade_pickle_of_a_tiny_generator_loads(record, tmp_path):
    """The positive control for the records below: the same construction without a defect loads exactly."""
    G = tiny_generator()
    path = tmp_path / "tiny.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _generator_record(record, G)}))
    G2, D2, _ = load_nvidia_pickle(path)
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        assert torch.equal(G(z), G2(z)) and D2 is None


def test_pickle_with_nan_weights_is_refused(record, tmp_path):
    path = tmp_path / "nan.pkl"
    key = "synthesis.b8.conv0.weight"
    path.write_bytes(pickle.dumps({"G_ema": _generator_record(record, tiny_generator(),
                                                              lambda t: t[key].view(-1)[3].fill_(float("nan")))}))
    with pytest.raises(CheckpointError, match="NaN") as info:
        load_checkpoint(path)
    assert key in one_line_error(info, path)


@pytest.mark.parametrize("field,value", [("z_dim", 10 ** 12), ("w_dim", 10 ** 12), ("img_resolution", 2 ** 40),
                                         ("img_resolution", 48), ("img_channels", 10 ** 9), ("c_dim", -1)])
def test_pickle_kwargs_asking_for_absurd_sizes_fail_fast(record, tmp_path, field, value):
    kwargs = {**tiny_generator().init_kwargs, field: value}
    path = tmp_path / "huge.pkl"
    path.write_bytes(pickle.dumps({"G_ema": record("Generator", kwargs=kwargs)}))
    start, rss = time.perf_counter(), peak_rss_mb()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert time.perf_counter() - start < 2 and peak_rss_mb() - rss < 200
    assert field in one_line_error(info, path)


def test_pickle_within_each_size_but_too_many_parameters(record, tmp_path):
    """w_dim = 60000 is a legal dimension, but the network would have ~30 billion parameters. Only the
    channel table is read from the tensors (empty tensors of the right length are enough)."""
    kwargs = dict(z_dim=512, c_dim=0, w_dim=60000, img_resolution=8, img_channels=3,
                  mapping_kwargs={"num_layers": 8}, synthesis_kwargs={})
    tensors = {f"synthesis.b{r}.conv1.weight": torch.zeros(512, 0) for r in (4, 8)}
    path = tmp_path / "wide.pkl"
    path.write_bytes(pickle.dumps({"G_ema": record("Generator", kwargs=kwargs, tensors=tensors)}))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="parameters, above the limit") as info:
        load_checkpoint(path)
    assert time.perf_counter() - start < 2
    one_line_error(info, path)


def test_max_parameters_is_the_callers_choice(fixtures_dir):
    path = os.path.join(fixtures_dir, "sg2ada_res32.pkl")
    G, _, _ = load_nvidia_pickle(path)
    count = sum(p.numel() for p in G.parameters())
    load_nvidia_pickle(path, max_parameters=count + 10 ** 6)  # D is larger than G here, so leave room
    with pytest.raises(CheckpointError, match="above the limit of 1,000") as info:
        load_checkpoint(path, max_parameters=1000)
    one_line_error(info, path)


def test_cyclic_init_kwargs(record, tmp_path):
    loop = []
    loop.append(loop)
    kwargs = {**tiny_generator().init_kwargs, "mapping_kwargs": {"num_layers": loop}}
    path = tmp_path / "cyclic.pkl"
    path.write_bytes(pickle.dumps({"G_ema": record("Generator", kwargs=kwargs)}))
    with pytest.raises(CheckpointError, match="nested too deeply") as info:
        load_checkpoint(path)
    one_line_error(info, path)


def test_deeply_nested_pickle(record, tmp_path):
    """100,000 nested lists inside the init kwargs (written opcode by opcode: pickle.dumps would recurse)."""
    placeholder = "DEEP_PLACEHOLDER"
    kwargs = {**tiny_generator().init_kwargs, "synthesis_kwargs": {"channel_base": placeholder}}
    data = pickle.dumps({"G_ema": record("Generator", kwargs=kwargs)}, protocol=2)
    marker = b"X" + struct.pack("<I", len(placeholder)) + placeholder.encode()
    assert data.count(marker) == 1
    depth = 100_000
    path = tmp_path / "deep.pkl"
    path.write_bytes(data.replace(marker, b"]" * depth + b"a" * (depth - 1)))
    with pytest.raises(CheckpointError, match="nested too deeply") as info:
        load_checkpoint(path)
    one_line_error(info, path)


def test_deeply_nested_modules(record, tmp_path):
    G = tiny_generator()
    chain = record("Chain")
    for _ in range(100):
        chain = record("Chain", modules={"inner": chain})
    gen = _generator_record(record, G)
    gen.meta["state"]["_modules"] = {"chain": chain}
    path = tmp_path / "modules.pkl"
    path.write_bytes(pickle.dumps({"G_ema": gen}))
    with pytest.raises(CheckpointError, match="nested more than") as info:
        load_checkpoint(path)
    one_line_error(info, path)


@pytest.mark.parametrize("name,payload", [
    ("binbytes8", b"\x8e" + struct.pack("<Q", 2 ** 62) + b"abc"),
    ("binunicode8", b"\x8d" + struct.pack("<Q", 2 ** 62) + b"abc"),
    ("bytearray8", b"\x96" + struct.pack("<Q", 2 ** 62) + b"abc"),
    ("long4", b"\x8b" + struct.pack("<i", 2 ** 31 - 1) + b"\x01\x02"),
    ("frame", b"\x95" + struct.pack("<Q", 2 ** 62) + b"}."),
    ("binunicode", b"X" + struct.pack("<I", 2 ** 32 - 1) + b"abc"),
])
def test_pickle_length_prefixes_that_lie(tmp_path, name, payload):
    """Each opcode claims far more bytes than the file holds; nothing is allocated for the claim."""
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(b"\x80\x05" + payload)
    start, rss = time.perf_counter(), peak_rss_mb()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert time.perf_counter() - start < 2 and peak_rss_mb() - rss < 200
    one_line_error(info, path)


@pytest.mark.parametrize("case", ["kwargs_string", "parameters_list", "tensor_is_text", "state_is_tensor",
                                  "networks_list", "generator_is_dict", "class_unknown"])
def test_malformed_but_valid_pickles(record, tmp_path, case):
    G = tiny_generator()
    if case == "kwargs_string":
        data = {"G_ema": record("Generator", kwargs="z_dim=512")}
    elif case == "parameters_list":
        data = {"G_ema": record("Generator", kwargs=G.init_kwargs, state={"_parameters": [1, 2, 3]})}
    elif case == "tensor_is_text":
        data = {"G_ema": record("Generator", kwargs=G.init_kwargs, tensors={"mapping.fc0.weight": "not a tensor"})}
    elif case == "state_is_tensor":
        rec = record("Generator")
        rec.meta["state"] = torch.zeros(3)
        data = {"G_ema": rec}
    elif case == "networks_list":
        data = [record("Generator", kwargs=G.init_kwargs)]
    elif case == "generator_is_dict":
        data = {"G_ema": {"z_dim": 512}}
    else:
        data = {"G_ema": record("SomethingElse", kwargs=G.init_kwargs)}
    path = tmp_path / f"{case}.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    one_line_error(info, path)


def test_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    with pytest.raises(UnsafeCheckpoint, match="system") as info:
        load_checkpoint(path)
    one_line_error(info, path)
    assert not marker.exists()


# ============================================================================ PyTorch .pt files


@pytest.mark.parametrize("legacy", [False, True])
def test_pt_that_would_run_code_says_so(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "args": _Evil(marker)}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpoint, match="would run code") as info:
        load_checkpoint(path)
    message = one_line_error(info, path)
    assert "system" in message and "weights-only checkpoint" in message and "PyTorch 2.6" not in message
    assert not marker.exists()


def _rosinality_state(fixtures_dir):
    with torch.serialization.safe_globals([__import__("argparse").Namespace]):
        return torch.load(os.path.join(fixtures_dir, "rosinality_res32.pt"), map_location="cpu", weights_only=True)


def test_pt_with_nan_weights_is_refused(fixtures_dir, tmp_path):
    data = _rosinality_state(fixtures_dir)
    data["g_ema"]["convs.0.conv.weight"].view(-1)[0] = float("inf")
    path = tmp_path / "inf.pt"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="NaN or infinite") as info:
        load_rosinality(path)
    assert "synthesis.b8.conv0.weight" in one_line_error(info, path)


@pytest.mark.parametrize("case", ["many_mapping_layers", "many_convs", "value_not_tensor", "g_ema_list",
                                  "style_vector", "latent_avg_nan"])
def test_malformed_pt(fixtures_dir, tmp_path, case):
    data = _rosinality_state(fixtures_dir)
    g = data["g_ema"]
    match = None
    if case == "many_mapping_layers":
        g["style.5000.weight"] = torch.zeros(1, 1)
        match = "mapping layers"
    elif case == "many_convs":
        g["convs.100000.conv.weight"] = torch.zeros(1)
        match = "resolution above"
    elif case == "value_not_tensor":
        g["input.input"] = "text"
    elif case == "g_ema_list":
        data["g_ema"] = [1, 2, 3]
    elif case == "style_vector":
        g["style.1.weight"] = torch.zeros(5)
    else:
        data["latent_avg"] = torch.full([128], float("nan"))
        match = "latent_avg"
    path = tmp_path / f"{case}.pt"
    torch.save(data, path)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert time.perf_counter() - start < 5
    one_line_error(info, path)


# ============================================================================ native model folders and cards


@pytest.fixture
def model_dir(tmp_path):
    return save_native(tmp_path / "model", tiny_generator(), tiny_discriminator(), card={"name": "tiny"})


def _edit_card(folder, change):
    card_path = folder / storage.CARD_FILE
    card = json.loads(card_path.read_text())
    change(card)
    card_path.write_text(json.dumps(card))
    return card_path


def _resave_tensors(folder, change):
    """Change the weights and record their new sha256 on the card (a consistent but hostile folder)."""
    tensors = storage.load_tensors(folder / storage.WEIGHTS_FILE)
    change(tensors)
    sha256 = storage.save_tensors(folder / storage.WEIGHTS_FILE, tensors)
    _edit_card(folder, lambda card: card.update(sha256=sha256))


def test_files_we_write_carry_sha256(model_dir, tmp_path):
    card = json.loads((model_dir / storage.CARD_FILE).read_text())
    assert card["sha256"] == storage.sha256_file(model_dir / storage.WEIGHTS_FILE)
    for name in ganinv.available_models():
        card = ganinv.load_model(name).card
        assert len(card["sha256"]) == 64


@pytest.mark.parametrize("field,value", [("z_dim", 10 ** 12), ("w_dim", 10 ** 12), ("img_resolution", 10 ** 6),
                                         ("img_resolution", 2 ** 30), ("img_channels", 10 ** 9)])
def test_card_asking_for_absurd_sizes_fails_fast(model_dir, field, value):
    card_path = _edit_card(model_dir, lambda card: card["generator"].update({field: value}))
    start, rss = time.perf_counter(), peak_rss_mb()
    with pytest.raises(CheckpointError) as info:
        load_model(model_dir)
    assert time.perf_counter() - start < 2 and peak_rss_mb() - rss < 200
    assert f"generator.{field}" in one_line_error(info, card_path)


@pytest.mark.parametrize("where,field,value", [
    ("generator", "mapping_kwargs", {"num_layers": 10 ** 6}),
    ("generator", "synthesis_kwargs", {"channels": {"4": 10 ** 6, "8": 8, "16": 8}}),
    ("generator", "synthesis_kwargs", {"channels": {"four": 8}}),
    ("generator", "synthesis_kwargs", {"channel_max": 10 ** 9}),
    ("generator", "synthesis_kwargs", {"kernel_size": 10 ** 4}),
    ("discriminator", "channels", {"4": 8, "8": 8, "16": 10 ** 7}),
    ("discriminator", "epilogue_kwargs", {"mbstd_num_channels": 10 ** 8}),
    ("discriminator", "cmap_dim", 10 ** 10),
])
def test_card_sizes_deep_inside_the_kwargs(model_dir, where, field, value):
    card_path = _edit_card(model_dir, lambda card: card[where].update({field: value}))
    with pytest.raises(CheckpointError) as info:
        load_native(model_dir)
    assert f"{where}.{field}" in one_line_error(info, card_path)


def test_card_within_each_size_but_too_many_parameters(model_dir):
    card_path = _edit_card(model_dir, lambda card: card["generator"].update(z_dim=60000, w_dim=60000))
    with pytest.raises(CheckpointError, match="parameters, above the limit") as info:
        load_native(model_dir)
    one_line_error(info, card_path)
    fresh = save_native(model_dir.parent / "fresh", tiny_generator(), tiny_discriminator(), card={"name": "tiny"})
    G, D, _, _ = load_native(fresh)
    largest = max(sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters()))
    with pytest.raises(CheckpointError, match="above the limit"):
        load_native(fresh, max_parameters=largest - 1)
    load_native(fresh, max_parameters=largest)


@pytest.mark.parametrize("arch", ["skip", "resnet", "orig"])
@pytest.mark.parametrize("c_dim", [0, 3])
def test_parameter_count_from_kwargs_matches_the_network(arch, c_dim):
    G = tiny_generator(resolution=16, c_dim=c_dim, architecture=arch)
    D = tiny_discriminator(resolution=16, c_dim=c_dim, architecture=arch, cmap_dim=None if c_dim == 0 else 12)
    for net, count in ((G, generator_parameters), (D, discriminator_parameters)):
        assert count(net.kwargs_with_channels()) == sum(p.numel() for p in net.parameters())


def test_default_limit_admits_real_stylegans():
    """Config-f at 1024 px (30,370,060 and 29,012,513 parameters in the official stylegan2-ada-pytorch
    classes) and the largest real widths (channel_max 1024, as StyleGAN3-R's G) fit the default limit."""
    config_f = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3)
    assert generator_parameters(config_f) == 30_370_060
    assert discriminator_parameters(config_f) == 29_012_513
    doubled = {**config_f, "synthesis_kwargs": {"channel_base": 65536, "channel_max": 1024}}
    assert generator_parameters(doubled) < MAX_PARAMETERS
    assert discriminator_parameters({**config_f, "channel_base": 65536, "channel_max": 1024}) < MAX_PARAMETERS


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_native_weights_that_are_not_finite(model_dir, value):
    key = "G.synthesis.b16.conv1.weight"
    _resave_tensors(model_dir, lambda t: t[key].view(-1)[7].fill_(value))
    with pytest.raises(CheckpointError, match="NaN or infinite") as info:
        load_model(model_dir)
    assert key[2:] in one_line_error(info, model_dir / storage.WEIGHTS_FILE)


def test_native_extra_tensors_that_are_not_finite(model_dir):
    _resave_tensors(model_dir, lambda t: t.update({"gate.pivots": torch.full([2, 3], float("nan"))}))
    with pytest.raises(CheckpointError, match="gate.pivots contains NaN") as info:
        load_native(model_dir)
    one_line_error(info, model_dir / storage.WEIGHTS_FILE)


def test_card_without_sha256_needs_trust(model_dir):
    card_path = _edit_card(model_dir, lambda card: card.pop("sha256"))
    for load in (load_native, load_checkpoint, load_model, ganinv.load_generator):
        with pytest.raises(CheckpointError, match="no sha256") as info:
            load(model_dir)
        one_line_error(info, card_path)
    G, _, _, _ = load_native(model_dir, trust_card=True)
    assert isinstance(load_model(model_dir, trust_card=True).G, Generator)
    assert isinstance(ganinv.load_discriminator(model_dir, trust_card=True), Discriminator)
    assert G.num_ws == tiny_generator().num_ws


def test_trusted_card_still_needs_finite_weights(model_dir):
    _resave_tensors(model_dir, lambda t: t["G.mapping.fc0.bias"].fill_(float("nan")))
    _edit_card(model_dir, lambda card: card.pop("sha256"))
    with pytest.raises(CheckpointError, match="NaN"):
        load_native(model_dir, trust_card=True)


@pytest.mark.parametrize("sha256,match", [("0" * 64, "sha256 does not match"), (123, "not a sha256"),
                                          ("zz", "not a sha256")])
def test_card_sha256_that_does_not_match(model_dir, sha256, match):
    _edit_card(model_dir, lambda card: card.update(sha256=sha256))
    with pytest.raises(CheckpointError, match=match) as info:
        load_native(model_dir)
    one_line_error(info, model_dir)


@pytest.mark.parametrize("name", ["model.safetensors", "card.json", "heldout.npz", "encoder", "directions/x.json"])
def test_symlinks_out_of_the_model_folder_are_refused(model_dir, tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = model_dir / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.replace(target, outside / target.name)
    else:
        (outside / target.name).write_text("{}")
    os.symlink(outside / target.name, target)
    with pytest.raises(CheckpointError, match="outside the folder") as info:
        load_model(model_dir)
    one_line_error(info, target)


def test_symlink_inside_the_folder_is_fine(model_dir):
    os.replace(model_dir / storage.WEIGHTS_FILE, model_dir / "weights-v1.safetensors")
    os.symlink("weights-v1.safetensors", model_dir / storage.WEIGHTS_FILE)
    assert isinstance(load_model(model_dir).G, Generator)


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.json", "a/../../b", ""])
def test_names_outside_a_folder_are_refused(tmp_path, name):
    with pytest.raises(CheckpointError) as info:
        storage.file_in_folder(tmp_path, name, "vectors file")
    one_line_error(info, tmp_path)


@pytest.mark.parametrize("text,match", [
    ("[" * 100_000 + "]" * 100_000, "nested"),
    ('{"format": "ganinv-model", "x": ' + "[" * 200 + "]" * 200 + "}", "nested more than"),
    ('{"format": "ganinv-model", "format_version": 1e400}', "out of range"),
    ('{"format": "ganinv-model", "format_version": NaN}', "non-finite"),
    ('{"format": "ganinv-model", "format_version": ' + "9" * 5000 + "}", "not valid JSON"),
    ('{"format": "ganinv-model", "format_version": [1]}', "not a number"),
    ('{"format": "ganinv-model", "format_version": 10000000000000000000000}', "newer than this ganinv"),
    ('["format", "ganinv-model"]', "not a ganinv model card"),
    ('{"format": "ganinv-model", "format_version": 1, "sha256": "' + "a" * 64 + '", "generator": "z_dim=512"}',
     "mapping"),
    ('{"format": "ganinv-model", "format_version": 1, "sha256": "' + "a" * 64 + '", "generator": {"z_dim": 8}}',
     "lacks"),
    (b"\xff\xfe not text", "cannot read the model card"),
])
def test_hostile_cards(tmp_path, text, match):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / storage.CARD_FILE).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(folder)
    one_line_error(info, folder / storage.CARD_FILE)


def test_card_fields_of_the_wrong_type(model_dir):
    card_path = _edit_card(model_dir, lambda card: card.update(num_ws=[1, 2]))
    with pytest.raises(CheckpointError, match="num_ws") as info:
        load_native(model_dir)
    one_line_error(info, card_path)
    card_path = _edit_card(model_dir, lambda card: card.update(num_ws=5, generator={**card["generator"], "bogus": 1}))
    with pytest.raises(CheckpointError, match="bogus") as info:
        load_native(model_dir)
    one_line_error(info, card_path)


def _npz_with_claimed_shape(path, shape):
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("images.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.write(b"\0" * 64)


def test_image_array_whose_header_claims_a_trillion_rows(model_dir):
    _npz_with_claimed_shape(model_dir / "heldout.npz", (10 ** 12, 64, 64, 3))
    start, rss = time.perf_counter(), peak_rss_mb()
    with pytest.raises(CheckpointError, match="claims shape") as info:
        load_model(model_dir)
    assert time.perf_counter() - start < 2 and peak_rss_mb() - rss < 200
    one_line_error(info, model_dir / "heldout.npz")


@pytest.mark.parametrize("content", [b"not a zip", "object"])
def test_broken_image_arrays(model_dir, content):
    path = model_dir / "real_images.npz"
    if content == "object":
        np.savez(path, images=np.array([{"a": 1}], dtype=object))
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_model(model_dir)
    one_line_error(info, path)


# ============================================================================ safetensors files


def _safetensors(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


@pytest.mark.parametrize("name,blob", [
    ("huge_header", struct.pack("<Q", 2 ** 62) + b"{}"),
    ("header_past_end", struct.pack("<Q", 1000) + b"{}"),
    ("deep_header", _safetensors(b'{"a":' * 50_000 + b"1" + b"}" * 50_000)),
    ("overflow_number", _safetensors(b'{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,1e400]}}', b"\0" * 8)),
    ("huge_shape", _safetensors(json.dumps({"t": {"dtype": "F32", "shape": [10 ** 12, 10 ** 12],
                                                  "data_offsets": [0, 8]}}).encode(), b"\0" * 8)),
    ("not_json", _safetensors(b"\x00\x01\x02\x03")),
    ("unknown_dtype", _safetensors(json.dumps({"t": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 8]}}
                                              ).encode(), b"\0" * 8)),
])
def test_hostile_safetensors_files(model_dir, name, blob):
    """Each file gets a card whose sha256 matches, so the reader itself must refuse it."""
    weights = model_dir / storage.WEIGHTS_FILE
    weights.write_bytes(blob)
    _edit_card(model_dir, lambda card: card.update(sha256=storage.sha256_file(weights)))
    start, rss = time.perf_counter(), peak_rss_mb()
    with pytest.raises(CheckpointError, match="cannot read safetensors") as info:
        load_model(model_dir)
    assert time.perf_counter() - start < 2 and peak_rss_mb() - rss < 200
    one_line_error(info, weights)


def test_safetensors_with_a_tensor_of_the_wrong_dtype(model_dir):
    key = "G.mapping.fc0.weight"
    _resave_tensors(model_dir, lambda t: t.update({key: torch.zeros(t[key].shape, dtype=torch.bool)}))
    with pytest.raises(CheckpointError, match="has dtype bool") as info:
        load_native(model_dir)
    assert key[2:] in one_line_error(info, model_dir / storage.WEIGHTS_FILE)


# ============================================================================ files ganinv writes


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    write_json(tmp_path / "a.json", {"a": 1})
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")
    folder = save_native(tmp_path / "model", tiny_generator())
    for path in (tmp_path / "a.json", tmp_path / "b.bin", folder / storage.CARD_FILE, folder / storage.WEIGHTS_FILE):
        assert os.stat(path).st_mode & 0o777 == mode, path
    # Replacing a file gives the new one the same rule (not the old file's mode, not 0600).
    os.chmod(tmp_path / "a.json", 0o600)
    write_json(tmp_path / "a.json", {"a": 2})
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == mode


def test_training_config_is_written_atomically(tmp_path, monkeypatch, umask):
    from ganinv.train.loop import CONFIG_FILE, TrainingLoop

    umask(0o022)
    holder = types.SimpleNamespace(run_dir=tmp_path)
    TrainingLoop.write_config(holder, {"learning_rate": 0.002, "steps": 10})
    before = (tmp_path / CONFIG_FILE).read_bytes()
    assert os.stat(tmp_path / CONFIG_FILE).st_mode & 0o777 == 0o644
    original = type(tmp_path).write_text

    def crash_half_way(self, data, *args, **kwargs):
        original(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(type(tmp_path), "write_text", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        TrainingLoop.write_config(holder, {"learning_rate": 0.1, "steps": 99999})
    monkeypatch.undo()
    assert (tmp_path / CONFIG_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE]


# ============================================================================ CLI


def test_cli_info_on_a_hostile_card_prints_one_error_line(tmp_path):
    """A 2 KB card asking for z_dim = w_dim = 10^7 (24 GB if built), in a process whose address space is
    capped at 8 GB: one `Error:` line naming the file and the field, a non-zero exit, quickly."""
    bad = save_native(tmp_path / "bad", tiny_generator())
    _edit_card(bad, lambda card: card["generator"].update(z_dim=10 ** 7, w_dim=10 ** 7))
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (8 * 2 ** 30, 8 * 2 ** 30))
        from ganinv.cli import entry
        sys.argv = ["ganinv", "info", {str(bad)!r}]
        entry()
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(ganinv.__path__[0])] +
                                                        [p for p in [os.environ.get("PYTHONPATH")] if p])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(bad) in lines[0], done.stderr
    assert "z_dim" in lines[0] or "w_dim" in lines[0]


@pytest.mark.parametrize("case", ["no_sha256", "nan", "cyclic_pickle", "bad_header"])
def test_cli_one_line_errors_and_trust_card(tmp_path, record, case, capsys, monkeypatch):
    from click.testing import CliRunner

    from ganinv.cli import main
    from ganinv.cli.common import run_main

    target = save_native(tmp_path / "m", tiny_generator())
    if case == "no_sha256":
        _edit_card(target, lambda card: card.pop("sha256"))
    elif case == "nan":
        _resave_tensors(target, lambda t: t["G.mapping.fc0.weight"].fill_(float("nan")))
    elif case == "cyclic_pickle":
        loop = []
        loop.append(loop)
        target = tmp_path / "cyclic.pkl"
        target.write_bytes(pickle.dumps({"G_ema": record("Generator", kwargs={"z_dim": loop})}))
    else:
        (target / storage.WEIGHTS_FILE).write_bytes(struct.pack("<Q", 2 ** 62))
        _edit_card(target, lambda card: card.update(sha256=storage.sha256_file(target / storage.WEIGHTS_FILE)))
    for args in (["info", str(target)], ["generate", "--model", str(target), "--seeds", "0",
                                         "--outdir", str(tmp_path / "out")]):
        # As the `ganinv` script runs a command (run_main): the error is one printed line.
        monkeypatch.setattr(sys, "argv", ["ganinv", *args])
        exit_code = run_main(main)
        captured = capsys.readouterr()
        lines = [line for line in (captured.err + captured.out).splitlines() if line.strip()]
        assert exit_code != 0, captured
        assert len(lines) == 1 and lines[0].startswith("Error: ") and str(target) in lines[0], captured
    if case == "no_sha256":
        runner = CliRunner()
        res = runner.invoke(main, ["info", "--trust-card", str(target)])
        assert res.exit_code == 0 and "num_ws" in res.output, res.output
        res = runner.invoke(main, ["generate", "--trust-card", "--model", str(target), "--seeds", "0",
                                   "--outdir", str(tmp_path / "out2")])
        assert res.exit_code == 0, res.output
        res = runner.invoke(main, ["info", str(target)])  # the flag does not outlive its command
        assert res.exit_code != 0
