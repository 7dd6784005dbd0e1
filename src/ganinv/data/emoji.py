"""The emoji dataset: every fully-qualified emoji of Noto Color Emoji as a 64x64 RGB image on white.

Sources (Debian): `fonts-noto-color-emoji` (the glyphs, SIL OFL 1.1) and `unicode-data`
(`emoji/emoji-test.txt`, UTS #51 test data: code points, status, CLDR name, group and subgroup).

Labels per image come from emoji-test.txt and the code points:
- `group`, `subgroup`, `name` as listed;
- `skin_tone`: "none", "1".."5" (Fitzpatrick modifiers U+1F3FB..U+1F3FF) or "mixed" when a multi-person
  emoji carries different tones; `skin_tones` lists every modifier in order;
- `gender` (People & Body only): "man", "woman" (from name words such as man/men/boy/prince/merman and
  woman/women/girl/princess/mermaid, and from the ZWJ signs U+2642/U+2640), "mixed" when both occur
  (couples, families), "person" for gender-neutral depictions of people, "none" for everything else
  (hands, body parts, objects, animals, ...);
- `hair_style`: "red", "curly", "white", "bald", "blond", "beard" or "none" (from name qualifiers);
- `age`: "baby", "child", "old" or "none" (from the name's head: baby, child/boy/girl, old(er) ...);
- `design`: the base-design key (`design_key`), which groups every skin-tone and gender variant.

Split: by base design, so that every variant of a held-out design is held out together (the GAN never
sees the design). The frozen decision lives in `emoji_split.json` beside this module; `SPLIT_RULE`
explains how it was made.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from .dataset import DatasetError, debian_package_version, require_file, write_dataset
from ..utils import write_json

EMOJI_TEST_FILE = Path("/usr/share/unicode/emoji/emoji-test.txt")
FONT_FILE = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SPLIT_FILE = Path(__file__).with_name("emoji_split.json")
FONT_PACKAGE = "fonts-noto-color-emoji"
UNICODE_PACKAGE = "unicode-data"
#: Noto Color Emoji is a CBDT bitmap font with one strike: 109 px is its native size.
FONT_SIZE = 109
RESOLUTION = 64
LABEL_FIELDS = ["group", "subgroup", "skin_tone", "gender", "hair_style", "age", "design"]

SKIN_TONE_NAMES = ("light skin tone", "medium-light skin tone", "medium skin tone", "medium-dark skin tone",
                   "dark skin tone")
SKIN_TONE_CODEPOINTS = range(0x1F3FB, 0x1F400)  # Fitzpatrick type 1-2, 3, 4, 5, 6 -> tone 1..5
MALE_SIGN, FEMALE_SIGN = 0x2642, 0x2640

MALE_WORDS = frozenset({"man", "men", "boy", "prince", "merman", "santa"})
FEMALE_WORDS = frozenset({"woman", "women", "girl", "princess", "mermaid", "mrs"})
NEUTRAL_PERSON_WORDS = frozenset({"person", "people", "adult", "child", "baby", "mx"})
PERSON_SUBGROUPS = frozenset({"person", "person-gesture", "person-role", "person-fantasy", "person-activity",
                              "person-sport", "person-resting", "family"})
HAIR_QUALIFIERS = {"red hair": "red", "curly hair": "curly", "white hair": "white", "bald": "bald",
                   "blond hair": "blond", "beard": "beard"}
AGE_HEADS = {"baby": "baby", "baby angel": "baby", "child": "child", "boy": "child", "girl": "child",
             "older person": "old", "old man": "old", "old woman": "old"}
#: Qualifiers after the colon that only say who is depicted (dropped from the design key).
PERSON_QUALIFIERS = frozenset({"man", "woman", "person", "boy", "girl", "child", "adult", "men", "women",
                               "people"})
#: Whole-head renames to the gender-neutral design (where the neutral name differs word for word).
NEUTRAL_HEADS = {"old man": "older person", "old woman": "older person", "prince": "person with crown",
                 "princess": "person with crown", "santa claus": "mx claus", "mrs. claus": "mx claus",
                 "merman": "merperson", "mermaid": "merperson", "boy": "child", "girl": "child"}
#: Words that only say who (of which gender) is depicted; dropped from the head of the design key.
GENDER_WORDS = frozenset({"man", "woman", "person", "men", "women", "people"})

SPLIT_SALT = "ganinv-emoji-split-v1:"
SPLIT_RULE = (
    "Base-design key: the CLDR name from emoji-test.txt, lower-cased; after the colon, skin-tone qualifiers "
    "(light/medium-light/medium/medium-dark/dark skin tone) and person qualifiers (man, woman, person, boy, "
    "girl, child, adult, men, women, people) are dropped; in the head, old man/old woman -> older person, "
    "prince/princess -> person with crown, Santa/Mrs. Claus -> mx claus, merman/mermaid -> merperson, "
    "boy/girl -> child, then the words man, woman, person, men, women, people (and an 'and' joining two "
    "of them) are dropped, an empty head becoming 'person' (so 'man technologist' -> 'technologist', "
    "'woman and man holding hands' -> 'holding hands', 'man: red hair' -> 'person: red hair'). So every "
    "skin-tone and gender variant of a design shares one key. A design is held out "
    "iff the first byte of sha256('ganinv-emoji-split-v1:' + key) (UTF-8) is below 32, i.e. 1/8 of designs "
    "in expectation. The decision is frozen in emoji_split.json; designs missing from it (a newer "
    "emoji-test.txt) follow the same rule."
)


@dataclass
class EmojiEntry:
    """One fully-qualified line of emoji-test.txt."""
    codepoints: tuple[int, ...]
    name: str
    group: str
    subgroup: str
    version: str = ""

    @property
    def text(self) -> str:
        return "".join(chr(c) for c in self.codepoints)

    @property
    def codepoint_string(self) -> str:
        return " ".join(f"{c:04X}" for c in self.codepoints)


_LINE = re.compile(r"^(?P<codes>[0-9A-Fa-f ]+);\s*(?P<status>[a-z-]+)\s*#\s*\S+\s+E(?P<version>[\d.]+)\s+"
                   r"(?P<name>.+?)\s*$")


def parse_emoji_test(text: str, statuses: Sequence[str] = ("fully-qualified",)) -> list[EmojiEntry]:
    """Parse emoji-test.txt content; keep lines whose status is in `statuses`, in file (CLDR) order."""
    group = subgroup = ""
    entries = []
    for line_number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if stripped.startswith("# group:"):
                group = stripped.split(":", 1)[1].strip()
            elif stripped.startswith("# subgroup:"):
                subgroup = stripped.split(":", 1)[1].strip()
            continue
        match = _LINE.match(stripped)
        if match is None:
            raise DatasetError(f"emoji-test.txt line {line_number}: cannot parse {stripped[:80]!r}")
        if match["status"] not in statuses:
            continue
        codepoints = tuple(int(c, 16) for c in match["codes"].split())
        entries.append(EmojiEntry(codepoints, match["name"], group, subgroup, match["version"]))
    return entries


def _split_name(name: str) -> tuple[str, list[str]]:
    head, _, rest = name.lower().partition(":")
    qualifiers = [q.strip() for q in rest.split(",") if q.strip()]
    return head.strip(), qualifiers


def _words(text: str) -> list[str]:
    # Split on spaces and hyphens; strip surrounding punctuation but keep in-word apostrophes so that
    # "man’s shoe" is not read as the word "man".
    return [w.strip(".,;:!?()\"") for w in re.split(r"[\s\-]+", text.lower()) if w.strip(".,;:!?()\"")]


def design_key(name: str) -> str:
    """The base-design key of a CLDR emoji name (see SPLIT_RULE): skin tone and gender removed.

    >>> design_key("woman technologist: medium skin tone")
    'technologist'
    >>> design_key("kiss: woman, man, light skin tone, dark skin tone")
    'kiss'
    """
    head, qualifiers = _split_name(name)
    qualifiers = [q for q in qualifiers if q not in SKIN_TONE_NAMES and q not in PERSON_QUALIFIERS]
    head = NEUTRAL_HEADS.get(head, head)
    words = head.split(" ")
    kept = [w for i, w in enumerate(words) if w not in GENDER_WORDS and not (
        w == "and" and 0 < i < len(words) - 1 and words[i - 1] in GENDER_WORDS and words[i + 1] in GENDER_WORDS)]
    head = " ".join(kept) or "person"
    return head + (": " + ", ".join(qualifiers) if qualifiers else "")


def skin_tone_of(codepoints: Sequence[int]) -> tuple[str, list[int]]:
    """('none' | '1'..'5' | 'mixed', every tone in order) from the Fitzpatrick modifiers."""
    tones = [c - 0x1F3FA for c in codepoints if c in SKIN_TONE_CODEPOINTS]
    if not tones:
        return "none", []
    return (str(tones[0]) if len(set(tones)) == 1 else "mixed"), tones


def gender_of(name: str, codepoints: Sequence[int], group: str, subgroup: str) -> str:
    """'man' | 'woman' | 'mixed' | 'person' | 'none' (only emoji of People & Body depict people)."""
    if group != "People & Body":
        return "none"
    words = set(_words(name))
    found = set()
    if words & MALE_WORDS or MALE_SIGN in codepoints:
        found.add("man")
    if words & FEMALE_WORDS or FEMALE_SIGN in codepoints:
        found.add("woman")
    if len(found) == 2:
        return "mixed"
    if found:
        return found.pop()
    if subgroup in PERSON_SUBGROUPS or words & NEUTRAL_PERSON_WORDS:
        return "person"
    return "none"


def hair_style_of(name: str) -> str:
    _, qualifiers = _split_name(name)
    for qualifier in qualifiers:
        if qualifier in HAIR_QUALIFIERS:
            return HAIR_QUALIFIERS[qualifier]
    return "none"


def age_of(name: str, group: str) -> str:
    if group != "People & Body":
        return "none"
    head, _ = _split_name(name)
    return AGE_HEADS.get(head, "none")


def emoji_labels(entry: EmojiEntry) -> dict[str, Any]:
    """Every label of one emoji (without file/split)."""
    skin_tone, skin_tones = skin_tone_of(entry.codepoints)
    return {
        "emoji": entry.text,
        "codepoints": entry.codepoint_string,
        "name": entry.name,
        "group": entry.group,
        "subgroup": entry.subgroup,
        "skin_tone": skin_tone,
        "skin_tones": skin_tones,
        "gender": gender_of(entry.name, entry.codepoints, entry.group, entry.subgroup),
        "hair_style": hair_style_of(entry.name),
        "age": age_of(entry.name, entry.group),
        "design": design_key(entry.name),
        "emoji_version": entry.version,
    }


# --- split --------------------------------------------------------------------------------------------------

def design_is_heldout_by_rule(key: str) -> bool:
    return hashlib.sha256((SPLIT_SALT + key).encode("utf-8")).digest()[0] < 32


def make_emoji_split(entries: Sequence[EmojiEntry], source: str = "") -> dict[str, Any]:
    """Apply SPLIT_RULE to every design of `entries`; the result is what emoji_split.json holds."""
    designs = sorted({design_key(e.name) for e in entries})
    heldout = [d for d in designs if design_is_heldout_by_rule(d)]
    return {"format_version": 1, "rule": SPLIT_RULE, "source": source, "num_designs": len(designs),
            "num_heldout_designs": len(heldout), "designs": designs, "heldout_designs": heldout}


@dataclass
class EmojiSplit:
    """The frozen split: which base designs are held out, and the sha256 of the file it came from."""
    heldout_designs: frozenset[str]
    known_designs: frozenset[str]
    sha256: str
    data: dict[str, Any]

    def split_of(self, key: str) -> str:
        """'heldout' or 'train' for a design key; designs the file does not know follow SPLIT_RULE."""
        if key in self.heldout_designs:
            return "heldout"
        if key in self.known_designs:
            return "train"
        return "heldout" if design_is_heldout_by_rule(key) else "train"


def load_emoji_split(path: str | os.PathLike = SPLIT_FILE) -> EmojiSplit:
    """Read a frozen split file (default: the committed emoji_split.json)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the frozen emoji split ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("heldout_designs"), list):
        raise DatasetError(f"{path}: not an emoji split file (no heldout_designs list)")
    return EmojiSplit(frozenset(data["heldout_designs"]), frozenset(data.get("designs", [])),
                      hashlib.sha256(raw).hexdigest(), data)


# --- rendering ----------------------------------------------------------------------------------------------

class EmojiRenderer:
    """Draws emoji with Pillow's color-font support (CBDT bitmaps, raqm shaping for ZWJ sequences)."""

    def __init__(self, font_file: str | os.PathLike = FONT_FILE, resolution: int = RESOLUTION,
                 margin: float = 0.03) -> None:
        if not features.check("raqm"):
            raise DatasetError("Pillow was built without libraqm, which emoji ZWJ and skin-tone sequences need "
                               "(install libraqm0 or a Pillow wheel that bundles it)")
        self.font = ImageFont.truetype(str(font_file), FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)
        self.resolution = resolution
        self.margin = margin
        # The advance of one emoji glyph: a sequence the font cannot join shapes as several glyphs.
        self.single_advance = self.font.getlength("\U0001F600")

    def render(self, text: str) -> np.ndarray | None:
        """uint8 [R, R, 3] on white, or None when the font has no single glyph for `text`."""
        advance = self.font.getlength(text)
        if advance <= 0 or advance > 1.5 * self.single_advance:
            return None
        size = int(advance) + 2 * FONT_SIZE
        canvas = Image.new("RGBA", (size, size), (255, 255, 255, 0))
        ImageDraw.Draw(canvas).text((FONT_SIZE // 2, FONT_SIZE // 2), text, font=self.font, embedded_color=True)
        bbox = canvas.getchannel("A").getbbox()
        if bbox is None:
            return None
        left, top, right, bottom = bbox
        # Center the glyph's bounding box in a square with a small margin, so every emoji fills the frame.
        side = max(right - left, bottom - top) * (1 + 2 * self.margin)
        center_x, center_y = (left + right) / 2, (top + bottom) / 2
        flat = Image.new("RGB", canvas.size, (255, 255, 255))
        flat.paste(canvas, mask=canvas.getchannel("A"))  # composite at full size, then resample
        box = (center_x - side / 2, center_y - side / 2, center_x + side / 2, center_y + side / 2)
        image = flat.resize((self.resolution, self.resolution), Image.LANCZOS, box=box)
        return np.asarray(image, dtype=np.uint8)


# --- builder ------------------------------------------------------------------------------------------------

@dataclass
class EmojiBuildReport:
    outdir: Path
    counts: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    heldout_designs: int = 0
    seconds: float = 0.0


def _spread(items: list, limit: int | None) -> list:
    """`limit` items spread evenly over the list (deterministic), or all of them."""
    if limit is None or limit >= len(items):
        return items
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    indices = sorted({int(i * len(items) / limit) for i in range(limit)})
    return [items[i] for i in indices]


def build_emoji(outdir: str | os.PathLike, limit: int | None = None,
                emoji_test_file: str | os.PathLike | None = None,
                font_file: str | os.PathLike | None = None, split_file: str | os.PathLike | None = None,
                resolution: int = RESOLUTION, progress: Callable[[str, int, int], None] | None = None,
                report: EmojiBuildReport | None = None) -> Path:
    """Render every fully-qualified emoji to `outdir` in the dataset format of `data/dataset.py`.

    Args:
        outdir: the dataset folder to write.
        limit: build only this many emoji, spread evenly over the list (for quick tests).
        emoji_test_file, font_file: the Debian files (default: EMOJI_TEST_FILE from unicode-data,
            FONT_FILE from fonts-noto-color-emoji).
        split_file: the frozen split (default: emoji_split.json beside this module).
        progress: called as progress(stage, done, total), stage 'render' then 'write'.
        report: filled with counts, skipped emoji and timing when given.

    Raises DatasetError naming the Debian package when a source file is missing.
    """
    started = time.perf_counter()
    emoji_test_file = require_file(emoji_test_file or EMOJI_TEST_FILE, UNICODE_PACKAGE)
    font_file = require_file(font_file or FONT_FILE, FONT_PACKAGE)
    split_file = Path(split_file or SPLIT_FILE)
    split = load_emoji_split(split_file)
    entries = parse_emoji_test(emoji_test_file.read_text(encoding="utf-8"))
    if not entries:
        raise DatasetError(f"{emoji_test_file}: no fully-qualified emoji found")
    entries = _spread(entries, limit)
    renderer = EmojiRenderer(font_file, resolution)
    images, records, skipped = [], [], []
    for index, entry in enumerate(entries):
        image = renderer.render(entry.text)
        if image is None:
            skipped.append(f"{entry.codepoint_string} {entry.name}")
        else:
            labels = emoji_labels(entry)
            images.append(image)
            records.append({"split": split.split_of(labels["design"]), **labels})
        if progress is not None:
            progress("render", index + 1, len(entries))
    if not images:
        raise DatasetError(f"{font_file}: the font rendered none of the {len(entries)} emoji")
    heldout_designs = sorted({r["design"] for r in records if r["split"] == "heldout"})
    all_designs = {r["design"] for r in records}
    unknown = sorted(all_designs - split.known_designs)
    info = {
        "name": "emoji",
        "description": f"Noto Color Emoji, every fully-qualified emoji of emoji-test.txt, {resolution}x"
                       f"{resolution} RGB on white (rendered at {FONT_SIZE} px, tight square crop, Lanczos)",
        "source_package": f"{FONT_PACKAGE}, {UNICODE_PACKAGE}",
        "source_version": f"{FONT_PACKAGE} {debian_package_version(FONT_PACKAGE)}; "
                          f"{UNICODE_PACKAGE} {debian_package_version(UNICODE_PACKAGE)}",
        "source_files": [str(font_file), str(emoji_test_file)],
        "license": "Glyphs: Noto Color Emoji, SIL Open Font License 1.1 (images Apache-2.0), Google; "
                   "names and groups: Unicode License (emoji-test.txt)",
        "split_rule": SPLIT_RULE,
        "split_file": split_file.name,
        "split_sha256": split.sha256,
        "designs": {"total": len(all_designs), "heldout": len(heldout_designs),
                    "not_in_frozen_split": len(unknown)},
        "label_fields": LABEL_FIELDS,
        "skipped": {"count": len(skipped), "emoji": skipped},
        "limit": limit,
        "created_by": "ganinv data emoji",
    }
    written = write_dataset(outdir, images, records, info, progress=progress)
    if report is not None:
        report.outdir = written
        report.counts = {s: sum(r["split"] == s for r in records) for s in ("train", "heldout")}
        report.skipped = skipped
        report.heldout_designs = len(heldout_designs)
        report.seconds = time.perf_counter() - started
    return written


def write_emoji_split(path: str | os.PathLike = SPLIT_FILE,
                      emoji_test_file: str | os.PathLike = EMOJI_TEST_FILE) -> Path:
    """Regenerate the frozen split from an emoji-test.txt (maintainers only; the result is committed)."""
    emoji_test_file = require_file(emoji_test_file, UNICODE_PACKAGE)
    entries = parse_emoji_test(emoji_test_file.read_text(encoding="utf-8"))
    source = f"{emoji_test_file} ({UNICODE_PACKAGE} {debian_package_version(UNICODE_PACKAGE)})"
    write_json(path, make_emoji_split(entries, source))
    return Path(path)
