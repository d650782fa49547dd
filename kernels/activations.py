"""Activation functions and their derivatives as Triton device functions.

Every function here works on fp32 tiles (fp64 for fp64 inputs) and is selected by a
compile-time string, so each activation compiles to straight-line code with no run-time
dispatch. The names are the ones
of the package's activation registry (``tritonbp.ACTIVATIONS``); the formulas follow
PyTorch's own forward and backward definitions, including the value taken at kinks, so that
gradients agree with autograd bit for bit wherever the inputs agree.

The derivative functions take the tensor the forward saved for backward, which is the
pre-activation ``z`` for ``gelu``, ``gelu_tanh``, ``silu`` and ``relu_squared``, and the
activation output ``a`` for ``sigmoid`` and ``tanh``. ``relu`` and ``leaky_relu`` accept
either: their derivative only depends on the sign, and ``a > 0`` exactly when ``z > 0``
(for a non-negative slope; the registry saves ``z`` for a negative one).
"""

import triton
import triton.language as tl

from .precision import cast_to

# sqrt(2 / pi), the scale inside the tanh approximation of GELU.
_SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)
# 1 / sqrt(2), the scale inside the exact (erf) GELU.
_SQRT_HALF = tl.constexpr(0.7071067811865476)
# 1 / sqrt(2 pi), the peak of the standard normal density.
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)
# Cubic coefficient of the tanh approximation of GELU.
_GELU_TANH_CUBIC = tl.constexpr(0.044715)


@triton.jit
def _tanh(u):
    """tanh(u) through exp, which both the GPU backend and the interpreter provide.

    1 - 2 / (exp(2u) + 1) saturates to exactly +-1 for large |u| instead of producing
    inf / inf; near zero its absolute error stays within a few fp32 ulps of 1.
    """
    return 1.0 - 2.0 / (tl.exp(2.0 * u) + 1.0)


@triton.jit
def apply_activation(z, NEGATIVE_SLOPE: tl.constexpr, ACTIVATION: tl.constexpr):
    """a = s(z) for a tile ``z``; ``NEGATIVE_SLOPE`` is read by ``leaky_relu`` only."""
    if ACTIVATION == "identity":
        a = z
    elif ACTIVATION == "relu":
        # `z <= 0` is false for NaN, so NaN propagates as in torch.relu.
        a = tl.where(z <= 0.0, 0.0, z)
    elif ACTIVATION == "leaky_relu":
        a = tl.where(z > 0.0, z, z * NEGATIVE_SLOPE)
    elif ACTIVATION == "gelu":
        a = 0.5 * z * (1.0 + tl.erf(z * _SQRT_HALF))
    elif ACTIVATION == "gelu_tanh":
        inner = _SQRT_2_OVER_PI * (z + _GELU_TANH_CUBIC * z * z * z)
        a = 0.5 * z * (1.0 + _tanh(inner))
    elif ACTIVATION == "silu":
        a = z * tl.sigmoid(z)
    elif ACTIVATION == "sigmoid":
        a = tl.sigmoid(z)
    elif ACTIVATION == "tanh":
        a = _tanh(z)
    elif ACTIVATION == "relu_squared":
        positive = tl.where(z <= 0.0, 0.0, z)
        a = positive * positive
    else:
        tl.static_assert(False, "unknown ACTIVATION")
    return a


@triton.jit
def activation_derivative(saved, NEGATIVE_SLOPE: tl.constexpr, ACTIVATION: tl.constexpr):
    """s'(z) for a tile of what the forward saved (``z`` or ``a``, see module doc)."""
    if ACTIVATION == "identity":
        derivative = tl.full(saved.shape, 1.0, saved.dtype)
    elif ACTIVATION == "relu":
        # PyTorch's threshold_backward: zero where the input is <= 0 (so 0 at the kink).
        derivative = tl.where(saved <= 0.0, 0.0, 1.0)
    elif ACTIVATION == "leaky_relu":
        # PyTorch's leaky_relu_backward: the slope wherever the input is not > 0.
        # The slope as a tile of saved's dtype, so that fp64 keeps it exact.
        slope = tl.full(saved.shape, NEGATIVE_SLOPE, saved.dtype)
        derivative = tl.where(saved > 0.0, 1.0, slope)
    elif ACTIVATION == "gelu":
        cdf = 0.5 * (1.0 + tl.erf(saved * _SQRT_HALF))
        pdf = _INV_SQRT_2PI * tl.exp(-0.5 * saved * saved)
        derivative = cdf + saved * pdf
    elif ACTIVATION == "gelu_tanh":
        z_squared = saved * saved
        inner = _SQRT_2_OVER_PI * (saved + _GELU_TANH_CUBIC * z_squared * saved)
        tanh_inner = _tanh(inner)
        inner_derivative = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_CUBIC * z_squared)
        derivative = 0.5 * (1.0 + tanh_inner) + (
            0.5 * saved * (1.0 - tanh_inner * tanh_inner) * inner_derivative
        )
    elif ACTIVATION == "silu":
        sigmoid = tl.sigmoid(saved)
        derivative = sigmoid * (1.0 + saved * (1.0 - sigmoid))
    elif ACTIVATION == "sigmoid":
        derivative = (1.0 - saved) * saved
    elif ACTIVATION == "tanh":
        derivative = 1.0 - saved * saved
    elif ACTIVATION == "relu_squared":
        derivative = 2.0 * tl.where(saved <= 0.0, 0.0, saved)
    else:
        tl.static_assert(False, "unknown ACTIVATION")
    return derivative


@triton.jit
def load_delta(
    dy_ptrs,
    saved_ptrs,
    mask,
    NEGATIVE_SLOPE: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INTERPRETED: tl.constexpr,
):
    """delta = dy * s'(saved) for one tile, loaded from ``dy_ptrs`` and ``saved_ptrs``.

    Elements outside ``mask`` read dy = 0, so they contribute nothing whatever s' is there.
    For the identity the saved tensor is not read.

    Returns:
        ``(delta, delta_wide)``: delta rounded to dy's dtype, as the tensor cores take it,
        and unrounded in the accumulation dtype (fp32, fp64 for fp64), as sums take it.
    """
    dy = tl.load(dy_ptrs, mask=mask, other=0.0)
    compute_dtype = tl.float64 if dy.dtype == tl.float64 else tl.float32
    delta = dy
    delta_wide = dy.to(compute_dtype)
    if ACTIVATION != "identity":
        saved = tl.load(saved_ptrs, mask=mask, other=0.0)
        delta_wide *= activation_derivative(saved.to(compute_dtype), NEGATIVE_SLOPE, ACTIVATION)
        delta = cast_to(delta_wide, dy.dtype, INTERPRETED)
    return delta, delta_wide
