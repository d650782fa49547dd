"""The autograd Function: gradcheck, double backward, skipped gradients, kernels really run."""

import pytest
import torch

import tritonbp
from tritonbp import launch, reference


@pytest.fixture(autouse=True)
def _triton_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITONBP_BACKEND", "triton")


def _float64_inputs(device, rows=4, in_features=5, out_features=3):
    def leaf(*shape):
        return torch.randn(*shape, device=device, dtype=torch.float64, requires_grad=True)

    return leaf(rows, in_features), leaf(out_features, in_features), leaf(out_features)


@pytest.mark.parametrize("activation", tritonbp.ACTIVATIONS)
def test_gradcheck_float64(activation, device):
    """Finite differences in float64 through the Triton kernels, for every activation."""
    x, weight, bias = _float64_inputs(device)

    def layer(x, weight, bias):
        return tritonbp.fused_linear(x, weight, bias, activation)

    assert torch.autograd.gradcheck(layer, (x, weight, bias), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("wrt", ["x", "weight"])
def test_double_backward_raises_a_clear_error(wrt, device):
    """A graph of the backward would lose the second-order terms: refused, not wrong."""
    x, weight, bias = _float64_inputs(device)
    out = tritonbp.fused_linear(x, weight, bias, "gelu")
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(out.sum(), {"x": x, "weight": weight}[wrt], create_graph=True)


def test_backward_under_enable_grad_without_graph_inputs(device):
    """create_graph=True is fine where nothing in the backward requires a gradient."""
    x = torch.randn(4, 5, device=device, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 5, device=device, dtype=torch.float64)
    out = tritonbp.fused_linear(x, weight, None, "identity")
    (grad_x,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    torch.testing.assert_close(grad_x, weight.sum(0).expand(4, 5))


@pytest.mark.parametrize(
    "needs",
    [
        (True, True, True),
        (True, False, False),
        (False, True, True),
        (False, True, False),
        (False, False, True),
    ],
    ids=lambda needs: "grad_" + "_".join(n for n, on in zip("xwb", needs, strict=True) if on),
)
@pytest.mark.parametrize("activation", ["identity", "gelu", "relu"])
def test_only_requested_gradients_are_computed(activation, needs, device, monkeypatch):
    """Gradients nobody asked for are neither computed nor kept alive for the backward."""
    calls = []
    real_backward = launch.fused_linear_bwd

    def spy(*args):
        calls.append(args)
        return real_backward(*args)

    monkeypatch.setattr(launch, "fused_linear_bwd", spy)
    x = torch.randn(6, 10, device=device)
    weight = torch.randn(7, 10, device=device)
    bias = torch.randn(7, device=device)
    for tensor, needed in zip((x, weight, bias), needs, strict=True):
        tensor.requires_grad_(needed)

    out = tritonbp.fused_linear(x, weight, bias, activation)
    out.backward(torch.randn_like(out))

    (dy, saved, saved_x, saved_weight, *_, need_dx, need_dw, need_db) = calls[0]
    assert (need_dx, need_dw, need_db) == needs
    assert (saved_x is not None) == needs[1], "x is kept only when W needs a gradient"
    assert (saved_weight is not None) == needs[0], "W is kept only when x needs a gradient"
    assert (saved is None) == (activation == "identity")
    for tensor, needed in zip((x, weight, bias), needs, strict=True):
        assert (tensor.grad is not None) == needed


def test_nothing_is_saved_without_gradients(device, monkeypatch):
    calls = []
    real_forward = launch.fused_linear_fwd

    def spy(*args):
        calls.append(args)
        return real_forward(*args)

    monkeypatch.setattr(launch, "fused_linear_fwd", spy)
    x, weight, bias = (torch.randn(*shape, device=device) for shape in ((3, 8), (4, 8), (4,)))
    out = tritonbp.fused_linear(x, weight, bias, "gelu")
    assert not out.requires_grad
    assert calls[0][-1] is False, "z is stored only for a backward"
    weight.requires_grad_(True)
    tritonbp.fused_linear(x, weight, bias, "gelu")
    assert calls[1][-1] is True, "gelu's backward reads z"


def test_the_triton_kernels_run(device, monkeypatch):
    """With the Triton backend the reference is never called, and the kernels are launched."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the pure-PyTorch reference ran instead of the kernels")

    monkeypatch.setattr(reference, "fused_linear_forward", forbidden)
    monkeypatch.setattr(reference, "fused_linear_backward", forbidden)
    launched = []
    real_kernel = launch.kernels.autotuned_kernel

    def counting_kernel(name, *args):
        launched.append(name)
        return real_kernel(name, *args)

    monkeypatch.setattr(launch.kernels, "autotuned_kernel", counting_kernel)
    x = torch.randn(5, 9, device=device, requires_grad=True)
    layer = tritonbp.FusedLinear(9, 6, activation="silu", device=device)
    layer(x).sum().backward()
    assert launched == ["fwd", "bwd_dx", "bwd_dw"]
    assert x.grad is not None
    assert layer.weight.grad is not None


def test_torch_backend_runs_the_reference(device, monkeypatch):
    monkeypatch.setenv("TRITONBP_BACKEND", "torch")

    def forbidden(*args, **kwargs):
        raise AssertionError("a kernel launched under the torch backend")

    monkeypatch.setattr(launch, "fused_linear_fwd", forbidden)
    monkeypatch.setattr(launch, "fused_linear_bwd", forbidden)
    x = torch.randn(5, 9, device=device, requires_grad=True)
    weight = torch.randn(6, 9, device=device, requires_grad=True)
    out = tritonbp.fused_linear(x, weight, None, "tanh")
    out.sum().backward()
    expected = torch.tanh(x.detach() @ weight.detach().T)
    torch.testing.assert_close(out, expected)
