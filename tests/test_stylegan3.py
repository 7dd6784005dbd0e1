"""StyleGAN3 ('t', 'r') and the stylegan3 repository's StyleGAN2: parity with the official code on the
fixtures it wrote (tests/fixtures/README.md), the filtered nonlinearity against its definition, the input
transform, storage, and every inversion method and direction finder on a tiny StyleGAN3 generator."""
from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest

from ganinv.errors import GanInvError
import torch
import torch.nn.functional as F

import ganinv.editing as E
from conftest import FIXTURES, tiny_discriminator
from ganinv.app.session import DirectionLibrary, SessionStore, Workspace
from ganinv.inversion import METHODS, InversionResult, invert
from ganinv.models import stylegan2, stylegan3
from ganinv.models.alias_free import design_lowpass_filter, filtered_lrelu
from ganinv.models.checkpoints import (UnsafeCheckpoint, load_checkpoint, load_nvidia_pickle, read_nvidia_pickle,
                                       save_native)
from ganinv.models.encoder import Encoder
from ganinv.models.registry import load_model
from ganinv.models.stylegan3 import make_transform, set_input_transform

PICKLES = {"sg3t_res32": stylegan3.Generator, "sg3r_res16": stylegan3.Generator,
           "sg3repo_sg2_res16": stylegan2.Generator}


@pytest.fixture(scope="module", params=list(PICKLES))
def official(request):
    stem = request.param
    G, D, info = load_nvidia_pickle(FIXTURES / f"{stem}.pkl")
    ref = dict(np.load(FIXTURES / f"{stem}_ref.npz"))
    return stem, G, D, ref


def _c(ref):
    return torch.from_numpy(ref["c"]) if ref["c"].shape[1] else None


def _close(a, b, atol):
    b = torch.from_numpy(b) if isinstance(b, np.ndarray) else b
    assert a.shape == b.shape
    err = float((a - b).abs().max())
    assert err <= atol, f"max abs difference {err} > {atol}"


# ---------------------------------------------------------------------- parity with the official code


def test_official_pickles_give_the_official_outputs(official):
    stem, G, D, ref = official
    assert type(G) is PICKLES[stem] and isinstance(D, stylegan2.Discriminator)
    z, c = torch.from_numpy(ref["z"]), _c(ref)
    with torch.no_grad():
        _close(G.mapping.w_avg, ref["w_avg"], 1e-6)
        _close(G.mapping(z, c), ref["ws"], 1e-5)
        _close(G.mapping(z, c, truncation_psi=0.7), ref["ws_trunc"], 1e-5)
        _close(G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=3), ref["ws_trunc_cutoff"], 1e-5)
        _close(G.synthesis(torch.from_numpy(ref["ws"])), ref["img"], 1e-4)
        _close(G(z, c), ref["img"], 1e-4)
        _close(G(z, c, truncation_psi=0.7), G.synthesis(torch.from_numpy(ref["ws_trunc"])), 1e-6)
        _close(G.synthesis(torch.from_numpy(ref["ws_mix"])), ref["img_mix"], 1e-4)
        _close(D(torch.from_numpy(ref["img"]), c), ref["d_logits"], 1e-4)
        _close(D(torch.from_numpy(ref["img_mix"]), c), ref["d_logits_mix"], 1e-4)


def test_input_transform_as_the_official_visualizer(official):
    stem, G, _, ref = official
    if "transform_matrix" not in ref:
        with pytest.raises(ValueError, match="no StyleGAN3 input layer"):
            set_input_transform(G, rotate=10)
        return
    ws = torch.from_numpy(ref["ws"])
    translate, rotate = ref["transform_translate"].tolist(), float(ref["transform_rotate"])
    assert np.allclose(np.linalg.inv(make_transform(translate, rotate)), ref["transform_matrix"], atol=1e-6)
    try:
        with torch.no_grad():
            set_input_transform(G, translate=translate, rotate=rotate)
            _close(G.synthesis(ws), ref["img_transformed"], 1e-4)
            set_input_transform(G)
            _close(G.synthesis(ws), ref["img"], 1e-4)
            # A quarter-turn of a rotated-by-90 image: the matrix form gives the same as the angle.
            set_input_transform(G, matrix=make_transform((0, 0), 90))
            by_matrix = G.synthesis(ws)
            set_input_transform(G, rotate=90)
            assert torch.equal(G.synthesis(ws), by_matrix)
    finally:
        set_input_transform(G)
    with pytest.raises(ValueError, match="not invertible"):
        set_input_transform(G, matrix=np.zeros((3, 3)))


@pytest.mark.parametrize("stem", ["sg3t_res32", "sg3r_res16"])
def test_designed_filters_equal_the_stored_ones(stem):
    G, _, _ = load_nvidia_pickle(FIXTURES / f"{stem}.pkl")
    fresh = stylegan3.Generator(**G.init_kwargs).state_dict()
    stored = G.state_dict()
    filters = [k for k in stored if k.endswith("_filter")]
    assert filters
    radial = [k for k in filters if stored[k].dim() == 2]
    assert bool(radial) == (stem == "sg3r_res16")  # 'r' has 2-D radial downsampling filters
    for key in filters:
        assert torch.allclose(fresh[key], stored[key], atol=1e-6), key


def test_native_roundtrip_keeps_architecture_and_outputs(tmp_path):
    G, D, _ = load_nvidia_pickle(FIXTURES / "sg3r_res16.pkl")
    save_native(tmp_path / "m", G, D, card={"name": "sg3r"})
    loaded = load_checkpoint(tmp_path / "m")
    assert loaded.card["architecture"] == "stylegan3" and isinstance(loaded.G, stylegan3.Generator)
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    c = torch.eye(G.c_dim)[:2]
    with torch.no_grad():
        assert torch.equal(loaded.G(z, c), G(z, c))
        img = G(z, c)
        assert torch.equal(loaded.D(img, c), D(img, c))


def test_pickle_arrays_are_read_as_data_and_object_arrays_refused(tmp_path):
    # StyleGAN3 layers pickle their sizes as numpy arrays: accepted as inert data, object arrays refused.
    data = read_nvidia_pickle(FIXTURES / "sg3t_res32.pkl")
    size = data["G_ema"].state["_modules"]["synthesis"].state["_modules"]["input"].state["size"]
    assert np.array_equal(size.array, [36, 36])
    hostile = tmp_path / "object_array.pkl"
    hostile.write_bytes(pickle.dumps({"G": np.array([print, "x"], dtype=object)}, protocol=4))
    with pytest.raises(UnsafeCheckpoint):
        read_nvidia_pickle(hostile)


@pytest.mark.parametrize("bad", [dict(img_resolution=1 << 20), dict(num_layers=10_000), dict(channel_max=10 ** 9),
                                 dict(conv_kernel=999), dict(filter_size=10 ** 6), dict(channel_base="wide")])
def test_implausible_stylegan3_kwargs_in_a_pickle_give_one_clear_error(tmp_path, bad):
    # The init kwargs come from an untrusted file: refused before anything large is allocated.
    import re
    record = read_nvidia_pickle(FIXTURES / "sg3r_res16.pkl")["G_ema"]
    kwargs = {**record.init_kwargs, **bad}
    from ganinv.models.checkpoints import CheckpointError, _build_from_record
    record.state["_init_kwargs"] = kwargs
    with pytest.raises(CheckpointError, match=r"x\.pkl: .*(StyleGAN3 Generator|G init kwargs|generator)") as info:
        _build_from_record(record, tmp_path / "x.pkl", "G")
    assert "\n" not in str(info.value)


def test_stylegan3_pickle_with_numpy1_module_names(tmp_path):
    # NVIDIA's released StyleGAN3 pickles were written with numpy 1.x ('numpy.core'); the fixture with 2.x.
    from test_checkpoints import _strip_frames
    data = _strip_frames((FIXTURES / "sg3t_res32.pkl").read_bytes())
    new = b"\x8c\x16numpy._core.multiarray"
    assert new in data
    (tmp_path / "numpy1.pkl").write_bytes(data.replace(new, b"\x8c\x15numpy.core.multiarray"))
    G1, _, _ = load_nvidia_pickle(tmp_path / "numpy1.pkl")
    G2, _, _ = load_nvidia_pickle(FIXTURES / "sg3t_res32.pkl")
    for (k1, v1), (k2, v2) in zip(G1.state_dict().items(), G2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


# ---------------------------------------------------------------------- the filtered nonlinearity


def _filtered_lrelu_by_definition(x, fu, fd, b, up, down, padding, gain, slope, clamp):
    """Zero insertion, pad, full 2-D convolution, nonlinearity, full convolution, decimation."""
    n, ch, h, w = x.shape
    x = x + b.reshape(1, -1, 1, 1)
    z = torch.zeros(n, ch, h * up, w * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    px0, px1, py0, py1 = padding
    z = F.pad(z, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    z = z[:, :, max(-py0, 0): z.shape[2] - max(-py1, 0), max(-px0, 0): z.shape[3] - max(-px1, 0)]
    f2 = torch.outer(fu, fu) * up ** 2
    z = F.conv2d(z, f2.flip([0, 1])[None, None].repeat(ch, 1, 1, 1), groups=ch)
    z = F.leaky_relu(z, slope) * gain
    z = z.clamp(-clamp, clamp)
    g2 = fd if fd.dim() == 2 else torch.outer(fd, fd)
    z = F.conv2d(z, g2.flip([0, 1])[None, None].repeat(ch, 1, 1, 1), groups=ch)
    return z[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,radial,padding", [
    (2, 2, False, (6, 5, 6, 5)), (4, 2, False, (10, 9, 3, -2)), (2, 4, True, (-1, 4, 7, 7)),
    (2, 1, False, (0, 0, 1, 2))])
def test_filtered_lrelu_equals_its_definition(up, down, radial, padding):
    gen = torch.Generator().manual_seed(up * 10 + down)
    x = torch.randn(2, 3, 17, 19, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    fu = design_lowpass_filter(6 * up, 4, 3, 16 * up).double()
    fd = design_lowpass_filter(6 * down, 5, 3, 16 * up, radial=radial)
    fd = fd.double() if fd is not None else torch.ones(1, dtype=torch.float64)
    ours = filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=math.sqrt(2), slope=0.2, clamp=1.5)
    ref = _filtered_lrelu_by_definition(x, fu, fd, b, up, down, padding, math.sqrt(2), 0.2, 1.5)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-10)
    unclamped = filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=math.sqrt(2), slope=0.2)
    assert not torch.allclose(unclamped, ours)  # the clamp acted (the inputs are large enough)


def test_filtered_lrelu_leaves_its_input_alone_and_has_gradients():
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    before = x.detach().clone()
    fu = design_lowpass_filter(12, 4, 3, 32)
    out = filtered_lrelu(x, fu, fu, torch.zeros(2), up=2, down=2, padding=(5, 5, 5, 5))
    out.square().sum().backward()
    assert torch.equal(x.detach(), before) and x.grad is not None and float(x.grad.abs().sum()) > 0


# ---------------------------------------------------------------------- everything on a tiny StyleGAN3


def tiny_stylegan3(seed: int = 0, c_dim: int = 0, **synthesis) -> stylegan3.Generator:
    torch.manual_seed(seed)
    kwargs = dict(channel_base=256, channel_max=16, num_layers=6, num_critical=2, margin_size=4)
    kwargs.update(synthesis)
    G = stylegan3.Generator(z_dim=32, c_dim=c_dim, w_dim=32, img_resolution=16, img_channels=3,
                            mapping_kwargs=dict(num_layers=2), **kwargs).eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping(torch.randn(256, 32), None, update_w_avg=False)[:, 0].mean(0))
    return G


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sg3") / "tiny_sg3"
    save_native(folder, tiny_stylegan3(), tiny_discriminator(resolution=16), card={"name": "tiny_sg3"})
    bundle = load_model(folder)
    torch.manual_seed(5)
    with torch.no_grad():
        bundle.real_images = bundle.G(torch.randn(8, 32)).clamp(-1, 1)
    return bundle


def _target(G, seed=3):
    with torch.no_grad():
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))
        return G(z, None, truncation_psi=0.7).clamp(-1, 1)


@pytest.mark.parametrize("architecture", ["stylegan2", "stylegan3"])
def test_both_synthesis_networks_take_and_check_ws_alike(architecture):
    """One w [N, w_dim] stands for every layer; ws of another dtype is read as float32; a wrong shape or
    noise_mode is refused, by name, in every entry point (forward, styles) of either generator."""
    from conftest import tiny_generator

    G = tiny_generator() if architecture == "stylegan2" else tiny_stylegan3()
    ws = G.mapping(torch.randn(2, 32, generator=torch.Generator().manual_seed(4)), None).detach()
    w = ws[:, :1].expand_as(ws)
    with torch.no_grad():
        image = G.synthesis(w)
        assert image.dtype == torch.float32 and image.shape == (2, 3, 16, 16)
        assert torch.equal(G.synthesis(ws[:, 0]), image)
        assert torch.equal(G.synthesis(ws.double()), G.synthesis(ws))
    expected = rf"ws must have shape \[N, {G.num_ws}, 32\], got \(2, 3, 32\)"
    with pytest.raises(ValueError, match=expected):
        G.synthesis(ws[:, :3])
    with pytest.raises(ValueError, match=expected):
        G.synthesis.styles(ws[:, :3])
    with pytest.raises(ValueError, match=r"noise_mode must be one of \('const', 'random', 'none'\), got 'loud'"):
        G.synthesis(ws, noise_mode="loud")
    styles = G.synthesis.styles(ws)
    assert list(styles) == [name for name, _, _ in G.synthesis.style_layers()]
    assert all(style.shape[0] == 2 for style in styles.values())


def test_tiny_stylegan3_has_the_generator_interface(model):
    G = model.G
    assert isinstance(G, stylegan3.Generator) and G.synthesis.noise_buffers() == {}
    layers = G.synthesis.style_layers()
    assert [index for _, _, index in layers] == list(range(1, G.num_ws))
    ws = G.mapping(torch.randn(2, 32), None)
    styles = G.synthesis.styles(ws)
    name = layers[2][0]
    offset = torch.zeros_like(styles[name][0])
    offset[0] = 5.0
    with torch.no_grad():
        base = G.synthesis(ws)
        assert torch.equal(G.synthesis(ws, style_offsets={name: torch.zeros_like(offset)}), base)
        assert (G.synthesis(ws, style_offsets={name: offset}) - base).abs().mean() > 1e-4
    with pytest.raises(KeyError, match="unknown synthesis layer"):
        G.synthesis(ws, style_offsets={"b8.conv0": offset})
    with pytest.raises(KeyError, match="no noise inputs"):
        G.synthesis(ws, noise={"L0": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"ws must have shape \[N, 8, 32\]"):
        G.synthesis(ws[:, :3])
    # Magnitude EMAs change only when asked.
    G2 = tiny_stylegan3()
    before = {k: v.clone() for k, v in G2.state_dict().items() if k.endswith("magnitude_ema")}
    G2.train()(torch.randn(2, 32))
    assert all(torch.equal(G2.state_dict()[k], v) for k, v in before.items())
    G2(torch.randn(2, 32), update_emas=True)
    assert any(not torch.equal(G2.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize("method", list(METHODS))
def test_every_inversion_method_runs_and_roundtrips(model, method, tmp_path):
    spec = METHODS[method]
    bundle = model
    if spec.needs_encoder:
        torch.manual_seed(11)
        bundle = dataclasses.replace(model, encoder=Encoder.for_generator(model.G).eval())
    steps = {k: 6 for k in (spec.step_setting, spec.first_stage_step_setting) if k is not None}
    target = _target(model.G)
    if method == "multicode":  # composes StyleGAN2 block features: refused with one clear line
        with pytest.raises(GanInvError, match="no such blocks"):
            invert(bundle, target, method, seed=1, **steps)
        return
    result = invert(bundle, target, method, seed=1, **steps)
    assert result.ws.shape == (1, model.G.num_ws, model.G.w_dim) and result.noise is None
    assert torch.allclose(result.reconstruction, result.render(), atol=1e-5)
    assert result.metrics["psnr"][0] > 10
    assert (result.G_tuned is not None) == spec.tunes_generator
    result.save(tmp_path / "r")
    loaded = InversionResult.load(tmp_path / "r", model=model)
    assert torch.allclose(loaded.render(), result.render(), atol=1e-5)


@pytest.mark.parametrize("method", ["pti", "clone"])
def test_tuning_methods_on_the_official_pickle_with_its_discriminator(method):
    bundle = load_model(FIXTURES / "sg3t_res32.pkl")
    assert isinstance(bundle.G, stylegan3.Generator) and bundle.D is not None
    target = _target(bundle.G, seed=5)
    steps = {"pti": dict(pivot_steps=4, num_steps=4), "clone": dict(h_steps=4, num_steps=6, adv_every=1)}[method]
    result = invert(bundle, target, method, seed=0, **steps)
    assert result.G_tuned is not None and torch.isfinite(result.reconstruction).all()
    assert torch.allclose(result.reconstruction, result.render(), atol=1e-5)
    if method == "clone":
        assert "discriminator" not in result.extras.get("global_note", "")  # D was available and used


@pytest.mark.parametrize("space", ["w", "w+"])
def test_optimization_recovers_a_generated_image(model, space):
    target = _target(model.G)
    short = invert(model, target, "optimize", space=space, num_steps=2, seed=0)
    longer = invert(model, target, "optimize", space=space, num_steps=60, seed=0)
    assert longer.metrics["psnr"][0] > short.metrics["psnr"][0]


@pytest.mark.parametrize("name", list(E.FINDERS))
def test_every_direction_finder_edits_a_stylegan3_latent(model, name):
    def labeller(images):
        mean = images.mean(dim=(1, 2, 3))
        return (mean > mean.median()).long()

    settings = {"sefa": dict(num=4), "ganspace": dict(num=4, num_samples=500),
                "interfacegan": dict(labeller=labeller, num_samples=200),
                "stylespace": dict(labeller=labeller, num=3, num_samples=100),
                "voynov": dict(num=2, steps=3, batch_size=4),
                "steerability": dict(transformations="brightness", steps=3, batch_size=4)}[name]
    direction = E.find_directions(name, model, num_std_samples=200, **settings)
    assert direction.num_ws == model.G.num_ws
    latent = E.latent_from_seed(model.G, 3)
    base = latent.render()
    assert torch.allclose(E.edit(latent, direction, 0.0), base, atol=1e-6)
    assert (E.edit(latent, direction, 3.0) - base).abs().mean() > 1e-3


def test_sefa_uses_every_layer_affine_once():
    G, _, _ = load_nvidia_pickle(FIXTURES / "sg3t_res32.pkl")
    from ganinv.editing.sefa import sefa_layers
    chosen = sefa_layers(G, "all")
    assert [name for name, _, _ in chosen] == G.synthesis.layer_names  # toRGB included, once each
    # Layer groups by sampling rate, as StyleGAN2's by resolution: the two lowest coarse, the last fine.
    big = stylegan3.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=128, img_channels=3, channel_base=1024,
                              channel_max=4, num_layers=8)
    rates = big.synthesis.sampling_rates
    assert sorted(set(rates)) == [16, 32, 64, 128]
    groups = E.layer_groups(big)
    expected = {"coarse": [i + 1 for i, r in enumerate(rates) if r <= 32],
                "middle": [i + 1 for i, r in enumerate(rates) if r == 64],
                "fine": [i + 1 for i, r in enumerate(rates) if r == 128]}
    assert groups == expected and big.num_ws - 1 in groups["fine"]


def test_web_ui_loads_inverts_and_edits(model, tmp_path):
    library = DirectionLibrary(model, num_std_samples=200, ganspace_samples=300)
    result = invert(model, _target(model.G), "optimize", num_steps=4)
    workspace = Workspace(tmp_path)
    try:
        session = SessionStore(workspace).create()
        session.set_target(result.target, "t.png")
        session.set_sliders(library.sliders("sefa", "all", 2))
        session.set_result(result)
        base = session.render([0.0, 0.0])
        assert torch.equal(base, result.reconstruction)
        assert (session.render([2.0, 0.0]) - base).abs().mean() > 1e-4
    finally:
        workspace.cleanup()


def test_encoder_trainer_steps_on_stylegan3(model):
    from ganinv.train.classifier import Classifier
    from ganinv.train.encoder_trainer import EncoderTrainConfig, EncoderTrainer
    torch.manual_seed(5)
    classifier = Classifier(3, 16, {"kind": ["a", "b"]}, base_width=4, max_width=8, feature_dim=16).eval()
    reals = ((model.real_images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    config = EncoderTrainConfig(seed=0, batch_real=4, batch_generated=4, iterations=2, learning_rate=2e-3,
                                progressive_start=1, progressive_every=1, pool_size=8, num_eval=0)
    trainer = EncoderTrainer(config, model.G, model.D, classifier=classifier, train_images=reals)
    before = {k: v.clone() for k, v in trainer.encoder.state_dict().items()}
    stats = trainer.step()
    assert all(math.isfinite(float(v)) for v in stats.values())
    assert any(not torch.equal(v, before[k]) for k, v in trainer.encoder.state_dict().items())


def test_stylegan3_parameter_limit_is_checked_before_building(tmp_path):
    # The count comes from the kwargs; a caller's lower limit refuses the network before it is allocated.
    from ganinv.models.checkpoints import CheckpointError, _build_from_record, stylegan3_generator_parameters
    record = read_nvidia_pickle(FIXTURES / "sg3r_res16.pkl")["G_ema"]
    G = _build_from_record(record, tmp_path / "x.pkl", "G")
    actual = sum(p.numel() for p in G.parameters())
    bound = stylegan3_generator_parameters(record.init_kwargs)
    assert actual <= bound <= 4 * actual  # an upper bound, and not a loose one
    with pytest.raises(CheckpointError, match="parameters"):
        _build_from_record(record, tmp_path / "x.pkl", "G", max_parameters=actual // 2)
