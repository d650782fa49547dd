"""Launch wrappers of the Triton kernels: allocate outputs, pick the configuration, launch.

The callers (the custom ops in ``ops.py``) have already validated shapes, dtypes and
devices; these functions take 2-D operands of any strides and return fresh tensors.
"""

import contextlib
import functools

import torch
import triton

from tritonbp import kernels
from tritonbp.activations import SavedForBackward, saved_for_backward
from tritonbp.reference import input_features


def _target(device: torch.device) -> int | None:
    """The configuration table for ``device``: 90 (Hopper and newer), 80, or None (CPU)."""
    if device.type == "cpu":
        if not kernels.INTERPRETED:
            raise RuntimeError(
                "tritonbp's kernels were loaded for a GPU, so they cannot run on CPU tensors: "
                "set TRITON_INTERPRET=1 before tritonbp first launches a kernel, or set "
                "TRITONBP_BACKEND=torch"
            )
        return None
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8:
        raise NotImplementedError(
            f"tritonbp's kernels need a GPU of compute capability 8.0 or newer, got {major}.x "
            f"on {device}; set TRITONBP_BACKEND=torch to use the PyTorch path"
        )
    return 90 if major >= 9 else 80


def _kernel(name: str, operand: torch.Tensor):
    """The autotuned kernel ``name`` for ``operand``'s device and element size."""
    target = _target(operand.device)
    try:
        return kernels.autotuned_kernel(name, target, operand.element_size())
    except KeyError:
        raise NotImplementedError(
            f"tritonbp's kernels have no configuration for {operand.dtype} on sm_{target}; "
            "use float16, bfloat16 or float32 there, or set TRITONBP_BACKEND=torch"
        ) from None


def _dot_options(operand: torch.Tensor) -> dict:
    """Compile-time precision flags for ``operand``'s dtype and device.

    fp32 uses TF32 tensor cores only where PyTorch's own matmul setting allows them
    (``torch.backends.cuda.matmul.allow_tf32``, set by ``torch.set_float32_matmul_precision``).
    CPU tensors run in Triton's interpreter, which needs the 16-bit workarounds of
    ``tritonbp/kernels/precision.py``.
    """
    use_tf32 = (
        operand.dtype == torch.float32 and operand.is_cuda and torch.backends.cuda.matmul.allow_tf32
    )
    return {
        "INPUT_PRECISION": "tf32" if use_tf32 else "ieee",
        "INTERPRETED": operand.device.type == "cpu",
    }


def _m_bucket(rows: int) -> int:
    """M rounded up to a power of two: the autotuning key, so new token counts do not retune."""
    return triton.next_power_of_2(max(rows, 1))


def _slope_constant(activation: str, negative_slope: float) -> float:
    """The NEGATIVE_SLOPE constant: the slope for ``leaky_relu``, 0.0 for the others.

    A compile-time constant, so that other activations compile once whatever slope a caller
    passed along.
    """
    return float(negative_slope) if activation == "leaky_relu" else 0.0


def _device_guard(tensor: torch.Tensor):
    """Make ``tensor``'s GPU current, since Triton launches on the current device."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _pointer(tensor: torch.Tensor, stand_in: torch.Tensor) -> torch.Tensor:
    """``tensor``, or ``stand_in`` where it holds no memory that a launch could point at.

    Used for operands a kernel never reads at these sizes (an empty reduction) or under a
    compile-time flag that disables them; the kernel still needs a valid pointer.
    """
    return tensor if tensor.numel() > 0 else stand_in


def fused_linear_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str,
    negative_slope: float,
    store_z: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """a = s(x W^T + b) and optionally z, by ``_fused_linear_fwd_kernel``.

    Args:
        x: (M, K), any strides. weight: (N, K). bias: (N,) or None.
        activation: a registry name; negative_slope: ``leaky_relu``'s slope.
        store_z: also return z, for a backward that reads the pre-activation.

    Returns:
        ``(a, z)``, (M, N) contiguous in x's dtype; z is an empty tensor unless ``store_z``.
    """
    rows, in_features = x.shape
    out_features = weight.shape[0]
    a = x.new_empty((rows, out_features))
    z = x.new_empty((rows, out_features)) if store_z else x.new_empty(0)
    if a.numel() == 0:
        return a, z
    stand_in = a
    kernel = _kernel("fwd", x)

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(out_features, meta["BLOCK_N"]),)

    with _device_guard(x):
        kernel[grid](
            _pointer(x, stand_in),
            _pointer(weight, stand_in),
            bias if bias is not None else stand_in,
            a,
            z if store_z else stand_in,
            rows,
            out_features,
            in_features,
            _m_bucket(rows),
            x.stride(0),
            x.stride(1),
            weight.stride(0),
            weight.stride(1),
            a.stride(0),
            a.stride(1),
            ACTIVATION=activation,
            NEGATIVE_SLOPE=_slope_constant(activation, negative_slope),
            HAS_BIAS=bias is not None,
            STORE_Z=store_z,
            **_dot_options(x),
        )
    return a, z


def fused_linear_bwd(
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
    """(dx, dW, db) of the fused layer by the two backward kernels.

    The dx kernel forms delta = dy * s'(saved) and, when dW or db are wanted too, writes it
    once; the dW kernel then reads that delta and reduces db alongside. Without dx the dW
    kernel forms delta itself. See ``tritonbp/kernels/fused_linear_backward.py``.

    Args:
        dy: dC/da, (M, N), any strides.
        saved: what the forward saved (z or a, (M, N)), or None for the identity.
        x: the layer input (M, K), or None when dW is not wanted.
        weight: (N, K), or None when dx is not wanted.
        need_dx, need_dw, need_db: which gradients to compute.

    Returns:
        dx (M, K), dW (N, K), db (N,) in dy's dtype; those not asked for are empty tensors.
    """
    rows, out_features = dy.shape
    in_features = input_features(x, weight)
    dx = dy.new_empty((rows, in_features)) if need_dx else dy.new_empty(0)
    # Every wanted gradient with elements is written by a kernel, zeros included (M = 0).
    dw = dy.new_empty((out_features, in_features)) if need_dw else dy.new_empty(0)
    db = dy.new_empty(out_features) if need_db else dy.new_empty(0)
    reads_saved = saved_for_backward(activation, negative_slope) is not SavedForBackward.NOTHING
    saved_operand = saved if reads_saved else dy
    options = _dot_options(dy)

    # dx = delta W, and delta for the dW kernel when it needs one and it differs from dy.
    dw_source, dw_activation = dy, activation
    if need_dx and dx.numel() > 0:
        store_delta = reads_saved and (need_dw or need_db)
        delta = dy.new_empty((rows, out_features)) if store_delta else dx
        dx_kernel = _kernel("bwd_dx", dy)

        def dx_grid(meta):
            return (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(in_features, meta["BLOCK_K"]),)

        with _device_guard(dy):
            dx_kernel[dx_grid](
                _pointer(dy, dx),
                _pointer(saved_operand, dx),
                _pointer(weight, dx),
                dx,
                delta,
                M=rows,
                N=out_features,
                K=in_features,
                M_BUCKET=_m_bucket(rows),
                stride_dym=dy.stride(0),
                stride_dyn=dy.stride(1),
                stride_savedm=saved_operand.stride(0),
                stride_savedn=saved_operand.stride(1),
                stride_wn=weight.stride(0),
                stride_wk=weight.stride(1),
                stride_dxm=dx.stride(0),
                stride_dxk=dx.stride(1),
                stride_deltam=delta.stride(0),
                stride_deltan=delta.stride(1),
                ACTIVATION=activation,
                NEGATIVE_SLOPE=_slope_constant(activation, negative_slope),
                STORE_DELTA=store_delta,
                **options,
            )
        if store_delta:
            dw_source, dw_activation = delta, "identity"

    # dW = delta^T x and db = sum_m delta, in one pass over the rows of delta.
    compute_dw = need_dw and dw.numel() > 0
    compute_db = need_db and db.numel() > 0
    if compute_dw or compute_db:
        dw, db = _dw_db(
            dw_source,
            saved_operand if dw_activation != "identity" else dw_source,
            x if compute_dw else dw_source,
            dw,
            db,
            compute_dw,
            compute_db,
            dw_activation,
            negative_slope,
            in_features,
            options,
        )
    return dx, dw, db


# Each split of the dW reduction covers at least this many rows, so that the partial sums it
# writes (N*K values) stay small next to the rows of delta and x it reads.
MIN_ROWS_PER_SPLIT = 512
# Splits are a whole number of this many rows, a multiple of every BLOCK_M in the tables.
_SPLIT_GRANULE = 256


def _parallel_units(device: torch.device) -> int:
    """Programs a device runs at once: its streaming multiprocessors; 1 for the interpreter,
    which runs programs one after another."""
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def row_splits(rows: int, out_features: int, in_features: int, parallel_units: int) -> int:
    """How many row splits the dW reduction gets: enough programs to fill one wave.

    The dW GEMM has one program per output tile, counted here with a nominal 128 x 128
    tile; a layer 128 wide has a single one. When that leaves the GPU's ``parallel_units``
    mostly idle, the M rows are split, each split at least ``MIN_ROWS_PER_SPLIT`` rows.

    Args:
        rows: M. out_features: N. in_features: K, or 0 when only db is reduced.
        parallel_units: streaming multiprocessors of the GPU.

    Returns:
        The number of splits, at least 1.
    """
    output_tiles = triton.cdiv(out_features, 128) * max(triton.cdiv(in_features, 128), 1)
    return max(1, min(parallel_units // output_tiles, rows // MIN_ROWS_PER_SPLIT))


def _dw_db(
    delta_source: torch.Tensor,
    saved: torch.Tensor,
    x: torch.Tensor,
    dw: torch.Tensor,
    db: torch.Tensor,
    compute_dw: bool,
    compute_db: bool,
    activation: str,
    negative_slope: float,
    in_features: int,
    options: dict,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``_fused_linear_bwd_dw_kernel`` for dW (N, K) and / or db (N,).

    ``delta_source`` is dy (delta formed from it and ``saved`` with ``activation``) or the
    stored delta (``activation`` "identity"). Where ``row_splits`` splits the rows, the
    kernel writes per-split partial sums in the accumulation dtype, added here in split
    order, which keeps the result deterministic.

    Returns:
        ``(dw, db)``: the given tensors filled, or new ones summed from the partials; a
        gradient not computed is returned as given.
    """
    rows, out_features = delta_source.shape
    splits = row_splits(
        rows,
        out_features,
        in_features if compute_dw else 0,
        _parallel_units(delta_source.device),
    )
    rows_per_split = triton.cdiv(triton.cdiv(rows, splits), _SPLIT_GRANULE) * _SPLIT_GRANULE
    splits = triton.cdiv(rows, rows_per_split) if splits > 1 else 1
    if splits == 1:
        rows_per_split = rows
        dw_out, db_out = dw, db
    else:
        # Partial sums stay in the accumulation dtype until they are added.
        partial_dtype = torch.float64 if delta_source.dtype == torch.float64 else torch.float32
        new_partials = functools.partial(delta_source.new_empty, dtype=partial_dtype)
        dw_out = new_partials((splits, out_features, in_features)) if compute_dw else None
        db_out = new_partials((splits, out_features)) if compute_db else None
    stand_in = dw_out if compute_dw else db_out

    def grid(meta):
        column_tiles = triton.cdiv(in_features, meta["BLOCK_K"]) if compute_dw else 1
        return (triton.cdiv(out_features, meta["BLOCK_N"]) * column_tiles, splits)

    # Strides of the (splits, N, K) and (splits, N) outputs; with a single split they are
    # the 2-D and 1-D gradients themselves and the split stride is never used.
    stride_dws, stride_dwn, stride_dwk = 0, 0, 0
    if compute_dw:
        stride_dws, stride_dwn, stride_dwk = ((0,) if splits == 1 else ()) + dw_out.stride()
    stride_dbs = db_out.stride(0) if compute_db and splits > 1 else 0
    with _device_guard(delta_source):
        _kernel("bwd_dw", delta_source)[grid](
            _pointer(delta_source, stand_in),
            _pointer(saved, stand_in),
            _pointer(x, stand_in),
            dw_out if compute_dw else stand_in,
            db_out if compute_db else stand_in,
            M=rows,
            N=out_features,
            K=in_features,
            M_BUCKET=_m_bucket(rows),
            rows_per_split=rows_per_split,
            stride_dym=delta_source.stride(0),
            stride_dyn=delta_source.stride(1),
            stride_savedm=saved.stride(0),
            stride_savedn=saved.stride(1),
            stride_xm=x.stride(0),
            stride_xk=x.stride(1),
            stride_dws=stride_dws,
            stride_dwn=stride_dwn,
            stride_dwk=stride_dwk,
            stride_dbs=stride_dbs,
            ACTIVATION=activation,
            NEGATIVE_SLOPE=_slope_constant(activation, negative_slope),
            COMPUTE_DW=compute_dw,
            COMPUTE_DB=compute_db,
            **options,
        )
    if splits > 1:
        dw = dw_out.sum(dim=0).to(delta_source.dtype) if compute_dw else dw
        db = db_out.sum(dim=0).to(delta_source.dtype) if compute_db else db
    return dw, db
