"""Pure-PyTorch reference of the fused dense layer: the CPU backend and the tests' oracle.

The equations, for x (M, K), W (N, K), b (N) and dy = dC/da (M, N):

    forward:   z = x W^T + b                 a = s(z)
    backward:  delta = dy * s'(z)            dx = delta W
               dW = delta^T x                db = sum over rows of delta

The backward is written out by hand, not left to autograd, and follows the kernels'
precision: products accumulate in fp32, z and the activation stay in fp32 until the result
is cast to the input dtype, and delta is rounded to dy's dtype before it enters a GEMM,
exactly where the kernels round it for the tensor cores.
"""

import math

import torch
import torch.nn.functional as F

from .activations import SavedForBackward, saved_for_backward


def reference_activation(name: str, z: torch.Tensor, negative_slope: float = 0.01) -> torch.Tensor:
    """PyTorch's own definition of activation ``name``, differentiable by autograd.

    This is the ground truth both implementations are compared with.
    """
    if name in (None, "identity"):
        return z
    if name == "relu":
        return torch.relu(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, negative_slope)
    if name == "gelu":
        return F.gelu(z)
    if name == "gelu_tanh":
        return F.gelu(z, approximate="tanh")
    if name == "silu":
        return F.silu(z)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "relu_squared":
        return torch.relu(z).square()
    raise ValueError(f"name: unknown activation {name!r}")


def activation_derivative(name: str, saved: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """s'(z) written out, from what the forward saved (z or a; see ``saved_for_backward``).

    Each formula is the one PyTorch's backward uses, so the value at a kink matches
    autograd's: relu'(0) = 0 and leaky_relu'(0) = negative_slope.
    """
    if name == "identity":
        return torch.ones_like(saved)
    if name == "relu":
        return (saved > 0).to(saved.dtype)
    if name == "leaky_relu":
        return torch.where(saved > 0, 1.0, negative_slope).to(saved.dtype)
    if name == "gelu":
        cdf = 0.5 * (1.0 + torch.erf(saved * math.sqrt(0.5)))
        pdf = torch.exp(-0.5 * saved * saved) / math.sqrt(2.0 * math.pi)
        return cdf + saved * pdf
    if name == "gelu_tanh":
        scale = math.sqrt(2.0 / math.pi)
        z_squared = saved * saved
        tanh_inner = torch.tanh(scale * (saved + 0.044715 * z_squared * saved))
        inner_derivative = scale * (1.0 + 3.0 * 0.044715 * z_squared)
        return 0.5 * (1.0 + tanh_inner) + 0.5 * saved * (1.0 - tanh_inner**2) * inner_derivative
    if name == "silu":
        sigmoid = torch.sigmoid(saved)
        return sigmoid * (1.0 + saved * (1.0 - sigmoid))
    if name == "sigmoid":
        return (1.0 - saved) * saved
    if name == "tanh":
        return 1.0 - saved * saved
    if name == "relu_squared":
        return 2.0 * torch.relu(saved)
    raise ValueError(f"name: unknown activation {name!r}")


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for 16-bit inputs (what the kernels accumulate in), the dtype itself otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def input_features(x: torch.Tensor | None, weight: torch.Tensor | None) -> int:
    """K, from whichever of x (M, K) and W (N, K) the backward was given (0 for neither)."""
    if weight is not None:
        return weight.shape[1]
    return x.shape[1] if x is not None else 0


def fused_linear_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str,
    negative_slope: float,
    store_z: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """a = s(x W^T + b) for x (M, K), and z when ``store_z`` (else an empty tensor).

    Returns:
        ``(a, z)``, both (M, N) in x's dtype; z is ``x.new_empty(0)`` unless ``store_z``.
    """
    compute_dtype = _accumulation_dtype(x.dtype)
    z = x.to(compute_dtype) @ weight.to(compute_dtype).T
    if bias is not None:
        z += bias.to(compute_dtype)
    a = reference_activation(activation, z, negative_slope).to(x.dtype)
    z_saved = z.to(x.dtype) if store_z else x.new_empty(0)
    return a, z_saved


def fused_linear_backward(
    dy: torch.Tensor,
    saved: torch.Tensor | None,
    x: torch.Tensor | None,
    weight: torch.Tensor | None,
    activation: str,
    negative_slope: float,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dW, db) for dy (M, N), written out from the equations in the module docstring.

    Args:
        dy: dC/da, (M, N).
        saved: what the forward saved (z or a, (M, N)), or None for the identity.
        x: the layer input (M, K); needed only for dW.
        weight: (N, K); needed only for dx.
        need_dx, need_dw, need_db: which gradients to compute.

    Returns:
        dx (M, K), dW (N, K) and db (N,), all in dy's dtype (which is also the dtype of x,
        W and b); a gradient that was not asked for is an empty tensor.
    """
    compute_dtype = _accumulation_dtype(dy.dtype)
    if saved_for_backward(activation, negative_slope) is SavedForBackward.NOTHING:
        delta = dy.to(compute_dtype)
    else:
        delta = dy.to(compute_dtype) * activation_derivative(
            activation, saved.to(compute_dtype), negative_slope
        )
    # The kernels hand delta to the tensor cores in dy's dtype.
    delta_for_gemm = delta.to(dy.dtype).to(compute_dtype)
    dx = (delta_for_gemm @ weight.to(compute_dtype)).to(dy.dtype) if need_dx else dy.new_empty(0)
    dw = (delta_for_gemm.T @ x.to(compute_dtype)).to(dy.dtype) if need_dw else dy.new_empty(0)
    db = delta.sum(dim=0).to(dy.dtype) if need_db else dy.new_empty(0)
    return dx, dw, db
