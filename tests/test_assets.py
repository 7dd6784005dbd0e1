"""The models shipped inside the package load, match their cards and generate finite images."""

import pytest
import torch

from ganinv.models.registry import EMBEDDED_MODELS, available_models, default_model_name, load_model


def test_some_embedded_model_ships():
    assert available_models(), "no embedded model in ganinv/assets"
    assert default_model_name() in EMBEDDED_MODELS


@pytest.mark.parametrize("name", list(EMBEDDED_MODELS))
def test_embedded_model_matches_card(name):
    assert name in available_models(), f"{name} is registered but its files are not in ganinv/assets"
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


@pytest.mark.parametrize("name", list(EMBEDDED_MODELS))
def test_embedded_model_parts_fit_its_generator(name):
    """The encoder, classifier and directions that ship beside a generator were made for *that* generator
    (a re-exported generator with a stale encoder or stale directions fails here)."""
    assert name in available_models(), f"{name} is registered but its files are not in ganinv/assets"
    from ganinv.editing import load_direction
    model = load_model(name)
    G = model.G
    assert model.encoder is not None, "every embedded model ships an encoder"
    model.encoder.check_generator(G)
    assert model.classifier is not None
    with torch.no_grad():
        outputs = model.classifier(model.heldout[:4])
    assert outputs is not None
    assert any(n.startswith("interfacegan_") for n in model.directions)
    assert any(n.startswith("sefa_") for n in model.directions)
    # The trained finders ship too, so their web-UI families are not empty on the embedded models.
    methods = {load_direction(n, model=model)[0].method for n in model.directions}
    assert {"voynov", "steerability"} <= methods
    for direction_name in model.directions:
        direction = load_direction(direction_name, model=model)[0]
        assert direction.num_ws == G.num_ws and direction.w_dim == G.w_dim
        if direction.space in ("w", "w+"):
            assert direction.vectors.shape[-1] == G.w_dim
        assert max(direction.layers) < G.num_ws
        assert direction.model.get("sha256") == model.sha256, f"{direction_name} was found on other weights"
    if name == "emoji64":  # the attributes issue 5 names for the default model
        assert "interfacegan_skin_tone_1-2_vs_4-5" in model.directions
        assert "interfacegan_gender_man_vs_woman" in model.directions
