"""Inversion methods on tiny random generators: recovery, determinism, safety, save/load, CLI."""
import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ganinv.cli import main
from ganinv.errors import GanInvError
from ganinv.inversion import METHODS, InversionResult, MethodOutput, MethodSpec, Setting, StepInfo, invert
from ganinv.models.encoder import Encoder
from ganinv.models.checkpoints import save_native
from ganinv.models.registry import load_model
from conftest import tiny_discriminator, tiny_generator

FAST = {
    "optimize": dict(num_steps=40),
    "pti": dict(pivot_steps=20, num_steps=20),
    "clone": dict(h_steps=20, num_steps=40),
}


def _fast(name: str) -> dict:
    """Few steps for any registered method (hand-tuned ones above, else from its step settings)."""
    if name in FAST:
        return dict(FAST[name])
    spec = METHODS[name]
    out = {}
    if spec.step_setting is not None:
        out[spec.step_setting] = 20
    if spec.first_stage_step_setting is not None:
        out[spec.first_stage_step_setting] = 10
    return out


def _quick(name: str) -> dict:
    """Two steps of every stage: for tests of the plumbing, not of the quality."""
    spec = METHODS[name]
    return {key: 2 for key in (spec.step_setting, spec.first_stage_step_setting) if key is not None}


def _for_method(model, name: str):
    """The model bundle a method can run on: with an (untrained, seeded) encoder when it needs one."""
    if not METHODS[name].needs_encoder:
        return model
    torch.manual_seed(11)
    return dataclasses.replace(model, encoder=Encoder.for_generator(model.G).eval())


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    G = tiny_generator(resolution=16)
    D = tiny_discriminator(resolution=16)
    save_native(folder, G, D, card={"name": "tiny16"})
    bundle = load_model(folder)
    torch.manual_seed(5)
    bundle.real_images = bundle.G(torch.randn(8, 32)).detach().clamp(-1, 1)
    return bundle


def _generated_target(G, seed=1):
    with torch.no_grad():
        w = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed)), None,
                      truncation_psi=0.7)
        return G.synthesis(w).clamp(-1, 1)


def _foreign_target(resolution=16):
    """A smooth image with a sharp square: unlikely to be exactly on a random generator's manifold."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, resolution), torch.linspace(-1, 1, resolution), indexing="ij")
    img = torch.stack([xx, yy, -xx * yy]) * 0.8
    img[:, 4:9, 5:11] = torch.tensor([0.9, -0.9, 0.5]).reshape(3, 1, 1)
    return img.unsqueeze(0)


def test_registry_lists_methods_with_defaults():
    for name, spec in METHODS.items():
        assert spec.name == name and callable(spec.run) and spec.summary and spec.paper
        assert not spec.has_steps or spec.defaults[spec.step_setting] > 0
    with pytest.raises(ValueError, match="unknown method"):
        invert(tiny_generator(), torch.zeros(1, 3, 16, 16), "nope")
    with pytest.raises(ValueError, match="unknown settings"):
        invert(tiny_generator(), torch.zeros(1, 3, 16, 16), "optimize", num_stepz=3)
    with pytest.raises(ValueError, match="target must have shape"):
        invert(tiny_generator(), torch.zeros(1, 3, 8, 8), "optimize")


def test_optimize_wplus_recovers_generated_image(model):
    target = _generated_target(model.G)
    result = invert(model, target, "optimize", num_steps=150, space="w+", seed=0)
    assert result.metrics["psnr"][0] > 30, result.metrics
    assert result.ws.shape == (1, model.G.num_ws, model.G.w_dim)
    assert result.noise is not None and "psnr_const_noise" in result.metrics


@pytest.mark.parametrize("space", ["z", "w", "w+"])
def test_optimize_spaces_lower_the_loss(model, space):
    target = _generated_target(model.G, seed=2)
    result = invert(model, target, "optimize", num_steps=30, space=space, optimize_noise=False)
    losses = [h["loss"] for h in result.history]
    assert min(losses[-5:]) < losses[0]
    if space == "w":
        assert torch.allclose(result.ws, result.ws[:, :1].expand_as(result.ws))
    if space == "z":
        assert result.z is not None


def _state_of(module):
    """Everything of a network inversion must leave alone: tensors, flags, modes, gradients."""
    return ({k: v.detach().clone() for k, v in module.state_dict().items()},
            {k: p.requires_grad for k, p in module.named_parameters()},
            {k: m.training for k, m in module.named_modules()},
            {k: p.grad for k, p in module.named_parameters()})


def _assert_same_state(before, after, what):
    tensors, flags, modes, grads = before
    tensors2, flags2, modes2, grads2 = after
    assert tensors.keys() == tensors2.keys()
    for k in tensors:
        assert torch.equal(tensors[k], tensors2[k]), f"caller's {what} changed at {k}"
    assert flags == flags2, f"caller's {what} requires_grad flags changed"
    assert modes == modes2, f"caller's {what} training modes changed"
    assert all(g is None for g in grads2.values()), f"caller's {what} got gradients"


@pytest.mark.parametrize("method", list(METHODS))
def test_methods_lower_loss_leave_caller_untouched_and_are_deterministic(model, method):
    spec = METHODS[method]
    bundle = _for_method(model, method)
    # The caller's networks in an unusual state: training mode, some parameters frozen. Inversion must
    # neither change their weights, buffers (w_avg, noise) and flags nor leave gradients on them.
    G, D = copy.deepcopy(bundle.G).train(), copy.deepcopy(bundle.D).train()
    G.mapping.fc0.weight.requires_grad_(False)
    D.requires_grad_(False)
    bundle = dataclasses.replace(bundle, G=G, D=D)
    networks = {"G": G, "D": D, **({"encoder": bundle.encoder} if bundle.encoder is not None else {})}
    before = {name: _state_of(net) for name, net in networks.items()}
    target = _foreign_target()
    a = invert(bundle, target, method, seed=3, **_fast(method))
    b = invert(bundle, target, method, seed=3, **_fast(method))
    for name, net in networks.items():
        _assert_same_state(before[name], _state_of(net), name)
    assert torch.equal(a.reconstruction, b.reconstruction) and torch.equal(a.ws, b.ws)
    # The reconstruction the method handed back is the image of its result.
    assert torch.allclose(a.reconstruction, a.render(), atol=1e-5)
    if spec.has_steps:
        first = next(h for h in a.history if "psnr" in h)["psnr"]
        assert a.metrics["psnr"][0] > first
    assert (a.noise is not None) <= spec.optimizes_noise
    if spec.tunes_generator:
        assert a.G_tuned is not None
        loc = a.extras["locality"]
        assert loc["pivot_mean_abs_change"] > 0
    else:
        assert a.G_tuned is None


@pytest.mark.parametrize("method", list(METHODS))
def test_metrics_cheap_by_default_more_on_request(model, method):
    bundle = _for_method(model, method)
    target = _foreign_target()
    plain = invert(bundle, target, method, seed=0, **_quick(method))
    expected = {"mse", "psnr"} | ({"psnr_const_noise"} if plain.noise is not None else set())
    assert set(plain.metrics) == expected
    full = invert(bundle, target, method, seed=0, metrics=("ssim", "psnr_const_noise"), **_quick(method))
    assert set(full.metrics) == {"mse", "psnr", "ssim", "psnr_const_noise"}
    assert full.metrics["psnr"] == plain.metrics["psnr"] and 0 < full.metrics["ssim"][0] <= 1
    with pytest.raises(ValueError, match="unknown metrics"):
        invert(bundle, target, method, metrics=("sharpness",), **_quick(method))


def test_settings_are_typed_and_checked_with_one_clear_line(model):
    target = _foreign_target()
    for settings, message in [(dict(num_steps="ten"), "optimize setting num_steps must be an integer"),
                              (dict(num_steps=True), "num_steps must be an integer"),
                              (dict(num_steps=0), "num_steps must be >= 1"),
                              (dict(space="q"), "space must be one of z, w, w\\+"),
                              (dict(optimize_noise="yes"), "optimize_noise must be true or false"),
                              (dict(learning_rate=-1.0), "learning_rate must be >= 0")]:
        with pytest.raises(ValueError, match=message) as info:
            invert(model, target, "optimize", **settings)
        assert "\n" not in str(info.value)
    # Lossless conversions are accepted: an integral float as a step count, an int as a rate.
    result = invert(model, target, "optimize", num_steps=3.0, learning_rate=1, optimize_noise=False)
    assert result.settings["num_steps"] == 3 and isinstance(result.settings["num_steps"], int)
    with pytest.raises(ValueError, match="clone setting preset must be one of fast, paper"):
        invert(model, target, "clone", preset="slow")
    with pytest.raises(ValueError, match="unknown settings for optimize: preset"):
        invert(model, target, "optimize", preset="paper")
    with pytest.raises(ValueError, match="clone setting band_weights must be a list of numbers"):
        invert(model, target, "clone", band_weights=["a"])
    for name, spec in METHODS.items():
        assert set(spec.defaults) == {s.name for s in spec.settings}
        for setting in spec.settings:  # every default passes its own check
            assert setting.check(setting.default, name) == (tuple(setting.default) if setting.type is list
                                                            else setting.default)
        for key in (spec.step_setting, spec.first_stage_step_setting):
            assert key is None or spec.setting(key).type is int
        if spec.presets:
            assert set(spec.setting("preset").choices) == set(spec.presets)


def _toy_run(G, target, *, seed=0, callback=None, shift=0.0, num_steps=2, **_):
    ws = G.mapping.w_avg.reshape(1, 1, -1).repeat(target.shape[0], G.num_ws, 1) + shift
    for step in range(num_steps):
        if callback is not None:
            callback(StepInfo(step=step, num_steps=num_steps, loss=1.0 / (step + 1), psnr=10.0, stage="toy"))
    return MethodOutput(ws=ws, space="w+", stop_reason="num_steps", extras={"toy": True})


TOY = MethodSpec("toy", _toy_run, (Setting("num_steps", 2, int, "toy steps", min=1),
                                   Setting("shift", 0.0, float, "offset added to w_avg", min=-1.0, max=1.0)),
                 "a toy method that returns w_avg", paper="none", quick_steps=5)


def test_a_registered_method_is_offered_everywhere(model, monkeypatch, tmp_path):
    from ganinv.app.session import available_methods, inversion_settings, step_controls
    monkeypatch.setitem(METHODS, "toy", TOY)
    target = _foreign_target()
    result = invert(model, target, "toy", shift=0.5)
    assert result.method == "toy" and result.settings["shift"] == 0.5 and result.extras["toy"]
    assert torch.allclose(result.ws, model.G.mapping.w_avg + 0.5)
    assert torch.allclose(result.reconstruction, result.render(), atol=1e-5)
    with pytest.raises(ValueError, match="toy setting shift must be a number"):
        invert(model, target, "toy", shift="left")
    with pytest.raises(ValueError, match="toy setting shift must be <= 1"):
        invert(model, target, "toy", shift=2.0)
    # The app offers it with its step control; the CLI lists it with its typed settings and runs it.
    assert "toy" in available_methods(model)
    assert step_controls("toy") == (2, None) and inversion_settings("toy", 4) == {"num_steps": 4}
    runner = CliRunner()
    res = runner.invoke(main, ["invert", "--help"])
    text = " ".join(res.output.split())
    assert "toy: a toy method that returns w_avg" in text and "shift=0.0 (-1..1)" in text
    photo = tmp_path / "photo.png"
    arr = ((target[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    Image.fromarray(arr).save(photo)
    common = ["invert", str(photo), "--model", str(model.folder), "--method", "toy", "--quiet"]
    res = runner.invoke(main, common + ["--set", "shift=0.25", "--outdir", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a" / "photo" / "latent.npz").is_file()
    res = runner.invoke(main, common + ["--set", "shift=\"up\"", "--outdir", str(tmp_path / "b")])
    assert res.exit_code != 0 and "toy setting shift must be a number" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(main, common + ["--steps", "0", "--outdir", str(tmp_path / "c")])
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_progress_shows_a_loss_only_for_methods_that_have_one(model, tmp_path):
    from ganinv.models.encoder import save_encoder
    from ganinv.models.checkpoints import save_native as save
    assert StepInfo(step=0, num_steps=2, loss=None, psnr=21.5).progress_fields() == {"psnr": "21.50"}
    assert StepInfo(step=0, num_steps=2, loss=0.5, psnr=None).progress_fields() == {"loss": "0.5000"}
    bundle = _for_method(model, "encoder")
    seen = []
    invert(bundle, _foreign_target(), "encoder", callback=seen.append)
    assert [info.step for info in seen] == [0, 1] and all(info.loss is None for info in seen)
    assert all(math.isfinite(info.psnr) for info in seen)
    # The web app's progress line likewise.
    from ganinv.app.session import InversionProgress
    line = InversionProgress(step=1, num_steps=2, loss=None, psnr=seen[-1].psnr, stage="encoder", image=None,
                             seconds=0.1).text()
    assert "PSNR" in line and "loss" not in line and "nan" not in line
    assert "loss 0.25" in InversionProgress(step=1, num_steps=2, loss=0.25, psnr=None, stage="", image=None,
                                            seconds=0.1).text()
    # The CLI's progress bar of the encoder shows its PSNR and no made-up loss.
    folder = tmp_path / "with_encoder"
    save(folder, bundle.G, bundle.D, card={"name": "tiny16-encoder"})
    save_encoder(folder / "encoder", bundle.encoder, {"name": "tiny-encoder"})
    photo = tmp_path / "photo.png"
    arr = ((_foreign_target()[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    Image.fromarray(arr).save(photo)
    res = CliRunner().invoke(main, ["invert", str(photo), "--model", str(folder), "--method", "encoder",
                                    "--outdir", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "psnr=" in res.output and "loss=" not in res.output and "nan" not in res.output


def test_tuning_methods_beat_optimize_on_a_foreign_target(model):
    target = _foreign_target()
    opt = invert(model, target, "optimize", num_steps=60, seed=0, optimize_noise=False)
    pti = invert(model, target, "pti", pivot_steps=60, num_steps=60, seed=0)
    clone = invert(model, target, "clone", h_steps=60, num_steps=150, seed=0)
    assert pti.metrics["psnr"][0] > opt.metrics["psnr"][0] + 1
    assert clone.metrics["psnr"][0] > opt.metrics["psnr"][0] + 1
    assert clone.extras["global_mode"] == "gan"


def test_clone_locality_term_keeps_prior_samples_closer(model):
    target = _foreign_target()
    # gate=False: the locality term acts on G+ itself (the gate would hide the difference).
    common = dict(h_steps=20, num_steps=60, global_every=1, seed=0, gate=False)
    plain = invert(model, target, "clone", **common)
    local = invert(model, target, "clone", locality_weight=10.0, **common)
    assert local.extras["global_mode"] == "gan" and local.settings["locality_weight"] == 10.0
    assert any("locality" in h for h in local.history) and not any("locality" in h for h in plain.history)
    change = {name: r.extras["locality"]["prior_mean_abs_change"] for name, r in (("plain", plain), ("local", local))}
    assert change["local"] < 0.8 * change["plain"], change
    frozen = invert(model, target, "clone", h_steps=5, num_steps=10, frozen_params=("const", "affine"), seed=0,
                    gate=False)
    for name, p in frozen.G_tuned.synthesis.named_parameters():
        original = dict(model.G.synthesis.named_parameters())[name]
        same = torch.equal(p, original)
        assert same == ("const" in name or "affine" in name), name
    # The default leaves the 4 and 8 px blocks as trained (edits act there) and tunes the rest.
    default = invert(model, target, "clone", h_steps=5, num_steps=10, seed=0, gate=False)
    assert tuple(default.settings["frozen_params"]) == ("b4.", "b8.")
    for name, p in default.G_tuned.synthesis.named_parameters():
        original = dict(model.G.synthesis.named_parameters())[name]
        assert torch.equal(p, original) == name.startswith(("b4.", "b8.")), name
    paper = invert(model, target, "clone", h_steps=5, num_steps=3, seed=0, preset="paper")
    # The result records the settings the preset really used, not the fast defaults.
    assert tuple(paper.settings["frozen_params"]) == () and paper.settings["p"] == 1 / 8
    assert paper.settings["adv_lambda"] == 10.0 and paper.settings["preset"] == "paper"
    with pytest.raises(ValueError, match="leave no synthesis weight"):
        invert(model, target, "clone", h_steps=5, num_steps=3, seed=0, frozen_params=("b",))
    with pytest.raises(ValueError, match="frozen_params"):
        invert(model, target, "clone", h_steps=5, num_steps=3, seed=0, frozen_params="b4.")


def test_clone_adv_every_spaces_the_local_adversarial_pair(model):
    target = _foreign_target()
    common = dict(h_steps=5, num_steps=9, p=1.0, global_every=100, seed=0)
    every = invert(model, target, "clone", adv_every=1, **common)
    spaced = invert(model, target, "clone", adv_every=3, **common)
    assert [h["step"] for h in every.history if "adv_local" in h] == list(range(9))
    assert [h["step"] for h in spaced.history if "adv_local" in h] == [0, 3, 6]
    # D is updated only on steps with a local adversarial pair or a global step (step 0 here).
    assert [h["step"] for h in spaced.history if "d_loss" in h] == [0, 3, 6]
    assert spaced.settings["adv_every"] == 3 and not torch.equal(spaced.reconstruction, every.reconstruction)
    # The terms kept on the device during the run come back as plain numbers, finite, in every record.
    terms = [h[key] for h in every.history for key in ("adv_local", "d_loss", "global_g", "psnr") if key in h]
    assert terms and all(type(value) is float and math.isfinite(value) for value in terms)
    with pytest.raises(ValueError, match="adv_every"):
        invert(model, target, "clone", adv_every=0, **common)
    with pytest.raises(ValueError, match="reconstruction objective"):
        invert(model, target, "clone", laplacian_weight=0.0, mse_weight=0.0, band_weights=(), **common)


def test_clone_learning_rate_falls_with_the_psnr_reached(model):
    target = _foreign_target()
    common = dict(h_steps=5, num_steps=30, p=1.0, seed=0, gate=False)
    constant = invert(model, target, "clone", **common)
    decayed = invert(model, target, "clone", lr_decay_from=0.0, lr_halving_db=3.0, **common)
    assert not any("learning_rate_scale" in h for h in constant.history)
    clone_steps = [h for h in decayed.history if h.get("stage") == "clone"]
    scales = [h["learning_rate_scale"] for h in clone_steps if "learning_rate_scale" in h]
    best = [max(h["psnr"] for h in clone_steps[:i + 1]) for i in range(len(clone_steps))]
    assert scales and scales == sorted(scales, reverse=True)
    # Halving per 3 dB reached above lr_decay_from (0 dB): the scale follows the best PSNR so far.
    last = [h for h in clone_steps if "learning_rate_scale" in h][-1]
    assert abs(last["learning_rate_scale"] - 0.5 ** (best[clone_steps.index(last)] / 3.0)) < 1e-9
    assert not torch.equal(decayed.reconstruction, constant.reconstruction)


def test_clone_gan_terms_stop_at_gan_until_psnr(model):
    target = _foreign_target()
    common = dict(h_steps=5, num_steps=20, p=1.0, seed=0, adv_every=1, global_every=1)
    always = invert(model, target, "clone", gan_until_psnr=None, **common)
    assert all("global_g" in h and "adv_local" in h for h in always.history if h.get("stage") == "clone")
    clone_steps = [h for h in always.history if h.get("stage") == "clone"]
    # A threshold the run passes part-way: the GAN terms run up to the step that reaches it, none after.
    threshold = sorted(h["psnr"] for h in clone_steps)[len(clone_steps) // 2]
    assert invert(model, target, "clone", h_steps=5, num_steps=1).settings["gan_until_psnr"] == 35.0
    assert invert(model, target, "clone", h_steps=5, num_steps=1, preset="paper").settings["gan_until_psnr"] is None
    until = invert(model, target, "clone", gan_until_psnr=threshold, **common)
    steps = [h for h in until.history if h.get("stage") == "clone"]
    first = next(i for i, h in enumerate(steps) if h["psnr"] >= threshold)
    assert all("global_g" in h for h in steps[:first + 1])
    assert not any("global_g" in h or "adv_local" in h or "d_loss" in h for h in steps[first + 1:])
    assert first + 1 < len(steps)


def _nan_after(fn, calls):
    """Wrap a loss so that it returns NaN from the given call on (a diverging optimization)."""
    count = {"n": 0}

    def wrapped(*args, **kwargs):
        count["n"] += 1
        out = fn(*args, **kwargs)
        if count["n"] >= calls:
            if isinstance(out, tuple):
                return (out[0] * float("nan"),) + tuple(out[1:])
            return out * float("nan")
        return out
    return wrapped


def test_nan_is_survived(model, monkeypatch):
    import ganinv.inversion.clone as clone_module
    import ganinv.inversion.optimize as optimize_module
    target = _generated_target(model.G)
    build = optimize_module.build_objective

    def poisoned_objective(*args, **kwargs):
        loss = build(*args, **kwargs)
        loss.forward = _nan_after(loss.forward, 10)
        return loss

    monkeypatch.setattr(optimize_module, "build_objective", poisoned_objective)
    result = invert(model, target, "optimize", num_steps=30, seed=0)
    assert "non-finite" in result.stop_reason and "step 9" in result.stop_reason
    assert torch.isfinite(result.ws).all() and torch.isfinite(result.reconstruction).all()
    assert len(result.history) == 9
    monkeypatch.undo()
    monkeypatch.setattr(clone_module, "laplacian_residual_terms", _nan_after(clone_module.laplacian_residual_terms, 5))
    clone = invert(model, target, "clone", h_steps=5, num_steps=40, p=1.0, seed=0)
    assert "non-finite" in clone.stop_reason
    assert torch.isfinite(clone.reconstruction).all()
    for p in clone.G_tuned.parameters():
        assert torch.isfinite(p).all()


@pytest.mark.parametrize("mse_weight", [0.0, 1.0])
def test_clone_returns_the_best_generator_it_saw(model, mse_weight):
    """With a step size that overshoots, the reconstruction objective goes up and down; the result must be
    the generator of the best step (kept in buffers that later optimizer steps must not alias), not the
    last one. The objective is what G is tuned on: L_recon alone (paper), or with the MSE term (default)."""
    from ganinv.losses import laplacian_pyramid_loss
    target = _foreign_target()
    result = invert(model, target, "clone", h_steps=5, num_steps=12, p=1.0, adv_lambda=0.0, global_every=100,
                    learning_rate=0.3, mse_weight=mse_weight, laplacian_weight=0.1, band_weights=(), seed=0,
                    frozen_params=())  # every block tuned: the overshoot this test needs
    objectives = [h["objective"] for h in result.history if h.get("stage") == "clone" and "objective" in h]
    assert result.stop_reason.startswith("num_steps")
    assert objectives[-1] > min(objectives) * 1.05  # the run did get worse after its best step
    with torch.no_grad():
        image = result.G_tuned.synthesis(result.ws, noise_mode="const")
        final = (0.1 * laplacian_pyramid_loss(image, target) + mse_weight * (image - target).square().mean()).item()
    assert final == pytest.approx(min(objectives), rel=1e-4)


def test_clone_objective_includes_the_laplacian_band_terms(model):
    """The default objective is MSE plus the Laplacian-band MSE (fine bands weighted up); the generator kept
    is the best on that sum, recomputed here from the result."""
    from ganinv.losses import laplacian_band_mse, laplacian_pyramid
    target = _foreign_target()
    common = dict(h_steps=5, num_steps=8, p=1.0, adv_lambda=0.0, global_every=100, seed=0)
    result = invert(model, target, "clone", **common)
    weights = result.settings["band_weights"]
    assert len(weights) >= 2 and weights[0] > weights[1] > 0
    weights = weights[:len(laplacian_pyramid(target))]  # a small image's pyramid has fewer levels
    objectives = [h["objective"] for h in result.history if h.get("stage") == "clone" and "objective" in h]
    with torch.no_grad():
        image = result.G_tuned.synthesis(result.ws, noise_mode="const")
        mse = (image - target).square().mean().item()
        band = laplacian_band_mse(image, target, weights).item()
    assert band > 0.1 * mse
    assert mse + band == pytest.approx(min(objectives), rel=1e-4)
    plain = invert(model, target, "clone", band_weights=(), **common)
    assert not torch.equal(plain.reconstruction, result.reconstruction)
    with pytest.raises(ValueError, match="band_weights"):
        invert(model, target, "clone", band_weights=3, **common)
    with pytest.raises(ValueError, match="reconstruction objective"):
        invert(model, target, "clone", band_weights=(1.0, -1.0), **common)


def test_clone_keeps_the_best_step_of_its_objective_not_of_l_recon_alone(model, monkeypatch):
    """With the default MSE term, the kept generator is the one with the lowest tuned objective. A stand-in
    L_recon that falls every step (and carries no gradient) makes the last step best on L_recon alone,
    while an overshooting step size makes the MSE, and so the objective, best earlier."""
    import ganinv.inversion.clone as clone_module
    calls = []

    real_terms = clone_module.laplacian_residual_terms

    def falling_recon(image, target, weights=(), reduction="mean"):
        calls.append(1)
        band_mse = real_terms(image, target, weights, reduction=reduction)[1]
        return torch.full([image.shape[0]], 1.0 - 1e-4 * len(calls)), band_mse

    monkeypatch.setattr(clone_module, "laplacian_residual_terms", falling_recon)
    target = _foreign_target()
    result = invert(model, target, "clone", h_steps=5, num_steps=12, p=1.0, adv_lambda=0.0, global_every=100,
                    learning_rate=0.3, laplacian_weight=0.1, band_weights=(), seed=0)
    steps = [h for h in result.history if h.get("stage") == "clone" and "objective" in h]
    mses = [h["objective"] - 0.1 * h["recon"] for h in steps]
    best = min(range(len(steps)), key=lambda i: steps[i]["objective"])
    assert best < len(steps) - 1  # L_recon alone would have kept the last step
    with torch.no_grad():
        final_mse = (result.G_tuned.synthesis(result.ws, noise_mode="const") - target).square().mean().item()
    assert final_mse == pytest.approx(mses[best], rel=1e-3)
    assert final_mse < mses[-1]


def test_callback_can_stop(model):
    seen = []

    def cb(info):
        seen.append(info.step)
        return info.step >= 4

    result = invert(model, _generated_target(model.G), "optimize", num_steps=100, callback=cb)
    assert max(seen) == 4 and "callback" in result.stop_reason


@pytest.mark.parametrize("method", list(METHODS))
def test_save_and_load_roundtrip(model, tmp_path, method):
    model = _for_method(model, method)
    target = torch.cat([_foreign_target(), _generated_target(model.G)])
    result = invert(model, target, method, seed=0, **_quick(method))
    assert len(result) == 2
    folders = result.save(tmp_path / "res")
    assert len(folders) == 2
    for i, folder in enumerate(folders):
        names = {p.name for p in folder.iterdir()}
        assert {"latent.npz", "report.json", "target.png", "reconstruction.png"} <= names
        with np.load(folder / "latent.npz") as data:
            assert data["w"].shape == (1, model.G.num_ws, model.G.w_dim)
        loaded = InversionResult.load(folder, model=model)
        assert (loaded.reconstruction - result[i].reconstruction).abs().max() < 1e-5
        assert (loaded.G_tuned is not None) == METHODS[method].tunes_generator
    # A zip of one result loads too.
    zip_path = tmp_path / "one.zip"
    zip_path.write_bytes(result[0].to_zip())
    loaded = InversionResult.load(zip_path, model=model)
    assert (loaded.reconstruction - result[0].reconstruction).abs().max() < 1e-5


def test_cli_invert_skips_bad_files(model, tmp_path):
    good = tmp_path / "good.png"
    arr = ((_foreign_target()[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    Image.fromarray(arr).resize((40, 30)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    runner = CliRunner()
    res = runner.invoke(main, ["invert", str(bad), str(good), "--model", str(model.folder), "--method", "optimize",
                               "--steps", "5", "--outdir", str(tmp_path / "out"), "--quiet"])
    assert res.exit_code == 1, res.output
    assert "bad.png" in res.output and "Traceback" not in res.output
    assert (tmp_path / "out" / "good" / "latent.npz").is_file()
    assert not (tmp_path / "out" / "bad").exists()
    res = runner.invoke(main, ["invert", "--help"])
    assert all(f"{name}: {spec.summary}" in " ".join(res.output.split()) for name, spec in METHODS.items())


@pytest.mark.parametrize("stage, error, said", [
    ("read", "missing", "{input}: skipped: {input}: no such file"),
    ("read", PermissionError(13, "Permission denied"), "{input}: skipped: cannot read (Permission denied)"),
    ("save", GanInvError("a result refuses to be written"), "{input}: not saved: a result refuses to be written"),
    ("save", PermissionError(13, "Permission denied"), "{input}: not saved: {out}: Permission denied"),
])
def test_cli_invert_says_each_failure_in_one_line_and_goes_on(model, tmp_path, monkeypatch, stage, error, said):
    """An input that cannot be read is skipped, a result that cannot be written is not saved: either way one
    stderr line naming the input, the other inputs go on, and the exit code is 1."""
    import ganinv.cli.invert as cli_invert

    first, second = tmp_path / "first.png", tmp_path / "second.png"
    arr = ((_foreign_target()[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    for path in (first, second):
        Image.fromarray(arr).save(path)
    failing = first
    if error == "missing":
        failing = tmp_path / "missing.png"
    elif stage == "read":
        real_sha256 = cli_invert.file_sha256
        monkeypatch.setattr(cli_invert, "file_sha256",
                            lambda path: (_ for _ in ()).throw(error) if path == first else real_sha256(path))
    else:
        real_save = InversionResult.save

        def save(result, folder, *args, **kwargs):
            if result.input["path"] == str(first):
                raise error
            return real_save(result, folder, *args, **kwargs)
        monkeypatch.setattr(InversionResult, "save", save)
    outdir = tmp_path / "out"
    res = CliRunner().invoke(main, ["invert", str(failing), str(second), "--model", str(model.folder),
                                    "--method", "optimize", "--steps", "2", "--outdir", str(outdir), "--quiet"])
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines == [said.format(input=failing, out=outdir / failing.stem)]
    assert (outdir / "second" / "latent.npz").is_file()


def test_cli_demo_writes_picture_and_report(model, tmp_path):
    import json
    photo = tmp_path / "photo.png"
    arr = ((_foreign_target()[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    Image.fromarray(arr).resize((48, 40)).save(photo)
    out = tmp_path / "demo"
    runner = CliRunner()
    args = ["demo", "--model", str(model.folder), "--image", str(photo), "--methods", "optimize,pti",
            "--outdir", str(out), "--quiet"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    entry = report["targets"][0]
    assert entry["target"] == "photo.png" and set(entry["methods"]) == {"optimize", "pti"}
    assert entry["methods"]["pti"]["psnr"] > entry["methods"]["optimize"]["psnr"]
    assert len(report["edits"]) == 2
    with Image.open(out / "demo.png") as sheet:
        # target + 2 methods + 2 edits x 2 strengths, each cell 128 px wide (16 px upscaled 8x)
        assert sheet.width >= 7 * 128
    assert (out / "results" / "photo_png_pti" / "latent.npz").is_file()
    res = runner.invoke(main, args)  # refuses to overwrite
    assert res.exit_code != 0 and "--overwrite" in res.output
    res = runner.invoke(main, args[:-3] + ["--methods", "teleport", "--outdir", str(tmp_path / "x")])
    assert res.exit_code != 0 and "unknown method" in res.output and "Traceback" not in res.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    res = runner.invoke(main, ["demo", "--model", str(model.folder), "--image", str(bad), "--outdir",
                               str(tmp_path / "y"), "--quiet"])
    assert res.exit_code != 0 and "bad.png" in res.output and "Traceback" not in res.output


def test_cli_invert_batch_folder_shards_and_resume(model, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    base = ((_foreign_target()[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    for i in range(3):
        Image.fromarray(np.roll(base, 3 * i, axis=1)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    runner = CliRunner()
    common = ["invert", str(folder), "--model", str(model.folder), "--method", "optimize", "--steps", "3",
              "--outdir", str(out), "--quiet"]
    res = runner.invoke(main, common + ["--shard", "2/2"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["img1"]
    res = runner.invoke(main, common + ["--shard", "1/2"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["img0", "img1", "img2"]
    # A rerun of the whole batch resumes: nothing is redone, nothing counts as a failure.
    stamp = (out / "img1" / "report.json").stat().st_mtime_ns
    res = runner.invoke(main, common + ["--skip-existing"])
    assert res.exit_code == 0, res.output
    assert (out / "img1" / "report.json").stat().st_mtime_ns == stamp
    # An incomplete folder (no report.json) is redone.
    (out / "img2" / "report.json").unlink()
    res = runner.invoke(main, common + ["--skip-existing", "--overwrite"])
    assert res.exit_code != 0 and "contradict" in res.output
    res = runner.invoke(main, common + ["--skip-existing"])
    assert res.exit_code == 0, res.output
    assert (out / "img2" / "report.json").is_file()
    assert (out / "img1" / "report.json").stat().st_mtime_ns == stamp
    for bad in ("3/2", "0/2", "x"):
        res = runner.invoke(main, common + ["--shard", bad])
        assert res.exit_code != 0 and "--shard" in res.output and "Traceback" not in res.output


def test_public_call_benchmark_measures_every_part(model):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "public_call.py"
    spec = importlib.util.spec_from_file_location("public_call_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.measure(_for_method(model, "encoder"), _foreign_target(), "encoder", rounds=3, warmup=1)
    assert set(report["median_ms"]) == {"method", "public", "render"}
    assert all(v > 0 for v in report["median_ms"].values()) and report["public_over_render"] > 0
