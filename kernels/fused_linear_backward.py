"""Backward GEMMs of the fused dense layer, with the activation derivative fused in.

For z = x W^T + b, a = s(z) and the incoming gradient dy = dC/da:

    delta = dy * s'(z)      dx = delta W      dW = delta^T x      db = sum over rows of delta

delta is never produced by a separate element-wise pass. Design, with the traffic each
choice moves per layer in units of the tensors' sizes (M*N for dy, z, delta; M*K for x and
dx; N*K for W and dW), counting each operand once as a perfectly cached GEMM would:

* ``_fused_linear_bwd_dx_kernel`` forms delta in the operand load of its main loop: it reads
  the tiles of dy and of the saved tensor (z, or a where the derivative is a function of the
  output), multiplies in fp32 and feeds the result to the tensor cores. Every program of the
  tile column ``pid_k == 0`` also writes the delta tile it formed, so delta reaches memory
  once: reads 2 M*N + N*K, writes M*K + M*N.
* ``_fused_linear_bwd_dw_kernel`` then runs dW = delta^T x as a plain GEMM on that stored
  delta, and reduces db from the same delta tiles it already loads (programs of
  ``pid_k == 0`` store it): reads M*N + M*K, writes N*K + N.

That totals 3 M*N read and 1 M*N written. Forming delta in the operand load of both GEMMs
instead moves 4 M*N read and 0 written: the same bytes, but s'(z) is then also evaluated in
the dW main loop, once per column tile of dW. Inside the dx GEMM it is already evaluated
once per column tile of dx (K / BLOCK_K times per element, and twice in the programs that
store it: Triton recomputes the chain for the store's register layout). On CUDA cores an erf
or exp per element costs a sizeable fraction of a tile's tensor-core work, so the dW GEMM is
kept a plain, well-pipelined product. Where dx is not wanted (the first layer of a network),
the dW kernel forms delta itself from dy and the saved tensor, and delta is never stored.
With the identity activation delta is dy and neither kernel touches a saved tensor.

db accumulates in fp32 inside the dW kernel, so it costs no pass of its own; when only db
is wanted (a frozen weight), the same kernel runs with ``COMPUTE_DW`` off as a column
reduction over the tiles of delta. Where dW has too few tiles to occupy the GPU (narrow
layers), the rows are split across programs and the partial sums added afterwards: the
partials cost 2 * splits * N*K fp32 of extra traffic, small next to the M*(N + K) the
split GEMM reads, since each split covers at least ``MIN_ROWS_PER_SPLIT`` rows (see
``row_splits`` in ``tritonbp/launch.py``).
"""

import triton
import triton.language as tl

from .activations import load_delta
from .precision import cast_to, dot_operand
from .tiling import grouped_tile_index


@triton.jit
def _fused_linear_bwd_dx_kernel(
    # Pointers.
    dy_ptr,
    saved_ptr,
    w_ptr,
    dx_ptr,
    delta_ptr,
    # Sizes.
    M,
    N,
    K,
    M_BUCKET,
    # Strides, in elements.
    stride_dym,
    stride_dyn,
    stride_savedm,
    stride_savedn,
    stride_wn,
    stride_wk,
    stride_dxm,
    stride_dxk,
    stride_deltam,
    stride_deltan,
    # Meta-parameters.
    ACTIVATION: tl.constexpr,
    NEGATIVE_SLOPE: tl.constexpr,
    STORE_DELTA: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_SIZE: tl.constexpr,
):
    """dx = (dy * s'(saved)) W, one (BLOCK_M, BLOCK_K) tile of dx per program.

    delta is formed in fp32 from each loaded tile, rounded to dy's dtype (the precision the
    tensor cores take) and multiplied by the matching W tile; the column of programs with
    ``pid_k == 0`` also stores it when ``STORE_DELTA``.

    Pointers:
        dy_ptr: incoming gradient dC/da, (M, N), any strides.
        saved_ptr: what the forward saved, z or a (M, N); unused for the identity.
        w_ptr: weight, (N, K), any strides.
        dx_ptr: output dC/dx, (M, K), strides (stride_dxm, stride_dxk).
        delta_ptr: output delta = dC/dz, (M, N), dy's dtype; written only if ``STORE_DELTA``.
    Sizes:
        M rows, N output features (the reduction axis here), K input features. ``M_BUCKET``
        is the autotuning key only (M rounded up to a power of two).
    Meta-parameters:
        ACTIVATION: a name from the activation registry; "identity" reads no saved tensor.
        NEGATIVE_SLOPE: the slope of ``leaky_relu``, as in the forward kernel.
        STORE_DELTA: write delta for the dW kernel.
        INPUT_PRECISION, INTERPRETED: as in the forward kernel.
        BLOCK_M, BLOCK_K: tile of dx; BLOCK_N: reduction step; GROUP_SIZE: L2 grouping.
    """
    # Locate this program's tile of dx.
    row_tile, col_tile = grouped_tile_index(
        tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_SIZE
    )
    offs_m = row_tile * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    offs_k = col_tile * BLOCK_K + tl.arange(0, BLOCK_K).to(tl.int64)
    offs_n = tl.arange(0, BLOCK_N).to(tl.int64)
    mask_m = offs_m < M
    mask_k = offs_k < K
    # Only the first column of programs stores delta: the others see no rows to store.
    mask_delta_m = offs_m < tl.where(col_tile == 0, M, 0)

    # Main loop over N: form delta from dy and the saved tensor, then accumulate delta @ W.
    compute_dtype = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    accumulator = tl.zeros((BLOCK_M, BLOCK_K), dtype=compute_dtype)
    for n_start in range(0, N, BLOCK_N):
        n_now = n_start + offs_n
        mask_mn = mask_m[:, None] & (n_now < N)[None, :]
        delta, _ = load_delta(
            dy_ptr + offs_m[:, None] * stride_dym + n_now[None, :] * stride_dyn,
            saved_ptr + offs_m[:, None] * stride_savedm + n_now[None, :] * stride_savedn,
            mask_mn,
            NEGATIVE_SLOPE,
            ACTIVATION,
            INTERPRETED,
        )
        if STORE_DELTA:
            tl.store(
                delta_ptr + offs_m[:, None] * stride_deltam + n_now[None, :] * stride_deltan,
                delta,
                mask=mask_delta_m[:, None] & (n_now < N)[None, :],
            )
        w_tile = tl.load(
            w_ptr + n_now[:, None] * stride_wn + offs_k[None, :] * stride_wk,
            mask=(n_now < N)[:, None] & mask_k[None, :],
            other=0.0,
        )
        accumulator = tl.dot(
            dot_operand(delta, INTERPRETED),
            dot_operand(w_tile, INTERPRETED),
            accumulator,
            input_precision=INPUT_PRECISION,
        )

    # Store dx in its dtype.
    tl.store(
        dx_ptr + offs_m[:, None] * stride_dxm + offs_k[None, :] * stride_dxk,
        cast_to(accumulator, dx_ptr.dtype.element_ty, INTERPRETED),
        mask=mask_m[:, None] & mask_k[None, :],
    )


@triton.jit
def _fused_linear_bwd_dw_kernel(
    # Pointers.
    dy_ptr,
    saved_ptr,
    x_ptr,
    dw_ptr,
    db_ptr,
    # Sizes.
    M,
    N,
    K,
    M_BUCKET,
    rows_per_split,
    # Strides, in elements.
    stride_dym,
    stride_dyn,
    stride_savedm,
    stride_savedn,
    stride_xm,
    stride_xk,
    stride_dws,
    stride_dwn,
    stride_dwk,
    stride_dbs,
    # Meta-parameters.
    ACTIVATION: tl.constexpr,
    NEGATIVE_SLOPE: tl.constexpr,
    COMPUTE_DW: tl.constexpr,
    COMPUTE_DB: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_SIZE: tl.constexpr,
):
    """dW = delta^T x and db = sum_m delta over one split of the rows, per (BLOCK_N, BLOCK_K)
    tile of dW.

    delta = dy * s'(saved) is formed from the loaded tiles; the caller passes the stored
    delta as ``dy_ptr`` with ACTIVATION "identity" when the dx kernel already formed it.
    Both sums accumulate in fp32. The grid's second axis splits the M rows into chunks of
    ``rows_per_split``: a narrow layer (N and K of a few hundred) has only a handful of dW
    tiles, and one program per tile reducing all M rows would leave most of the GPU idle.
    With more than one split each writes its partial sums to its own slice of dw_ptr and
    db_ptr (fp32), which the caller adds up in a fixed order, so results are deterministic.

    Pointers:
        dy_ptr: dC/da (M, N), or delta itself with ACTIVATION "identity"; any strides.
        saved_ptr: what the forward saved, z or a (M, N); unused for the identity.
        x_ptr: layer input, (M, K), any strides; unused unless ``COMPUTE_DW``.
        dw_ptr: output dC/dW, (splits, N, K), strides (stride_dws, stride_dwn, stride_dwk);
            with a single split, (N, K) in the gradient's dtype.
        db_ptr: output dC/db, (splits, N), strides (stride_dbs, 1); written only if
            ``COMPUTE_DB``.
    Sizes:
        M rows (the reduction axis here), N output features, K input features.
        ``M_BUCKET`` is the autotuning key only (M rounded up to a power of two).
        ``rows_per_split``: rows reduced by one program, a multiple of BLOCK_M (or >= M).
    Meta-parameters:
        ACTIVATION: a name from the activation registry.
        NEGATIVE_SLOPE: the slope of ``leaky_relu``, as in the forward kernel.
        COMPUTE_DW: run the GEMM; without it the grid is one program per column of
            BLOCK_N features and the kernel is a db reduction.
        COMPUTE_DB: accumulate and store db (programs with ``pid_k == 0``).
        INPUT_PRECISION, INTERPRETED: as in the forward kernel.
        BLOCK_N, BLOCK_K: tile of dW; BLOCK_M: reduction step; GROUP_SIZE: L2 grouping.
    """
    # Locate this program's tile of dW (a plain column of features for db alone).
    if COMPUTE_DW:
        row_tile, col_tile = grouped_tile_index(
            tl.program_id(0), tl.cdiv(N, BLOCK_N), tl.cdiv(K, BLOCK_K), GROUP_SIZE
        )
    else:
        row_tile = tl.program_id(0)
        col_tile = 0
    offs_n = row_tile * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    offs_k = col_tile * BLOCK_K + tl.arange(0, BLOCK_K).to(tl.int64)
    offs_m = tl.arange(0, BLOCK_M).to(tl.int64)
    mask_n = offs_n < N
    mask_k = offs_k < K
    split = tl.program_id(1)
    first_row = split * rows_per_split
    end_row = tl.minimum(first_row + rows_per_split, M)

    # Main loop over this split's rows: delta^T tiles (BLOCK_N, BLOCK_M) times x tiles
    # (BLOCK_M, BLOCK_K).
    compute_dtype = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    dw_accumulator = tl.zeros((BLOCK_N, BLOCK_K), dtype=compute_dtype)
    db_accumulator = tl.zeros((BLOCK_N,), dtype=compute_dtype)
    # Where delta is formed here and feeds the dW product, a row sum of the same tile would
    # be a second consumer in another register layout, for which Triton recomputes the
    # whole derivative (255 registers and spills for gelu at 128x128x64 on sm_90). The sum
    # then runs on the tensor cores instead: delta^T times a (BLOCK_M, 16) tile of ones
    # gives db in each of 16 identical columns, at 16 / BLOCK_K of the dW product's work.
    DB_BY_DOT: tl.constexpr = COMPUTE_DW and ACTIVATION != "identity"
    ones = tl.full((BLOCK_M, 16), 1.0, dy_ptr.dtype.element_ty)
    db_columns = tl.zeros((BLOCK_N, 16), dtype=compute_dtype)
    for m_start in range(first_row, end_row, BLOCK_M):
        m_now = m_start + offs_m
        mask_m = m_now < end_row
        mask_nm = mask_n[:, None] & mask_m[None, :]
        delta_t, delta_t_wide = load_delta(
            dy_ptr + offs_n[:, None] * stride_dyn + m_now[None, :] * stride_dym,
            saved_ptr + offs_n[:, None] * stride_savedn + m_now[None, :] * stride_savedm,
            mask_nm,
            NEGATIVE_SLOPE,
            ACTIVATION,
            INTERPRETED,
        )
        if COMPUTE_DB and not DB_BY_DOT:
            db_accumulator += tl.sum(delta_t_wide, axis=1)
        if COMPUTE_DW:
            x_tile = tl.load(
                x_ptr + m_now[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                mask=mask_m[:, None] & mask_k[None, :],
                other=0.0,
            )
            dw_accumulator = tl.dot(
                dot_operand(delta_t, INTERPRETED),
                dot_operand(x_tile, INTERPRETED),
                dw_accumulator,
                input_precision=INPUT_PRECISION,
            )
        if COMPUTE_DB and DB_BY_DOT:
            db_columns = tl.dot(
                dot_operand(delta_t, INTERPRETED),
                dot_operand(ones, INTERPRETED),
                db_columns,
                input_precision=INPUT_PRECISION,
            )

    # Store this split's dW and, from the first column of programs, its db.
    if COMPUTE_DW:
        dw_split_ptr = dw_ptr + split.to(tl.int64) * stride_dws
        tl.store(
            dw_split_ptr + offs_n[:, None] * stride_dwn + offs_k[None, :] * stride_dwk,
            cast_to(dw_accumulator, dw_ptr.dtype.element_ty, INTERPRETED),
            mask=mask_n[:, None] & mask_k[None, :],
        )
    if COMPUTE_DB:
        if DB_BY_DOT:
            # The 16 columns are equal; their mean is exact (a power-of-two division).
            db_accumulator = tl.sum(db_columns, axis=1) * (1.0 / 16.0)
        # Every column of programs reduced the same delta rows; the first one stores db.
        mask_db = offs_n < tl.where(col_tile == 0, N, 0) if COMPUTE_DW else mask_n
        db = cast_to(db_accumulator, db_ptr.dtype.element_ty, INTERPRETED)
        tl.store(db_ptr + split.to(tl.int64) * stride_dbs + offs_n, db, mask=mask_db)
