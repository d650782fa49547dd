"""Autotuning configurations of the GEMM kernels, per GPU target and element size.

The three kernels are GEMMs whose block sizes play different roles: the forward tiles its
output (M, N) and reduces over K, the dx kernel tiles (M, K) and reduces over N, the dW
kernel tiles (N, K) and reduces over M. One table of tiles, written in those roles, serves
all three. Every entry must compile for its target without spilling, fit the target's
shared memory and use its tensor cores: ``tritonbp audit`` checks exactly these lists, and
an entry that fails there is removed here rather than skipped at run time.

Under Triton's interpreter a single small tile is used, so nothing is benchmarked and odd
sizes still exercise several programs and every mask.
"""

import functools
from typing import NamedTuple

import triton

from .fused_linear_backward import _fused_linear_bwd_dw_kernel, _fused_linear_bwd_dx_kernel
from .fused_linear_forward import _fused_linear_fwd_kernel


class GemmTile(NamedTuple):
    """One launch configuration: output tile, reduction step, warps and pipeline stages."""

    rows: int
    cols: int
    reduction: int
    num_warps: int
    num_stages: int


# Keyed by (compute capability as 80 or 90, bytes per element of the operands). Stages are
# chosen so that stages * (rows + cols) * reduction * bytes fits the target's shared memory
# (164 KiB on sm_80, 227 KiB on sm_90) with room for the epilogue.
GEMM_TILES: dict[tuple[int, int], tuple[GemmTile, ...]] = {
    (80, 2): (
        GemmTile(128, 256, 64, 8, 3),
        GemmTile(128, 128, 64, 8, 3),
        GemmTile(128, 128, 32, 4, 4),
        GemmTile(64, 64, 64, 4, 4),
    ),
    (80, 4): (
        GemmTile(128, 128, 32, 8, 3),
        GemmTile(128, 64, 32, 4, 4),
        GemmTile(64, 64, 32, 4, 4),
    ),
    (90, 2): (
        GemmTile(128, 256, 64, 8, 3),
        GemmTile(128, 128, 64, 8, 4),
        GemmTile(64, 128, 64, 4, 4),
        GemmTile(64, 64, 64, 4, 4),
    ),
    (90, 4): (
        GemmTile(128, 128, 32, 8, 3),
        GemmTile(128, 64, 32, 4, 4),
        GemmTile(64, 64, 32, 4, 4),
    ),
}

# The one tile used under Triton's interpreter.
INTERPRETER_TILE = GemmTile(32, 32, 32, 4, 1)

# Row tiles per group in the L2-friendly program order (see tiling.py).
GROUP_SIZE = 8

# Each kernel's block-size names for (output rows, output columns, reduction).
KERNELS = {
    "fwd": (_fused_linear_fwd_kernel, ("BLOCK_M", "BLOCK_N", "BLOCK_K")),
    "bwd_dx": (_fused_linear_bwd_dx_kernel, ("BLOCK_M", "BLOCK_K", "BLOCK_N")),
    "bwd_dw": (_fused_linear_bwd_dw_kernel, ("BLOCK_N", "BLOCK_K", "BLOCK_M")),
}

# Autotuning key: M is bucketed to a power of two by the caller, so that a new number of
# tokens reuses the configuration tuned for its bucket instead of benchmarking again.
AUTOTUNE_KEY = ["M_BUCKET", "N", "K"]


def tile_config(kernel_name: str, tile: GemmTile) -> triton.Config:
    """The ``triton.Config`` that launches kernel ``kernel_name`` with ``tile``."""
    row_name, col_name, reduction_name = KERNELS[kernel_name][1]
    return triton.Config(
        {
            row_name: tile.rows,
            col_name: tile.cols,
            reduction_name: tile.reduction,
            "GROUP_SIZE": GROUP_SIZE,
        },
        num_warps=tile.num_warps,
        num_stages=tile.num_stages,
    )


def tiles_for(target: int | None, element_size: int) -> tuple[GemmTile, ...]:
    """The tiles to try on ``target`` (80 or 90; None for the interpreter).

    Raises:
        KeyError: no table exists for that target and element size.
    """
    if target is None:
        return (INTERPRETER_TILE,)
    return GEMM_TILES[(target, element_size)]


@functools.cache
def autotuned_kernel(kernel_name: str, target: int | None, element_size: int):
    """Kernel ``kernel_name`` wrapped in an autotuner over the tiles of ``tiles_for``.

    Built once per (kernel, target, element size); with a single tile (the interpreter)
    the autotuner launches it directly and benchmarks nothing.
    """
    kernel = KERNELS[kernel_name][0]
    configs = [tile_config(kernel_name, tile) for tile in tiles_for(target, element_size)]
    return triton.autotune(configs=configs, key=AUTOTUNE_KEY)(kernel)
