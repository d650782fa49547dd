"""Autotuning configurations of the GEMM kernels, per GPU target and element size.

The three kernels are GEMMs whose block sizes play different roles: the forward tiles its
output (M, N) and reduces over K, the dx kernel tiles (M, K) and reduces over N, the dW
kernel tiles (N, K) and reduces over M. One table of tiles, written in those roles, serves
all three, except that the backward kernels take smaller tiles on sm_80 (BACKWARD_TILES).
Every entry must compile for its target without spilling, fit the target's
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
# (164 KiB on sm_80, 227 KiB on sm_90) with room for the epilogue. `tritonbp audit` (Triton
# 3.9) checks every entry. Left out because their forward spills registers where these
# tiles do not: 128x256x64 with 8 warps (gelu +bias +z at 255 registers: 776 B of spills on
# sm_80, 560 B on sm_90) and fp32 128x128x32 with 8 warps (without TF32, 8 to 24 B on sm_80
# and 24 B in 16 of the 28 forward variants on sm_90; with TF32 it passes). Run with 8 warps
# instead of 4, which spill: 128x128x32 16-bit on sm_80 (forward, up to 912 B), 128x64x32
# fp32 (forward, up to 40 B) and on sm_80 64x64x32 fp32 (dW without TF32, 24 B even for
# the identity); on sm_90 64x32x32 with 4 warps replaces the latter.
GEMM_TILES: dict[tuple[int, int], tuple[GemmTile, ...]] = {
    (80, 2): (
        GemmTile(128, 128, 64, 8, 3),
        GemmTile(128, 128, 32, 8, 4),
        GemmTile(64, 64, 64, 4, 4),
    ),
    (80, 4): (
        GemmTile(128, 64, 32, 8, 4),
        GemmTile(64, 64, 32, 8, 4),
    ),
    (90, 2): (
        GemmTile(128, 128, 64, 8, 4),
        GemmTile(64, 128, 64, 4, 4),
        GemmTile(64, 64, 64, 4, 4),
    ),
    (90, 4): (
        GemmTile(128, 64, 32, 8, 4),
        GemmTile(64, 32, 32, 4, 4),
    ),
}

# The backward kernels on sm_80 form delta = dy * s'(z) in the operand of mma.sync, whose
# register layout repeats it in every warp along the output columns; with gelu that pushes
# the tiles above to 255 registers and up to 1.8 KB of spills. With these smaller
# reduction steps (and smaller fp32 tiles) no activation spills there (Triton 3.9). sm_90's
# wgmma takes the operand once per warpgroup, and the general table serves both directions.
BACKWARD_TILES: dict[tuple[int, int], tuple[GemmTile, ...]] = {
    (80, 2): (
        GemmTile(128, 128, 32, 8, 3),
        GemmTile(64, 128, 32, 8, 4),
        GemmTile(64, 64, 32, 4, 4),
    ),
    (80, 4): (
        GemmTile(64, 64, 16, 8, 4),
        GemmTile(64, 32, 32, 8, 4),
        GemmTile(32, 64, 16, 4, 4),
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


def tiles_for(kernel_name: str, target: int | None, element_size: int) -> tuple[GemmTile, ...]:
    """The tiles kernel ``kernel_name`` tries on ``target`` (80 or 90; None: the interpreter).

    Raises:
        KeyError: no table exists for that target and element size.
    """
    if target is None:
        return (INTERPRETER_TILE,)
    if kernel_name != "fwd" and (target, element_size) in BACKWARD_TILES:
        return BACKWARD_TILES[(target, element_size)]
    return GEMM_TILES[(target, element_size)]


@functools.cache
def autotuned_kernel(kernel_name: str, target: int | None, element_size: int):
    """Kernel ``kernel_name`` wrapped in an autotuner over the tiles of ``tiles_for``.

    Built once per (kernel, target, element size); with a single tile (the interpreter)
    the autotuner launches it directly and benchmarks nothing.
    """
    kernel = KERNELS[kernel_name][0]
    tiles = tiles_for(kernel_name, target, element_size)
    configs = [tile_config(kernel_name, tile) for tile in tiles]
    return triton.autotune(configs=configs, key=AUTOTUNE_KEY)(kernel)
