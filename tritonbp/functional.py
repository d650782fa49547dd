"""``fused_linear``: the functional form of the fused dense layer, with argument checks."""

import torch
from einops import rearrange

from tritonbp.activations import DEFAULT_NEGATIVE_SLOPE, resolve_activation
from tritonbp.function import FusedLinearFunction

_FLOATING_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in _FLOATING_DTYPES:
        raise TypeError(
            f"{name}: expected a floating-point dtype (float16, bfloat16, float32 or float64), "
            f"got {value.dtype}"
        )
    return value


def _check_arguments(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Raise TypeError / ValueError for anything the kernels would not handle correctly."""
    _check_tensor("input", input)
    _check_tensor("weight", weight)
    if bias is not None:
        _check_tensor("bias", bias)
    if input.dim() == 0:
        raise ValueError(
            "input: expected at least 1 dimension (..., in_features), got a 0-dim tensor"
        )
    if weight.dim() != 2:
        raise ValueError(
            f"weight: expected 2 dimensions (out_features, in_features), got shape "
            f"{tuple(weight.shape)}"
        )
    out_features, in_features = weight.shape
    if input.shape[-1] != in_features:
        raise ValueError(
            f"input: expected last dimension in_features={in_features} to match weight "
            f"{tuple(weight.shape)}, got input of shape {tuple(input.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (out_features,):
        raise ValueError(
            f"bias: expected shape ({out_features},) to match weight {tuple(weight.shape)}, "
            f"got {tuple(bias.shape)}"
        )
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is None:
            continue
        if tensor.device != input.device:
            raise ValueError(
                f"{name}: expected the input's device {input.device}, got {tensor.device}"
            )
        if tensor.dtype != input.dtype:
            raise TypeError(
                f"{name}: expected the input's dtype {input.dtype} (outside autocast all "
                f"operands share one dtype), got {tensor.dtype}"
            )


def _autocast(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Cast to the autocast dtype where autocast is on for the input's device, as F.linear is."""
    device_type = input.device.type
    if not torch.is_autocast_enabled(device_type):
        return input, weight, bias
    dtype = torch.get_autocast_dtype(device_type)
    return (
        input.to(dtype),
        weight.to(dtype),
        bias.to(dtype) if bias is not None else None,
    )


def fused_linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    *,
    negative_slope: float = DEFAULT_NEGATIVE_SLOPE,
) -> torch.Tensor:
    """s(input W^T + b) in one fused kernel, with a fused backward.

    Equals ``s(F.linear(input, weight, bias))`` for the activation ``s`` named by
    ``activation``; see ``tritonbp.ACTIVATIONS`` for the names and the README for their
    PyTorch equivalents.

    Args:
        input: (..., in_features); any number of leading dimensions, any strides.
        weight: (out_features, in_features), the ``nn.Linear`` layout.
        bias: (out_features,) or None.
        activation: a name from ``tritonbp.ACTIVATIONS``, or None for the identity.
        negative_slope: slope of ``leaky_relu`` for negative inputs; only that activation
            takes it.

    Returns:
        (..., out_features), in the input's dtype (the autocast dtype under autocast).

    Raises:
        TypeError: a non-tensor, a non-floating dtype, or dtypes that differ outside autocast.
        ValueError: a 0-dim input, mismatched shapes, tensors on different devices, or an
            unknown activation.

    Example:
        >>> x = torch.randn(8, 16, 32)
        >>> w, b = torch.randn(64, 32), torch.randn(64)
        >>> tritonbp.fused_linear(x, w, b, activation="gelu").shape
        torch.Size([8, 16, 64])
    """
    activation = resolve_activation(activation, negative_slope)
    _check_arguments(input, weight, bias)
    input, weight, bias = _autocast(input, weight, bias)
    # (..., in_features) -> (rows, in_features); a view when the layout allows one.
    rows_input = rearrange(input, "... k -> (...) k")
    output = FusedLinearFunction.apply(rows_input, weight, bias, activation, float(negative_slope))
    # (rows, out_features) -> (..., out_features).
    return output.reshape(*input.shape[:-1], weight.shape[0])
