"""The web UI's face step: find the faces of an uploaded photo, show them numbered, align the chosen one
(the largest by default) for the model, and paste the edited face back into the full photo for download.
Needs the optional extra `faces`; without it the step says what to install and the plain crop is used.
No `from __future__ import annotations` here: Gradio reads the `gr.Request` annotations of the handlers."""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data.io import read_image, to_pil
from ..faces import Alignment, FaceError, NoFaceError, align_faces, largest_face, paste_back
from ..models.registry import Model
from .session import AppError


@dataclass
class FacePhoto:
    """An uploaded photo with its aligned faces (crops at the model's resolution), left to right."""
    name: str
    photo: np.ndarray
    crops: list[np.ndarray]
    alignments: list[Alignment]
    boxes: list[tuple[float, float, float, float]]
    chosen: int = 0

    def choices(self) -> list[str]:
        return [f"Face {i}" for i in range(len(self.crops))]

    def target(self, index: int, channels: int) -> torch.Tensor:
        """Face `index` as the model's input [1, C, N, N] in [-1, 1]."""
        image = Image.fromarray(self.crops[index])
        if channels == 1:
            image = image.convert("L")
        array = np.asarray(image, dtype=np.uint8)
        array = array[:, :, None] if array.ndim == 2 else array
        return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1

    def annotated(self, max_side: int = 720) -> Image.Image:
        """The photo with every face boxed and numbered (the chosen one highlighted), at most max_side wide."""
        image = Image.fromarray(self.photo)
        scale = min(1.0, max_side / max(image.size))
        if scale < 1.0:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        draw = ImageDraw.Draw(image)
        for i, box in enumerate(self.boxes):
            x0, y0, x1, y1 = (v * scale for v in box)
            colour = (255, 200, 0) if i == self.chosen else (0, 200, 255)
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=3 if i == self.chosen else 2)
            draw.text((x0 + 3, y0 + 2), str(i), fill=colour)
        return image


def find_faces(path: str | Path, model: Model) -> FacePhoto:
    """Detect and align every face of an uploaded photo; AppError (one line) when there is none or the
    faces extra is missing."""
    name = Path(path).name
    try:
        photo = np.asarray(read_image(path, channels=3), dtype=np.uint8)
        found = align_faces(photo, model.G.img_resolution, source=name)
    except NoFaceError:
        raise AppError(f"No face found in {name}; the center crop is used instead.") from None
    except FaceError as e:
        raise AppError(f"{name}: {e}") from None
    faces = FacePhoto(name=name, photo=photo, crops=[c for c, _, _ in found], alignments=[a for _, a, _ in found],
                      boxes=[f.box for _, _, f in found])
    faces.chosen = largest_face([f for _, _, f in found])
    return faces


def export_face(faces: FacePhoto, edited: torch.Tensor, folder: Path) -> tuple[Path, Path]:
    """Write the edited face crop and the full photo with it pasted in; returns (crop path, photo path)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem = Path(faces.name).stem or "photo"
    crop_path = folder / f"{stem}-face{faces.chosen:02d}-edited-{stamp}.png"
    photo_path = folder / f"{stem}-face{faces.chosen:02d}-pasted-{stamp}.png"
    to_pil(edited).save(crop_path, format="PNG")
    pasted = paste_back(faces.photo, edited, faces.alignments[faces.chosen])
    Image.fromarray(pasted).save(photo_path, format="PNG")
    return crop_path, photo_path


# ---------------------------------------------------------------------------------------------- UI parts


def faces_available() -> bool:
    """Whether the face step can run here (dlib and its landmark file)."""
    from ..faces.weights import SHAPE_PREDICTOR_68, has_dlib_file
    return has_dlib_file(SHAPE_PREDICTOR_68)


@dataclass
class FaceControls:
    enabled: object
    choice: object
    image: object
    note: object
    export: object = None
    downloads: object = None


def face_controls() -> FaceControls:
    """The face step's input components, created inside the current Gradio layout."""
    import gradio as gr  # heavy optional dependency (the ui extra)
    available = faces_available()
    label = ("Find faces and align the chosen one (FFHQ recipe)" if available else
             "Find faces (needs: pip install 'ganinv[faces]')")
    return FaceControls(
        enabled=gr.Checkbox(value=available, interactive=available, label=label, elem_id="find-faces"),
        choice=gr.Radio(choices=[], label="Face to invert", visible=False, elem_id="face-choice"),
        image=gr.Image(label="Faces found", type="pil", format="png", interactive=False, visible=False,
                       height=260, elem_id="faces-image", buttons=[]),
        note=gr.Markdown("", elem_id="faces-note"))


def face_export_controls(controls: FaceControls) -> None:
    """The face step's download button and files, created inside the current Gradio layout."""
    import gradio as gr
    controls.export = gr.Button("Download the face crop + the photo with the edit pasted in",
                                elem_id="export-face", visible=False)
    controls.downloads = gr.File(label="Face downloads", file_count="multiple", interactive=False,
                                 elem_id="face-downloads", visible=False)


def wire_face_step(controls: FaceControls, upload_event, *, model: Model, handle, session_of, display_image,
                   preview, status, reconstruction, edited) -> None:
    """Events: after each upload find the faces (when enabled) and load the largest; picking another
    face loads it; the export button writes the edited crop and the pasted photo."""
    import html

    import gradio as gr
    channels = model.G.img_channels

    def hidden(note: str = ""):
        return (gr.update(visible=False, choices=[], value=None), gr.update(visible=False, value=None), note,
                gr.update(visible=False), gr.skip(), gr.skip())

    def load_face(session, faces: FacePhoto):
        session.set_target(faces.target(faces.chosen, channels), f"{faces.name} face {faces.chosen}")
        session.faces = faces
        note = (f"**{html.escape(faces.name)}**: {len(faces.crops)} face(s) found; face {faces.chosen} is aligned "
                f"for the model (FFHQ recipe). Press Invert.")
        return display_image(session.target), note

    def on_find(key, enabled, request: gr.Request):
        session = session_of(key, request)
        if not session.upload_path or session.target_label != Path(session.upload_path).name:
            # The upload was refused (its message stays) or a face of it is already loaded.
            return (gr.skip(),) * 6
        session.faces = None
        if not enabled or not Path(session.upload_path).is_file():
            return hidden()
        try:
            faces = find_faces(session.upload_path, model)
        except AppError as e:
            return hidden(html.escape(str(e)))
        shown, note = load_face(session, faces)
        return (gr.update(visible=True, choices=faces.choices(), value=faces.choices()[faces.chosen]),
                gr.update(visible=True, value=faces.annotated()), f"{len(faces.crops)} face(s) found.",
                gr.update(visible=True), shown, note)

    def on_toggle(key, enabled, request: gr.Request):
        if not enabled:
            session_of(key, request).faces = None
            return hidden()
        return on_find(key, enabled, request)

    def on_choice(key, choice, request: gr.Request):
        session = session_of(key, request)
        faces = getattr(session, "faces", None)
        if faces is None or choice not in faces.choices():
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        faces.chosen = faces.choices().index(choice)
        shown, note = load_face(session, faces)
        return gr.update(value=faces.annotated()), shown, note, None, None

    def on_face_export(key, request: gr.Request):
        session = session_of(key, request)
        faces = getattr(session, "faces", None)
        if faces is None or session.target_label != f"{faces.name} face {faces.chosen}":
            raise gr.Error("Upload a photo with a face and pick a face first.")
        if session.subject is None:
            raise gr.Error("Invert the face first.")
        try:
            crop_path, photo_path = export_face(faces, session.render(), session.folder)
        except FaceError as e:
            raise gr.Error(str(e)) from None
        return gr.update(visible=True, value=[str(crop_path), str(photo_path)])

    outputs = [controls.choice, controls.image, controls.note, controls.export, preview, status]
    upload_event.then(on_find, [handle, controls.enabled], outputs, queue=False, show_progress="minimal")
    controls.enabled.input(on_toggle, [handle, controls.enabled], outputs, queue=False, show_progress="minimal")
    controls.choice.input(on_choice, [handle, controls.choice], [controls.image, preview, status, reconstruction,
                                                                 edited],
                          queue=False, show_progress="hidden")
    controls.export.click(on_face_export, handle, controls.downloads, show_progress="minimal")
