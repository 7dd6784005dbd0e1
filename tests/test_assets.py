"""The models shipped inside the package load, match their cards and generate finite images."""
import os

import pytest
import torch

from ganinv.models.registry import EMBEDDED_MODELS, available_models, default_model_name, load_model


def test_some_embedded_model_ships():
    if not available_models():
        if os.environ.get("CI") == "true":
            pytest.fail("no embedded model in ganinv/assets")
        pytest.skip("no embedded model built yet")
    assert default_model_name() in EMBEDDED_MODELS


@pytest.mark.parametrize("name", list(EMBEDDED_MODELS))
def test_embedded_model_matches_card(name):
    if name not in available_models():
        pytest.skip(f"{name} is not shipped in this build")
    model = load_model(name)
    G, card = model.G, model.card
    for key in ("img_resolution", "img_channels", "z_dim", "w_dim", "num_ws", "c_dim"):
        assert card[key] == getattr(G, key)
    assert model.D is not None, "Clone needs the discriminator"
    assert model.real_images is not None and model.real_images.shape[1:] == (G.img_channels, G.img_resolution,
                                                                            G.img_resolution)
    assert model.heldout is not None and len(model.heldout) >= 8
    assert card.get("training_data", {}).get("license")
    assert card.get("quality", {}).get("samples_vs_heldout") is not None
    with torch.no_grad():
        img = G(torch.randn(4, G.z_dim), None)
    assert torch.isfinite(img).all() and img.shape == (4, G.img_channels, G.img_resolution, G.img_resolution)
    # Samples are not constant: the generator is not collapsed to one image.
    assert img.std(dim=0).mean() > 0.05
    weights = model.folder / "model.safetensors"
    assert weights.stat().st_size < 30 * 2 ** 20
