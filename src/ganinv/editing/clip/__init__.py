"""User-supplied CLIP (Radford et al., ICML 2021) for text-driven edits: the towers, their loading by
path (open_clip or OpenAI state dicts, never downloaded) and the BPE tokenizer.

    clip = load_clip_model("ViT-B-32.safetensors", arch="ViT-B-32")
    text = clip.embed_text(["a smiling face"])          # [1, D], unit length
    image = clip.embed_images(G.synthesis(ws))          # [N, D], unit length, differentiable
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .model import CLIP, CLIPError, config_from_state_dict, load_clip, read_clip_state_dict  # noqa: F401
from .tokenizer import Tokenizer, find_vocab  # noqa: F401


@dataclass(eq=False)
class ClipModel:
    """A CLIP model with its tokenizer; `source` records the weights path and architecture name."""

    model: CLIP
    tokenizer: Tokenizer
    source: dict

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def embed_text(self, texts: str | list[str]) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode_text(self.tokenizer(texts).to(self.device))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images.to(self.device))


def load_clip_model(path: str | os.PathLike, arch: str | None = None, vocab: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu") -> ClipModel:
    """CLIP weights from `path` (open_clip: give its model name as `arch`, e.g. 'ViT-B-32'; OpenAI state dict:
    arch None) and the tokenizer vocabulary (`vocab`, else found beside the weights or in an installed
    open_clip/clip package). Raises CLIPError (one line) for a missing or unusable file."""
    model = load_clip(path, arch, device=device)
    tokenizer = Tokenizer(find_vocab(vocab, path), context_length=model.context_length)
    if tokenizer.vocab_size > model.config["vocab_size"]:
        raise CLIPError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the CLIP text tower only "
                        f"{model.config['vocab_size']}; give the matching vocabulary with --clip-vocab")
    return ClipModel(model, tokenizer, dict(model.source, vocab=str(find_vocab(vocab, path))))


__all__ = ["CLIP", "CLIPError", "ClipModel", "Tokenizer", "find_vocab", "load_clip", "load_clip_model",
           "read_clip_state_dict", "config_from_state_dict"]
