"""StyleFlow: the conditional CNF learns prior w, inverts itself, edits the requested attribute; CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ganinv
from ganinv.editing import styleflow as S
from ganinv.models.prior import sample_prior

from conftest import tiny_generator, tiny_result


class ChannelClassifier(torch.nn.Module):
    """Stands in for Model.classifier: two 3-class heads read from the red and blue channel means."""

    head_classes = {"red": ["low", "mid", "high"], "blue": ["low", "mid", "high"]}

    def forward(self, images):
        out = {}
        for name, channel in (("red", 0), ("blue", 2)):
            m = images[:, channel].mean(dim=(1, 2)) * 20
            out[name] = torch.stack([-m, torch.zeros_like(m), m], dim=1)
        return out


@pytest.fixture(scope="module")
def G():
    return tiny_generator(0).requires_grad_(False)


@pytest.fixture(scope="module")
def trained(G):
    torch.manual_seed(0)
    model = ganinv.Model(G=G, card={"name": "tiny"}, classifier=ChannelClassifier())
    flow, info = S.train_styleflow(model, num_samples=768, steps=120, batch_size=96, hidden=48, num_steps=4,
                                   learning_rate=5e-3, num_heldout=128, seed=0)
    return model, flow, info


def test_training_improves_heldout_likelihood(trained):
    _, flow, info = trained
    assert info.heldout_after > info.heldout_before + 0.1
    assert np.mean(info.losses[-10:]) < np.mean(info.losses[:10])
    assert list(flow.heads) == ["red", "blue"] and flow.attribute_dim == 6


def test_inverse_of_forward_recovers_w(trained, G):
    model, flow, _ = trained
    w = sample_prior(G, 16, seed=5)[:, 0]
    attributes = S.label_latents(G, model.classifier, flow.heads, w)
    z = flow.to_gaussian(w, attributes)
    assert (z - (w - flow.w_mean) / flow.w_std).abs().max() > 1e-2  # the flow moves points
    back = flow.from_gaussian(z, attributes)
    assert (back - w).abs().max() < 1e-3 * float(w.abs().max())
    # an edit to each subject's own hard attributes moves w far less than an edit to another class
    own = attributes[:, 0:3].argmax(1)
    hard = attributes.clone()
    hard[:, 0:3] = torch.nn.functional.one_hot(own, 3).float()
    hard[:, 3:6] = torch.nn.functional.one_hot(attributes[:, 3:6].argmax(1), 3).float()
    near = (flow.from_gaussian(z, hard) - w).norm(dim=1).mean()
    other = torch.nn.functional.one_hot((own + 1) % 3, 3).float()
    far = (flow.from_gaussian(z, torch.cat([other, hard[:, 3:6]], dim=1)) - w).norm(dim=1).mean()
    assert near < far


def test_exact_and_hutchinson_log_prob_agree(trained, G):
    model, flow, _ = trained
    w = sample_prior(G, 64, seed=11)[:, 0]
    attributes = S.label_latents(G, model.classifier, flow.heads, w)
    exact = flow.log_prob(w, attributes, exact=True).mean().detach()
    estimate = torch.stack([flow.log_prob(w, attributes, exact=False, generator=torch.Generator().manual_seed(i))
                            .mean() for i in range(4)]).mean().detach()
    assert abs(float(exact - estimate)) < 0.05 * abs(float(exact)) + 0.5


def test_edit_moves_target_head_and_holds_the_others(trained, G):
    model, flow, _ = trained
    classifier = model.classifier
    w = sample_prior(G, 64, seed=9)[:, 0]
    before = S.label_latents(G, classifier, flow.heads, w)
    red, blue = slice(0, 3), slice(3, 6)
    gen = torch.Generator().manual_seed(3)
    for target in (0, 2):
        (edited,), (attributes,) = S.styleflow_edit(flow, w, [("red", target)], attributes=before)
        assert torch.equal(attributes[:, blue], before[:, blue])
        assert (attributes[:, red].argmax(1) == target).all()
        after = S.label_latents(G, classifier, flow.heads, edited)
        step = edited - w
        random = torch.randn(step.shape, generator=gen)
        random = random / random.norm(dim=1, keepdim=True) * step.norm(dim=1, keepdim=True)
        after_random = S.label_latents(G, classifier, flow.heads, w + random)
        gain = float((after[:, target] - before[:, target]).mean())
        gain_random = float((after_random[:, target] - before[:, target]).mean())
        assert gain > 0.15 and gain > gain_random + 0.1
        # the other head moves less per unit of target change than along a random step of the same size
        other = float(0.5 * (after[:, blue] - before[:, blue]).abs().sum(1).mean())
        other_random = float(0.5 * (after_random[:, blue] - before[:, blue]).abs().sum(1).mean())
        assert other / gain < other_random / max(gain_random, 1e-3)


def test_sequential_edits_keep_earlier_changes_and_w_plus(trained, G):
    model, flow, _ = trained
    ws = sample_prior(G, 4, seed=21)
    ws = ws + 0.1 * torch.randn(ws.shape, generator=torch.Generator().manual_seed(0))  # a W+ code
    edited, attributes = S.styleflow_edit(flow, ws, ["red=high", "blue=0"], G=G, classifier=model.classifier)
    assert len(edited) == 2 and edited[0].shape == ws.shape
    assert (attributes[1][:, 0:3].argmax(1) == 2).all() and (attributes[1][:, 3:6].argmax(1) == 0).all()
    assert not torch.allclose(edited[0], edited[1])


def test_bad_attribute_requests_name_the_valid_ones(trained, G):
    _, flow, _ = trained
    w = sample_prior(G, 2, seed=1)[:, 0]
    a = torch.full((2, 6), 1 / 3)
    with pytest.raises(S.StyleFlowError, match="heads are: red, blue"):
        S.styleflow_edit(flow, w, ["green=high"], attributes=a)
    with pytest.raises(S.StyleFlowError, match="valid values: low, mid, high"):
        S.styleflow_edit(flow, w, ["red=purple"], attributes=a)
    with pytest.raises(S.StyleFlowError, match="HEAD=VALUE"):
        S.styleflow_edit(flow, w, ["red"], attributes=a)
    assert S.parse_attribute_change("red=2", flow.heads) == ("red", 2)
    assert S.parse_attribute_change("red=mid", flow.heads) == ("red", 1)
    with pytest.raises(ValueError, match=r"shape \[N, 32\]"):
        flow.to_gaussian(torch.zeros(2, 5), a)


def test_save_load_roundtrip_and_bad_files(trained, G, tmp_path):
    model, flow, _ = trained
    S.save_styleflow(tmp_path / "flow", flow, {"model": "tiny"})
    loaded = S.load_styleflow(tmp_path / "flow")
    assert loaded.heads == flow.heads and loaded.card["model"] == "tiny"
    w = sample_prior(G, 4, seed=2)[:, 0]
    a = S.label_latents(G, model.classifier, flow.heads, w)
    assert torch.allclose(loaded.to_gaussian(w, a), flow.to_gaussian(w, a), atol=1e-6)
    (tmp_path / "flow" / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(S.StyleFlowError, match="sha256"):
        S.load_styleflow(tmp_path / "flow")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "card.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ganinv.errors.GanInvError, match="not a ganinv StyleFlow"):
        S.load_styleflow(tmp_path / "other")


# ---------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, G):
    from ganinv.models.checkpoints import save_native
    from ganinv.models.classifier import Classifier, save_classifier
    folder = tmp_path_factory.mktemp("tiny-flow-model")
    save_native(folder, G, None, card={"name": "tiny"})
    torch.manual_seed(1)
    heads = {"shade": ["dark", "mid", "light"], "tint": ["a", "b"], "many": list("abcdefghijklmnopq")}
    classifier = Classifier(3, 16, heads, base_width=4, max_width=8, feature_dim=8).eval()
    save_classifier(folder / "classifier", classifier)
    return folder


def _invoke(args):
    from click.testing import CliRunner

    from ganinv.cli import main
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_train_flow_and_attribute_edit(model_dir, G, tmp_path):
    flow_dir = tmp_path / "flow"
    r = _invoke(["train-flow", "--model", model_dir, "--outdir", flow_dir, "--steps", 3, "--num-samples", 64,
                 "--batch-size", 32, "--hidden", 16, "--ode-steps", 2, "--quiet"])
    assert r.exit_code == 0, r.output
    card = json.loads((flow_dir / "card.json").read_text())
    assert card["heads"].keys() == {"shade", "tint"}  # the 17-class head is left out by default
    assert card["model"] == "tiny" and card["training"]["steps"] == 3
    out = tmp_path / "edit"
    r = _invoke(["edit", "7", "--model", model_dir, "--attribute", "shade=light", "--attribute", "tint=0",
                 "--flow", flow_dir, "--outdir", out])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "edit.json").read_text())
    assert report["method"] == "styleflow" and len(report["frames"]) == 3
    assert [a["shade"] for a in report["attributes_after_each"]] == ["light", "light"]
    assert report["attributes_after_each"][1]["tint"] == "a"
    with np.load(out / "latent.npz") as data:
        assert data["w"].shape[0] == 1 and data["w"].shape[2] == 32
    assert (out / "strip.png").is_file() and (out / "edit.gif").is_file()
    # the flow in the model folder is found without --flow
    r = _invoke(["train-flow", "--model", model_dir, "--outdir", model_dir / "styleflow", "--steps", 1,
                 "--num-samples", 32, "--hidden", 8, "--ode-steps", 1, "--quiet"])
    assert r.exit_code == 0, r.output
    r = _invoke(["edit", "3", "--model", model_dir, "--attribute", "tint=b", "--outdir", tmp_path / "e2", "--quiet"])
    assert r.exit_code == 0, r.output
    # a saved W+ result with a tuned generator: frame 0 is its own render, the edit renders through it too
    result = tiny_result(G, tuned=True)
    result.save(tmp_path / "result")
    r = _invoke(["edit", tmp_path / "result", "--model", model_dir, "--attribute", "shade=dark", "--flow", flow_dir,
                 "--outdir", tmp_path / "e3", "--quiet"])
    assert r.exit_code == 0, r.output
    from PIL import Image

    from ganinv.data.io import to_uint8
    loaded = ganinv.InversionResult.load(tmp_path / "result", model=str(model_dir))
    with Image.open(tmp_path / "e3" / "frames" / "frame_000.png") as im:
        first = np.asarray(im.convert("RGB")).astype(int)
    assert np.abs(first - to_uint8(loaded.render())[0].astype(int)).max() <= 1
    with np.load(tmp_path / "e3" / "latent.npz") as data:
        edited = torch.from_numpy(data["w"])
    assert edited.shape == loaded.ws.shape and not torch.allclose(edited, loaded.ws)


def test_cli_bad_attribute_is_one_line(model_dir, tmp_path):
    flow_dir = tmp_path / "flow"
    r = _invoke(["train-flow", "--model", model_dir, "--outdir", flow_dir, "--steps", 1, "--num-samples", 32,
                 "--hidden", 8, "--ode-steps", 1, "--quiet"])
    assert r.exit_code == 0, r.output
    for bad, message in (("colour=1", "heads are: shade, tint"), ("shade=9", "valid values: dark, mid, light"),
                         ("shade", "HEAD=VALUE")):
        r = _invoke(["edit", "3", "--model", model_dir, "--attribute", bad, "--flow", flow_dir,
                     "--outdir", tmp_path / "bad", "--overwrite"])
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1
    r = _invoke(["edit", "3", "--model", model_dir, "--outdir", tmp_path / "bad", "--overwrite"])
    assert r.exit_code != 0 and "--direction" in r.output
    r = _invoke(["edit", "3", "--model", model_dir, "--attribute", "tint=a", "--strength", "2", "--flow", flow_dir,
                 "--outdir", tmp_path / "bad", "--overwrite"])
    assert r.exit_code != 0 and "--strength goes with --direction" in r.output
    r = _invoke(["train-flow", "--model", model_dir, "--outdir", flow_dir, "--steps", 1, "--head", "nose",
                 "--overwrite"])
    assert r.exit_code != 0 and "unknown classifier head 'nose'" in r.output
