"""`ganinv align` (photos -> FFHQ-aligned face crops + faces.json), and the face steps of `ganinv invert
--align` (one result folder per face, with alignment.json) and `ganinv edit --paste-back` (the edit
blended into the full photo)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

from .common import UserError, device_option, load_model_or_fail, model_option, quiet_option, seed_option
from ..data.io import ImageLoadError, load_image, read_image
from ..faces import Alignment, FaceError, NoFaceError, align_faces, paste_back, photo_sha256
from ..faces.detection import DEFAULT_MIN_SCORE, DETECTORS
from ..utils import atomic_path, write_json


def detection_options(f):
    """--upsample, --detector, --min-score: how faces are found (shared by align and invert --align)."""
    f = click.option("--min-score", type=float, default=DEFAULT_MIN_SCORE, show_default=True,
                     help="Drop face detections scoring below this.")(f)
    f = click.option("--detector", type=click.Choice(DETECTORS), default="hog", show_default=True,
                     help="hog: dlib's HOG detector (fast); cnn: dlib's CNN detector (slow on a CPU).")(f)
    f = click.option("--upsample", type=click.IntRange(0, 4), default=1, show_default=True,
                     help="Times the detector doubles the photo first (1 finds faces from about 40 pixels).")(f)
    return f


def read_photo(path: Path) -> np.ndarray:
    """A photo as uint8 RGB [H, W, 3] (EXIF orientation applied), or a one-line UserError."""
    try:
        return np.asarray(read_image(path, channels=3), dtype=np.uint8)
    except (ImageLoadError, OSError) as e:
        raise UserError(str(e)) from None


def aligned_faces(path: Path, size: int, detection: dict) -> tuple[np.ndarray, list]:
    """(photo, [(crop, Alignment, Face)]) for a photo file; a one-line UserError when there is no face."""
    photo = read_photo(path)
    try:
        return photo, align_faces(photo, size, source=str(path.resolve()), **detection)
    except NoFaceError:
        raise UserError(f"{path}: no face found") from None
    except FaceError as e:
        raise UserError(f"{path}: {e}") from None


def crop_to_target(crop: np.ndarray, channels: int) -> torch.Tensor:
    """An aligned uint8 crop -> [1, channels, N, N] in [-1, 1] (the loader's conversion)."""
    image = Image.fromarray(crop)
    if channels == 1:
        image = image.convert("L")
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


@click.command("align")
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Writes OUTDIR/<photo stem>/face_00.png ... and faces.json.")
@click.option("--size", type=click.IntRange(8, 4096), default=None,
              help="Side of the aligned crops (default: the model's resolution).")
@model_option
@detection_options
@click.option("--overwrite", is_flag=True, help="Replace existing photo folders.")
@device_option
@seed_option
@quiet_option
def align_command(photos, outdir, size, model, upsample, detector, min_score, overwrite, device, seed, quiet):
    """Find every face in PHOTOS and align each by the FFHQ recipe (crops at --size, coordinates in the
    photo's pixels in faces.json). A photo without a face is reported and the batch goes on (exit 1)."""
    if size is None:
        size = load_model_or_fail(model, device).G.img_resolution
    detection = {"upsample": upsample, "detector": detector, "min_score": min_score}
    outdir.mkdir(parents=True, exist_ok=True)
    failures = 0
    stems: dict[str, int] = {}
    for path in photos:
        stem = path.stem
        stems[stem] = stems.get(stem, 0) + 1
        if stems[stem] > 1:
            stem = f"{stem}-{stems[stem]}"
        folder = outdir / stem
        if folder.exists() and not overwrite:
            click.echo(f"{path}: {folder} exists; pass --overwrite to replace (skipped)", err=True)
            failures += 1
            continue
        try:
            photo, found = aligned_faces(path, size, detection)
        except UserError as e:
            click.echo(e.message, err=True)
            failures += 1
            continue
        folder.mkdir(parents=True, exist_ok=True)
        records = []
        for crop, alignment, face in found:
            name = f"face_{alignment.face_index:02d}.png"
            _save_png(crop, folder / name)
            records.append({"index": alignment.face_index, "box": [float(v) for v in face.box],
                            "landmarks": np.asarray(face.landmarks, float).tolist(),
                            "quad": np.asarray(alignment.quad, float).tolist(), "score": float(face.score),
                            "file": name})
        write_json(folder / "faces.json", {"image": str(path), "width": int(photo.shape[1]),
                                           "height": int(photo.shape[0]), "sha256": photo_sha256(photo),
                                           "size": size, "detector": detector, "faces": records})
        if not quiet:
            click.echo(f"{path.name}: {len(records)} face(s) -> {folder}")
    if failures:
        raise click.exceptions.Exit(1)


@dataclass
class AlignedFace:
    """One face of a photo as an item of `ganinv invert --align`: named like a photo (its stem is
    PHOTOSTEM_face_KK), with its aligned target and alignment."""
    photo: Path
    index: int
    target: torch.Tensor
    alignment: Alignment

    @property
    def stem(self) -> str:
        return f"{self.photo.stem}_face_{self.index:02d}"

    @property
    def name(self) -> str:
        return f"{self.photo.name} face {self.index}"

    def __str__(self) -> str:
        return f"{self.photo} (face {self.index})"


class FaceItems:
    """The faces of each photo (all, or face K), in order: what `invert --align` inverts. A photo without
    a face (or without face K) is reported on stderr and counted in `failures`; the batch goes on."""

    def __init__(self, photos, size: int, channels: int, face: int | None, detection: dict):
        self.photos, self.size, self.channels, self.face, self.detection = photos, size, channels, face, detection
        self.failures = 0

    def __iter__(self):
        for path in self.photos:
            yield from self.of(path)

    def of(self, path: Path) -> list[AlignedFace]:
        """The faces of one photo (none, reported and counted, when it has none or no face K)."""
        try:
            _, found = aligned_faces(path, self.size, self.detection)
        except UserError as e:
            click.echo(f"skipped: {e.message}", err=True)
            self.failures += 1
            return []
        if self.face is not None:
            if self.face >= len(found):
                click.echo(f"{path}: skipped: --face {self.face} but only {len(found)} face(s) found", err=True)
                self.failures += 1
                return []
            found = [found[self.face]]
        return [AlignedFace(path, alignment.face_index, crop_to_target(crop, self.channels), alignment)
                for crop, alignment, _ in found]


def alignment_attachment(item) -> dict:
    """{"alignment.json": ...} for an aligned face's result folder (nothing for a plain photo)."""
    return {"alignment.json": item.alignment.to_json()} if isinstance(item, AlignedFace) else {}


def load_alignment(result_dir: Path) -> Alignment:
    path = result_dir / "alignment.json"
    if not path.is_file():
        raise UserError(f"{result_dir}: no alignment.json (invert the photo with `ganinv invert --align` "
                        f"to paste edits back)")
    try:
        return Alignment.load(path)
    except FaceError as e:
        raise UserError(str(e)) from None


def paste_inputs(source: str, photo_path: Path | None) -> tuple[np.ndarray, Alignment, Path]:
    """(photo, Alignment, photo path) for `edit --paste-back`, checked before any work: SOURCE must be a
    result folder of `invert --align` and the photo the one its face was aligned on (size and sha256)."""
    result_dir = Path(source)
    if not result_dir.is_dir():
        raise UserError(f"--paste-back needs a result folder made by `ganinv invert --align`, got {source}")
    alignment = load_alignment(result_dir)
    if photo_path is None:
        if not alignment.source:
            raise UserError(f"{result_dir}/alignment.json names no photo; give it with --photo")
        photo_path = Path(alignment.source)
    photo = read_photo(photo_path)
    if (photo.shape[1], photo.shape[0]) != (alignment.width, alignment.height) or \
            photo_sha256(photo) != alignment.sha256:
        raise UserError(f"{photo_path}: not the photo this face was aligned on ({photo.shape[1]}x{photo.shape[0]}, "
                        f"expected {alignment.width}x{alignment.height} with the sha256 in alignment.json)")
    return photo, alignment, photo_path


def write_pasted(inputs: tuple[np.ndarray, Alignment, Path], frames: torch.Tensor, outdir: Path, overwrite: bool,
                 quiet: bool) -> list[str]:
    """Blend each edited frame into the full photo: OUTDIR/pasted_000.png ... and pasted.json."""
    photo, alignment, photo_path = inputs
    names = [f"pasted_{i:03d}.png" for i in range(len(frames))]
    clash = [n for n in names + ["pasted.json"] if (outdir / n).exists()]
    if clash and not overwrite:
        raise UserError(f"{outdir}: {', '.join(clash[:3])} already exist; pass --overwrite to replace")
    for frame, name in zip(frames, names):
        try:
            _save_png(paste_back(photo, frame, alignment), outdir / name)
        except FaceError as e:
            raise UserError(f"{photo_path}: {e}") from None
    write_json(outdir / "pasted.json", {"photo": str(photo_path), "width": alignment.width,
                                        "height": alignment.height, "files": names})
    if not quiet:
        click.echo(f"wrote {len(names)} pasted photo(s) ({alignment.width}x{alignment.height}) to {outdir}")
    return names


COMMANDS = [align_command]
