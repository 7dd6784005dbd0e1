"""The finders that train: Voynov-Babenko directions and steerability walks, on a tiny generator."""
import pytest
import torch

from conftest import tiny_generator
from ganinv import editing as E
from ganinv.editing.steerability import _best_alignment, measure_walk, transform


@pytest.fixture(scope="module")
def G():
    torch.set_num_threads(1)
    return tiny_generator(resolution=16)


def test_voynov_reconstructor_tells_directions_apart(G):
    direction = E.find_directions("voynov", G, num=4, steps=150, batch_size=16, num_std_samples=500)
    assert direction.vectors.shape == (4, G.w_dim)
    assert torch.allclose(direction.vectors.norm(dim=1), torch.ones(4), atol=1e-5)
    # Held-out accuracy per direction, best first, clearly above chance (1/4) for the best ones.
    assert direction.scores == sorted(direction.scores, reverse=True)
    assert direction.scores[0] > 0.5 and sum(direction.scores) / 4 > 0.35
    # Directions that a reconstructor can tell apart are not copies of one another.
    cosine = direction.vectors @ direction.vectors.t()
    assert (cosine - torch.eye(4)).abs().max() < 0.95
    with pytest.raises(ValueError, match="at least 2"):
        E.find_directions("voynov", G, num=1, steps=1)


@pytest.mark.parametrize("kind", ["shift_x", "shift_y", "zoom"])
def test_registration_recovers_a_known_transformation(kind):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    image = torch.stack([torch.sin(3 * xx) * torch.cos(2 * yy), xx * yy, torch.cos(4 * xx + yy)]).unsqueeze(0)
    amount = torch.tensor([0.125 if kind != "zoom" else 0.4])
    moved, mask = transform(image, kind, amount)
    assert 0 < mask.mean() <= 1
    candidates = torch.linspace(-0.6, 0.6, 49)
    assert _best_alignment(image, moved, kind, candidates) == pytest.approx(float(amount), abs=0.03)


def test_brightness_walk_follows_the_request(G):
    direction = E.find_directions("steerability", G, transformations="brightness,color_r", steps=150,
                                  num_std_samples=500)
    assert direction.labels == ["brightness", "color_r"]
    first_loss = E.find_directions("steerability", G, transformations="brightness", steps=1,
                                   num_std_samples=500).scores[0]
    assert direction.scores[0] < first_loss  # training lowered the masked L2
    rows = measure_walk(G, direction, 0, "brightness", alphas=(-1.0, 1.0), num_samples=8)
    assert rows[0]["achieved_median"] < 0 < rows[1]["achieved_median"]
    # closer to the request than doing nothing
    assert all(row["abs_error_median"] < abs(row["requested"]) for row in rows)
    with pytest.raises(ValueError, match="unknown transformations"):
        E.find_directions("steerability", G, transformations="rotate", steps=1)
