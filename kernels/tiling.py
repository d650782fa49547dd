"""Mapping of a one-dimensional program id onto the output tiles of a GEMM."""

import triton
import triton.language as tl


@triton.jit
def grouped_tile_index(program_id, num_row_tiles, num_col_tiles, GROUP_SIZE: tl.constexpr):
    """(row tile, column tile) for ``program_id``, walking rows in groups of ``GROUP_SIZE``.

    Consecutive programs cover a GROUP_SIZE-tall column of tiles before moving right, so the
    operand rows and columns they read are shared while still in L2, instead of every
    program in a wave reading a different column panel.
    """
    tiles_per_group = GROUP_SIZE * num_col_tiles
    group = program_id // tiles_per_group
    first_row_tile = group * GROUP_SIZE
    rows_in_group = min(num_row_tiles - first_row_tile, GROUP_SIZE)
    row_tile = first_row_tile + (program_id % tiles_per_group) % rows_in_group
    col_tile = (program_id % tiles_per_group) // rows_in_group
    return row_tile, col_tile
