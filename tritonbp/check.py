"""Check the fused layers against PyTorch on this machine's device.

For every activation and dtype, at a few small shapes, runs tritonbp.fused_linear forward
and backward and compares the output and the gradients dx, dW and db with a float64
reference. Each may be off by a small multiple of PyTorch's own error in the same dtype plus a
floor (the table in tritonbp.testing). Prints the largest errors and a verdict; the exit
status is 0 when everything is within tolerance and 1 otherwise.

Without a CUDA device the Triton kernels run on the CPU in Triton's interpreter
(TRITON_INTERPRET=1), which is slow but exercises the same kernel code; shapes are small so
that the whole check takes seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata

import torch
import torch.nn.functional as F

from tritonbp.testing import ErrorReport, measure_error

__all__ = [
    "CASES",
    "DTYPES",
    "Case",
    "CaseResult",
    "add_arguments",
    "check_case",
    "format_report",
    "run",
    "run_checks",
]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# Names of the compared tensors, in table order: a = s(x W^T + b) and its three gradients.
TENSOR_NAMES: tuple[str, ...] = ("out", "dx", "dW", "db")

_SEED = 0


@dataclass(frozen=True)
class Case:
    """One layer shape.

    Attributes:
        input_shape: shape of ``x``, ``(*, K)``; leading dimensions are flattened to ``M``.
        out_features: ``N``, rows of the weight ``(N, K)``.
        bias: whether the layer has a bias ``(N,)``.
    """

    input_shape: tuple[int, ...]
    out_features: int
    bias: bool

    def __str__(self) -> str:
        with_bias = "with" if self.bias else "without"
        return f"{self.input_shape} -> {self.out_features} {with_bias} bias"


# Odd sizes that leave partial tiles in every dimension, a 3-D input whose leading dimensions
# are flattened (M = 64), and a single row without bias.
CASES: tuple[Case, ...] = (
    Case(input_shape=(3, 37), out_features=129, bias=True),
    Case(input_shape=(4, 16, 32), out_features=48, bias=True),
    Case(input_shape=(1, 24), out_features=16, bias=False),
)


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one (activation, dtype, case).

    Attributes:
        activation: activation name.
        dtype: dtype of the inputs and outputs.
        case: the layer shape.
        reports: one error report per compared tensor (``db`` only with a bias).
        failure: the exception raised while running the case, as text; ``None`` if it ran.
    """

    activation: str
    dtype: torch.dtype
    case: Case
    reports: tuple[ErrorReport, ...]
    failure: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the case ran and every tensor is within its bound."""
        return self.failure is None and all(report.passed for report in self.reports)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declares the options of ``tritonbp check``."""
    from tritonbp import ACTIVATIONS

    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="device to check on; auto takes CUDA when present, else the CPU (default: auto)",
    )
    parser.add_argument(
        "--dtype",
        nargs="+",
        choices=tuple(DTYPES),
        default=list(DTYPES),
        metavar="DTYPE",
        help=f"dtypes to check, of {', '.join(DTYPES)} (default: all)",
    )
    parser.add_argument(
        "--activation",
        nargs="+",
        choices=ACTIVATIONS,
        default=list(ACTIVATIONS),
        metavar="NAME",
        help=f"activations to check, of {', '.join(ACTIVATIONS)} (default: all)",
    )
    parser.add_argument(
        "--backend",
        choices=("triton", "torch"),
        default="triton",
        help="implementation to check: the Triton kernels, or the pure-PyTorch path that "
        "serves CPU tensors by default (default: triton)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs the check as the command line asked.

    Sets ``TRITONBP_BACKEND`` and, on the CPU, ``TRITON_INTERPRET=1`` in this process's
    environment; the latter only works before the kernel modules are first imported, so the
    check belongs in a process of its own.

    Returns:
        The exit status: 0 if every check passed, 1 if one failed, 2 if ``--device cuda`` was
        asked for on a machine without one.

    Raises:
        RuntimeError: if the kernels were already imported for another mode than the device
            needs.
    """
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        print(
            "tritonbp check: error: --device cuda, but torch finds no CUDA device", file=sys.stderr
        )
        return 2
    else:
        device = torch.device(args.device)

    if device.type == "cpu" and args.backend == "triton":
        _enable_interpreter()
    os.environ["TRITONBP_BACKEND"] = args.backend

    # The header goes out first: under the interpreter the checks take a while.
    print(_header(device, args.backend), end="\n\n", flush=True)
    started = time.perf_counter()
    results = run_checks(
        device=device,
        activations=args.activation,
        dtypes=[DTYPES[name] for name in args.dtype],
    )
    print(format_report(results, elapsed_s=time.perf_counter() - started))
    return 0 if results and all(result.passed for result in results) else 1


def run_checks(
    device: torch.device,
    activations: Sequence[str],
    dtypes: Sequence[torch.dtype],
    cases: Sequence[Case] = CASES,
) -> list[CaseResult]:
    """Runs every (activation, dtype, case) with the backend the environment selects.

    Args:
        device: where the layers run.
        activations: names from ``tritonbp.ACTIVATIONS``.
        dtypes: dtypes with an entry in ``tritonbp.testing.TOLERANCES``.
        cases: layer shapes.

    Returns:
        One result per combination, activation-major. An exception raised by a case is
        recorded in its result rather than propagated, so that one failure does not hide
        the rest of the table.
    """
    results = []
    for activation in activations:
        for dtype in dtypes:
            for case_index, case in enumerate(cases):
                try:
                    reports = check_case(activation, dtype, case, device, seed=_SEED + case_index)
                # Any exception is this case's failure, shown in the table with the others.
                except Exception as error:
                    failure = f"{type(error).__name__}: {error}"
                    results.append(CaseResult(activation, dtype, case, (), failure))
                else:
                    results.append(CaseResult(activation, dtype, case, reports))
    return results


def check_case(
    activation: str,
    dtype: torch.dtype,
    case: Case,
    device: torch.device,
    *,
    seed: int = _SEED,
) -> tuple[ErrorReport, ...]:
    """Compares ``fused_linear`` with PyTorch on one layer, forward and backward.

    The inputs are drawn in float32 on the CPU from ``seed`` (so every device sees the same
    values), rounded to ``dtype``, and then used by all three computations: ``fused_linear``
    in ``dtype``, PyTorch's own ``F.linear`` + activation in ``dtype``, and the same in
    float64 as the reference.

    Args:
        activation: name from ``tritonbp.ACTIVATIONS``.
        dtype: dtype of inputs, weights and incoming gradient.
        case: the layer shape.
        device: where to run.
        seed: seed of the input generator.

    Returns:
        Error reports for ``out``, ``dx``, ``dW`` and, with a bias, ``db``.
    """
    from tritonbp import fused_linear, reference_activation

    x, weight, bias, dy = _make_inputs(case, seed)
    x, weight, dy = (t.to(device=device, dtype=dtype) for t in (x, weight, dy))
    bias = None if bias is None else bias.to(device=device, dtype=dtype)

    def fused(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return fused_linear(x, weight, bias, activation)

    def eager(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return reference_activation(activation, F.linear(x, weight, bias))

    def to64(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.double()

    actual = _forward_backward(fused, x, weight, bias, dy)
    baseline = _forward_backward(eager, x, weight, bias, dy)
    reference = _forward_backward(eager, to64(x), to64(weight), to64(bias), to64(dy))

    reports = []
    for name, got, own, exact in zip(TENSOR_NAMES, actual, baseline, reference, strict=True):
        if exact is None:
            continue
        if got is None:
            raise AssertionError(f"fused_linear produced no {name}")
        reports.append(measure_error(name, got, exact, own))
    return tuple(reports)


def format_report(results: Sequence[CaseResult], *, elapsed_s: float | None = None) -> str:
    """The table of largest errors, details of each failure, and the verdict as the last line.

    Each cell holds the largest error of one tensor over all shapes of an (activation, dtype)
    pair, and that error as a share of its bound: under 100% passes.

    Args:
        results: what :func:`run_checks` returned.
        elapsed_s: wall time of the checks, shown in the verdict when given.

    Returns:
        Text whose last line starts with ``PASS`` or ``FAIL``.
    """
    rows: dict[tuple[str, torch.dtype], list[CaseResult]] = {}
    for result in results:
        rows.setdefault((result.activation, result.dtype), []).append(result)

    header = ("activation", "dtype", *TENSOR_NAMES, "result")
    widths = (14, 10, *(15,) * len(TENSOR_NAMES), 6)
    lines = [_row(header, widths)]
    for (activation, dtype), group in rows.items():
        cells = [activation, _dtype_name(dtype)]
        for name in TENSOR_NAMES:
            reports = [r for result in group for r in result.reports if r.name == name]
            cells.append(_cell(max(reports, key=lambda r: r.ratio)) if reports else "-")
        if any(result.failure is not None for result in group):
            cells[2:] = ["error"] * len(TENSOR_NAMES)
        cells.append("ok" if all(result.passed for result in group) else "FAIL")
        lines.append(_row(cells, widths))

    failures = [result for result in results if not result.passed]
    if failures:
        lines.append("")
        lines.append("failures:")
        for result in failures:
            where = f"{result.activation}, {_dtype_name(result.dtype)}, {result.case}"
            if result.failure is not None:
                lines.append(f"  {where}: {result.failure}")
            for report in result.reports:
                if not report.passed:
                    lines.append(f"  {where}: {report.describe()}")

    timing = "" if elapsed_s is None else f" in {elapsed_s:.1f} s"
    total = len(results)
    if not results:
        verdict = "FAIL: nothing was checked"
    elif failures:
        verdict = f"FAIL: {len(failures)} of {total} checks outside tolerance{timing}"
    else:
        verdict = f"PASS: {total} of {total} checks within tolerance{timing}"
    lines.append("")
    lines.append(verdict)
    return "\n".join(lines)


def _enable_interpreter() -> None:
    """Makes the Triton kernels run in Triton's interpreter, as the CPU needs.

    Triton reads TRITON_INTERPRET when ``@triton.jit`` decorates a function, that is when the
    kernel modules are imported; kernels imported earlier stay compiled for a GPU.
    """
    already = os.environ.get("TRITON_INTERPRET") == "1"
    imported = any(name.startswith("tritonbp.kernels") for name in sys.modules)
    if imported and not already:
        raise RuntimeError(
            "the Triton kernels were imported before TRITON_INTERPRET=1 was set, so they "
            "cannot run on the CPU in this process; run 'tritonbp check' in a new process"
        )
    os.environ["TRITON_INTERPRET"] = "1"


def _make_inputs(
    case: Case, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Inputs of one case in float32 on the CPU: x, weight, bias (or None) and dy.

    x and dy are standard normal; weight and bias are uniform in +-1/sqrt(K), as
    ``nn.Linear`` initialises them, so that z stays of order 1 and every activation is
    exercised on both sides of its kink or bend.
    """
    generator = torch.Generator().manual_seed(seed)
    in_features = case.input_shape[-1]
    scale = in_features**-0.5

    def uniform(*shape: int) -> torch.Tensor:
        return (torch.rand(shape, generator=generator) * 2 - 1) * scale

    x = torch.randn(case.input_shape, generator=generator)
    weight = uniform(case.out_features, in_features)
    bias = uniform(case.out_features) if case.bias else None
    dy = torch.randn((*case.input_shape[:-1], case.out_features), generator=generator)
    return x, weight, bias, dy


def _forward_backward(
    layer: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dy: torch.Tensor,
) -> tuple[torch.Tensor | None, ...]:
    """``(out, dx, dW, db)`` of ``layer`` for the incoming gradient ``dy``; db is None without a
    bias. Leaf copies are made so that the callers' tensors collect no gradients."""
    x = x.detach().clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    if bias is not None:
        bias = bias.detach().clone().requires_grad_(True)
    out = layer(x, weight, bias)
    out.backward(dy)
    return out.detach(), x.grad, weight.grad, None if bias is None else bias.grad


def _header(device: torch.device, backend: str) -> str:
    """What ran, where, with which versions, and how to read the table."""
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
    elif backend == "triton":
        where = "cpu (Triton interpreter)"
    else:
        where = "cpu"
    shapes = "; ".join(str(case) for case in CASES)
    return (
        f"tritonbp check: device {where}, backend {backend}, "
        f"torch {torch.__version__}, triton {_installed_version('triton')}\n"
        f"shapes (x -> N): {shapes}\n"
        "each cell: largest error over the shapes against a float64 reference, and its share "
        "of the bound\n(a small multiple of PyTorch's own error in that dtype, plus a floor)"
    )


def _installed_version(distribution: str) -> str:
    """Version of an installed distribution, or ``"not installed"``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cell(report: ErrorReport) -> str:
    """``"1.2e-03   31%"``: an error and its share of the bound."""
    return f"{report.error:.1e} {report.ratio:>6.0%}"


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """Cells padded to their column widths, separated by a space."""
    return " ".join(f"{cell:<{width}}" for cell, width in zip(cells, widths, strict=True)).rstrip()


def _dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).removeprefix("torch.")
