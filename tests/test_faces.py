"""Faces: detection and landmarks on real photos, FFHQ alignment, paste-back, identity, the CLI steps."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("dlib", reason="the faces extra (dlib-bin) is not installed")
skimage_data = pytest.importorskip("skimage.data")

from ganinv import faces as F  # noqa: E402
from ganinv.faces.paste import blend_mask  # noqa: E402

from conftest import tiny_generator  # noqa: E402


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # a real, public-domain portrait (NASA), 512 x 512


def _eyes(landmarks):
    points = np.asarray(landmarks)
    return points[36:42].mean(axis=0), points[42:48].mean(axis=0)


def test_astronaut_one_face_and_alignment_levels_the_eyes(astronaut):
    faces = F.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarks.shape == (68, 2) and face.score > 0
    x0, y0, x1, y1 = face.box
    left, right = _eyes(face.landmarks)
    assert x0 < left[0] < right[0] < x1 and y0 < left[1] < y1
    crop, alignment = F.align(astronaut, face, size=256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    assert (alignment.width, alignment.height, alignment.size) == (512, 512, 256)
    assert alignment.sha256 == F.photo_sha256(astronaut)
    # The astronaut's head is tilted in the photo; in the crop her eyes are level, left eye on the left.
    tilt = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    assert abs(tilt) > 3
    mapped_left, mapped_right = _eyes(F.photo_to_crop(face.landmarks, alignment))
    assert mapped_left[0] < mapped_right[0]
    assert abs(mapped_right[1] - mapped_left[1]) < 0.02 * 256
    # Independently: the detector run on the crop finds the face with level eyes, about centred.
    again = F.detect(crop)
    assert len(again) == 1
    crop_left, crop_right = _eyes(again[0].landmarks)
    assert crop_left[0] < crop_right[0] and abs(crop_right[1] - crop_left[1]) < 0.03 * 256
    assert abs((crop_left[0] + crop_right[0]) / 2 - 128) < 0.06 * 256
    # Any size: the same quad, another resolution.
    small, small_alignment = F.align(astronaut, face, size=37)
    assert small.shape == (37, 37, 3) and np.allclose(small_alignment.quad, alignment.quad)


def _similarity(angle_degrees: float, scale: float, centre, tile_size: int):
    """Matrix A and offset b with canvas = A @ tile + b: the tile rotated about its centre, scaled and
    centred at `centre` (continuous coordinates)."""
    a = math.radians(angle_degrees)
    A = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    b = np.asarray(centre, float) - A @ np.array([tile_size / 2, tile_size / 2])
    return A, b


def _two_face_canvas(tile: np.ndarray, placements, size=(800, 480), seed=0):
    from scipy import ndimage
    width, height = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    canvas = np.stack([90 + 60 * xs / width, 110 + 40 * ys / height, 130 - 30 * xs / width], axis=2)
    canvas += rng.normal(0, 3, canvas.shape)
    for angle, scale, centre in placements:
        A, b = _similarity(angle, scale, centre, tile.shape[0])
        inverse = np.linalg.inv(A)
        tile_xy = np.einsum("ij,jhw->ihw", inverse, np.stack([xs - b[0], ys - b[1]]))
        inside = ((tile_xy >= 0) & (tile_xy <= tile.shape[0])).all(axis=0)
        for c in range(3):
            sampled = ndimage.map_coordinates(tile[:, :, c].astype(np.float64), [tile_xy[1] - 0.5, tile_xy[0] - 0.5],
                                              order=1, mode="nearest")
            canvas[:, :, c] = np.where(inside, sampled, canvas[:, :, c])
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def two_face_photo():
    """A synthetic group photo: the astronaut's aligned face pasted twice at known angles and scales;
    returns (photo, the quads expected for the two faces)."""
    astronaut = skimage_data.astronaut()
    tile, _ = F.align(astronaut, F.detect(astronaut)[0], size=192)
    (tile_face,) = F.detect(tile)
    tile_quad = F.face_quad(tile_face.landmarks)
    placements = [(14.0, 1.0, (230.0, 250.0)), (-22.0, 0.8, (590.0, 230.0))]
    canvas = _two_face_canvas(tile, placements)
    expected = []
    for angle, scale, centre in placements:
        A, b = _similarity(angle, scale, centre, tile.shape[0])
        expected.append((tile_quad + 0.5) @ A.T + b - 0.5)
    return canvas, expected


@pytest.fixture(scope="module")
def two_faces():
    return two_face_photo()


def test_synthetic_group_photo_faces_found_with_their_quads(two_faces):
    canvas, expected = two_faces
    faces = F.detect(canvas)
    assert len(faces) == 2
    assert faces[0].box[0] < faces[1].box[0]  # left to right
    for face, quad in zip(faces, expected):
        found = F.face_quad(face.landmarks)
        side = np.hypot(*(quad[3] - quad[0]))
        assert np.abs(found - quad).max() < 0.03 * side + 1, (found, quad)
    assert F.largest_face(faces) == 0


def test_paste_back_changes_nothing_outside_the_mask(two_faces):
    canvas, _ = two_faces
    found = F.align_faces(canvas, size=64)
    crop, alignment, _ = found[1]
    edited = 255 - crop  # an obvious edit
    out, mask = F.paste_back(canvas, edited, alignment, return_mask=True)
    assert out.shape == canvas.shape and out.dtype == np.uint8
    assert (mask > 0).sum() > 500
    assert np.array_equal(out[mask == 0], canvas[mask == 0])
    assert (np.abs(out.astype(int) - canvas)[mask > 0.9].mean()) > 40
    # The blended region lies inside the face's quad (a tight box around it) and away from the other face.
    ys, xs = np.nonzero(mask)
    quad = alignment.quad
    assert xs.min() >= quad[:, 0].min() - 1 and xs.max() <= quad[:, 0].max() + 1
    assert ys.min() >= quad[:, 1].min() - 1 and ys.max() <= quad[:, 1].max() + 1
    # Both faces at once: only the union of the masks changes; a tensor crop works like the uint8 one.
    tensor = torch.from_numpy(edited.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    both, union = F.paste_back(canvas, [found[0][0], tensor], [found[0][1], alignment], return_mask=True)
    assert np.array_equal(both[union == 0], canvas[union == 0])
    assert np.array_equal(both[mask > 0] != canvas[mask > 0], out[mask > 0] != canvas[mask > 0])
    ones, region = blend_mask(alignment)
    assert ones.max() == 1.0 and ones.min() == 0.0


def test_align_then_paste_back_the_unedited_crop_restores_the_face(astronaut):
    (crop, alignment, _), = F.align_faces(astronaut, size=256)
    out, mask = F.paste_back(astronaut, crop, alignment, return_mask=True)
    assert np.array_equal(out[mask == 0], astronaut[mask == 0])
    inner = mask > 0.5
    mse = ((out.astype(float) - astronaut)[inner] ** 2).mean()
    assert 10 * math.log10(255 ** 2 / mse) > 28


def test_no_face_tiny_image_and_bad_inputs_give_one_line_errors(astronaut, tmp_path):
    blank = np.full((200, 300, 3), 128, np.uint8)
    assert F.detect(blank) == []
    with pytest.raises(F.NoFaceError, match="no face"):
        F.align_faces(blank, size=64)
    with pytest.raises(F.FaceError, match="20x12 pixels"):
        F.detect(np.zeros((12, 20, 3), np.uint8))
    with pytest.raises(F.FaceError, match="uint8"):
        F.detect(np.zeros((64, 64, 3), np.float32))
    (crop, alignment, _), = F.align_faces(astronaut, size=32)
    with pytest.raises(F.FaceError, match="alignment was made on a 512x512 photo"):
        F.paste_back(astronaut[:300], crop, alignment)
    with pytest.raises(F.FaceError, match="size"):
        F.align(astronaut, F.detect(astronaut)[0], size=0)
    bad = tmp_path / "alignment.json"
    bad.write_text(json.dumps({**alignment.to_json(), "quad": [[0, 0]]}))
    with pytest.raises(F.FaceError, match="quad") as info:
        F.Alignment.load(bad)
    assert "\n" not in str(info.value)
    alignment.save(tmp_path)
    loaded = F.Alignment.load(tmp_path)
    assert np.allclose(loaded.quad, alignment.quad) and loaded.sha256 == alignment.sha256
    with pytest.raises(F.FaceError, match="nothing_here.dat not found.*faces"):
        F.find_dlib_file("nothing_here.dat", tmp_path)


def test_identity_similarity_uses_the_genuine_descriptor(astronaut, monkeypatch):
    from ganinv.faces import identity
    from ganinv.metrics import format_metric
    (crop, _, _), = F.align_faces(astronaut, size=64)
    target = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    noisy = (target + 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    same = F.identity_similarity(target, target)
    close = F.identity_similarity(noisy, target)
    far = F.identity_similarity(torch.zeros_like(target), target)
    assert same[0] == pytest.approx(1.0, abs=1e-6)
    assert far[0] < close[0] < 1.0
    monkeypatch.setattr(identity, "identity_available", lambda dlib_dir=None: False)
    assert F.identity_similarity(target, target) is None
    from ganinv.metrics import face_identity
    assert face_identity(target, target) is None and format_metric(None) == "n/a"


def test_invert_reports_identity_for_face_crops():
    from ganinv.inversion import invert
    G = tiny_generator(resolution=16)
    target = torch.rand(1, 3, 16, 16) * 2 - 1
    result = invert(G, target, "optimize", num_steps=2, metrics=("identity",))
    values = result.metrics["identity"]
    assert isinstance(values, list) and len(values) == 1 and -1.0 <= values[0] <= 1.0


# ---------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from ganinv.models.checkpoints import save_native
    folder = tmp_path_factory.mktemp("tiny-face-model")
    save_native(folder, tiny_generator(resolution=16), None, card={"name": "tiny"})
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    Image.fromarray(np.full((120, 160, 3), 200, np.uint8)).save(folder / "wall.png")
    return folder


def _invoke(args):
    from click.testing import CliRunner

    from ganinv.cli import main
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_align_writes_crops_and_faces_json(model_dir, photos, tmp_path):
    out = tmp_path / "aligned"
    r = _invoke(["align", photos / "astronaut.png", photos / "wall.png", "--model", model_dir, "--outdir", out])
    assert r.exit_code == 1, r.output  # the wall has no face; the batch still aligned the astronaut
    assert "wall.png: no face found" in r.output and "Traceback" not in r.output
    record = json.loads((out / "astronaut" / "faces.json").read_text())
    assert (record["width"], record["height"], record["size"]) == (512, 512, 16)
    (face,) = record["faces"]
    assert set(face) >= {"index", "box", "landmarks", "quad", "score", "file"}
    assert len(face["landmarks"]) == 68 and len(face["quad"]) == 4
    assert Image.open(out / "astronaut" / face["file"]).size == (16, 16)
    r = _invoke(["align", photos / "astronaut.png", "--size", 48, "--outdir", out, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert Image.open(out / "astronaut" / "face_00.png").size == (48, 48)


def test_cli_invert_align_and_edit_paste_back(model_dir, photos, tmp_path):
    out = tmp_path / "inv"
    r = _invoke(["invert", photos / "astronaut.png", photos / "wall.png", "--align", "--model", model_dir,
                 "--num-steps", 2, "--outdir", out, "--quiet"])
    assert r.exit_code == 1, r.output
    assert "wall.png: no face found" in r.output
    result = out / "astronaut_face_00"
    alignment = F.Alignment.load(result / "alignment.json")
    assert (alignment.width, alignment.height, alignment.size) == (512, 512, 16)
    assert alignment.source.endswith("astronaut.png")
    report = json.loads((result / "report.json").read_text())
    assert "identity" in report["metrics"]
    r = _invoke(["invert", photos / "astronaut.png", "--align", "--face", 3, "--model", model_dir,
                 "--num-steps", 2, "--outdir", tmp_path / "inv3"])
    assert r.exit_code == 1 and "only 1 face(s)" in r.output
    r = _invoke(["directions", "sefa", "--model", model_dir, "--num", 2, "--outdir", tmp_path / "dirs", "--quiet"])
    assert r.exit_code == 0, r.output
    (direction,) = (tmp_path / "dirs").glob("*.json")
    edits = tmp_path / "edit"
    r = _invoke(["edit", result, "--model", model_dir, "--direction", f"{direction}:0", "--strength", "0,3",
                 "--paste-back", "--outdir", edits, "--quiet"])
    assert r.exit_code == 0, r.output
    photo = np.asarray(Image.open(photos / "astronaut.png"))
    pasted = [np.asarray(Image.open(edits / name)) for name in ("pasted_000.png", "pasted_001.png")]
    assert all(p.shape == photo.shape for p in pasted)
    _, mask = F.paste_back(photo, np.zeros((16, 16, 3), np.uint8), alignment, return_mask=True)
    for p in pasted:
        assert np.array_equal(p[mask == 0], photo[mask == 0])
        assert not np.array_equal(p, photo)
    assert not np.array_equal(pasted[0], pasted[1])
    # Another photo than the one aligned: refused with one line.
    r = _invoke(["edit", result, "--model", model_dir, "--direction", f"{direction}:0", "--strength", "1",
                 "--paste-back",
                 "--photo", photos / "wall.png", "--outdir", tmp_path / "edit2"])
    assert r.exit_code != 0 and "not the photo this face was aligned on" in r.output
    r = _invoke(["edit", "5", "--model", model_dir, "--direction", f"{direction}:0", "--paste-back",
                 "--outdir", tmp_path / "edit3"])
    assert r.exit_code != 0 and "result folder" in r.output
