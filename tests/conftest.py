import os

import pytest
import torch

from ganinv.models.stylegan2 import Discriminator, Generator

# Tiny test models gain nothing from threads; on a loaded 2-core machine extra threads cost 10x.
torch.set_num_threads(1)

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures", "checkpoints")


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


@pytest.fixture
def fixtures_dir():
    path = os.path.abspath(FIXTURES)
    if not os.path.isdir(path):
        if os.environ.get("CI") == "true":
            pytest.fail(f"checkpoint fixtures missing at {path}")
        pytest.skip("checkpoint fixtures (../shared/fixtures) not available")
    return path
