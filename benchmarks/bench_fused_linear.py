"""Benchmark of one dense layer, a = s(x W^T + b): eager PyTorch, torch.compile and tritonbp.

Implementations (``--impl``):

- ``eager``: ``F.linear`` followed by the activation as PyTorch defines it
  (``tritonbp.reference_activation``), differentiated by autograd;
- ``compile``: ``torch.compile`` of that same function, default inductor mode, specialised to
  each shape (``dynamic=False``, the best case for the compiler);
- ``tritonbp``: ``tritonbp.fused_linear``, on the backend ``tritonbp.backend_for`` names.

Phases (``--phase``), for x (M, K), W (N, K), b (N) all requiring gradients and an incoming
gradient dy (M, N):

- ``forward``: a = layer(x, W, b) with autograd recording, as in training, so each
  implementation also keeps what its backward needs;
- ``backward``: dx, dW, db from a stored forward graph, with
  ``torch.autograd.grad(a, (x, W, b), dy, retain_graph=True)``; the forward is not timed;
- ``step``: forward and backward together.

For the backward phase, compile's layer is compiled once more with buffer donation off: a
compiled backward that reuses the memory of its saved tensors cannot run twice on one graph.

The gradients are returned by ``torch.autograd.grad`` instead of accumulated into ``.grad``:
a second ``.backward()`` on the same leaves would add an element-wise sum over dx and dW that
a training step (which clears the gradients between steps) never runs.

Figures of each row:

- median, low and high time in ms: ``triton.testing.do_bench`` quantiles 0.5, 0.2 and 0.8 on
  CUDA (it clears the L2 cache before every run); on the CPU, quantiles 0.5, 0.25 and 0.75 of
  the runs of ``torch.utils.benchmark.Timer.blocked_autorange``, which is there so that the
  harness can be smoke-tested without a GPU, not to rank the implementations;
- TFLOP/s from analytic counts (:func:`flop_count`): forward 2*M*N*K, backward 4*M*N*K (the
  dx and dW GEMMs), step 6*M*N*K; the O(M*N) bias, activation and db work is left out;
- GB/s, forward only: the bytes the forward must move (:func:`forward_bytes`) over its time;
- peak MiB: the most memory allocated during one call of the phase above what was allocated
  before it (inputs, weights, dy and, for the backward, the stored graph), from
  ``torch.cuda.max_memory_allocated``; ``None`` on the CPU, where it is not measured;
- speed-ups: eager's median over the row's median ("vs eager") and the same for compile.

Before timing a shape, every implementation runs forward and backward once on the same
inputs, and its a, dx, dW and db are compared with a float64 reference using
``tritonbp.testing.measure_error``: the error may be a small multiple of eager PyTorch's own
error in the same dtype. If tritonbp fails, its rows are marked ``mismatch`` and not timed;
compile's error is recorded (``ok*`` in the table when outside the bound) but does not stop
its timing (see :data:`GATED_IMPLS`).

Run ``python benchmarks/bench_fused_linear.py --help`` for the options; results are printed
as a table and written as JSON (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F

import tritonbp
from tritonbp.activations import (
    DEFAULT_NEGATIVE_SLOPE,
    SavedForBackward,
    resolve_activation,
    saved_for_backward,
)
from tritonbp.testing import measure_error

IMPLS: tuple[str, ...] = ("eager", "compile", "tritonbp")
PHASES: tuple[str, ...] = ("forward", "backward", "step")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

BENCHMARK_DIR = Path(__file__).resolve().parent
REPOSITORY_ROOT = BENCHMARK_DIR.parent
RESULTS_DIR = BENCHMARK_DIR / "results"

# Implementations whose rows lose their times when the correctness check fails. torch.compile
# is a reference point, not the code under test: it sums db and the GEMMs in another order
# than eager, which can land just past the bound (db at 1.05x its bound in float32 on the
# CPU, 256x64->128, gelu_tanh) without being wrong. Its error is recorded, not gated.
GATED_IMPLS: frozenset[str] = frozenset({"tritonbp"})

# Names of the compared tensors, in the order _forward_backward returns them.
TENSOR_NAMES: tuple[str, ...] = ("a", "dx", "dW", "db")

_SEED = 0


@dataclass(frozen=True)
class Case:
    """One layer to time: x (M, K) -> a (M, N), in one dtype, with one activation.

    Attributes:
        M: rows of x, the leading dimensions flattened (tokens, batch).
        K: in_features.
        N: out_features.
        dtype: dtype of x, W, b and dy.
        activation: a name from ``tritonbp.ACTIVATIONS``.
    """

    M: int
    K: int
    N: int
    dtype: torch.dtype
    activation: str

    @property
    def shape(self) -> str:
        """``"8192x4096->16384"``: M x K -> N."""
        return f"{self.M}x{self.K}->{self.N}"

    @property
    def dtype_name(self) -> str:
        """``"bfloat16"``."""
        return _dtype_name(self.dtype)

    def __str__(self) -> str:
        return f"{self.shape} {self.dtype_name} {self.activation}"


# Shapes that matter for training, on a CUDA device: a transformer feed-forward block at LLM
# width (its up projection with GELU, then its down projection without activation), a narrow
# MLP where the layer is memory-bound, and a mid-size layer in fp16.
DEFAULT_CASES: tuple[Case, ...] = (
    Case(M=8192, K=4096, N=16384, dtype=torch.bfloat16, activation="gelu_tanh"),
    Case(M=8192, K=16384, N=4096, dtype=torch.bfloat16, activation="identity"),
    Case(M=65536, K=128, N=128, dtype=torch.bfloat16, activation="relu"),
    Case(M=4096, K=1024, N=1024, dtype=torch.float16, activation="silu"),
)

# --quick: one tiny layer, enough to run every code path in seconds. One shape only, because
# each shape costs torch.compile two compilations (the second for the backward phase), several
# seconds each on the CPU.
QUICK_SHAPE: tuple[int, int, int] = (256, 64, 128)
QUICK_ACTIVATION = "gelu_tanh"

# Without --activation / --dtype, shapes given with --shape get these.
SHAPE_ACTIVATION = "gelu_tanh"
SHAPE_DTYPE = "bfloat16"


@dataclass(frozen=True)
class Timing:
    """Run time of one phase, in milliseconds.

    Attributes:
        median_ms: the median run.
        low_ms: the lower quantile (0.2 on CUDA, 0.25 on the CPU; see the results' metadata).
        high_ms: the upper quantile (0.8 on CUDA, 0.75 on the CPU).
    """

    median_ms: float
    low_ms: float
    high_ms: float


@dataclass(frozen=True)
class Check:
    """Outcome of the correctness run of one implementation on one case.

    Attributes:
        status: ``"ok"`` (to be timed), ``"mismatch"`` (an implementation of
            :data:`GATED_IMPLS` outside tolerance) or ``"error"`` (it raised).
        message: ``"baseline"`` for eager, ``"ok"`` within tolerance, else what went wrong
            (for an ungated implementation outside tolerance, with status ``"ok"``).
        error_ratio: the largest error over its bound among a, dx, dW and db (below 1
            passes); ``None`` for eager and for an implementation that raised.
    """

    status: str
    message: str
    error_ratio: float | None = None


@dataclass
class Row:
    """One implementation x phase x case: the figures printed and saved.

    Attributes:
        impl, phase: which implementation and phase.
        M, K, N, shape, dtype, activation: the case.
        status: ``"ok"``, ``"mismatch"`` or ``"error"``; only ``"ok"`` rows carry times.
        check: the correctness check's message, or the error that stopped the row.
        error_ratio: see :class:`Check`.
        median_ms, low_ms, high_ms: see :class:`Timing`.
        flops: analytic floating-point operations of the phase (:func:`flop_count`).
        tflops: ``flops / median``, in 1e12 per second.
        bytes: bytes the forward must move (:func:`forward_bytes`); ``None`` for other phases.
        gbps: ``bytes / median``, in 1e9 per second.
        peak_mib: peak memory of one call above what was allocated before it, in MiB;
            ``None`` where not measured (the CPU).
        speedup_vs_eager: eager's median over this row's median.
        speedup_vs_compile: compile's median over this row's median.
    """

    impl: str
    phase: str
    M: int
    K: int
    N: int
    shape: str
    dtype: str
    activation: str
    status: str
    check: str
    error_ratio: float | None
    median_ms: float | None
    low_ms: float | None
    high_ms: float | None
    flops: int
    tflops: float | None
    bytes: int | None
    gbps: float | None
    peak_mib: float | None
    speedup_vs_eager: float | None = None
    speedup_vs_compile: float | None = None


def flop_count(phase: str, M: int, K: int, N: int) -> int:
    """Floating-point operations of a phase, counting the GEMMs only.

    Each GEMM of an (M, K) by (K, N) product does M*N*K multiply-adds, 2*M*N*K operations:

    - forward: z = x W^T, 2*M*N*K;
    - backward: dx = delta W and dW = delta^T x, 4*M*N*K;
    - step: both, 6*M*N*K.

    The bias, the activation, its derivative and db add O(M*N) and are left out, so that
    TFLOP/s compare directly with the GPU's GEMM peak.

    Raises:
        ValueError: ``phase`` is not one of :data:`PHASES`.
    """
    gemms = {"forward": 1, "backward": 2, "step": 3}
    if phase not in gemms:
        raise ValueError(f"phase: expected one of {PHASES}, got {phase!r}")
    return gemms[phase] * 2 * M * N * K


def forward_bytes(
    M: int,
    K: int,
    N: int,
    dtype: torch.dtype,
    activation: str,
    *,
    bias: bool = True,
    negative_slope: float = DEFAULT_NEGATIVE_SLOPE,
) -> int:
    """Bytes the forward must move between memory and the chip, at the least.

    bytes = element_size * (M*K + N*K + N + M*N + [M*N]): x, W and b read once, a written
    once, and z written once more when the backward reads z rather than a
    (``tritonbp.activations.saved_for_backward``). This is the traffic of a fused kernel; an
    unfused forward moves more, so GB/s is an effective figure, the same bytes for every
    implementation.

    Args:
        M, K, N: x is (M, K), W is (N, K), a is (M, N).
        dtype: dtype of every tensor moved.
        activation: a name from ``tritonbp.ACTIVATIONS`` (or None for the identity).
        bias: whether b is read.
        negative_slope: ``leaky_relu``'s slope, which decides whether it keeps z or a.
    """
    activation = resolve_activation(activation, negative_slope)
    elements = M * K + N * K + M * N + (N if bias else 0)
    if saved_for_backward(activation, negative_slope) is SavedForBackward.PREACTIVATION:
        elements += M * N
    return elements * torch.empty((), dtype=dtype).element_size()


def eager_layer(
    activation: str,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """s(F.linear(x, W, b)) with PyTorch's own activation ``activation``."""

    def layer(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return tritonbp.reference_activation(activation, F.linear(x, weight, bias))

    return layer


def compiled_layer(
    activation: str,
    *,
    retain_graph: bool = False,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``torch.compile`` of :func:`eager_layer`, inductor's default mode, static shapes.

    Args:
        activation: a name from ``tritonbp.ACTIVATIONS``.
        retain_graph: compile for a graph whose backward runs many times, as the backward
            phase needs. By default AOTAutograd lets the compiled backward reuse ("donate")
            the memory of the tensors saved for it, and then refuses ``retain_graph=True``.
            With ``retain_graph`` the forward is compiled with donation switched off
            (``torch._functorch.config.donated_buffer``). Both torch.compile's code cache
            and its on-disk graph cache would otherwise hand back the donating graph of an
            earlier compilation, so this clears the former (``torch.compiler.reset()``,
            which discards every earlier compilation in the process) and the changed setting
            keys the latter apart.
    """
    if not retain_graph:
        return torch.compile(eager_layer(activation), dynamic=False)
    from torch._functorch import config as functorch_config

    torch.compiler.reset()
    compiled = torch.compile(eager_layer(activation), dynamic=False)
    # Releases without the setting donate no buffers and need nothing switched off.
    if not hasattr(functorch_config, "donated_buffer"):
        return compiled

    def layer(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        with functorch_config.patch(donated_buffer=False):
            return compiled(x, weight, bias)

    return layer


def tritonbp_layer(
    activation: str,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``tritonbp.fused_linear`` with activation ``activation``."""

    def layer(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return tritonbp.fused_linear(x, weight, bias, activation)

    return layer


LAYER_FACTORIES: dict[
    str, Callable[[str], Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]]
] = {
    "eager": eager_layer,
    "compile": compiled_layer,
    "tritonbp": tritonbp_layer,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark as the command line asks, prints the table and writes the JSON.

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 when every row ran and passed its check, 1 when a row is marked
        ``mismatch`` or ``error`` (the results are written all the same), 2 for a usage
        error: no CUDA device for ``--device cuda``, or the CPU without ``--quick`` or
        ``--shape``.
    """
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"{parser.prog}: error: --device cuda, but torch finds no CUDA device", file=sys.stderr
        )
        return 2
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cpu" and not args.quick and not args.shape:
        print(
            f"{parser.prog}: error: no CUDA device, and the default shapes need one for "
            "meaningful figures; run on a machine with a CUDA GPU, or pass --quick for a "
            "smoke run (or --shape M,K,N to time chosen shapes) on the CPU",
            file=sys.stderr,
        )
        return 2

    cases = select_cases(args, device)
    impls = tuple(name for name in IMPLS if name in args.impl)
    phases = tuple(name for name in PHASES if name in args.phase)
    output = Path(args.output) if args.output else default_output_path(device, args.quick)
    run_metadata = collect_metadata(device, argv)

    rows: list[Row] = []
    for index, case in enumerate(cases, start=1):
        print(f"[{index}/{len(cases)}] {case}", file=sys.stderr, flush=True)
        rows.extend(run_case(case, device, impls, phases, quick=args.quick))
        # Written after every case, so that a run cut short still leaves what it measured.
        write_results(output, run_metadata, rows)

    print(format_table(rows, run_metadata["timing"]))
    print(f"\nresults written to {output}")
    return 0 if all(row.status == "ok" for row in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    """The command line of the benchmark."""
    parser = argparse.ArgumentParser(
        prog="bench_fused_linear.py",
        description=(
            "Times one dense layer + activation (eager PyTorch, torch.compile, tritonbp): "
            "forward, backward and the full step."
        ),
    )
    parser.add_argument(
        "--shape",
        action="append",
        type=parse_shape,
        metavar="M,K,N",
        help="a layer x (M, K) -> (M, N) to time instead of the default set; repeatable "
        f"(default activation {SHAPE_ACTIVATION}, dtype {SHAPE_DTYPE})",
    )
    parser.add_argument(
        "--activation",
        nargs="+",
        choices=tritonbp.ACTIVATIONS,
        metavar="NAME",
        help="activations to time every shape with, of "
        f"{', '.join(tritonbp.ACTIVATIONS)} (default: each shape's own)",
    )
    parser.add_argument(
        "--dtype",
        nargs="+",
        choices=tuple(DTYPES),
        metavar="DTYPE",
        help=f"dtypes to time every shape in, of {', '.join(DTYPES)} (default: each shape's own)",
    )
    parser.add_argument(
        "--impl",
        nargs="+",
        choices=IMPLS,
        default=list(IMPLS),
        metavar="IMPL",
        help=f"implementations to time, of {', '.join(IMPLS)} (default: all)",
    )
    parser.add_argument(
        "--phase",
        nargs="+",
        choices=PHASES,
        default=list(PHASES),
        metavar="PHASE",
        help=f"phases to time, of {', '.join(PHASES)} (default: all)",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="where to write the JSON results (default: "
        "benchmarks/results/<device-name>-<UTC date>.json)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="auto",
        help="where to run; auto takes CUDA when present (default: auto)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: one tiny layer {'x'.join(map(str, QUICK_SHAPE[:2]))}->"
        f"{QUICK_SHAPE[2]} and short timing; works on the CPU",
    )
    return parser


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"8192,4096,16384"`` -> ``(8192, 4096, 16384)``: M, K, N, each a positive integer.

    Raises:
        argparse.ArgumentTypeError: not three comma-separated positive integers.
    """
    parts = text.split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected M,K,N as three positive integers, got {text!r}")
    M, K, N = (int(part) for part in parts)
    if min(M, K, N) <= 0:
        raise argparse.ArgumentTypeError(f"expected M,K,N all positive, got {text!r}")
    return M, K, N


def select_cases(args: argparse.Namespace, device: torch.device) -> list[Case]:
    """The cases the command line asks for.

    ``--shape`` replaces the default set (or the quick shape); ``--activation`` and
    ``--dtype`` replace each case's own and, with several values, time every combination.
    A quick run is in bfloat16 on CUDA and in float32 on the CPU, where 16-bit GEMMs are slow
    and say nothing about a GPU.
    """
    if args.shape:
        base = [Case(M, K, N, DTYPES[SHAPE_DTYPE], SHAPE_ACTIVATION) for M, K, N in args.shape]
    elif args.quick:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        base = [Case(*QUICK_SHAPE, dtype=dtype, activation=QUICK_ACTIVATION)]
    else:
        base = list(DEFAULT_CASES)
    cases = []
    for case in base:
        for activation in args.activation or [case.activation]:
            for dtype_name in args.dtype or [case.dtype_name]:
                cases.append(Case(case.M, case.K, case.N, DTYPES[dtype_name], activation))
    return cases


def run_case(
    case: Case,
    device: torch.device,
    impls: Sequence[str],
    phases: Sequence[str],
    *,
    quick: bool = False,
) -> list[Row]:
    """Checks, then times, every implementation and phase of one case.

    An implementation that fails its check or raises gets rows without times; the others
    still run.

    Returns:
        One row per (phase, implementation), phase-major, so that the implementations of one
        phase sit together in the table.
    """
    # Every case compiles afresh: the compiled layers of all cases share one code object, and
    # past torch.compile's recompilation limit further shapes would silently run eagerly.
    torch.compiler.reset()
    inputs = make_inputs(case, device)
    # Eager runs even when not timed: it is the baseline of the correctness check.
    layers = {}
    checks = {}
    for impl in dict.fromkeys(("eager", *impls)):
        try:
            layers[impl] = LAYER_FACTORIES[impl](case.activation)
        # Any failure belongs to this implementation's rows, not to the whole run.
        except Exception as error:
            checks[impl] = Check("error", _describe_exception(error))
    checks.update(check_case(inputs, {k: v for k, v in layers.items() if k not in checks}))

    results: dict[tuple[str, str], Row] = {}
    for impl in impls:
        check = checks[impl]
        # compile's backward phase comes last: its layer is compiled again for a retained
        # graph, which discards the compilation the other phases use.
        for phase in sorted(phases, key=lambda phase: (impl, phase) == ("compile", "backward")):
            row = _empty_row(case, impl, phase, check)
            if check.status == "ok":
                try:
                    layer = layers[impl]
                    if (impl, phase) == ("compile", "backward"):
                        layer = compiled_layer(case.activation, retain_graph=True)
                    timing, peak = measure_phase(layer, phase, inputs, device, quick=quick)
                except Exception as error:
                    row.status, row.check = "error", _describe_exception(error)
                else:
                    _fill_figures(row, timing, peak)
            results[impl, phase] = row
            print(f"  {impl:<8} {phase:<8} {_row_summary(row)}", file=sys.stderr, flush=True)

    for (_, phase), row in results.items():
        row.speedup_vs_eager = _speedup(results.get(("eager", phase)), row)
        row.speedup_vs_compile = _speedup(results.get(("compile", phase)), row)

    del inputs, layers
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return [results[impl, phase] for phase in phases for impl in impls]


def make_inputs(case: Case, device: torch.device) -> dict[str, torch.Tensor]:
    """x (M, K), weight (N, K), bias (N) as leaves requiring gradients, and dy (M, N).

    x and dy are standard normal; weight and bias are uniform in +-1/sqrt(K) as
    ``nn.Linear`` initialises them, so that z is of order 1 at every K and each activation is
    used on both sides of its bend. Drawn in float32 on ``device`` from a fixed seed, then
    rounded to the case's dtype.
    """
    generator = torch.Generator(device=device).manual_seed(_SEED)
    scale = case.K**-0.5

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device).to(case.dtype)

    def uniform(*shape: int) -> torch.Tensor:
        values = torch.rand(shape, generator=generator, device=device) * 2 - 1
        return (values * scale).to(case.dtype)

    return {
        "x": normal(case.M, case.K).requires_grad_(True),
        "weight": uniform(case.N, case.K).requires_grad_(True),
        "bias": uniform(case.N).requires_grad_(True),
        "dy": normal(case.M, case.N),
    }


def check_case(
    inputs: dict[str, torch.Tensor],
    layers: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]],
) -> dict[str, Check]:
    """Runs each layer forward and backward once and checks a, dx, dW, db against float64.

    The reference is eager PyTorch on float64 copies of the inputs; the baseline, whose own
    error sets the bound (``tritonbp.testing``), is eager PyTorch in the inputs' dtype. The
    run also warms every implementation up: Triton autotuning and torch.compile happen here,
    outside the timings.

    Args:
        inputs: as :func:`make_inputs` returns.
        layers: implementation name -> layer; must include ``"eager"``.

    Returns:
        A check per implementation; eager's is ``ok`` with the message ``"baseline"``. Only
        implementations in :data:`GATED_IMPLS` are marked ``mismatch``.
    """
    eager = layers["eager"]
    # If eager itself fails, nothing can be judged: the error goes to every implementation.
    try:
        baseline = _forward_backward(eager, inputs)
        inputs64 = {name: tensor.detach().double() for name, tensor in inputs.items()}
        reference = _forward_backward(eager, inputs64)
        del inputs64
    except Exception as error:
        message = f"eager baseline failed: {_describe_exception(error)}"
        return {impl: Check("error", message) for impl in layers}

    checks = {"eager": Check("ok", "baseline")}
    for impl, layer in layers.items():
        if impl == "eager":
            continue
        try:
            actual = _forward_backward(layer, inputs)
        except Exception as error:
            checks[impl] = Check("error", _describe_exception(error))
            continue
        reports = [
            measure_error(name, got, exact, own)
            for name, got, exact, own in zip(TENSOR_NAMES, actual, reference, baseline, strict=True)
        ]
        worst = max(reports, key=lambda report: report.ratio)
        failed = "; ".join(report.describe() for report in reports if not report.passed)
        if not failed:
            checks[impl] = Check("ok", "ok", worst.ratio)
        elif impl in GATED_IMPLS:
            checks[impl] = Check("mismatch", failed, worst.ratio)
        else:
            checks[impl] = Check("ok", f"outside tolerance, timed anyway: {failed}", worst.ratio)
    return checks


def measure_phase(
    layer: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    phase: str,
    inputs: dict[str, torch.Tensor],
    device: torch.device,
    *,
    quick: bool = False,
) -> tuple[Timing, float | None]:
    """Times one phase of one layer and measures its peak memory.

    Returns:
        The timing, and the peak memory of one call in MiB (``None`` on the CPU).
    """
    x, weight, bias, dy = inputs["x"], inputs["weight"], inputs["bias"], inputs["dy"]
    leaves = (x, weight, bias)

    if phase == "forward":

        def run() -> object:
            return layer(x, weight, bias)

    elif phase == "backward":
        # The forward graph is built once, outside the timed region, and kept for every run;
        # it is freed with ``run`` when this function returns.
        stored = layer(x, weight, bias)

        def run() -> object:
            return torch.autograd.grad(stored, leaves, dy, retain_graph=True)

    elif phase == "step":

        def run() -> object:
            return torch.autograd.grad(layer(x, weight, bias), leaves, dy)

    else:
        raise ValueError(f"phase: expected one of {PHASES}, got {phase!r}")

    # One call first, so that anything done once (compile's lazily compiled backward) stays
    # out of the peak memory.
    run()
    peak = peak_memory_mib(run, device)
    timing = time_cuda(run) if device.type == "cuda" else time_cpu(run, quick=quick)
    return timing, peak


def time_cuda(run: Callable[[], object]) -> Timing:
    """Median, p20 and p80 of ``run`` on the current CUDA device, by ``do_bench``."""
    from triton.testing import do_bench

    median, low, high = do_bench(run, quantiles=[0.5, 0.2, 0.8])
    return Timing(median_ms=median, low_ms=low, high_ms=high)


def time_cpu(run: Callable[[], object], *, quick: bool = False) -> Timing:
    """Median and quartiles of ``run`` on the CPU, by ``Timer.blocked_autorange``.

    The timer runs ``run`` in blocks of several calls; each of its times is the mean call
    of one block, and the quantiles are taken over the blocks.
    """
    from torch.utils.benchmark import Timer

    # Timer defaults to one thread; the implementations should get what PyTorch would use.
    timer = Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads())
    measurement = timer.blocked_autorange(min_run_time=0.05 if quick else 1.0)
    times_ms = torch.tensor(measurement.times, dtype=torch.float64) * 1e3
    median, low, high = torch.quantile(
        times_ms, torch.tensor([0.5, 0.25, 0.75], dtype=torch.float64)
    )
    return Timing(median_ms=float(median), low_ms=float(low), high_ms=float(high))


def peak_memory_mib(run: Callable[[], object], device: torch.device) -> float | None:
    """Most memory allocated during one call of ``run``, above what was allocated before.

    Returns:
        MiB on a CUDA device; ``None`` on the CPU, where PyTorch keeps no such statistic.
    """
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = run()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del result
    return peak / 2**20


def default_output_path(device: torch.device, quick: bool) -> Path:
    """``benchmarks/results/<device-name>-<UTC date>.json``; quick runs end in ``-quick``."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    suffix = "-quick" if quick else ""
    return RESULTS_DIR / f"{slug}-{date}{suffix}.json"


def collect_metadata(device: torch.device, argv: Sequence[str]) -> dict[str, object]:
    """Where and how the figures were taken: device, versions, commit, time, command line."""
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        device_name = properties.name
        device_details = {
            "compute_capability": f"{properties.major}.{properties.minor}",
            "multiprocessors": properties.multi_processor_count,
            "memory_gib": round(properties.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
        timing = {"method": "triton.testing.do_bench", "low_quantile": 0.2, "high_quantile": 0.8}
    else:
        device_name = f"CPU ({_cpu_model()})"
        device_details = {"threads": torch.get_num_threads()}
        timing = {
            "method": "torch.utils.benchmark.Timer.blocked_autorange",
            "low_quantile": 0.25,
            "high_quantile": 0.75,
        }
    try:
        backend = tritonbp.backend_for(device)
    except Exception as error:
        backend = f"unavailable ({_describe_exception(error)})"
    commit, dirty = _git_commit()
    return {
        "device": device.type,
        "device_name": device_name,
        "device_details": device_details,
        "tritonbp_backend": backend,
        "torch_version": torch.__version__,
        "triton_version": _installed_version("triton"),
        "tritonbp_version": tritonbp.__version__,
        "python_version": platform.python_version(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "git_commit": commit,
        "git_dirty": dirty,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/bench_fused_linear.py", *argv]),
        "timing": timing,
    }


def write_results(path: Path, run_metadata: dict[str, object], rows: Sequence[Row]) -> None:
    """Writes ``{"metadata": ..., "rows": [...]}`` as JSON; non-finite numbers become null."""
    document = {"metadata": run_metadata, "rows": [asdict(row) for row in rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(document), indent=2, allow_nan=False) + "\n")


def format_table(rows: Sequence[Row], timing: dict[str, object]) -> str:
    """The rows as an aligned text table, followed by the messages of rows that failed.

    Args:
        rows: the rows to show, in order.
        timing: the ``timing`` entry of the metadata, which names the quantiles.
    """
    low = f"p{round(100 * float(timing['low_quantile']))} ms"
    high = f"p{round(100 * float(timing['high_quantile']))} ms"
    header = (
        "impl",
        "phase",
        "shape",
        "dtype",
        "activation",
        "median ms",
        low,
        high,
        "TFLOP/s",
        "GB/s",
        "peak MiB",
        "vs eager",
        "vs compile",
        "check",
    )
    numeric = set(range(5, 13))
    lines = [header]
    notes: dict[tuple[str, ...], list[str]] = {}
    previous_case = None
    for row in rows:
        case_key = (row.shape, row.dtype, row.activation)
        if previous_case is not None and case_key != previous_case:
            lines.append(None)
        previous_case = case_key
        if row.status != "ok":
            verdict = row.status.upper()
        elif row.check in ("ok", "baseline"):
            verdict = row.check
        else:
            verdict = "ok*"
        if verdict not in ("ok", "baseline"):
            # A check's message is the same for every phase: one note lists the phases.
            where = (row.impl, row.shape, row.dtype, row.activation, row.check)
            notes.setdefault(where, []).append(row.phase)
        lines.append(
            (
                row.impl,
                row.phase,
                row.shape,
                row.dtype,
                row.activation,
                _number(row.median_ms),
                _number(row.low_ms),
                _number(row.high_ms),
                _number(row.tflops),
                _number(row.gbps),
                _number(row.peak_mib),
                _ratio(row.speedup_vs_eager),
                _ratio(row.speedup_vs_compile),
                verdict,
            )
        )
    cells = [line for line in lines if line is not None]
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]
    text = []
    for line in lines:
        if line is None:
            text.append("")
            continue
        padded = [
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  ".join(padded).rstrip())
    if notes:
        text.append("")
        text.append("notes (MISMATCH and ERROR rows have no times; ok* rows were timed):")
        for (impl, shape, dtype, activation, message), phases in notes.items():
            text.append(f"  {impl} {'/'.join(phases)} {shape} {dtype} {activation}: {message}")
    return "\n".join(text)


def _forward_backward(
    layer: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, ...]:
    """``(a, dx, dW, db)`` of ``layer`` at ``inputs``, detached, for dy = ``inputs["dy"]``."""
    leaves = tuple(inputs[name].detach().requires_grad_(True) for name in ("x", "weight", "bias"))
    output = layer(*leaves)
    gradients = torch.autograd.grad(output, leaves, inputs["dy"])
    return (output.detach(), *gradients)


def _empty_row(case: Case, impl: str, phase: str, check: Check) -> Row:
    """A row for ``case`` carrying the check's verdict and no measurements yet."""
    return Row(
        impl=impl,
        phase=phase,
        M=case.M,
        K=case.K,
        N=case.N,
        shape=case.shape,
        dtype=case.dtype_name,
        activation=case.activation,
        status=check.status,
        check=check.message,
        error_ratio=check.error_ratio,
        median_ms=None,
        low_ms=None,
        high_ms=None,
        flops=flop_count(phase, case.M, case.K, case.N),
        tflops=None,
        bytes=(
            forward_bytes(case.M, case.K, case.N, case.dtype, case.activation)
            if phase == "forward"
            else None
        ),
        gbps=None,
        peak_mib=None,
    )


def _fill_figures(row: Row, timing: Timing, peak_mib: float | None) -> None:
    """Adds the times and the figures derived from them to ``row``."""
    row.median_ms, row.low_ms, row.high_ms = timing.median_ms, timing.low_ms, timing.high_ms
    seconds = timing.median_ms * 1e-3
    row.tflops = row.flops / seconds / 1e12
    row.gbps = None if row.bytes is None else row.bytes / seconds / 1e9
    row.peak_mib = peak_mib


def _speedup(other: Row | None, row: Row) -> float | None:
    """``other``'s median over ``row``'s: above 1 means ``row`` is faster. None if not both,
    or if ``other`` is ``row`` itself."""
    if other is None or other is row or other.median_ms is None or row.median_ms is None:
        return None
    return other.median_ms / row.median_ms


def _row_summary(row: Row) -> str:
    """Progress line for one row: its median, or why it has none."""
    if row.median_ms is None:
        return f"{row.status}: {row.check}"
    return f"{row.median_ms:.4g} ms"


def _number(value: float | None) -> str:
    """A figure with about four significant digits, ``-`` for None."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}"


def _ratio(value: float | None) -> str:
    """``"1.23x"``, ``-`` for None."""
    return "-" if value is None else f"{value:.2f}x"


def _finite(value: object) -> object:
    """``value`` with every non-finite float replaced by None, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _describe_exception(error: BaseException) -> str:
    """``"TypeName: message"``, on one line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _git_commit() -> tuple[str, bool | None]:
    """Short hash of the checkout's HEAD and whether tracked files differ from it.

    Returns ``("unknown", None)`` outside a git checkout or without git.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPOSITORY_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPOSITORY_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return commit or "unknown", bool(status.strip())


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "unknown"


def _installed_version(distribution: str) -> str:
    """Version of an installed distribution, or ``"not installed"``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).removeprefix("torch.")


if __name__ == "__main__":
    sys.exit(main())
