"""Shared helpers for the torchvision-compatible backbones."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from ..errors import GanInvError


class WeightsMismatch(GanInvError):
    """A state dict does not fit the backbone (missing keys, unexpected keys, wrong shapes)."""


def load_torchvision_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                                source: str = "state dict") -> None:
    """Load a torchvision-format state dict into `module`, checking every key and shape.

    A backbone built without its classifier head accepts a full torchvision file: the
    `classifier.*` entries are the only keys that may be left over; anything else that is missing,
    unexpected or of the wrong shape raises `WeightsMismatch` naming the keys.
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected and not key.startswith("classifier.")]
    wrong_shape = [f"{key} {tuple(state_dict[key].shape)} (expected {tuple(value.shape)})"
                   for key, value in expected.items()
                   if key in state_dict and tuple(state_dict[key].shape) != tuple(value.shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:6]}{' ...' if len(missing) > 6 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
    if wrong_shape:
        problems.append(f"wrong shapes {wrong_shape[:4]}{' ...' if len(wrong_shape) > 4 else ''}")
    if problems:
        raise WeightsMismatch(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict({key: state_dict[key] for key in expected}, strict=True)


def tap_activations(features: nn.Sequential, x: torch.Tensor, tap_indices: tuple[int, ...]) -> list[torch.Tensor]:
    """Run `features` layer by layer and return the outputs of the layers at `tap_indices`."""
    taps = []
    last = max(tap_indices)
    for index, layer in enumerate(features):
        x = layer(x)
        if index in tap_indices:
            taps.append(x)
        if index == last:
            break
    return taps
