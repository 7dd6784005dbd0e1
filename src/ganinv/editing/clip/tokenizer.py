"""CLIP's byte-level BPE tokenizer (Radford et al., ICML 2021; BPE after Sennrich et al., ACL 2016).

The merges file (``bpe_simple_vocab_16e6.txt.gz``, shipped by OpenAI's ``clip`` and by ``open_clip``) is
read from a path the user gives, from beside the CLIP weights, or from an installed ``open_clip`` / ``clip``
package's folder (located without importing the package). Nothing is downloaded.
"""
from __future__ import annotations

import gzip
import html
import importlib.util
import os
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import torch

from .model import CLIPError

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
START, END = "<|startoftext|>", "<|endoftext|>"
NUM_MERGES = 49152 - 256 - 2  # the released vocabulary: 256 bytes x 2 + merges + 2 specials = 49408

# CLIP's pattern uses \p{L} / \p{N}; with the standard library, letters are [^\W\d_] and digits \d.
_PATTERN = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+",
                      re.IGNORECASE)


@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (whitespace/control bytes moved up)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def find_vocab(vocab: str | os.PathLike | None = None, weights: str | os.PathLike | None = None) -> Path:
    """The merges file: `vocab` if given, else beside `weights`, else inside an installed open_clip or clip."""
    if vocab is not None:
        path = Path(vocab).expanduser()
        if not path.is_file():
            raise CLIPError(f"{path}: CLIP tokenizer vocabulary not found (give {VOCAB_NAME} with --clip-vocab)")
        return path
    candidates = []
    if weights is not None:
        candidates.append(Path(weights).expanduser().parent / VOCAB_NAME)
    for package in ("open_clip", "clip"):
        try:
            spec = importlib.util.find_spec(package)  # top-level: locates the folder, runs nothing
        except (ImportError, ValueError):
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(Path(folder) / VOCAB_NAME)
    for path in candidates:
        if path.is_file():
            return path
    raise CLIPError(f"CLIP tokenizer vocabulary {VOCAB_NAME} not found beside the weights or in an installed "
                    "open_clip/clip package; give it with --clip-vocab PATH")


def _clean(text: str) -> str:
    text = html.unescape(html.unescape(unicodedata.normalize("NFC", text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


class Tokenizer:
    """`tokenizer(["a smiling face"]) -> LongTensor [N, context_length]`: start token, BPE ids, end token,
    zero padding; text longer than the context is cut and still ends with the end token."""

    def __init__(self, vocab_path: str | os.PathLike, context_length: int = 77) -> None:
        path = Path(vocab_path)
        try:
            raw = path.read_bytes()
            text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as e:
            raise CLIPError(f"{path}: unreadable CLIP vocabulary ({e})") from None
        lines = text.split("\n")[1:NUM_MERGES + 1]  # the first line is a version header
        merges = [tuple(line.split()) for line in lines if line.strip()]
        if not merges or any(len(m) != 2 for m in merges):
            raise CLIPError(f"{path}: not a CLIP BPE merges file (expected lines of two symbols)")
        self.byte_encoder = bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [START, END]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.context_length = int(context_length)
        self.start_id, self.end_id = self.encoder[START], self.encoder[END]
        self.cache = {START: START, END: END}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        ids = []
        for token in _PATTERN.findall(_clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(token).split(" "))
        return ids

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        result = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.start_id] + self.encode(text) + [self.end_id]
            ids = ids[:self.context_length]
            ids[-1] = self.end_id
            result[row, :len(ids)] = torch.tensor(ids)
        return result
