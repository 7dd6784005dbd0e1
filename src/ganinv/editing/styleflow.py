"""StyleFlow: attribute-conditioned edits through a conditional continuous normalizing flow (Abdal, Zhu,
Mitra & Wonka, "StyleFlow: Attribute-conditioned Exploration of StyleGAN-Generated Images using
Conditional Continuous Normalizing Flows", ACM TOG 2021).

A conditional CNF (Chen et al., "Neural Ordinary Differential Equations", NeurIPS 2018; Grathwohl et
al., "FFJORD", ICLR 2019) maps a latent w to a Gaussian z by integrating dx/dt = f(x, t, a) from t = 0
(w) to t = 1 (z), where a is the attribute vector of the image G(w): the concatenated class
probabilities of the model's classifier heads. The dynamics are concat-squash layers (FFJORD): each
linear layer's output is gated and shifted by functions of (t, a). Training maximizes the likelihood
of seeded prior samples w given their classifier-labelled attributes with the instantaneous change of
variables, log p(w | a) = log N(z; 0, I) + integral_0^1 tr(df/dx) dt, the trace estimated with
Hutchinson's estimator (exact for evaluation on small w_dim).

An edit (the paper's section 4): z = F^-1(w; a), then w' = F(z; a') where a' is a with one head set
to the requested class and the others held at their current values. Sequential edits start from the
same z and keep the updated attributes. Each of the num_ws rows of a W+ code goes through the flow
with the same attributes, so a broadcast w stays broadcast. The ODE is solved with torchdiffeq.

The flow works on w standardized per dimension by the training samples' mean and std (stored with
the weights), which keeps the dynamics at unit scale whatever the generator.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import GanInvError
from ..models.prior import sample_prior
from ..models.storage import load_module, save_module
from .interfacegan import classifier_heads, classifier_outputs

CARD_FORMAT = "ganinv-styleflow"
CARD_VERSION = 1
FLOW_FOLDER = "styleflow"  # the flow's default place inside a model folder
MAX_CONDITION_CLASSES = 16  # heads with more classes (emoji's 99 subgroups) are not conditioned on by default


class StyleFlowError(GanInvError):
    """A bad attribute request or an unusable flow file."""


# ---------------------------------------------------------------------- attributes


def _head_width(classes: Sequence[str]) -> int:
    return 1 if len(classes) == 1 else len(classes)


def head_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities [N, K] of one head's logits (a single-logit head gives [N, 1] = sigmoid)."""
    logits = logits.float()
    if logits.ndim == 1 or logits.shape[1] == 1:
        return torch.sigmoid(logits.reshape(-1, 1))
    return torch.softmax(logits, dim=1)


def attribute_vector(outputs: dict[str, torch.Tensor], heads: dict[str, list[str]]) -> torch.Tensor:
    """Concatenated class probabilities [N, sum of widths] of `heads` (in their order) from {head: logits}."""
    missing = [h for h in heads if h not in outputs]
    if missing:
        raise StyleFlowError(f"the classifier gives no head {missing[0]!r} (it gives {', '.join(outputs)})")
    return torch.cat([head_probabilities(outputs[h]) for h in heads], dim=1)


def _slices(heads: dict[str, list[str]]) -> dict[str, slice]:
    out, start = {}, 0
    for head, classes in heads.items():
        out[head] = slice(start, start + _head_width(classes))
        start += _head_width(classes)
    return out


def parse_attribute_change(text: str, heads: dict[str, list[str]]) -> tuple[str, int]:
    """'HEAD=VALUE' -> (head, class index). VALUE is a class name (as the classifier names it) or a class
    index; a single-logit head takes 0 or 1. Raises StyleFlowError listing the valid heads/values."""
    head, sep, value = text.partition("=")
    head, value = head.strip(), value.strip()
    if not sep or not head or not value:
        raise StyleFlowError(f"bad attribute {text!r}: use HEAD=VALUE (heads: {', '.join(heads)})")
    if head not in heads:
        raise StyleFlowError(f"unknown attribute {head!r}; the flow's heads are: {', '.join(heads)}")
    classes = heads[head]
    if len(classes) == 1:
        if value in ("0", "1"):
            return head, int(value)
        raise StyleFlowError(f"bad value {value!r} for {head}: this head is binary, give 0 or 1")
    if value in classes:
        return head, classes.index(value)
    if value.isdigit() and int(value) < len(classes):
        return head, int(value)
    raise StyleFlowError(f"bad value {value!r} for {head}; valid values: {', '.join(classes)} "
                         f"(or an index 0-{len(classes) - 1})")


def set_attribute(attributes: torch.Tensor, heads: dict[str, list[str]], head: str, index: int) -> torch.Tensor:
    """A copy of attributes [N, D] with `head` set to the one-hot of class `index` (others unchanged)."""
    out = attributes.clone()
    part = _slices(heads)[head]
    if part.stop - part.start == 1:
        out[:, part] = float(index)
    else:
        out[:, part] = 0.0
        out[:, part.start + index] = 1.0
    return out


def attribute_names(attributes: torch.Tensor, heads: dict[str, list[str]]) -> list[dict[str, str]]:
    """Per sample, {head: most probable class name} read from an attribute vector."""
    names = []
    for row in attributes:
        item = {}
        for head, part in _slices(heads).items():
            values = row[part]
            if values.numel() == 1:
                item[head] = str(int(values.item() > 0.5))
            else:
                item[head] = heads[head][int(values.argmax())]
        names.append(item)
    return names


def select_heads(all_heads: dict[str, list[str]], names: Sequence[str] | None = None) -> dict[str, list[str]]:
    """The heads the flow is conditioned on: `names` (in that order), or every head with at most
    MAX_CONDITION_CLASSES classes."""
    if names:
        unknown = [n for n in names if n not in all_heads]
        if unknown:
            raise StyleFlowError(f"unknown classifier head {unknown[0]!r}; heads: {', '.join(all_heads)}")
        return {n: list(all_heads[n]) for n in names}
    chosen = {h: list(c) for h, c in all_heads.items() if len(c) <= MAX_CONDITION_CLASSES}
    if not chosen:
        raise StyleFlowError("every classifier head has too many classes to condition on; name the heads")
    return chosen


# ---------------------------------------------------------------------- the flow


class ConcatSquashLinear(nn.Module):
    """FFJORD's layer: Linear(x) * sigmoid(gate(context)) + shift(context), context = (t, attributes)."""

    def __init__(self, in_features: int, out_features: int, context_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(context_dim, out_features)
        self.shift = nn.Linear(context_dim, out_features, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * torch.sigmoid(self.gate(context)) + self.shift(context)


class _Dynamics(nn.Module):
    """f(x, t, a): concat-squash layers with tanh between them."""

    def __init__(self, dim: int, attribute_dim: int, hidden: int, num_layers: int):
        super().__init__()
        widths = [dim] + [hidden] * (num_layers - 1) + [dim]
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b, attribute_dim + 1) for a, b in zip(widths, widths[1:]))
        with torch.no_grad():  # start near the identity map, which keeps the first steps stable
            self.layers[-1].linear.weight.mul_(0.01)
            self.layers[-1].linear.bias.zero_()
            self.layers[-1].shift.weight.mul_(0.01)

    def forward(self, t: torch.Tensor, x: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        context = torch.cat([t.expand(x.shape[0], 1).to(x), attributes], dim=1)
        for i, layer in enumerate(self.layers):
            x = layer(x, context)
            if i < len(self.layers) - 1:
                x = torch.tanh(x)
        return x


class _Augmented(nn.Module):
    """The ODE of (x, integral of tr(df/dx)) for torchdiffeq; `noise` set: Hutchinson, else exact."""

    def __init__(self, dynamics: _Dynamics):
        super().__init__()
        self.dynamics = dynamics
        self.attributes: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None

    def forward(self, t, state):
        x = state[0]
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.requires_grad_(True)
            dx = self.dynamics(t, x, self.attributes)
            if self.noise is not None:
                vjp = torch.autograd.grad(dx, x, self.noise, create_graph=True)[0]
                trace = (vjp * self.noise).sum(dim=1)
            else:
                trace = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
                for i in range(x.shape[1]):
                    trace = trace + torch.autograd.grad(dx[:, i].sum(), x, create_graph=True)[0][:, i]
        return dx, trace


class _Plain(nn.Module):
    def __init__(self, dynamics: _Dynamics):
        super().__init__()
        self.dynamics = dynamics
        self.attributes: torch.Tensor | None = None

    def forward(self, t, x):
        return self.dynamics(t, x, self.attributes)


class StyleFlow(nn.Module):
    """A conditional CNF between standardized w [N, w_dim] and N(0, I), conditioned on attributes [N, D]."""

    def __init__(self, w_dim: int, heads: dict[str, Sequence[str]], hidden: int = 256, num_layers: int = 3,
                 method: str = "rk4", num_steps: int = 8):
        super().__init__()
        if num_layers < 2:
            raise ValueError("a flow needs at least 2 layers")
        self.w_dim = int(w_dim)
        self.heads = {h: [str(c) for c in classes] for h, classes in heads.items()}
        self.attribute_dim = sum(_head_width(c) for c in self.heads.values())
        self.method = method
        self.num_steps = int(num_steps)
        self.init_kwargs = dict(w_dim=self.w_dim, heads=self.heads, hidden=hidden, num_layers=num_layers,
                                method=method, num_steps=self.num_steps)
        self.dynamics = _Dynamics(self.w_dim, self.attribute_dim, hidden, num_layers)
        self.register_buffer("w_mean", torch.zeros(self.w_dim))
        self.register_buffer("w_std", torch.ones(self.w_dim))

    def _check(self, w: torch.Tensor, attributes: torch.Tensor) -> None:
        if w.ndim != 2 or w.shape[1] != self.w_dim:
            raise ValueError(f"w must have shape [N, {self.w_dim}], got {tuple(w.shape)}")
        if attributes.ndim != 2 or attributes.shape != (w.shape[0], self.attribute_dim):
            raise ValueError(f"attributes must have shape [{w.shape[0]}, {self.attribute_dim}], "
                             f"got {tuple(attributes.shape)}")

    def _solve(self, func, state, t0: float, t1: float):
        try:
            from torchdiffeq import odeint
        except ImportError:
            raise StyleFlowError("StyleFlow needs torchdiffeq: pip install 'ganinv[flow]'") from None

        ref = state[0] if isinstance(state, tuple) else state
        times = torch.tensor([t0, t1], dtype=ref.dtype, device=ref.device)
        options = {"step_size": abs(t1 - t0) / self.num_steps} if self.method in ("rk4", "euler", "midpoint") else None
        out = odeint(func, state, times, method=self.method, options=options, rtol=1e-5, atol=1e-6)
        return tuple(s[-1] for s in out) if isinstance(out, tuple) else out[-1]

    def to_gaussian(self, w: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """z = F^-1(w; a): integrate from t = 0 (standardized w) to t = 1."""
        self._check(w, attributes)
        func = _Plain(self.dynamics)
        func.attributes = attributes.to(w)
        return self._solve(func, (w - self.w_mean) / self.w_std, 0.0, 1.0)

    def from_gaussian(self, z: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """w = F(z; a): integrate from t = 1 back to t = 0 and undo the standardization."""
        self._check(z, attributes)
        func = _Plain(self.dynamics)
        func.attributes = attributes.to(z)
        return self._solve(func, z, 1.0, 0.0) * self.w_std + self.w_mean

    def log_prob(self, w: torch.Tensor, attributes: torch.Tensor, *, exact: bool | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(w | a) [N] in nats (of w, the standardization's Jacobian included). `exact`: exact trace
        (default when w_dim <= 64) instead of Hutchinson's estimate with Rademacher noise from `generator`."""
        self._check(w, attributes)
        if exact is None:
            exact = self.w_dim <= 64
        func = _Augmented(self.dynamics)
        func.attributes = attributes.to(w)
        x = (w - self.w_mean) / self.w_std
        if not exact:
            noise = torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1
            func.noise = noise
        z, trace_integral = self._solve(func, (x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)), 0.0, 1.0)
        log_normal = -0.5 * (z.square().sum(1) + self.w_dim * math.log(2 * math.pi))
        return log_normal + trace_integral - self.w_std.log().sum()


# ---------------------------------------------------------------------- labelling and training


@torch.no_grad()
def label_latents(G, classifier, heads: dict[str, list[str]], w: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Attribute vectors [N, D] of the images G renders from w [N, w_dim] (constant noise)."""
    device = next(G.parameters()).device
    out = []
    for start in range(0, w.shape[0], batch_size):
        chunk = w[start:start + batch_size].to(device)
        images = G.synthesis(chunk.unsqueeze(1).expand(-1, G.num_ws, -1), noise_mode="const")
        out.append(attribute_vector(classifier_outputs(classifier, images), heads).cpu())
    return torch.cat(out)


@dataclass
class FlowTraining:
    """What `train_styleflow` did: loss per step and held-out log-likelihood per dimension before/after."""

    losses: list[float]
    heldout_before: float
    heldout_after: float
    seconds: float
    num_samples: int
    steps: int


def train_styleflow(model, *, heads: Sequence[str] | None = None, num_samples: int = 5000, steps: int = 600,
                    batch_size: int = 256, learning_rate: float = 2e-3, hidden: int = 256, num_layers: int = 3,
                    num_steps: int = 8, seed: int = 0, classifier=None, num_heldout: int = 256,
                    progress: Callable[[int, float], None] | None = None) -> tuple[StyleFlow, FlowTraining]:
    """Train a StyleFlow on `num_samples` seeded prior w of the model, labelled by its classifier.

    model: a Model (its classifier is used unless `classifier` is given) or a bare G with `classifier`.
    heads: which classifier heads to condition on (default: select_heads). Held-out samples (another
    seed) measure the log-likelihood per dimension before and after training.
    Returns (flow in eval mode, FlowTraining)."""
    G = getattr(model, "G", model)
    classifier = classifier if classifier is not None else getattr(model, "classifier", None)
    if classifier is None:
        raise StyleFlowError("StyleFlow needs the model's classifier to label samples; this model has none")
    holder = model if getattr(model, "classifier", None) is classifier else SimpleNamespace(classifier=classifier,
                                                                                            card={})
    chosen = select_heads(classifier_heads(holder), heads)
    started = time.perf_counter()
    w = sample_prior(G, num_samples, seed=seed)[:, 0].cpu()
    w_heldout = sample_prior(G, num_heldout, seed=seed + 1_000_003)[:, 0].cpu()
    attributes = label_latents(G, classifier, chosen, w)
    attributes_heldout = label_latents(G, classifier, chosen, w_heldout)
    torch.manual_seed(seed)
    flow = StyleFlow(G.w_dim, chosen, hidden=hidden, num_layers=num_layers, num_steps=num_steps)
    flow.w_mean.copy_(w.mean(0))
    flow.w_std.copy_(w.std(0).clamp_min(1e-6))
    gen = torch.Generator().manual_seed(seed)

    def heldout_log_likelihood() -> float:
        with torch.no_grad():
            value = flow.log_prob(w_heldout, attributes_heldout, generator=torch.Generator().manual_seed(seed))
        return float(value.mean()) / G.w_dim

    before = heldout_log_likelihood()
    optimizer = torch.optim.Adam(flow.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    losses = []
    flow.train()
    for step in range(steps):
        index = torch.randint(0, num_samples, (min(batch_size, num_samples),), generator=gen)
        loss = -flow.log_prob(w[index], attributes[index], exact=False, generator=gen).mean() / G.w_dim
        if not torch.isfinite(loss.detach()):
            raise StyleFlowError(f"the flow's loss became {float(loss)} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, losses[-1])
    flow.eval()
    after = heldout_log_likelihood()
    return flow, FlowTraining(losses=losses, heldout_before=before, heldout_after=after,
                              seconds=time.perf_counter() - started, num_samples=num_samples, steps=steps)


# ---------------------------------------------------------------------- edits


@torch.no_grad()
def styleflow_edit(flow: StyleFlow, ws: torch.Tensor, changes: Sequence[str | tuple[str, int]], *,
                   attributes: torch.Tensor | None = None, G=None, classifier=None
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Sequential attribute edits of ws [N, num_ws, w_dim] (or w [N, w_dim]).

    changes: 'HEAD=VALUE' texts or (head, class index) pairs, applied one after another, each keeping
    the attributes the earlier ones set. attributes: the current attribute vectors [N, D]; by default
    the classifier's on G's render of ws (constant noise).
    Returns (ws after each edit, attributes after each edit), each list as long as `changes`."""
    squeeze = ws.ndim == 2
    ws3 = ws.unsqueeze(1) if squeeze else ws
    if ws3.ndim != 3 or ws3.shape[2] != flow.w_dim:
        raise ValueError(f"ws must have shape [N, num_ws, {flow.w_dim}] or [N, {flow.w_dim}], got {tuple(ws.shape)}")
    parsed = [parse_attribute_change(c, flow.heads) if isinstance(c, str) else (c[0], int(c[1])) for c in changes]
    if attributes is None:
        if G is None or classifier is None:
            raise ValueError("give the current attributes, or G and the classifier to measure them")
        images = G.synthesis(ws3.expand(-1, G.num_ws, -1) if ws3.shape[1] == 1 else ws3, noise_mode="const")
        attributes = attribute_vector(classifier_outputs(classifier, images), flow.heads)
    flow_device = flow.w_mean.device
    n, num_ws, w_dim = ws3.shape
    attributes = attributes.to(flow_device, torch.float32)
    rows = ws3.reshape(n * num_ws, w_dim).to(flow_device, torch.float32)
    per_row = attributes.repeat_interleave(num_ws, dim=0)
    z = flow.to_gaussian(rows, per_row)
    out_ws, out_attributes = [], []
    current = attributes
    for head, index in parsed:
        current = set_attribute(current, flow.heads, head, index)
        edited = flow.from_gaussian(z, current.repeat_interleave(num_ws, dim=0)).reshape(n, num_ws, w_dim)
        out_ws.append((edited[:, 0] if squeeze else edited).to(ws.device, ws.dtype))
        out_attributes.append(current.clone())
    return out_ws, out_attributes


# ---------------------------------------------------------------------- storage


def save_styleflow(directory: str | os.PathLike, flow: StyleFlow, card: dict | None = None) -> Path:
    """Write `model.safetensors` + `card.json` (atomically) into `directory`."""
    full = {**(card or {}), "architecture": "ganinv-styleflow-cnf", "init_kwargs": flow.init_kwargs,
            "heads": flow.heads}
    return save_module(directory, flow, full, CARD_FORMAT, CARD_VERSION)


def load_styleflow(directory: str | os.PathLike, device: str | torch.device = "cpu") -> StyleFlow:
    """A flow saved by `save_styleflow`, in eval mode; its card is `flow.card`."""
    flow, card = load_module(directory, CARD_FORMAT, CARD_VERSION, "StyleFlow",
                             lambda card: StyleFlow(**card["init_kwargs"]), error=StyleFlowError)
    flow.card = card
    return flow.eval().to(device)


__all__ = ["CARD_FORMAT", "CARD_VERSION", "FLOW_FOLDER", "ConcatSquashLinear", "FlowTraining", "StyleFlow",
           "StyleFlowError", "attribute_names", "attribute_vector", "head_probabilities", "label_latents",
           "load_styleflow", "parse_attribute_change", "save_styleflow", "select_heads", "set_attribute",
           "styleflow_edit", "train_styleflow"]
