"""Shared test helpers: tiny models, the vendored checkpoint fixtures, and the rule that nothing skips in CI.

Under CI=true every skip is reported as a failure (.ci/run installs everything the tests use). Elsewhere a
test may skip only for a missing optional system piece (Chromium, a Debian data package), and its reason
says how to install it.
"""
import copy
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from ganinv.inversion.result import InversionResult
from ganinv.models.prior import sample_prior
from ganinv.models.stylegan2 import Discriminator, Generator

pytest_plugins = ["pytester"]

# Tiny test models gain nothing from threads; on a loaded 2-core machine extra threads cost 10x.
torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


def _skip_to_failure(report) -> None:
    if report.skipped and _in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where nothing may skip ({reason})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _skip_to_failure(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _skip_to_failure(outcome.get_result())


def tiny_generator(seed: int = 0, resolution: int = 16, channels: int = 3, c_dim: int = 0, **synthesis) -> Generator:
    torch.manual_seed(seed)
    kwargs = dict(channel_base=256, channel_max=32)
    kwargs.update(synthesis)
    G = Generator(z_dim=32, c_dim=c_dim, w_dim=32, img_resolution=resolution, img_channels=channels,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=kwargs).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
            if name.endswith("torgb.weight"):
                p.mul_(0.25)  # keep images mostly inside [-1, 1], like a trained generator
        G.mapping.w_avg.copy_(G.mapping(torch.randn(256, 32), torch.zeros(256, c_dim) if c_dim else None,
                                        update_w_avg=False)[:, 0].mean(0))
    return G


def tiny_discriminator(seed: int = 0, resolution: int = 16, channels: int = 3, c_dim: int = 0, **kwargs) -> Discriminator:
    torch.manual_seed(seed + 100)
    base = dict(channel_base=256, channel_max=32)
    base.update(kwargs)
    return Discriminator(c_dim=c_dim, img_resolution=resolution, img_channels=channels, **base).eval()


@pytest.fixture(scope="session")
def fixtures_dir() -> str:
    """tests/fixtures: small checkpoints written by the official code, with reference outputs (see its README)."""
    return str(FIXTURES)


@pytest.fixture(scope="session")
def rosinality_converted(tmp_path_factory) -> str:
    """rosinality's convert_weight.py layout, rebuilt from the vendored files (tests/fixtures/make_small.py)."""
    spec = importlib.util.spec_from_file_location("make_small", FIXTURES / "make_small.py")
    make_small = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_small)
    path = tmp_path_factory.mktemp("converted") / make_small.CONVERTED
    make_small.write_converted(FIXTURES / make_small.TRAIN_CHECKPOINT, FIXTURES / "rosinality_res32_ref.npz", path)
    return str(path)


def tiny_result(G, tuned: bool, batch: int = 1):
    """A result as `ganinv.invert` builds it (same keywords), with noise maps and optionally a tuned G."""
    ws = sample_prior(G, batch, seed=21) + 0.1
    gen = torch.Generator().manual_seed(4)
    noise = {name: torch.randn(batch, 1, *buf.shape, generator=gen)
             for name, buf in G.synthesis.noise_buffers().items()}
    G_tuned = None
    if tuned:
        G_tuned = copy.deepcopy(G)
        with torch.no_grad():
            for p in G_tuned.synthesis.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    with torch.no_grad():
        reconstruction = (G_tuned or G).synthesis(ws, noise_mode="const", noise=noise).clamp(-1, 1)
    return InversionResult(
        method="pti" if tuned else "optimize", space="w+", target=reconstruction.clone(), ws=ws,
        reconstruction=reconstruction, noise=noise, G_tuned=G_tuned, G_base=G, model_name="tiny",
        model_sha256=None, z=None, metrics={"psnr": [30.0 + i for i in range(batch)]},
        history=[{"step": 0, "loss": 1.0}], seconds=2.0 * batch, settings={"num_steps": 3},
        stop_reason="num_steps", device="cpu", threads=1, extras={"note": "test"})
