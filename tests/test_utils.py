import copy

import torch

from ganinv.utils import adam
from conftest import tiny_generator


def _looped_adam(params, **kwargs):
    return torch.optim.Adam(params, foreach=False, fused=False, **kwargs)


def test_adam_helper_applies_gradients_laid_out_unlike_their_parameter():
    # A gradient with transposed strides (as torch.autograd.grad returns for an upsampling layer's weight)
    # must update the same elements as its contiguous copy, as in the looped Adam.
    torch.manual_seed(0)
    grads = [torch.randn(6, 4, 3, 3).transpose(0, 1) for _ in range(3)]
    assert not grads[0].is_contiguous()
    p_helper = torch.nn.Parameter(torch.randn(4, 6, 3, 3))
    p_loop = torch.nn.Parameter(p_helper.detach().clone())
    opt_helper, opt_loop = adam([p_helper], lr=0.1), _looped_adam([p_loop], lr=0.1)
    assert opt_helper.defaults["fused"]
    for grad in grads:
        p_helper.grad, p_loop.grad = grad, grad.contiguous()
        opt_helper.step()
        opt_loop.step()
    assert torch.allclose(p_helper, p_loop, atol=1e-5)


def test_adam_helper_reads_a_loaded_state_in_its_parameters_layout():
    # A contiguous run's optimizer state loaded for a channels-last parameter (a resumed run whose
    # network changed memory format) must go on as the contiguous run does.
    torch.manual_seed(0)
    grads = [torch.randn(4, 6, 3, 3) for _ in range(3)]
    p_plain = torch.nn.Parameter(torch.randn(4, 6, 3, 3))
    opt_plain = adam([p_plain], lr=0.1)
    p_plain.grad = grads[0]
    opt_plain.step()
    p_last = torch.nn.Parameter(p_plain.detach().clone().contiguous(memory_format=torch.channels_last))
    opt_last = adam([p_last], lr=0.1)
    opt_last.load_state_dict(copy.deepcopy(opt_plain.state_dict()))  # as read back from a file
    assert opt_last.state[p_last]["exp_avg"].stride() != p_last.stride()
    for grad in grads[1:]:
        p_plain.grad, p_last.grad = grad, grad.contiguous(memory_format=torch.channels_last)
        opt_plain.step()
        opt_last.step()
    assert torch.allclose(p_plain, p_last, atol=1e-6)


def test_adam_helper_matches_looped_adam_on_synthesis_gradients_from_autograd_grad():
    # The way Clone steps G: torch.autograd.grad, then param.grad = grad. The upsampling layers' weight
    # gradients come back non-contiguous; the helper's fused step must match the looped one.
    G = tiny_generator(resolution=16).train()
    G_loop = copy.deepcopy(G)
    ws = torch.randn(1, G.num_ws, G.w_dim)
    target = torch.rand(1, 3, 16, 16) * 2 - 1
    runs = []
    for net, make in ((G, adam), (G_loop, _looped_adam)):
        params = list(net.synthesis.parameters())
        opt = make(params, lr=1e-2)
        for _ in range(3):
            loss = (net.synthesis(ws, noise_mode="const") - target).square().mean()
            grads = torch.autograd.grad(loss, params)
            for param, grad in zip(params, grads):
                param.grad = grad
            opt.step()
        runs.append(dict(net.synthesis.named_parameters()))
    strided = [name for name, p in G.synthesis.named_parameters() if "conv0.weight" in name]
    assert strided, "the tiny generator should have upsampling layers"
    for name, param in runs[0].items():
        assert torch.allclose(param, runs[1][name], atol=1e-5), name
