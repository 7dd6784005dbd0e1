"""CLIP image and text towers (Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021) in plain PyTorch, loaded from user-supplied weights by path.

Only ViT towers are built (the open_clip and OpenAI ViT checkpoints share one key layout); the architecture
is read from the tensors' shapes, so any ViT size loads without a config. The weights come from the user:
nothing is ever downloaded, and a missing, corrupt or unsupported file raises `CLIPError` with one line.

Formats read:
- open_clip: a state dict saved with ``torch.save`` (.pt/.bin, optionally under ``state_dict`` with a
  ``module.`` prefix, as open_clip's training saves it) or a ``.safetensors`` file;
- OpenAI: the state dict of the original CLIP model. OpenAI's released ``.pt`` files are TorchScript
  archives; they are refused (never executed) with the one-line command that converts them once.
"""
from __future__ import annotations

import math
import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import GanInvError

# CLIP's image normalization (the same for every released model).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPError(GanInvError):
    """CLIP weights that are missing, unreadable or of an unsupported architecture (one line)."""


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's CLIP models were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, quick_gelu: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", QuickGELU() if quick_gelu else nn.GELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, quick_gelu: bool) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, quick_gelu) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:  # sequence-first [L, N, D], as the checkpoints' attention expects
            x = block(x, attn_mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int, embed_dim: int,
                 quick_gelu: bool) -> None:
        super().__init__()
        self.image_size = image_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        grid = image_size // patch_size
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, quick_gelu)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [N, grid², width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj


class CLIP(nn.Module):
    """A ViT CLIP model: `encode_image(images in [-1, 1], any size, 1 or 3 channels)`, `encode_text(tokens)`."""

    def __init__(self, embed_dim: int, image_size: int, patch_size: int, vision_width: int, vision_layers: int,
                 vision_heads: int, context_length: int, vocab_size: int, text_width: int, text_layers: int,
                 text_heads: int, quick_gelu: bool = True) -> None:
        super().__init__()
        self.config = dict(embed_dim=embed_dim, image_size=image_size, patch_size=patch_size,
                           vision_width=vision_width, vision_layers=vision_layers, vision_heads=vision_heads,
                           context_length=context_length, vocab_size=vocab_size, text_width=text_width,
                           text_layers=text_layers, text_heads=text_heads, quick_gelu=quick_gelu)
        self.context_length = context_length
        self.visual = VisionTransformer(image_size, patch_size, vision_width, vision_layers, vision_heads, embed_dim,
                                        quick_gelu)
        self.transformer = Transformer(text_width, text_layers, text_heads, quick_gelu)
        self.token_embedding = nn.Embedding(vocab_size, text_width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(context_length, text_width))
        self.ln_final = nn.LayerNorm(text_width)
        self.text_projection = nn.Parameter(text_width ** -0.5 * torch.randn(text_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("attn_mask", torch.full((context_length, context_length), float("-inf")).triu(1),
                             persistent=False)

    @property
    def image_size(self) -> int:
        return self.visual.image_size

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Generator images [N, C, H, W] in [-1, 1] -> CLIP's input: RGB, image_size², CLIP-normalized.
        Resizing is differentiable (bicubic, as CLIP's own preprocessing), so gradients reach the images."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"CLIP needs images [N, 1 or 3, H, W], got {tuple(images.shape)}")
        x = (images.float() + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        mean = torch.tensor(IMAGE_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGE_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.visual(self.preprocess(images).to(self.visual.conv1.weight.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"tokens must be [N, {self.context_length}], got {tuple(tokens.shape)}")
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2), self.attn_mask).permute(1, 0, 2)
        x = self.ln_final(x)
        # The end-of-text token has the largest id; its features summarize the sequence.
        features = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection
        return F.normalize(features, dim=-1) if normalize else features


# ---------------------------------------------------------------------- loading


def _count_blocks(state: dict, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def config_from_state_dict(state: dict[str, torch.Tensor], arch: str | None = None, where: str = "") -> dict:
    """CLIP constructor arguments read from a ViT state dict's shapes (heads: width / 64, as in every
    released ViT CLIP). QuickGELU for OpenAI weights and open_clip names ending in '-quickgelu' or naming
    an OpenAI model; open_clip's own ViT configs use GELU."""
    if "visual.proj" not in state:
        if any(k.startswith("visual.layer1") for k in state):
            raise CLIPError(f"{where}: a ResNet CLIP (RN50/RN101...); only ViT CLIP models are supported")
        raise CLIPError(f"{where}: not a CLIP ViT state dict (no 'visual.proj'; keys start "
                        f"{sorted(state)[:3]})")
    try:
        vision_width = state["visual.conv1.weight"].shape[0]
        patch_size = state["visual.conv1.weight"].shape[-1]
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        text_width = state["ln_final.weight"].shape[0]
        config = dict(
            embed_dim=state["text_projection"].shape[1], image_size=patch_size * grid, patch_size=patch_size,
            vision_width=vision_width, vision_layers=_count_blocks(state, "visual.transformer.resblocks."),
            vision_heads=max(1, vision_width // 64), context_length=state["positional_embedding"].shape[0],
            vocab_size=state["token_embedding.weight"].shape[0], text_width=text_width,
            text_layers=_count_blocks(state, "transformer.resblocks."), text_heads=max(1, text_width // 64))
    except (KeyError, IndexError) as e:
        raise CLIPError(f"{where}: not a CLIP ViT state dict (missing {e})") from None
    name = (arch or "").lower()
    config["quick_gelu"] = arch is None or name.endswith("quickgelu") or name.startswith("openai")
    return config


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for name in archive.namelist())


def read_clip_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a CLIP checkpoint (open_clip .pt/.bin/.safetensors or an OpenAI state dict), read
    weights-only; CLIPError for anything else."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CLIPError(f"{path}: CLIP weights not found (give the file with --clip PATH; nothing is downloaded)")
    if path.is_dir():
        raise CLIPError(f"{path}: is a folder; give the CLIP weights file (.pt, .bin or .safetensors)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise CLIPError(f"{path}: unreadable safetensors file ({str(e).splitlines()[0]})") from None
    else:
        if _is_torchscript(path):
            raise CLIPError(
                f"{path}: a TorchScript archive (OpenAI's released .pt), which ganinv does not execute; convert it "
                "once with: python -c \"import sys,torch; torch.save(torch.jit.load(sys.argv[1], map_location='cpu')"
                ".state_dict(), sys.argv[2])\" IN.pt OUT.pt")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # any failure of an untrusted file becomes one line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CLIPError(f"{path}: cannot read CLIP weights ({first[:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CLIPError(f"{path}: not a CLIP state dict (expected a mapping of names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    # OpenAI's state dict carries three scalar settings beside the weights.
    return {k: v for k, v in state.items() if k not in ("input_resolution", "context_length", "vocab_size")}


def load_clip(path: str | os.PathLike, arch: str | None = None, device: str | torch.device = "cpu") -> CLIP:
    """A CLIP model (eval mode, frozen) from the user's weights file; `arch` is the open_clip model name
    (e.g. 'ViT-B-32', 'ViT-B-32-quickgelu'; None: OpenAI weights). Raises CLIPError with one line."""
    where = str(Path(path).expanduser())
    state = read_clip_state_dict(path)
    config = config_from_state_dict(state, arch, where)
    model = CLIP(**config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        parts = ([f"missing {missing[:3]}"] if missing else []) + ([f"unexpected {unexpected[:3]}"] if unexpected else [])
        raise CLIPError(f"{where}: unsupported CLIP architecture ({'; '.join(parts)})")
    for key, value in model.state_dict().items():
        if state[key].shape != value.shape:
            raise CLIPError(f"{where}: tensor {key} has shape {tuple(state[key].shape)}, expected "
                            f"{tuple(value.shape)}")
        if state[key].is_floating_point() and not bool(torch.isfinite(state[key]).all()):
            raise CLIPError(f"{where}: tensor {key} contains NaN or inf")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    model.source = {"path": where, "arch": arch or "openai"}
    return model.eval().requires_grad_(False).to(device)
