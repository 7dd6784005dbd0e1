"""Dataset builders (emoji, fashion-mnist), emoji labels and the by-design split, and the dataset loader."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ganinv.cli.data import data_group
from ganinv.data import emoji as emoji_module
from ganinv.data import fashion_mnist as fashion_module
from ganinv.data.dataset import (DatasetError, images_to_tensor, load_dataset, read_dataset_info,
                                 write_dataset)
from ganinv.data.emoji import (SPLIT_FILE, EmojiBuildReport, build_emoji, design_is_heldout_by_rule,
                               design_key, emoji_labels, load_emoji_split, parse_emoji_test)
from ganinv.data.fashion_mnist import build_fashion_mnist, read_idx


def require_debian(paths: list[Path], package: str) -> None:
    """Skip when a Debian data package's files are missing (under CI=true conftest turns this into a failure)."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        pytest.skip(f"needs Debian package {package} ({missing[0]} missing): apt-get install -y {package}")


def require_emoji_packages() -> None:
    require_debian([emoji_module.EMOJI_TEST_FILE], "unicode-data")
    require_debian([emoji_module.FONT_FILE], "fonts-noto-color-emoji")


# A slice of emoji-test.txt (format of Unicode 15.0), with its group/subgroup headers.
SAMPLE = """\
# group: Smileys & Emotion

# subgroup: face-smiling
1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face
263A FE0F                                              ; fully-qualified     # ☺️ E0.6 smiling face
263A                                                   ; unqualified         # ☺ E0.6 smiling face

# group: People & Body

# subgroup: hand-fingers-open
1F44B 1F3FD                                            ; fully-qualified     # 👋🏽 E1.0 waving hand: medium skin tone

# subgroup: person
1F9D1                                                  ; fully-qualified     # 🧑 E5.0 person
1F468 1F3FB                                            ; fully-qualified     # 👨🏻 E1.0 man: light skin tone
1F469 1F3FF                                            ; fully-qualified     # 👩🏿 E1.0 woman: dark skin tone
1F468 1F3FE 200D 1F9B0                                 ; fully-qualified     # 👨🏾‍🦰 E11.0 man: medium-dark skin tone, red hair
1F469 200D 1F9B2                                       ; fully-qualified     # 👩‍🦲 E11.0 woman: bald
1F474 1F3FC                                            ; fully-qualified     # 👴🏼 E1.0 old man: medium-light skin tone
1F476                                                  ; fully-qualified     # 👶 E0.6 baby
1F467 1F3FB                                            ; fully-qualified     # 👧🏻 E1.0 girl: light skin tone

# subgroup: person-role
1F9D1 200D 1F4BB                                       ; fully-qualified     # 🧑‍💻 E12.1 technologist
1F469 1F3FD 200D 1F4BB                                 ; fully-qualified     # 👩🏽‍💻 E4.0 woman technologist: medium skin tone
1F477 1F3FB 200D 2642 FE0F                             ; fully-qualified     # 👷🏻‍♂️ E4.0 man construction worker: light skin tone
1F477 1F3FB 200D 2642                                  ; minimally-qualified # 👷🏻‍♂ E4.0 man construction worker: light skin tone

# subgroup: family
1F469 1F3FB 200D 2764 FE0F 200D 1F48B 200D 1F468 1F3FF ; fully-qualified     # 👩🏻‍❤️‍💋‍👨🏿 E13.1 kiss: woman, man, light skin tone, dark skin tone
1F48F                                                  ; fully-qualified     # 💏 E0.6 kiss
1F46D 1F3FC                                            ; fully-qualified     # 👭🏼 E12.0 women holding hands: medium-light skin tone
1F46B                                                  ; fully-qualified     # 👫 E0.6 woman and man holding hands

# group: Objects

# subgroup: clothing
1F45E                                                  ; fully-qualified     # 👞 E0.6 man’s shoe
1F452                                                  ; fully-qualified     # 👒 E0.6 woman’s hat
"""


def _sample_labels() -> dict[str, dict]:
    return {entry.name: emoji_labels(entry) for entry in parse_emoji_test(SAMPLE)}


# --- emoji labels (no Debian package needed) -----------------------------------------------------------------

def test_parse_keeps_fully_qualified_with_groups():
    entries = parse_emoji_test(SAMPLE)
    names = [e.name for e in entries]
    assert len(entries) == 20 and names.count("smiling face") == 1  # unqualified line dropped
    assert names.count("man construction worker: light skin tone") == 1  # minimally-qualified dropped
    first = entries[0]
    assert (first.codepoints, first.name, first.group, first.subgroup, first.version) == (
        (0x1F600,), "grinning face", "Smileys & Emotion", "face-smiling", "1.0")
    assert entries[1].text == "\u263a\ufe0f"
    assert entries[-1].group == "Objects" and entries[-1].subgroup == "clothing"
    with pytest.raises(DatasetError, match="line 1"):
        parse_emoji_test("this is not emoji-test.txt\n")


def test_skin_tone_labels():
    labels = _sample_labels()
    assert labels["grinning face"]["skin_tone"] == "none"
    assert labels["waving hand: medium skin tone"]["skin_tone"] == "3"
    assert labels["man: light skin tone"]["skin_tone"] == "1"
    assert labels["woman: dark skin tone"]["skin_tone"] == "5"
    kiss = labels["kiss: woman, man, light skin tone, dark skin tone"]
    assert kiss["skin_tone"] == "mixed" and kiss["skin_tones"] == [1, 5]


def test_gender_labels():
    labels = _sample_labels()
    expected = {
        "grinning face": "none", "waving hand: medium skin tone": "none", "person": "person",
        "man: light skin tone": "man", "woman: dark skin tone": "woman", "woman: bald": "woman",
        "old man: medium-light skin tone": "man", "baby": "person", "girl: light skin tone": "woman",
        "technologist": "person", "woman technologist: medium skin tone": "woman",
        "man construction worker: light skin tone": "man",  # also carries the ZWJ male sign
        "kiss: woman, man, light skin tone, dark skin tone": "mixed", "kiss": "person",
        "women holding hands: medium-light skin tone": "woman", "woman and man holding hands": "mixed",
        "man’s shoe": "none", "woman’s hat": "none",  # objects, not people
    }
    assert {name: labels[name]["gender"] for name in expected} == expected


def test_hair_and_age_labels():
    labels = _sample_labels()
    assert labels["man: medium-dark skin tone, red hair"]["hair_style"] == "red"
    assert labels["woman: bald"]["hair_style"] == "bald"
    assert labels["person"]["hair_style"] == "none"
    assert labels["old man: medium-light skin tone"]["age"] == "old"
    assert labels["baby"]["age"] == "baby"
    assert labels["girl: light skin tone"]["age"] == "child"
    assert labels["man: light skin tone"]["age"] == "none"


def test_design_key_drops_skin_tone_and_gender_only():
    same = [["person", "man: light skin tone", "woman: dark skin tone", "man"],
            ["technologist", "woman technologist: medium skin tone", "man technologist"],
            ["kiss", "kiss: woman, man, light skin tone, dark skin tone", "kiss: person, person"],
            ["people holding hands", "women holding hands: medium-light skin tone",
             "woman and man holding hands", "men holding hands: dark skin tone, light skin tone"],
            ["older person", "old man: medium-light skin tone", "old woman"],
            ["child", "girl: light skin tone", "boy"],
            ["person: red hair", "man: medium-dark skin tone, red hair", "woman: red hair"],
            ["person with crown", "prince", "princess: dark skin tone"]]
    for names in same:
        keys = {design_key(name) for name in names}
        assert len(keys) == 1, (names, keys)
    distinct = ["person", "person: red hair", "person: bald", "technologist", "man’s shoe", "woman’s hat",
                "flag: Isle of Man", "waving hand: medium skin tone", "kiss"]
    assert len({design_key(name) for name in distinct}) == len(distinct)
    assert design_key("flag: Isle of Man") == "flag: isle of man"
    assert design_key("man technologist: dark skin tone") == "technologist"
    assert design_key("woman: light skin tone") == "person"


def test_frozen_split_file_follows_its_rule():
    split = load_emoji_split(SPLIT_FILE)
    data = json.loads(SPLIT_FILE.read_text())
    assert data["rule"] == emoji_module.SPLIT_RULE
    designs = data["designs"]
    assert len(designs) == data["num_designs"] > 1000
    assert sorted(d for d in designs if design_is_heldout_by_rule(d)) == sorted(data["heldout_designs"])
    assert len(split.heldout_designs) >= 0.10 * len(designs)
    assert split.heldout_designs <= split.known_designs
    assert split.split_of(next(iter(split.heldout_designs))) == "heldout"
    train_design = next(d for d in designs if d not in split.heldout_designs)
    assert split.split_of(train_design) == "train"


def test_split_is_by_design_on_the_full_list():
    require_debian([emoji_module.EMOJI_TEST_FILE], "unicode-data")
    entries = parse_emoji_test(emoji_module.EMOJI_TEST_FILE.read_text(encoding="utf-8"))
    assert len(entries) > 3500
    split = load_emoji_split()
    splits_of_design: dict[str, set[str]] = {}
    for entry in entries:
        key = design_key(entry.name)
        splits_of_design.setdefault(key, set()).add(split.split_of(key))
    assert all(len(s) == 1 for s in splits_of_design.values()), "a design is in both splits"
    heldout = [k for k, s in splits_of_design.items() if s == {"heldout"}]
    assert len(heldout) >= 0.10 * len(splits_of_design)
    assert set(splits_of_design) <= split.known_designs  # the frozen file covers the installed list
    # Skin-tone variants of one design exist and stay together.
    thumbs = {split.split_of(design_key(e.name)) for e in entries if e.name.startswith("thumbs up")}
    assert len([e for e in entries if e.name.startswith("thumbs up")]) == 6 and len(thumbs) == 1


# --- emoji builder (needs the Debian packages) ----------------------------------------------------------------

def test_build_emoji_sample_renders_colour_and_roundtrips(tmp_path):
    require_emoji_packages()
    split = load_emoji_split()
    # "person" (person / man / woman, every tone) is a held-out design, so both splits are exercised.
    heldout_design = "person"  # held out in the frozen split (asserted below)
    assert heldout_design in split.heldout_designs
    sample = tmp_path / "emoji-test.txt"
    sample.write_text(SAMPLE + "1F600 200D 1F4BB ; fully-qualified # 😀‍💻 E99.0 grinning technologist\n",
                      encoding="utf-8")
    report = EmojiBuildReport(tmp_path, {})
    outdir = build_emoji(tmp_path / "emoji", emoji_test_file=sample, report=report)
    info = read_dataset_info(outdir)
    assert info["resolution"] == 64 and info["channels"] == 3
    assert info["skipped"]["count"] == 1 and "grinning technologist" in info["skipped"]["emoji"][0]
    assert report.skipped and report.counts["train"] + report.counts["heldout"] == 20
    import hashlib
    assert info["split_sha256"] == hashlib.sha256(SPLIT_FILE.read_bytes()).hexdigest()
    assert "fonts-noto-color-emoji" in info["source_package"] and info["license"]

    images, records = load_dataset(outdir, "all")
    assert images.shape == (20, 64, 64, 3) and images.dtype == np.uint8
    by_name = {r["name"]: (image, r) for image, r in zip(images, records)}
    face, face_record = by_name["grinning face"]
    assert face_record["group"] == "Smileys & Emotion" and face_record["skin_tone"] == "none"
    # Rendered in colour on white: white corners, a yellow face (red and green high, blue low).
    assert (face[0, 0] >= 250).all() and (face[-1, -1] >= 250).all()
    center = face[20:44, 8:56].reshape(-1, 3).astype(int)
    yellow = (center[:, 0] > 180) & (center[:, 1] > 120) & (center[:, 2] < 90)
    assert yellow.mean() > 0.3
    # The glyph fills the frame (tight square crop): some non-white pixel within 4 px of each edge.
    ink = (face < 240).any(axis=2)
    assert ink[:4].any() or ink[-4:].any()
    assert ink[:, :4].any() or ink[:, -4:].any()
    # Skin-tone variants are different images.
    light = by_name["man: light skin tone"][0].astype(int)
    dark = by_name["woman: dark skin tone"][0].astype(int)
    assert np.abs(light - dark).mean() > 10
    person_splits = {r["split"] for r in records if r["design"] == heldout_design}
    assert person_splits == {"heldout"}
    for design in {r["design"] for r in records}:
        assert len({r["split"] for r in records if r["design"] == design}) == 1

    # Cache and PNGs agree; split views partition the records.
    train_cached, train_records = load_dataset(outdir, "train")
    train_png, _ = load_dataset(outdir, "train", use_cache=False)
    assert np.array_equal(train_cached, train_png)
    heldout, heldout_records = load_dataset(outdir, "heldout")
    assert len(train_records) + len(heldout_records) == 20
    assert all(r["split"] == "train" for r in train_records)


def test_cli_emoji_limit_and_refuses_overwrite(tmp_path):
    require_emoji_packages()
    runner = CliRunner()
    outdir = tmp_path / "emoji"
    result = runner.invoke(data_group, ["emoji", "--outdir", str(outdir), "--limit", "6", "--quiet"])
    assert result.exit_code == 0, result.output
    images, records = load_dataset(outdir, "all")
    assert images.shape == (6, 64, 64, 3)
    assert len({r["group"] for r in records}) >= 4  # spread over the list, not the first six smileys
    again = runner.invoke(data_group, ["emoji", "--outdir", str(outdir), "--limit", "6"])
    assert again.exit_code != 0 and "--overwrite" in again.output


def test_missing_debian_package_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(emoji_module, "FONT_FILE", tmp_path / "NotoColorEmoji.ttf")
    monkeypatch.setattr(emoji_module, "EMOJI_TEST_FILE", tmp_path / "emoji-test.txt")
    monkeypatch.setattr(fashion_module, "DATA_DIR", tmp_path / "fashion-mnist")
    runner = CliRunner()
    for args, package in ((["emoji"], "unicode-data"), (["fashion-mnist"], "dataset-fashion-mnist")):
        result = runner.invoke(data_group, [*args, "--outdir", str(tmp_path / "out")])
        assert result.exit_code == 1
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and f"apt-get install -y {package}" in lines[0], result.output
    (tmp_path / "emoji-test.txt").write_text(SAMPLE, encoding="utf-8")
    with pytest.raises(DatasetError, match="fonts-noto-color-emoji"):
        build_emoji(tmp_path / "out2")


# --- fashion-mnist --------------------------------------------------------------------------------------------

def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_read_idx_and_build_from_synthetic_files(tmp_path):
    rng = np.random.RandomState(0)
    source = tmp_path / "source"
    source.mkdir()
    arrays = {}
    for stem, count, compress in (("train", 7, True), ("t10k", 5, False)):
        images = rng.randint(1, 256, (count, 28, 28)).astype(np.uint8)
        labels = rng.randint(0, 10, count).astype(np.uint8)
        suffix = ".gz" if compress else ""
        _write_idx(source / f"{stem}-images-idx3-ubyte{suffix}", images, compress)
        _write_idx(source / f"{stem}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[stem] = (images, labels)
    assert np.array_equal(read_idx(source / "train-images-idx3-ubyte.gz"), arrays["train"][0])
    assert np.array_equal(read_idx(source / "t10k-labels-idx1-ubyte"), arrays["t10k"][1])

    outdir = build_fashion_mnist(tmp_path / "fashion", data_dir=source)
    info = read_dataset_info(outdir)
    assert info["counts"] == {"train": 7, "heldout": 5}
    assert info["resolution"] == 32 and info["channels"] == 1
    for split, stem in (("train", "train"), ("heldout", "t10k")):
        images, records = load_dataset(outdir, split)
        assert images.shape == (len(arrays[stem][0]), 32, 32, 1)
        # Padded by 2 pixels of background (0) on every side, content untouched.
        assert np.array_equal(images[:, 2:30, 2:30, 0], arrays[stem][0])
        border = np.ones((32, 32), bool)
        border[2:30, 2:30] = False
        assert (images[:, border, 0] == 0).all()
        assert [r["class"] for r in records] == arrays[stem][1].tolist()
        assert all(r["class_name"] == fashion_module.CLASS_NAMES[r["class"]] for r in records)
    limited = build_fashion_mnist(tmp_path / "limited", data_dir=source, limit=3)
    assert read_dataset_info(limited)["counts"] == {"train": 3, "heldout": 3}


def test_read_idx_refuses_bad_files(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short-idx"
    short.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc")
    with pytest.raises(DatasetError, match="header says 5"):
        read_idx(short)


def test_build_fashion_mnist_from_debian(tmp_path):
    require_debian([fashion_module.DATA_DIR / "train-images-idx3-ubyte.gz"], "dataset-fashion-mnist")
    outdir = build_fashion_mnist(tmp_path / "fashion", limit=20)
    info = read_dataset_info(outdir)
    assert info["counts"] == {"train": 20, "heldout": 20}
    assert info["source_package"] == "dataset-fashion-mnist" and "MIT" in info["license"]
    images, records = load_dataset(outdir, "train")
    assert images.shape == (20, 32, 32, 1)
    assert records[0]["class_name"] == "Ankle boot"  # the first training image of Fashion-MNIST
    assert (images[:, :2] == 0).all() and (images[:, :, -2:] == 0).all()
    assert images.mean() > 40  # garments, not an empty canvas


# --- the dataset format and loader ----------------------------------------------------------------------------

def _tiny_dataset(directory: Path, count: int = 6) -> np.ndarray:
    images = np.random.RandomState(3).randint(0, 256, (count, 8, 8, 3)).astype(np.uint8)
    records = [{"split": "heldout" if i % 3 == 0 else "train", "label": i} for i in range(count)]
    info = dict(name="tiny", source_package="none", source_version="0", license="CC0", split_rule="i % 3",
                label_fields=["label"], created_by="test")
    write_dataset(directory, images, records, info)
    return images


def test_loader_roundtrip_and_cache_fallback(tmp_path):
    images = _tiny_dataset(tmp_path / "d")
    train, train_records = load_dataset(tmp_path / "d")
    assert np.array_equal(train, images[[1, 2, 4, 5]])
    assert [r["label"] for r in train_records] == [1, 2, 4, 5]
    assert train_records[0]["file"] == "images/000001.png"
    everything, records = load_dataset(tmp_path / "d", "all")
    assert np.array_equal(everything, images) and [r["label"] for r in records] == list(range(6))
    # A stale cache (labels changed after it was written) is ignored, not trusted.
    labels_path = tmp_path / "d" / "labels.json"
    edited = json.loads(labels_path.read_text())
    edited[1]["split"] = "heldout"
    labels_path.write_text(json.dumps(edited))
    heldout, heldout_records = load_dataset(tmp_path / "d", "heldout")
    assert np.array_equal(heldout, images[[0, 1, 3]])
    # A corrupt cache falls back to the PNGs too.
    (tmp_path / "d" / "images_train.npz").write_bytes(b"not a zip")
    train, _ = load_dataset(tmp_path / "d", "train")
    assert np.array_equal(train, images[[2, 4, 5]])


def test_loader_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a ganinv dataset, dataset.json is missing"):
        load_dataset(tmp_path / "empty")
    _tiny_dataset(tmp_path / "d")
    with pytest.raises(DatasetError, match="unknown split"):
        load_dataset(tmp_path / "d", "test")
    (tmp_path / "d" / "images_heldout.npz").unlink()
    (tmp_path / "d" / "images" / "000000.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match="000000.png: cannot read"):
        load_dataset(tmp_path / "d", "heldout")
    assert issubclass(DatasetError, ValueError)


def test_rebuild_in_place_removes_stale_images(tmp_path):
    _tiny_dataset(tmp_path / "d", count=6)
    _tiny_dataset(tmp_path / "d", count=3)
    assert sorted(p.name for p in (tmp_path / "d" / "images").glob("*.png")) == [
        "000000.png", "000001.png", "000002.png"]
    assert read_dataset_info(tmp_path / "d")["counts"] == {"train": 2, "heldout": 1}


def test_images_to_tensor():
    images = np.array([[[[0, 128, 255]]]], dtype=np.uint8)  # [1, 1, 1, 3]
    tensor = images_to_tensor(images)
    assert tensor.shape == (1, 3, 1, 1) and tensor.dtype == torch.float32
    assert torch.allclose(tensor.flatten(), torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6)
    assert images_to_tensor(np.zeros((5, 4, 4, 1), np.uint8)).shape == (5, 1, 4, 4)
    assert images_to_tensor(np.zeros((4, 4, 3), np.uint8)).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="uint8"):
        images_to_tensor(np.zeros((1, 4, 4, 3), np.float32))
