"""Bad arguments raise TypeError / ValueError naming the argument, before any kernel runs."""

import pytest
import torch

import tritonbp
from tritonbp import launch


@pytest.fixture(autouse=True)
def _no_kernel_may_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITONBP_BACKEND", "triton")

    def forbidden(*args, **kwargs):
        raise AssertionError("a kernel launched for invalid arguments")

    monkeypatch.setattr(launch, "fused_linear_fwd", forbidden)


X = torch.randn(4, 8)
W = torch.randn(3, 8)
B = torch.randn(3)


@pytest.mark.parametrize(
    ("arguments", "error", "pattern"),
    [
        ((X, torch.randn(3, 7), B), ValueError, r"input: expected last dimension in_features=7"),
        ((X, torch.randn(3, 8, 1), B), ValueError, r"weight: expected 2 dimensions"),
        ((X, W, torch.randn(4)), ValueError, r"bias: expected shape \(3,\)"),
        ((torch.tensor(1.0), W, B), ValueError, r"input: expected at least 1 dimension"),
        ((X.half(), W, B), TypeError, r"weight: expected the input's dtype torch.float16"),
        ((X, W, B.double()), TypeError, r"bias: expected the input's dtype torch.float32"),
        ((X.int(), W.int(), None), TypeError, r"input: expected a floating-point dtype"),
        ((X.bool(), W, B), TypeError, r"input: expected a floating-point dtype"),
        ((X.tolist(), W, B), TypeError, r"input: expected a torch.Tensor, got list"),
        ((X, W, B.to("meta")), ValueError, r"bias: expected the input's device cpu"),
    ],
    ids=[
        "in_features",
        "weight_rank",
        "bias_shape",
        "zero_dim_input",
        "dtype_mismatch_weight",
        "dtype_mismatch_bias",
        "integer_input",
        "bool_input",
        "not_a_tensor",
        "device_mismatch",
    ],
)
def test_bad_arguments(arguments, error, pattern):
    with pytest.raises(error, match=pattern):
        tritonbp.fused_linear(*arguments)


@pytest.mark.parametrize(
    ("activation", "error", "pattern"),
    [
        ("gleu", ValueError, r"activation: expected one of .* got 'gleu'"),
        ("ReLU", ValueError, r"activation: expected one of .* got 'ReLU'"),
        (torch.nn.ReLU(), TypeError, r"activation: .* got an object of type ReLU"),
    ],
)
def test_unknown_activation(activation, error, pattern):
    with pytest.raises(error, match=pattern):
        tritonbp.fused_linear(X, W, B, activation)
    with pytest.raises(error, match=pattern):
        tritonbp.FusedLinear(8, 3, activation=activation)


def test_slope_for_another_activation_is_refused():
    with pytest.raises(ValueError, match="negative_slope: only 'leaky_relu' takes a slope"):
        tritonbp.fused_linear(X, W, B, "relu", negative_slope=0.2)


def test_invalid_backend_variable(monkeypatch):
    monkeypatch.setenv("TRITONBP_BACKEND", "cuda")
    with pytest.raises(
        ValueError, match=r"TRITONBP_BACKEND: expected one of \('triton', 'torch'\)"
    ):
        tritonbp.fused_linear(X, W, B, "relu")
