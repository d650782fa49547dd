"""Compile the GEMM kernels for sm_80 and sm_90 and audit what Triton generates.

Every row compiles one kernel, with one autotuning configuration, for one dtype, one
compile-time variant and one GPU target, on this machine (no GPU needed), and reports the
registers per thread, the bytes of local memory (spills), the shared memory per block,
whether the product runs on tensor cores (``mma.sync`` on sm_80, ``wgmma`` on sm_90) and
whether TMA or ``cp.async`` copies feed it. A row passes when it compiles, spills nothing,
fits the target's shared memory, and, where the dtype allows (fp16, bf16, fp32 as TF32), uses
the tensor cores of its target. The exit status is 1 when a row fails.

What this cannot tell: speed, and whether the results are right; those need a GPU and the
test suite respectively.

Plans: by default, every kernel, configuration and dtype with one representative activation,
plus every launchable variant with one configuration (bf16); ``--all`` compiles the full
cross product. Results are cached per row, keyed by the kernel sources, the Triton and
ptxas versions and the row itself, so a second run only reads the cache.

Examples:
    tritonbp audit
    tritonbp audit --filter kernel=fwd --filter target=90 --filter dtype=bfloat16
    tritonbp audit --all --json > audit.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend

from tritonbp import kernels as kernel_package
from tritonbp.activations import ACTIVATIONS, SavedForBackward, saved_for_backward
from tritonbp.kernels import KERNELS, GemmTile, tiles_for
from tritonbp.kernels.configs import tile_config

__all__ = [
    "DTYPES",
    "SHARED_MEMORY_LIMITS",
    "TARGETS",
    "AuditCase",
    "AuditRow",
    "Variant",
    "add_arguments",
    "default_plan",
    "filter_cases",
    "format_table",
    "full_plan",
    "kernel_specialization",
    "launchable_variants",
    "run",
    "run_audit",
]

logger = logging.getLogger(__name__)

TARGETS: tuple[int, ...] = (80, 90)
"""Compute capabilities audited, as the configuration table names them."""

SHARED_MEMORY_LIMITS: dict[int, int] = {80: 166912, 90: 232448}
"""Largest shared memory one block may opt in to, in bytes (A100: 163 KiB, H100: 227 KiB)."""

# The PTX instruction that shows a GEMM runs on the tensor cores of each target, and the
# short name the table shows for it. Hopper also runs mma.sync, at a fraction of wgmma's rate,
# so on sm_90 only wgmma counts.
_TENSOR_CORE_PTX: dict[int, tuple[str, str]] = {
    80: ("mma.sync.aligned", "mma"),
    90: ("wgmma.mma_async", "wgmma"),
}

DTYPES: dict[str, tuple[str, int]] = {
    "float16": ("fp16", 2),
    "bfloat16": ("bf16", 2),
    "float32": ("fp32", 4),
}
"""Operand dtypes audited: name -> (Triton pointer type, bytes per element)."""

# The activation and flags of the configuration sweep: the heaviest epilogue and prologue
# (erf and exp per element, z and delta stored), so the most registers a tile needs.
_REPRESENTATIVE_ACTIVATION = "gelu"
# The dtype of the variant sweep.
_VARIANT_SWEEP_DTYPE = "bfloat16"
# leaky_relu's slopes: PyTorch's default, and a negative one, which makes the forward store z.
_LEAKY_SLOPES = (0.01, -0.2)
# Sizes of the representative launch: a multiple of 16, as at any typical layer width, and
# small enough for 32-bit offsets, so that Triton specializes sizes and strides as it would.
_REPRESENTATIVE_SIZE = 4096
# Constexprs that only Triton's interpreter sets (its workarounds for 16-bit floats); a GPU
# launch passes them False. Whichever of these names a kernel declares gets False.
_INTERPRETER_FLAGS = ("INTERPRETED",)
# Bumped whenever this module changes how a row is compiled or what it records, which
# invalidates every cached row (kernel and Triton changes invalidate them by themselves).
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class Variant:
    """One compile-time variant of a kernel: every constexpr except the tile sizes.

    Attributes:
        kernel: a name from ``tritonbp.kernels.KERNELS``.
        activation: a name from the activation registry.
        negative_slope: the ``NEGATIVE_SLOPE`` constant (0.0 except for ``leaky_relu``).
        flags: the kernel's boolean constexprs, as (name, value) pairs: ``HAS_BIAS`` and
            ``STORE_Z`` (fwd), ``STORE_DELTA`` (bwd_dx), ``COMPUTE_DW`` and ``COMPUTE_DB``
            (bwd_dw).
        input_precision: ``INPUT_PRECISION``, "ieee" or "tf32" (fp32 operands only).
    """

    kernel: str
    activation: str
    negative_slope: float
    flags: tuple[tuple[str, bool], ...]
    input_precision: str

    @property
    def has_gemm(self) -> bool:
        """Whether this variant runs ``tl.dot`` (the dW kernel without dW is a reduction)."""
        return dict(self.flags).get("COMPUTE_DW", True)

    @property
    def label(self) -> str:
        """A short name for tables, e.g. ``gelu +bias +z`` or ``leaky_relu(-0.2) +dw +db``."""
        name = self.activation
        if self.activation == "leaky_relu":
            name += f"({self.negative_slope:g})"
        parts = [name, *(f"+{_FLAG_LABELS[flag]}" for flag, value in self.flags if value)]
        if self.input_precision != "ieee":
            parts.append(self.input_precision)
        return " ".join(parts)

    def constexprs(self) -> dict[str, Any]:
        """The kernel's constexpr arguments other than the tile, as a launch passes them."""
        return {
            "ACTIVATION": self.activation,
            "NEGATIVE_SLOPE": self.negative_slope,
            **dict(self.flags),
            "INPUT_PRECISION": self.input_precision,
        }


_FLAG_LABELS = {
    "HAS_BIAS": "bias",
    "STORE_Z": "z",
    "STORE_DELTA": "delta",
    "COMPUTE_DW": "dw",
    "COMPUTE_DB": "db",
}


def launchable_variants(kernel: str, dtype: str) -> tuple[Variant, ...]:
    """Every compile-time variant the launch wrappers can request, from the registry.

    This is the one place that knows which constexpr combinations ``tritonbp.launch``
    produces:

    - fwd: every activation, with and without bias; ``STORE_Z`` on only where the backward
      reads z (``SavedForBackward.PREACTIVATION``), and off always (no gradient wanted).
    - bwd_dx: every activation; ``STORE_DELTA`` on only where delta differs from dy (any
      activation but the identity) and the dW kernel needs it, and off always.
    - bwd_dw: every activation (the identity when it reads the delta the dx kernel stored),
      computing dW and db, dW alone, or db alone.

    ``leaky_relu`` takes PyTorch's default slope; in the forward also a negative one with
    ``STORE_Z`` on, since that is what a negative slope changes (the backward reads z instead
    of a). Elsewhere a negative slope only changes a constant. Other activations take slope
    0.0, as the launch wrappers pass it. fp32 comes with both ``tl.dot`` precisions, 16-bit
    dtypes with "ieee" only.

    Args:
        kernel: a name from ``tritonbp.kernels.KERNELS``.
        dtype: a name from :data:`DTYPES`.

    Raises:
        ValueError: ``kernel`` or ``dtype`` is not one of those names.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel: expected one of {tuple(KERNELS)}, got {kernel!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {tuple(DTYPES)}, got {dtype!r}")
    precisions = ("ieee", "tf32") if DTYPES[dtype][1] == 4 else ("ieee",)

    variants = []
    for activation in ACTIVATIONS:
        slopes = _LEAKY_SLOPES if activation == "leaky_relu" else (0.0,)
        for slope in slopes:
            stores_z = saved_for_backward(activation, slope) is SavedForBackward.PREACTIVATION
            if kernel == "fwd":
                # Without z, a negative slope compiles to the code of the default one.
                store_z = (True,) if slope < 0 else (False, True) if stores_z else (False,)
                flag_sets = [
                    (("HAS_BIAS", bias), ("STORE_Z", z)) for bias in (True, False) for z in store_z
                ]
            elif slope < 0:
                continue
            elif kernel == "bwd_dx":
                store_delta = (False, True) if activation != "identity" else (False,)
                flag_sets = [(("STORE_DELTA", store),) for store in store_delta]
            else:
                flag_sets = [
                    (("COMPUTE_DW", True), ("COMPUTE_DB", True)),
                    (("COMPUTE_DW", True), ("COMPUTE_DB", False)),
                    (("COMPUTE_DW", False), ("COMPUTE_DB", True)),
                ]
            for flags in flag_sets:
                for precision in precisions:
                    variants.append(Variant(kernel, activation, slope, flags, precision))
    return tuple(variants)


@dataclass(frozen=True)
class AuditCase:
    """One row to compile: a kernel, a tile, a dtype, a variant and a target.

    Attributes:
        kernel: a name from ``tritonbp.kernels.KERNELS``.
        tile: rows, cols, reduction, warps, stages, as in ``tritonbp.kernels.GemmTile``.
        dtype: a name from :data:`DTYPES`.
        variant: the other constexprs.
        target: 80 or 90.
    """

    kernel: str
    tile: tuple[int, int, int, int, int]
    dtype: str
    variant: Variant
    target: int

    @property
    def config(self) -> str:
        """The tile as the table shows it, e.g. ``128x256x64 w8 s3``."""
        rows, cols, reduction, warps, stages = self.tile
        return f"{rows}x{cols}x{reduction} w{warps} s{stages}"

    @property
    def expects_tensor_cores(self) -> bool:
        """Whether this row must use its target's tensor cores to pass."""
        wide_operands = DTYPES[self.dtype][1] == 4 and self.variant.input_precision == "ieee"
        return self.variant.has_gemm and not wide_operands

    def key(self) -> dict[str, Any]:
        """Plain data identifying the row, for the cache key and JSON output."""
        return {
            "kernel": self.kernel,
            "tile": list(self.tile),
            "dtype": self.dtype,
            "variant": {
                "activation": self.variant.activation,
                "negative_slope": self.variant.negative_slope,
                "flags": dict(self.variant.flags),
                "input_precision": self.variant.input_precision,
            },
            "target": self.target,
        }


@dataclass(frozen=True)
class AuditRow:
    """What compiling one :class:`AuditCase` produced.

    Attributes:
        case: the row's parameters.
        registers: registers per thread; None if it did not compile.
        spill_bytes: stack frame plus local memory per thread, in bytes; anything above zero
            means values are spilled out of registers.
        shared_bytes: shared memory per block, dynamic (Triton's buffers) plus static.
        tensor_cores: "wgmma", "mma" or "" for none, from the PTX.
        tma: whether the PTX holds TMA copies (``cp.async.bulk.tensor``).
        cp_async: whether the PTX holds ``cp.async`` copies, the sign of a pipelined main loop.
        compile_s: seconds ``triton.compile`` took (for a cached row, when it ran).
        error: the compile error, or None.
        cached: whether the row was read from the cache.
    """

    case: AuditCase
    registers: int | None = None
    spill_bytes: int | None = None
    shared_bytes: int | None = None
    tensor_cores: str = ""
    tma: bool = False
    cp_async: bool = False
    compile_s: float = 0.0
    error: str | None = None
    cached: bool = False

    @property
    def failures(self) -> tuple[str, ...]:
        """Why the row fails, one short phrase per reason; empty when it passes."""
        if self.error is not None:
            return ("does not compile",)
        reasons = []
        if self.spill_bytes:
            reasons.append(f"spills {self.spill_bytes} B")
        limit = SHARED_MEMORY_LIMITS[self.case.target]
        if self.shared_bytes is not None and self.shared_bytes > limit:
            reasons.append(f"shared memory {self.shared_bytes} B > {limit} B")
        if self.case.expects_tensor_cores:
            wanted = _TENSOR_CORE_PTX[self.case.target][1]
            if self.tensor_cores != wanted:
                reasons.append(f"no {wanted}")
        return tuple(reasons)

    @property
    def passed(self) -> bool:
        """Whether the row compiled, spills nothing, fits and uses the tensor cores it should."""
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        """The row as plain data, with its verdict."""
        return {
            **self.case.key(),
            "config": self.case.config,
            "variant_label": self.case.variant.label,
            "registers": self.registers,
            "spill_bytes": self.spill_bytes,
            "shared_bytes": self.shared_bytes,
            "tensor_cores": self.tensor_cores,
            "tma": self.tma,
            "cp_async": self.cp_async,
            "compile_s": round(self.compile_s, 3),
            "error": self.error,
            "cached": self.cached,
            "passed": self.passed,
            "failures": list(self.failures),
        }


# --------------------------------------------------------------------------------------------
# Plans.


def _tiles(kernel: str, target: int, dtype: str) -> tuple[tuple[int, int, int, int, int], ...]:
    """The autotuning tiles of ``kernel`` on ``target`` for ``dtype``, as plain tuples."""
    return tuple(tuple(tile) for tile in tiles_for(kernel, target, DTYPES[dtype][1]))


def _representative_variants(kernel: str, dtype: str) -> tuple[Variant, ...]:
    """The variants of the configuration sweep: the representative activation with every
    flag on, once per ``tl.dot`` precision."""
    candidates = [
        variant
        for variant in launchable_variants(kernel, dtype)
        if variant.activation == _REPRESENTATIVE_ACTIVATION
        and all(value for _, value in variant.flags)
    ]
    return tuple(candidates)


def default_plan(targets: Sequence[int] = TARGETS) -> list[AuditCase]:
    """Every kernel x configuration x dtype with one representative activation, plus every
    launchable variant with one configuration (the first tile, bf16), on each target.

    The first tile of each table is its largest, so the variant sweep meets each epilogue
    where registers are tightest.
    """
    cases: dict[AuditCase, None] = {}
    for target in targets:
        for kernel in KERNELS:
            for dtype in DTYPES:
                for tile in _tiles(kernel, target, dtype):
                    for variant in _representative_variants(kernel, dtype):
                        cases[AuditCase(kernel, tile, dtype, variant, target)] = None
            sweep_tile = _tiles(kernel, target, _VARIANT_SWEEP_DTYPE)[0]
            for variant in launchable_variants(kernel, _VARIANT_SWEEP_DTYPE):
                cases[AuditCase(kernel, sweep_tile, _VARIANT_SWEEP_DTYPE, variant, target)] = None
    return list(cases)


def full_plan(targets: Sequence[int] = TARGETS) -> list[AuditCase]:
    """Every kernel x configuration x dtype x launchable variant, on each target."""
    return [
        AuditCase(kernel, tile, dtype, variant, target)
        for target in targets
        for kernel in KERNELS
        for dtype in DTYPES
        for tile in _tiles(kernel, target, dtype)
        for variant in launchable_variants(kernel, dtype)
    ]


_FILTER_KEYS = ("kernel", "dtype", "target", "activation", "config", "variant")


def filter_cases(cases: Sequence[AuditCase], filters: Sequence[str]) -> list[AuditCase]:
    """The cases that match every filter.

    A filter ``key=value`` matches a field exactly: ``kernel``, ``dtype`` (``bf16`` and
    ``bfloat16`` both work), ``target`` (``90`` or ``sm_90``), ``activation``, ``config``
    (``128x128x64 w8 s4``, or its tile part ``128x128x64``); ``variant`` matches a substring of
    the variant's label. A filter without ``=`` matches a substring of the whole row's text.

    Raises:
        ValueError: a filter names an unknown key.
    """
    matchers = [_matcher(text) for text in filters]
    return [case for case in cases if all(match(case) for match in matchers)]


def _matcher(text: str) -> Callable[[AuditCase], bool]:
    """The predicate of one ``--filter`` argument."""
    if "=" not in text:
        return lambda case: text in _case_text(case)
    key, value = (part.strip() for part in text.split("=", 1))
    if key not in _FILTER_KEYS:
        raise ValueError(f"--filter: expected a key among {_FILTER_KEYS}, got {key!r} in {text!r}")
    if key == "kernel":
        return lambda case: case.kernel == value
    if key == "dtype":
        return lambda case: value in (case.dtype, DTYPES[case.dtype][0])
    if key == "target":
        return lambda case: value.removeprefix("sm_") == str(case.target)
    if key == "activation":
        return lambda case: case.variant.activation == value
    if key == "config":
        return lambda case: value in (case.config, case.config.split(" ")[0])
    return lambda case: value in case.variant.label


def _case_text(case: AuditCase) -> str:
    """The row's identifying cells joined, which a bare ``--filter`` searches."""
    return f"{case.kernel} {case.config} {case.dtype} {case.variant.label} sm_{case.target}"


# --------------------------------------------------------------------------------------------
# Specialization: what the JIT would compile at a typical launch.


class _StandInTensor:
    """A tensor argument as the specializer sees it: a dtype and a 16-byte aligned address."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype

    @staticmethod
    def data_ptr() -> int:
        return 0


def _launch_arguments(case: AuditCase) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments ``tritonbp.launch`` passes the kernel for contiguous operands.

    M = N = K = a multiple of 16 and every tensor contiguous, as in a typical training step;
    the argument order, the stand-ins for unused pointers and the zero strides of a dW
    launch without dW mirror ``tritonbp/launch.py``. The tile's constexprs and launch
    options come from ``tile_config``, as the autotuner passes them.
    """
    kernel = KERNELS[case.kernel][0]
    # Five pointers in every kernel; all 16-byte aligned, as PyTorch allocates them.
    pointers = (_StandInTensor(getattr(torch, case.dtype)),) * 5
    m = n = k = _REPRESENTATIVE_SIZE
    sizes = (m, n, k, _REPRESENTATIVE_SIZE)  # M, N, K, M_BUCKET
    if case.kernel == "fwd":
        # x (M, K), W (N, K), a and z (M, N): row-major, so the inner strides are 1.
        strides = (k, 1, k, 1, n, 1)
    elif case.kernel == "bwd_dx":
        # dy, saved (M, N), W (N, K), dx (M, K), delta (M, N).
        strides = (n, 1, n, 1, k, 1, k, 1, n, 1)
    else:
        # One split of the rows (rows_per_split = M), as for any layer wide enough to fill
        # the GPU. dy, saved (M, N), x (M, K); dW (N, K) and db (N,) with split strides 0;
        # without dW the launch passes zero strides for it.
        sizes = (*sizes, m)
        computes_dw = dict(case.variant.flags)["COMPUTE_DW"]
        strides = (n, 1, n, 1, k, 1, 0, *((k, 1) if computes_dw else (0, 0)), 0)
    config = tile_config(case.kernel, GemmTile(*case.tile))
    interpreter_flags = {name: False for name in _INTERPRETER_FLAGS if name in kernel.arg_names}
    keywords = {**case.variant.constexprs(), **interpreter_flags, **config.all_kwargs()}
    return (*pointers, *sizes, *strides), keywords


def kernel_specialization(
    case: AuditCase,
) -> tuple[dict[str, str], dict[tuple[int, ...], Any], dict[tuple[int, ...], Any], dict[str, Any]]:
    """Signature, constexprs, attributes and options of ``case``, as the JIT would derive them.

    Pointers and sizes divisible by 16 get the ``tt.divisibility = 16`` attribute and strides
    equal to 1 become the constant 1; the latter lets 16-bit loads be vectorized and the main
    loop be pipelined, so an audit without it misrepresents the kernel. See
    :func:`_specialization` for how these are derived.

    Returns:
        ``(signature, constexprs, attrs, options)`` for ``triton.compile(ASTSource(...))``.

    Raises:
        RuntimeError: this process imported the kernels for Triton's interpreter.
    """
    kernel = KERNELS[case.kernel][0]
    backend = make_backend(GPUTarget("cuda", case.target, 32))
    specialization, options = _specialization(case)
    signature: dict[str, str] = {}
    constexprs: dict[tuple[int, ...], Any] = {}
    attrs: dict[tuple[int, ...], Any] = {}
    for index, (param, (kind, value)) in enumerate(zip(kernel.params, specialization, strict=True)):
        signature[param.name] = kind
        if kind == "constexpr":
            constexprs[(index,)] = value
        elif isinstance(value, str):
            attrs[(index,)] = backend.parse_attr(value)
    return signature, constexprs, attrs, options


def _specialization(
    case: AuditCase, *, by_hand: bool = False
) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """(kind, attribute or constant) per kernel parameter, and the launch options, of ``case``.

    Triton's own argument binder (``triton.runtime.jit.create_function_from_signature``, the
    code every launch runs, with the same signature in Triton 3.6 to 3.9) is applied to the
    arguments of :func:`_launch_arguments` with the CUDA backend of the target. Where that
    binder is missing, or with ``by_hand``, :func:`_specialize_by_hand` applies the same rules.
    """
    kernel = KERNELS[case.kernel][0]
    if not hasattr(kernel, "params"):
        raise RuntimeError(
            "the kernels were imported for Triton's interpreter (TRITON_INTERPRET=1); the "
            "audit compiles them for a GPU, so it must run in a process without that variable"
        )
    args, keywords = _launch_arguments(case)
    try:
        from triton.runtime.jit import create_function_from_signature
    except ImportError:
        by_hand = True
    if by_hand:
        return _specialize_by_hand(kernel, args, keywords)
    backend = make_backend(GPUTarget("cuda", case.target, 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    _, specialization, options = binder(*args, **keywords)
    return [tuple(item) for item in specialization], dict(options)


def _specialize_by_hand(
    kernel: Any, args: tuple[Any, ...], keywords: dict[str, Any]
) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """The JIT's specialization rules, written out, for a Triton without the binder.

    For the argument kinds these kernels take: a pointer gets the type ``*<dtype>`` and "D"
    (16-byte aligned); an integer equal to 1 becomes the constant 1; other integers are
    ``i32`` (``i64`` past 32 bits) with "D" when divisible by 16; constexprs pass through.
    Keywords that are not parameters (warps, stages, ...) are returned as options.
    """
    names = [param.name for param in kernel.params]
    values = dict(zip(names, args, strict=False))
    values.update({key: value for key, value in keywords.items() if key in names})
    options = {key: value for key, value in keywords.items() if key not in names}
    pointer_types = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
    specialization: list[tuple[str, Any]] = []
    for param in kernel.params:
        value = values[param.name]
        if param.is_constexpr:
            specialization.append(("constexpr", value))
        elif hasattr(value, "data_ptr"):
            aligned = "D" if value.data_ptr() % 16 == 0 else ""
            specialization.append((f"*{pointer_types[value.dtype]}", aligned))
        elif isinstance(value, int) and not isinstance(value, bool):
            if value == 1:
                specialization.append(("constexpr", 1))
            else:
                kind = "i32" if -(2**31) <= value < 2**31 else "i64"
                specialization.append((kind, "D" if value % 16 == 0 else ""))
        else:
            raise TypeError(f"{param.name}: no specialization rule for {type(value).__name__}")
    return specialization, options


# --------------------------------------------------------------------------------------------
# Compiling one row (in a worker process).

_RESOURCE_USAGE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def _compile_case(case: AuditCase) -> AuditRow:
    """Compiles ``case`` and reads its resources from the cubin and its instructions from PTX.

    A compile error becomes the row's ``error``; a failure to inspect what did compile
    (cuobjdump missing, say) propagates, since it says nothing about the kernel.
    """
    signature, constexprs, attrs, options = kernel_specialization(case)
    source = ASTSource(
        fn=KERNELS[case.kernel][0], signature=signature, constexprs=constexprs, attrs=attrs
    )
    started = time.perf_counter()
    try:
        compiled = triton.compile(
            source, target=GPUTarget("cuda", case.target, 32), options=options
        )
    # Whatever the compiler raises is this row's failure, reported with the others.
    except Exception as error:
        return AuditRow(case, error=_error_text(error), compile_s=time.perf_counter() - started)
    compile_s = time.perf_counter() - started

    registers, stack, static_shared, local = _resource_usage(compiled.asm["cubin"])
    ptx = compiled.asm["ptx"]
    instruction, short_name = _TENSOR_CORE_PTX[case.target]
    if instruction in ptx:
        tensor_cores = short_name
    elif any(other in ptx for other, _ in _TENSOR_CORE_PTX.values()):
        # Tensor cores of the other generation (mma.sync on Hopper): named, but not passing.
        tensor_cores = next(name for other, name in _TENSOR_CORE_PTX.values() if other in ptx)
    else:
        tensor_cores = ""
    return AuditRow(
        case,
        registers=registers,
        spill_bytes=stack + local,
        shared_bytes=compiled.metadata.shared + static_shared,
        tensor_cores=tensor_cores,
        tma="cp.async.bulk.tensor" in ptx,
        cp_async=re.search(r"\bcp\.async\.(ca|cg)\b", ptx) is not None,
        compile_s=compile_s,
    )


def _resource_usage(cubin: bytes) -> tuple[int, int, int, int]:
    """(registers, stack bytes, static shared bytes, local bytes) of the cubin's kernel, by
    ``cuobjdump -res-usage`` (shipped with Triton's NVIDIA backend)."""
    with tempfile.TemporaryDirectory(prefix="tritonbp-audit-") as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        completed = subprocess.run(
            [_cuobjdump(), "-res-usage", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
    found = _RESOURCE_USAGE.search(completed.stdout)
    if found is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no resource line:\n{completed.stdout}")
    registers, stack, shared, local = (int(group) for group in found.groups())
    return registers, stack, shared, local


def _cuobjdump() -> str:
    """Path of Triton's cuobjdump (``TRITON_CUOBJDUMP_PATH`` overrides it)."""
    with contextlib.suppress(AttributeError, RuntimeError):
        return triton.knobs.nvidia.cuobjdump.path
    backend_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    return str(backend_dir / "cuobjdump")


def _error_text(error: BaseException) -> str:
    """The compile error in at most a few lines: the last line of Triton's message says what,
    the lines before it where."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    message = "\n".join(lines[-6:]) if lines else ""
    return f"{type(error).__name__}: {message}"


def _worker_init(triton_cache_dir: str) -> None:
    """Set-up of a compile worker: a private Triton cache, so that compile times are real and
    nothing is written to the user's own cache for GPUs they may not have."""
    os.environ["TRITON_CACHE_DIR"] = triton_cache_dir
    # Triton 3.9 warns once per process that its floating-point fusion default will change;
    # the audit compiles with the default a launch gets, so the warning is only noise here.
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")


# --------------------------------------------------------------------------------------------
# The cache of rows.


def default_cache_dir() -> Path:
    """``$TRITONBP_CACHE_DIR/audit``, else ``$XDG_CACHE_HOME/tritonbp/audit``, else
    ``~/.cache/tritonbp/audit``."""
    if os.environ.get("TRITONBP_CACHE_DIR"):
        return Path(os.environ["TRITONBP_CACHE_DIR"]) / "audit"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tritonbp" / "audit"


def _toolchain_digest() -> str:
    """A hash of everything besides the row that decides its result: the sources of every
    kernel module, the Triton and ptxas versions, and :data:`_CACHE_FORMAT`."""
    digest = hashlib.sha256(f"format {_CACHE_FORMAT}\ntriton {triton.__version__}\n".encode())
    # Triton picks one ptxas per target (newer Triton uses its second one from sm_90 on).
    for tool in ("ptxas", "ptxas_blackwell"):
        with contextlib.suppress(AttributeError, RuntimeError):
            digest.update(f"{tool} {getattr(triton.knobs.nvidia, tool).version}\n".encode())
    for source in sorted(Path(kernel_package.__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\n" + source.read_bytes())
    return digest.hexdigest()


def _cache_path(cache_dir: Path, toolchain: str, case: AuditCase) -> Path:
    """Where ``case``'s row is cached."""
    text = json.dumps({"toolchain": toolchain, "case": case.key()}, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()
    return cache_dir / key[:2] / f"{key}.json"


def _read_cached(path: Path, case: AuditCase) -> AuditRow | None:
    """The cached row at ``path``, or None if there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text())
        fields = {field.name for field in dataclasses.fields(AuditRow)} - {"case", "cached"}
        return AuditRow(case, cached=True, **{name: data[name] for name in fields})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cached(path: Path, row: AuditRow) -> None:
    """Stores ``row`` at ``path``; written to a temporary name first, so that a concurrent
    reader never sees half a file."""
    data = {
        field.name: getattr(row, field.name)
        for field in dataclasses.fields(AuditRow)
        if field.name not in ("case", "cached")
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data))
        temporary.replace(path)
    except OSError as error:
        logger.warning("could not cache an audit row at %s: %s", path, error)


# --------------------------------------------------------------------------------------------
# Running a plan.


def run_audit(
    cases: Sequence[AuditCase],
    *,
    jobs: int | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    on_row: Callable[[AuditRow, int, int], None] | None = None,
) -> list[AuditRow]:
    """Compiles every case not already cached, in parallel, and returns the rows in order.

    Compiles run in worker processes started afresh (not forked), with ``TRITON_INTERPRET``
    removed from their environment: the kernels must be decorated for a GPU there even when
    this process runs them in the interpreter, as the test suite does. As with any such pool,
    a script that calls this must do so under ``if __name__ == "__main__":``, since each
    worker imports the script's main module.

    Args:
        cases: what to compile, e.g. :func:`default_plan`.
        jobs: worker processes; by default one per CPU this process may use.
        cache_dir: where rows are cached; :func:`default_cache_dir` by default.
        use_cache: read cached rows (rows are written to the cache either way).
        on_row: called with each finished row, the number finished and the total.

    Returns:
        One row per case, in the order of ``cases``.

    Raises:
        ValueError: ``jobs`` is below 1.
    """
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs: expected a positive number of processes, got {jobs}")
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    toolchain = _toolchain_digest()
    total = len(cases)
    rows: list[AuditRow | None] = [None] * total
    done = 0

    pending: list[int] = []
    for index, case in enumerate(cases):
        row = _read_cached(_cache_path(cache_dir, toolchain, case), case) if use_cache else None
        if row is None:
            pending.append(index)
            continue
        rows[index] = row
        done += 1
        if on_row is not None:
            on_row(row, done, total)

    if pending:
        # Longest compiles first, so that no worker is left with a slow one at the end.
        pending.sort(key=lambda index: -_expected_compile_cost(cases[index]))
        workers = min(jobs or _available_cpus(), len(pending))
        for index, row in _compile_in_workers([cases[i] for i in pending], pending, workers):
            rows[index] = row
            _write_cached(_cache_path(cache_dir, toolchain, row.case), row)
            done += 1
            if on_row is not None:
                on_row(row, done, total)
    return [row for row in rows if row is not None]


def _expected_compile_cost(case: AuditCase) -> float:
    """A rough relative compile time: ptxas takes longest over big tiles on sm_80 and over
    backward kernels that evaluate an activation derivative in their main loop."""
    rows, cols, reduction, _, _ = case.tile
    cost = float(rows * cols * reduction)
    if case.target == 80:
        cost *= 2
    if case.kernel != "fwd" and case.variant.activation != "identity":
        cost *= 2
    return cost


def _compile_in_workers(
    cases: Sequence[AuditCase], indices: Sequence[int], workers: int
) -> Iterator[tuple[int, AuditRow]]:
    """Yields (index, row) for each case as its compile finishes."""
    with tempfile.TemporaryDirectory(prefix="tritonbp-audit-triton-") as triton_cache:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(triton_cache,),
        )
        try:
            # The workers start while the cases are submitted, with the environment of then.
            with _without_interpreter():
                futures = {
                    pool.submit(_compile_case, case): index
                    for case, index in zip(cases, indices, strict=True)
                }
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()
        finally:
            # On an interrupt or an error, drop the compiles not yet started.
            pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _without_interpreter() -> Iterator[None]:
    """Removes ``TRITON_INTERPRET`` from the environment that new processes inherit."""
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved


def _available_cpus() -> int:
    """CPUs this process may run on."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# Output.

_COLUMNS = (
    "kernel",
    "config",
    "dtype",
    "variant",
    "target",
    "regs",
    "spill",
    "smem",
    "mma",
    "tma",
    "async",
    "time",
    "result",
)


def format_table(rows: Sequence[AuditRow]) -> str:
    """The rows as an aligned table, the failures spelled out, and a verdict as the last line.

    Columns: registers per thread, spilled bytes per thread, shared memory per block in bytes,
    the tensor-core instruction family (``-`` for none), TMA and ``cp.async`` use, compile
    seconds (``*`` marks rows read from the cache).
    """
    table = [_COLUMNS]
    for row in rows:
        case = row.case
        compiled = row.error is None
        table.append(
            (
                case.kernel,
                case.config,
                DTYPES[case.dtype][0],
                case.variant.label,
                f"sm_{case.target}",
                str(row.registers) if compiled else "-",
                str(row.spill_bytes) if compiled else "-",
                str(row.shared_bytes) if compiled else "-",
                row.tensor_cores or "-",
                ("yes" if row.tma else "no") if compiled else "-",
                ("yes" if row.cp_async else "no") if compiled else "-",
                f"{row.compile_s:.1f}" + ("*" if row.cached else ""),
                "ok" if row.passed else "FAIL: " + ", ".join(row.failures),
            )
        )
    widths = [max(len(line[column]) for line in table) for column in range(len(_COLUMNS))]
    numeric = {"regs", "spill", "smem", "time"}
    lines = []
    for line in table:
        cells = [
            cell.rjust(width) if name in numeric else cell.ljust(width)
            for name, cell, width in zip(_COLUMNS, line, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())

    failed = [row for row in rows if not row.passed]
    # One kernel bug usually breaks many rows alike: show each distinct error once.
    errors: dict[str, list[AuditRow]] = {}
    for row in failed:
        if row.error is not None:
            errors.setdefault(row.error, []).append(row)
    if errors:
        lines += ["", "compile errors:"]
        for error, group in errors.items():
            more = f" and {len(group) - 1} more rows" if len(group) > 1 else ""
            lines.append(f"  {_case_text(group[0].case)}{more}:")
            lines += [f"    {line}" for line in error.splitlines()]
    lines.append("")
    if not rows:
        lines.append("FAIL: nothing was audited")
    elif failed:
        lines.append(f"FAIL: {len(failed)} of {len(rows)} rows fail")
    else:
        lines.append(
            f"PASS: {len(rows)} of {len(rows)} rows compile without spills, fit in shared memory "
            "and use tensor cores where the dtype allows"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declares the options of ``tritonbp audit``."""
    parser.add_argument(
        "--all",
        action="store_true",
        help="compile the full cross product of kernels, configurations, dtypes and variants "
        "(default: every configuration with one activation, every variant with one configuration)",
    )
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE|TEXT",
        help=f"keep only matching rows; keys: {', '.join(_FILTER_KEYS)}; text without '=' "
        "matches any part of a row; repeat to narrow further",
    )
    parser.add_argument(
        "--target",
        action="append",
        type=int,
        choices=TARGETS,
        help="GPU target, 80 or 90; repeat for both (default: both)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the rows as JSON instead of a table"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="compile processes (default: one per available CPU)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="compile every row again instead of reading cached results",
    )


def run(args: argparse.Namespace) -> int:
    """Runs the audit as the command line asked.

    Returns:
        The exit status: 0 if every row passes, 1 if one fails, 2 for a bad ``--filter`` or
        ``--jobs``, a filter that leaves nothing, or tools that failed to run, 130 when
        interrupted.
    """
    targets = tuple(sorted(set(args.target))) if args.target else TARGETS
    plan = full_plan(targets) if args.all else default_plan(targets)
    try:
        cases = filter_cases(plan, args.filter)
    except ValueError as error:
        sys.stderr.write(f"tritonbp audit: error: {error}\n")
        return 2
    if not cases:
        sys.stderr.write("tritonbp audit: error: no row matches the filters\n")
        return 2
    if args.jobs is not None and args.jobs < 1:
        sys.stderr.write(f"tritonbp audit: error: --jobs must be at least 1, got {args.jobs}\n")
        return 2

    show_progress = sys.stderr.isatty() and not args.json

    def progress(row: AuditRow, done: int, total: int) -> None:
        if show_progress:
            sys.stderr.write(f"\rcompiled {done} of {total}")
            sys.stderr.flush()

    started = time.perf_counter()
    try:
        rows = run_audit(cases, jobs=args.jobs, use_cache=not args.no_cache, on_row=progress)
    # Not a verdict on the kernels: the tools failed (cuobjdump missing, a worker killed).
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        sys.stderr.write(f"\ntritonbp audit: error: could not audit: {error}\n")
        return 2
    except KeyboardInterrupt:
        # Rows finished so far are cached, so running the command again resumes.
        sys.stderr.write("\ntritonbp audit: interrupted\n")
        return 130
    elapsed = time.perf_counter() - started
    if show_progress:
        sys.stderr.write("\n")

    if args.json:
        sys.stdout.write(json.dumps([row.to_json() for row in rows], indent=1) + "\n")
    else:
        sys.stdout.write(_header(len(rows), elapsed) + "\n\n" + format_table(rows) + "\n")
    return 0 if rows and all(row.passed for row in rows) else 1


def _header(count: int, elapsed_s: float) -> str:
    """What ran, with which Triton, and how to read the columns."""
    return (
        f"tritonbp audit: {count} rows in {elapsed_s:.1f} s, triton {triton.__version__}\n"
        "regs: registers per thread; spill: bytes of local memory per thread; smem: shared\n"
        f"memory per block in bytes (at most {SHARED_MEMORY_LIMITS[80]} on sm_80, "
        f"{SHARED_MEMORY_LIMITS[90]} on sm_90);\n"
        "mma: tensor-core instructions; tma, async: TMA or cp.async loads; time: compile "
        "seconds (* from the cache)"
    )
