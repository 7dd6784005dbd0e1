"""The locality gate of tuned generators (ganinv.models.local) and its use by PTI/Clone results."""
from __future__ import annotations

import copy

import pytest
import torch

from ganinv.inversion import METHODS, InversionResult, invert
from ganinv.models.checkpoints import save_native
from ganinv.models.local import (LocallyTunedGenerator, gate_distance, gate_request, gate_weight, locally_tuned,
                                 prior_scale)
from ganinv.models.registry import load_model

from conftest import tiny_discriminator, tiny_generator


def _perturbed(G, amount=0.3, seed=1):
    tuned = copy.deepcopy(G)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.synthesis.parameters():
            p.add_(amount * torch.randn(p.shape, generator=gen) * (p.abs().mean() + 0.1))
    return tuned


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    G = tiny_generator(resolution=16).eval()
    tuned = _perturbed(G)
    with torch.no_grad():
        pivot = G.mapping(torch.randn(1, G.z_dim), None)
    return G, tuned, pivot


def test_gate_weight_is_one_inside_zero_outside_and_monotone_between():
    d = torch.linspace(0, 3, 61)
    k = gate_weight(d, 1.0, 2.0)
    assert torch.all(k[d <= 1.0] == 1) and torch.all(k[d >= 2.0] == 0)
    between = k[(d > 1.0) & (d < 2.0)]
    assert torch.all((between > 0) & (between < 1)) and torch.all(between[1:] < between[:-1])
    assert gate_weight(torch.tensor(1.5), 1.0, 2.0).item() == pytest.approx(0.5)


def test_gate_distance_is_to_the_nearest_pivot():
    pivots = torch.zeros(2, 3, 4)
    pivots[1] += 10
    ws = torch.zeros(1, 3, 4)
    ws[..., 0] = 9  # distance 9 to the first pivot, sqrt(81 + ... ) to the second
    assert gate_distance(ws, pivots).item() == pytest.approx(min(9.0, float(torch.tensor(1.0 + 3 * 100).sqrt())))


def test_gated_generator_is_tuned_at_the_pivot_and_base_far_away(pair):
    G, tuned, pivot = pair
    gated = locally_tuned(G, tuned, pivot, inner=0.3, outer=0.6)
    scale = prior_scale(G)
    assert gated.synthesis.inner_radius == pytest.approx(0.3 * scale)
    with torch.no_grad():
        assert torch.equal(gated.synthesis(pivot), tuned.synthesis(pivot))
        far = pivot + 2 * scale / (G.w_dim ** 0.5)  # every coordinate moved: distance 2 * scale
        assert gated.synthesis.gate(far).item() == 0
        assert torch.equal(gated.synthesis(far), G.synthesis(far))
        assert not torch.allclose(tuned.synthesis(far), G.synthesis(far))


def test_mixed_batch_matches_one_call_per_latent_and_blends_between(pair):
    G, tuned, pivot = pair
    gated = locally_tuned(G, tuned, pivot, inner=0.3, outer=0.6)
    scale = gated.synthesis.outer_radius / 0.6
    direction = torch.randn(G.w_dim, generator=torch.Generator().manual_seed(3))
    direction = direction / direction.norm()
    # distances 0, 0.45 * scale (between the radii), 2 * scale (outside)
    ws = torch.cat([pivot + f * scale * direction for f in (0.0, 0.45, 2.0)])
    weight = gated.synthesis.gate(ws)
    assert weight[0] == 1 and 0 < weight[1] < 1 and weight[2] == 0
    noise = {name: torch.randn(3, 1, *buf.shape, generator=torch.Generator().manual_seed(4))
             for name, buf in G.synthesis.noise_buffers().items()}
    with torch.no_grad():
        together = gated.synthesis(ws, noise=noise)
        alone = torch.cat([gated.synthesis(ws[i:i + 1], noise={k: v[i:i + 1] for k, v in noise.items()})
                           for i in range(3)])
        assert torch.allclose(together, alone, atol=1e-5)
        middle, base_img, tuned_img = (net.synthesis(ws[1:2], noise={k: v[1:2] for k, v in noise.items()})
                                       for net in (gated, G, tuned))
    # the blended image lies strictly between the two generators' images
    assert 0 < (middle - base_img).abs().mean() < (tuned_img - base_img).abs().mean()
    styles = gated.synthesis.styles(ws)
    assert torch.allclose(styles["b4.conv1"][0], tuned.synthesis.styles(ws[:1])["b4.conv1"][0])
    assert torch.allclose(styles["b4.conv1"][2], G.synthesis.styles(ws[2:])["b4.conv1"][0])


def test_gate_settings_are_checked(pair):
    G, tuned, pivot = pair
    assert gate_request({"gate": False, "gate_inner": 5, "gate_outer": 1}) is None
    with pytest.raises(ValueError, match="gate_inner"):
        gate_request({"gate": True, "gate_inner": 0.6, "gate_outer": 0.3})
    with pytest.raises(ValueError, match="radius"):
        LocallyTunedGenerator(G, tuned, pivot, 2.0, 1.0)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tinygate") / "model"
    save_native(folder, tiny_generator(resolution=16), tiny_discriminator(resolution=16), card={"name": "tiny16"})
    bundle = load_model(folder)
    torch.manual_seed(5)
    bundle.real_images = bundle.G(torch.randn(8, 32)).detach().clamp(-1, 1)
    return bundle


# Tuning steps per method where the default count below is not what the test needs.
STEPS = {"clone": 60, "pti": 40}


@pytest.mark.parametrize("method", [name for name, spec in METHODS.items() if spec.tunes_generator])
def test_tuning_results_are_local_by_the_gate_and_save_with_it(model, method, tmp_path):
    spec = METHODS[method]
    settings = {spec.step_setting: STEPS.get(method, 40)}
    if spec.first_stage_step_setting is not None:
        settings[spec.first_stage_step_setting] = 20
    target = torch.rand(1, 3, 16, 16) * 2 - 1
    result = invert(model, target, method, seed=0, **settings)
    assert isinstance(result.G_tuned, LocallyTunedGenerator)
    loc, ungated = result.extras["locality"], result.extras["locality_ungated"]
    assert ungated["prior_mean_abs_change"] > 0
    assert loc["prior_mean_abs_change"] < 0.5 * ungated["prior_mean_abs_change"]
    assert loc["pivot_mean_abs_change"] == pytest.approx(ungated["pivot_mean_abs_change"])
    plain = invert(model, target, method, seed=0, gate=False, **settings)
    assert not isinstance(plain.G_tuned, LocallyTunedGenerator) and "locality_ungated" not in plain.extras
    assert torch.equal(plain.reconstruction, result.reconstruction)

    loaded = InversionResult.load(result.save(tmp_path / "saved")[0], model=model.folder)
    assert isinstance(loaded.G_tuned, LocallyTunedGenerator)
    assert loaded.G_tuned.gate_settings == pytest.approx(result.G_tuned.gate_settings)
    assert torch.allclose(loaded.reconstruction, result.reconstruction, atol=2 / 255)
    ws = torch.cat([result.ws, model.G.mapping(torch.randn(4, model.G.z_dim), None)])
    with torch.no_grad():
        assert torch.allclose(loaded.G_tuned.synthesis(ws), result.G_tuned.synthesis(ws), atol=1e-5)


def test_a_batch_tuned_together_keeps_every_pivot(model, tmp_path):
    targets = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7)) * 2 - 1
    result = invert(model, targets, "clone", seed=0, h_steps=10, num_steps=30)
    gated = result.G_tuned
    assert gated.synthesis.pivots.shape[0] == 2
    with torch.no_grad():
        assert torch.equal(gated.synthesis.gate(result.ws), torch.ones(2, dtype=torch.float64))
        assert torch.equal(gated.synthesis(result.ws), gated.tuned_generator.synthesis(result.ws))
    second = InversionResult.load(result.save(tmp_path / "batch")[1], model=model.folder)
    assert second.G_tuned.synthesis.pivots.shape[0] == 2
    assert torch.allclose(second.reconstruction, result[1].reconstruction, atol=2 / 255)


def test_a_damaged_gate_in_a_saved_result_is_a_clear_error(model, tmp_path):
    import json
    target = torch.rand(1, 3, 16, 16) * 2 - 1
    folder = invert(model, target, "pti", seed=0, pivot_steps=5, num_steps=5).save(tmp_path / "r")[0]
    card_path = folder / "generator" / "card.json"
    card = json.loads(card_path.read_text())
    card["locality_gate"] = {"inner_radius": 5.0, "outer_radius": 1.0}
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="invalid locality gate"):
        InversionResult.load(folder, model=model.folder)
    with pytest.raises(ValueError, match="pivots must have shape"):
        G = model.G
        LocallyTunedGenerator(G, copy.deepcopy(G), torch.zeros(1, G.num_ws + 1, G.w_dim), 1.0, 2.0)
