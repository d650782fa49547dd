"""The custom ops: torch.library's opcheck, and torch.compile without graph breaks."""

import pytest
import torch
from torch import nn

import tritonbp
from tritonbp import ops

BACKENDS = ["triton", "torch"]


def _forward_samples(device):
    x = torch.randn(5, 12, device=device)
    weight = torch.randn(7, 12, device=device)
    bias = torch.randn(7, device=device)
    return [
        (x, weight, bias, "gelu", 0.0, True),
        (x, weight, None, "relu", 0.0, False),
        (x.half(), weight.half(), bias.half(), "leaky_relu", 0.1, False),
        (x[:0], weight, bias, "tanh", 0.0, False),
    ]


def _backward_samples(device):
    dy = torch.randn(5, 7, device=device)
    saved = torch.randn(5, 7, device=device)
    x = torch.randn(5, 12, device=device)
    weight = torch.randn(7, 12, device=device)
    return [
        (dy, saved, x, weight, "silu", 0.0, True, True, True),
        (dy, None, x, weight, "identity", 0.0, True, True, False),
        (dy, saved, None, weight, "sigmoid", 0.0, True, False, False),
        (dy, saved, x, None, "gelu_tanh", 0.0, False, True, True),
        (dy, saved, None, None, "relu_squared", 0.0, False, False, True),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_forward(backend, device, monkeypatch):
    monkeypatch.setenv("TRITONBP_BACKEND", backend)
    for sample in _forward_samples(device):
        torch.library.opcheck(ops.fused_linear_fwd, sample)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_backward(backend, device, monkeypatch):
    monkeypatch.setenv("TRITONBP_BACKEND", backend)
    for sample in _backward_samples(device):
        torch.library.opcheck(ops.fused_linear_bwd, sample)


def _small_model(device):
    return nn.Sequential(
        tritonbp.FusedLinear(16, 32, activation="gelu", device=device),
        tritonbp.FusedLinear(32, 32, activation="relu", device=device),
        tritonbp.FusedLinear(32, 4, device=device),
    )


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph_matches_eager(compiler, device, monkeypatch):
    """No graph break (fullgraph=True), and the same outputs and gradients as eager."""
    monkeypatch.setenv("TRITONBP_BACKEND", "triton")
    torch._dynamo.reset()
    model = _small_model(device)
    x = torch.randn(3, 5, 16, device=device, requires_grad=True)

    expected = model(x)
    expected.square().sum().backward()
    expected_grads = [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    x.grad = None
    model.zero_grad()

    compiled = torch.compile(model, fullgraph=True, backend=compiler)
    out = compiled(x)
    out.square().sum().backward()
    grads = [x.grad] + [p.grad for p in model.parameters()]

    torch.testing.assert_close(out, expected)
    for got, wanted in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, wanted)
