"""Casts between the kernels' fp32 arithmetic and their operands' storage dtypes.

On a GPU these are plain ``.to`` conversions. Triton's interpreter, which runs the same
kernels on the CPU, handles 16-bit floats differently from the GPU in two ways: it holds
bf16 values as raw 16-bit integers, so ``tl.dot`` on them returns garbage, and its
fp32 -> bf16 conversion truncates instead of rounding to nearest even. With ``INTERPRETED``
set, these functions work around both, so that interpreter results match the GPU's bit for
bit where the arithmetic does.
"""

import triton
import triton.language as tl


@triton.jit
def dot_operand(tile, INTERPRETED: tl.constexpr):
    """``tile`` as ``tl.dot`` should receive it: unchanged on a GPU (16-bit operands keep the
    tensor cores), widened to fp32 under the interpreter, where the products are exact."""
    if INTERPRETED and tile.dtype.primitive_bitwidth == 16:
        return tile.to(tl.float32)
    return tile


@triton.jit
def cast_to(value, DTYPE: tl.constexpr, INTERPRETED: tl.constexpr):
    """``value`` converted to ``DTYPE`` with round-to-nearest-even, as on the GPU."""
    if INTERPRETED and DTYPE == tl.bfloat16:
        # bf16 is the upper half of an fp32: add half an ulp of bf16 (minus one where the
        # kept half is even, so that ties go to even) and keep the upper 16 bits. NaN and
        # inf keep their exponent bits, and values past the largest bf16 round to inf.
        bits = value.to(tl.float32).to(tl.uint32, bitcast=True)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)
        return (rounded >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return value.to(DTYPE)
