"""FusedLinear as a drop-in nn.Linear (+ activation)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tritonbp


def test_is_an_nn_linear_with_the_same_state():
    torch.manual_seed(1)
    fused = tritonbp.FusedLinear(6, 4, activation="gelu")
    torch.manual_seed(1)
    plain = nn.Linear(6, 4)
    assert isinstance(fused, nn.Linear)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[key], value, rtol=0, atol=0)
    # A checkpoint of either class loads into the other.
    plain.load_state_dict(fused.state_dict())
    fused.load_state_dict(plain.state_dict())


@pytest.mark.parametrize("activation", tritonbp.ACTIVATIONS)
def test_forward_equals_activation_of_linear(activation, device):
    layer = tritonbp.FusedLinear(10, 7, activation=activation, device=device)
    x = torch.randn(2, 3, 10, device=device)
    expected = tritonbp.reference_activation(activation, F.linear(x, layer.weight, layer.bias))
    torch.testing.assert_close(layer(x), expected)


def test_without_bias(device):
    layer = tritonbp.FusedLinear(5, 3, bias=False, activation="silu", device=device)
    assert layer.bias is None
    x = torch.randn(4, 5, device=device)
    torch.testing.assert_close(layer(x), F.silu(x @ layer.weight.T))


def test_dtype_argument():
    layer = tritonbp.FusedLinear(5, 3, dtype=torch.float64)
    assert layer.weight.dtype == layer.bias.dtype == torch.float64


def test_from_linear_shares_parameters(device):
    linear = nn.Linear(8, 5, device=device)
    fused = tritonbp.FusedLinear.from_linear(linear, activation="tanh")
    assert fused.weight is linear.weight
    assert fused.bias is linear.bias
    x = torch.randn(3, 8, device=device)
    torch.testing.assert_close(fused(x), torch.tanh(linear(x)))
    fused(x).sum().backward()
    assert linear.weight.grad is not None


def test_from_linear_without_bias_and_bad_argument():
    fused = tritonbp.FusedLinear.from_linear(nn.Linear(4, 2, bias=False), "relu")
    assert fused.bias is None
    with pytest.raises(TypeError, match="linear: expected an nn.Linear, got Conv1d"):
        tritonbp.FusedLinear.from_linear(nn.Conv1d(1, 1, 1))


def test_repr_shows_the_activation():
    assert "activation='gelu'" in repr(tritonbp.FusedLinear(4, 2, activation="gelu"))
    leaky = tritonbp.FusedLinear(4, 2, activation="leaky_relu", negative_slope=0.2)
    assert "activation='leaky_relu', negative_slope=0.2" in repr(leaky)
    assert "activation='identity'" in repr(tritonbp.FusedLinear(4, 2))


def test_leaky_relu_default_slope_matches_pytorch(device):
    layer = tritonbp.FusedLinear(6, 6, activation="leaky_relu", device=device)
    x = torch.randn(5, 6, device=device)
    torch.testing.assert_close(layer(x), F.leaky_relu(F.linear(x, layer.weight, layer.bias)))
