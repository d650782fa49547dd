"""Numerics of the fused layer through the Triton kernels: outputs and every gradient.

Each result is compared with a float64 reference computed by PyTorch from the same rounded
inputs; a low-precision result may be off by a small multiple of PyTorch's own error in that
dtype (``tritonbp.testing.TOLERANCES``). Without a GPU the kernels run in Triton's interpreter.
"""

import pytest
import torch
import torch.nn.functional as F

import tritonbp
from tritonbp import launch
from tritonbp.check import Case, check_case
from tritonbp.testing import assert_matches_reference

DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Odd sizes leave partial tiles in every dimension; the rest cover a 3-D input, a single row,
# an empty batch and powers of two.
SHAPES = (
    ((3, 37), 129),
    ((2, 5, 33), 20),
    ((1, 24), 16),
    ((0, 24), 16),
    ((64, 32), 48),
)


@pytest.fixture(autouse=True)
def _triton_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs the Triton kernels, also on the CPU."""
    monkeypatch.setenv("TRITONBP_BACKEND", "triton")


def _leaves(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Fresh leaves that keep each tensor's strides (``clone`` would compact a strided one)."""
    return [None if t is None else t.detach().requires_grad_(True) for t in tensors]


def _forward_backward(layer, x, weight, bias, dy):
    """(out, dx, dW, db) of ``layer`` for the incoming gradient dy, on fresh leaves."""
    x, weight, bias = _leaves(x, weight, bias)
    out = layer(x, weight, bias)
    out.backward(dy)
    return out.detach(), x.grad, weight.grad, None if bias is None else bias.grad


def _compare_with_pytorch(activation, x, weight, bias, dy, negative_slope=0.01):
    """Asserts fused_linear matches PyTorch (float64 reference, same-dtype baseline)."""

    def fused(x, weight, bias):
        return tritonbp.fused_linear(x, weight, bias, activation, negative_slope=negative_slope)

    def eager(x, weight, bias):
        return tritonbp.reference_activation(activation, F.linear(x, weight, bias), negative_slope)

    def to64(t):
        return None if t is None else t.double()

    actual = _forward_backward(fused, x, weight, bias, dy)
    baseline = _forward_backward(eager, x, weight, bias, dy)
    reference = _forward_backward(eager, *(to64(t) for t in (x, weight, bias, dy)))
    names = ("out", "dx", "dW", "db")
    for name, got, own, exact in zip(names, actual, baseline, reference, strict=True):
        if exact is not None:
            assert_matches_reference(f"{activation} {name}", got, exact, own)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", tritonbp.ACTIVATIONS)
def test_matches_pytorch(activation, dtype, shape, bias, device):
    input_shape, out_features = shape
    case = Case(input_shape=input_shape, out_features=out_features, bias=bias)
    for report in check_case(activation, dtype, case, device):
        assert report.passed, report.describe()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["transposed", "strided_columns", "3d_permuted"], ids=str)
def test_non_contiguous_input(layout, dtype, device):
    in_features, out_features = 40, 24
    if layout == "transposed":
        x = torch.randn(in_features, 19, device=device).t()
    elif layout == "strided_columns":
        x = torch.randn(19, 2 * in_features, device=device)[:, ::2]
    else:
        x = torch.randn(5, 3, in_features, device=device).transpose(0, 1)
    assert not x.is_contiguous()
    weight = torch.randn(out_features, in_features, device=device) / in_features**0.5
    bias = torch.randn(out_features, device=device)
    dy = torch.randn(*x.shape[:-1], out_features, device=device)
    x, weight, bias, dy = (t.to(dtype) for t in (x, weight, bias, dy))
    _compare_with_pytorch("gelu", x, weight, bias, dy)


def test_non_contiguous_weight_and_incoming_gradient(device):
    """A transposed weight and the stride-0 gradient that ``out.sum().backward()`` sends."""
    x = torch.randn(7, 33, device=device, requires_grad=True)
    weight = torch.randn(33, 21, device=device).t().requires_grad_(True)
    bias = torch.randn(21, device=device, requires_grad=True)
    tritonbp.fused_linear(x, weight, bias, "silu").sum().backward()
    x64, w64, b64 = _leaves(x.double(), weight.double(), bias.double())
    F.silu(F.linear(x64, w64, b64)).sum().backward()
    for name, got, exact in (("dx", x.grad, x64.grad), ("dW", weight.grad, w64.grad)):
        torch.testing.assert_close(got.double(), exact, rtol=1e-4, atol=1e-4, msg=name)
    torch.testing.assert_close(bias.grad.double(), b64.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("activation", tritonbp.ACTIVATIONS)
def test_exact_zeros_at_the_kinks(activation, dtype, device):
    """z = 0 exactly in whole rows and columns: the derivative there is autograd's."""
    in_features, out_features = 12, 10
    x = torch.randn(9, in_features, device=device, dtype=dtype)
    x[::3] = 0.0  # rows whose z is exactly the bias
    weight = torch.randn(out_features, in_features, device=device, dtype=dtype)
    weight[1::2] = 0.0  # features whose z is exactly the bias
    bias = torch.zeros(out_features, device=device, dtype=dtype)
    bias[::4] = 0.5
    dy = torch.randn(9, out_features, device=device, dtype=dtype)
    negative_slope = 0.2 if activation == "leaky_relu" else 0.01

    def fused(x, weight, bias):
        return tritonbp.fused_linear(x, weight, bias, activation, negative_slope=negative_slope)

    def eager(x, weight, bias):
        return tritonbp.reference_activation(activation, F.linear(x, weight, bias), negative_slope)

    got = _forward_backward(fused, x, weight, bias, dy)
    expected = _forward_backward(eager, x, weight, bias, dy)
    z = F.linear(x, weight, bias)
    assert (z == 0).sum() > 20, "the inputs should put many exact zeros into z"
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}
    for name, actual, wanted in zip(("out", "dx", "dW", "db"), got, expected, strict=True):
        torch.testing.assert_close(actual, wanted, **tolerance, msg=f"{activation} {name}")


@pytest.mark.parametrize("negative_slope", [0.2, -0.5, 0.0])
def test_leaky_relu_slope(negative_slope, device):
    """Any slope, including the negative ones for which the backward keeps z instead of a."""
    x = torch.randn(6, 20, device=device)
    weight = torch.randn(15, 20, device=device) / 4
    bias = torch.randn(15, device=device)
    dy = torch.randn(6, 15, device=device)
    _compare_with_pytorch("leaky_relu", x, weight, bias, dy, negative_slope=negative_slope)


def test_offsets_beyond_two_to_the_31(device):
    """Rows that sit more than 2^31 elements into their storage are addressed correctly.

    The storage holds 2^31 + 64 float16 values (4 GiB of address space) but only the rows in
    use are ever written, so little memory is actually touched.
    """
    in_features, out_features, row_stride = 16, 8, 2**30 + 16
    storage = torch.empty(2 * row_stride + in_features, dtype=torch.float16, device=device)
    x = storage.as_strided((3, in_features), (row_stride, 1))
    x.copy_(torch.randn(3, in_features))
    assert x.storage_offset() + 2 * row_stride >= 2**31
    weight = torch.randn(out_features, in_features, device=device, dtype=torch.float16)
    bias = torch.randn(out_features, device=device, dtype=torch.float16)
    dy = torch.randn(3, out_features, device=device, dtype=torch.float16)
    _compare_with_pytorch("relu", x, weight, bias, dy)


def test_autocast_runs_in_the_autocast_dtype(device):
    """Under autocast float32 parameters are cast, as F.linear does; grads stay float32."""
    layer = tritonbp.FusedLinear(16, 8, activation="tanh", device=device)
    x = torch.randn(4, 16, device=device)
    autocast_dtype = torch.bfloat16
    with torch.autocast(device.type, dtype=autocast_dtype):
        out = layer(x)
        expected = torch.tanh(F.linear(x, layer.weight, layer.bias))
    assert out.dtype == expected.dtype == autocast_dtype
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32
    assert layer.bias.grad.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "needs", [(True, True, True), (False, True, True), (False, False, True), (True, True, False)]
)
@pytest.mark.parametrize("activation", ["identity", "gelu"])
def test_weight_gradient_split_over_rows(activation, needs, dtype, device, monkeypatch):
    """A narrow layer's dW and db reduce over row splits whose partial sums add up right."""
    monkeypatch.setattr(launch, "_parallel_units", lambda device: 64)
    rows, in_features, out_features = 1100, 40, 24
    assert launch.row_splits(rows, out_features, in_features if needs[1] else 0, 64) == 2
    x = torch.randn(rows, in_features, device=device, dtype=dtype)
    weight = torch.randn(out_features, in_features, device=device, dtype=dtype) / 6
    bias = torch.randn(out_features, device=device, dtype=dtype)
    dy = torch.randn(rows, out_features, device=device, dtype=dtype)
    leaves = [t.requires_grad_(needed) for t, needed in zip((x, weight, bias), needs, strict=True)]
    tritonbp.fused_linear(*leaves, activation).backward(dy)
    exact = [t.detach().double().requires_grad_(t.requires_grad) for t in leaves]
    linear = F.linear(*exact)
    tritonbp.reference_activation(activation, linear).backward(dy.double())
    for name, got, wanted in zip(("dx", "dW", "db"), leaves, exact, strict=True):
        if wanted.grad is None:
            assert got.grad is None, name
            continue
        scale = wanted.grad.abs().max().item()
        error = (got.grad.double() - wanted.grad).abs().max().item() / scale
        assert error < (1e-6 if dtype == torch.float32 else 1e-2), (name, error)


def test_row_split_policy():
    """Splits fill one wave of programs, and none covers fewer than MIN_ROWS_PER_SPLIT rows."""
    h100_units = 132
    assert launch.row_splits(65536, 128, 128, h100_units) == 128
    assert launch.row_splits(65536, 256, 128, h100_units) == 66
    assert launch.row_splits(65536, 4096, 4096, h100_units) == 1
    assert launch.row_splits(8 * launch.MIN_ROWS_PER_SPLIT - 1, 128, 128, h100_units) == 7
    assert launch.row_splits(1000, 128, 0, h100_units) == 1
    assert launch.row_splits(10**6, 128, 128, 1) == 1
