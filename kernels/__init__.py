"""Triton kernels of tritonbp, installed as ``tritonbp.kernels``.

Only ``@triton.jit`` code and its autotuning configurations live here; the PyTorch side
(validation, allocation, launches, autograd) is in ``tritonbp``, and nothing here imports
from it. Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, so the variable must
be set before this package is first imported.
"""

import os

from .configs import GEMM_TILES, INTERPRETER_TILE, KERNELS, GemmTile, autotuned_kernel, tiles_for

# Whether Triton decorated these kernels for its interpreter (CPU tensors) or for a GPU.
INTERPRETED: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

__all__ = [
    "GEMM_TILES",
    "INTERPRETED",
    "INTERPRETER_TILE",
    "KERNELS",
    "GemmTile",
    "autotuned_kernel",
    "tiles_for",
]
