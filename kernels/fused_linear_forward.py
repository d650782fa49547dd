"""Forward GEMM of the fused dense layer, with bias, activation and cast in its epilogue."""

import triton
import triton.language as tl

from .activations import apply_activation
from .precision import cast_to, dot_operand
from .tiling import grouped_tile_index


@triton.jit
def _fused_linear_fwd_kernel(
    # Pointers.
    x_ptr,
    w_ptr,
    b_ptr,
    a_ptr,
    z_ptr,
    # Sizes.
    M,
    N,
    K,
    M_BUCKET,
    # Strides, in elements.
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_om,
    stride_on,
    # Meta-parameters.
    ACTIVATION: tl.constexpr,
    NEGATIVE_SLOPE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    STORE_Z: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_SIZE: tl.constexpr,
):
    """z = x W^T + b and a = s(z), one (BLOCK_M, BLOCK_N) tile of the output per program.

    The product accumulates in fp32; the epilogue adds the bias, applies the activation in
    fp32 and casts to the output dtype, so z never makes a round trip through memory unless
    the backward needs it (``STORE_Z``).

    Pointers:
        x_ptr: input, (M, K), any strides.
        w_ptr: weight, (N, K) as in ``nn.Linear``, any strides.
        b_ptr: bias, (N,), contiguous; unused unless ``HAS_BIAS``.
        a_ptr: output a = s(z), (M, N), strides (stride_om, stride_on).
        z_ptr: pre-activation z, (M, N), same strides as a; written only if ``STORE_Z``.
    Sizes:
        M rows of x (all leading dimensions flattened), N output and K input features.
        ``M_BUCKET`` is not read by the kernel: it is M rounded up to a power of two, the
        autotuning key, so that a new sequence length reuses the tuned configuration.
    Meta-parameters:
        ACTIVATION: a name from the activation registry (see ``activations.py``).
        NEGATIVE_SLOPE: the slope of ``leaky_relu`` (0.0 for other activations); a
            compile-time constant, so it is exact in fp64 and folds into the code.
        HAS_BIAS: add ``b``.
        STORE_Z: also write z, for activations whose derivative needs it.
        INPUT_PRECISION: ``tl.dot`` precision for fp32 operands ("ieee" or "tf32").
        INTERPRETED: running in Triton's interpreter, whose 16-bit floats need the
            workarounds of ``precision.py``; never set for a GPU.
        BLOCK_M, BLOCK_N, BLOCK_K: tile sizes; GROUP_SIZE: row tiles per L2 group.
    """
    # Locate this program's output tile.
    row_tile, col_tile = grouped_tile_index(
        tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_SIZE
    )
    # Offsets in int64: M * K, M * N and strided layouts may pass 2^31 elements.
    offs_m = row_tile * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    offs_n = col_tile * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_rows = x_ptr + offs_m[:, None] * stride_xm
    w_cols = w_ptr + offs_n[None, :] * stride_wn

    # Main loop: accumulate x[rows, k] @ W[cols, k]^T over K in fp32 (fp64 for fp64 inputs).
    compute_dtype = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=compute_dtype)
    for k_start in range(0, K, BLOCK_K):
        k_now = k_start + offs_k
        mask_k = k_now < K
        x_tile = tl.load(
            x_rows + k_now[None, :] * stride_xk, mask=mask_m[:, None] & mask_k[None, :], other=0.0
        )
        w_tile = tl.load(
            w_cols + k_now[:, None] * stride_wk, mask=mask_k[:, None] & mask_n[None, :], other=0.0
        )
        accumulator = tl.dot(
            dot_operand(x_tile, INTERPRETED),
            dot_operand(w_tile, INTERPRETED),
            accumulator,
            input_precision=INPUT_PRECISION,
        )

    # Epilogue: bias and activation in the accumulator's precision.
    z = accumulator
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(accumulator.dtype)
        z += bias[None, :]
    a = apply_activation(z, NEGATIVE_SLOPE, ACTIVATION)

    # Store a, and z when the backward needs it, cast to the output dtype.
    out_offsets = offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    mask_out = mask_m[:, None] & mask_n[None, :]
    tl.store(a_ptr + out_offsets, cast_to(a, a_ptr.dtype.element_ty, INTERPRETED), mask=mask_out)
    if STORE_Z:
        tl.store(
            z_ptr + out_offsets, cast_to(z, z_ptr.dtype.element_ty, INTERPRETED), mask=mask_out
        )
