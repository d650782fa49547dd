"""The benchmark harness, benchmarks/bench_fused_linear.py, run on the CPU.

These tests check that the harness runs and reports consistent figures; they assert nothing
about speed. The quick run uses the pure-PyTorch backend so that it takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fused_linear.py"

METADATA_KEYS = (
    "device",
    "device_name",
    "torch_version",
    "triton_version",
    "tritonbp_version",
    "git_commit",
    "timestamp",
    "command",
    "timing",
)


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """The harness, imported from its path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_fused_linear", BENCH_PATH)
    assert spec is not None, f"cannot load {BENCH_PATH}"
    assert spec.loader is not None, f"cannot load {BENCH_PATH}"
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is created.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_flop_counts(bench: ModuleType) -> None:
    M, K, N = 3, 5, 7
    assert bench.flop_count("forward", M, K, N) == 2 * M * N * K
    assert bench.flop_count("backward", M, K, N) == 4 * M * N * K
    assert bench.flop_count("step", M, K, N) == 6 * M * N * K
    with pytest.raises(ValueError, match="phase"):
        bench.flop_count("sideways", M, K, N)


@pytest.mark.parametrize(
    ("activation", "dtype", "writes_z"),
    [
        ("identity", torch.float32, False),
        ("relu", torch.bfloat16, False),
        ("gelu_tanh", torch.bfloat16, True),
        ("silu", torch.float16, True),
        ("sigmoid", torch.float32, False),
    ],
)
def test_forward_bytes(
    bench: ModuleType, activation: str, dtype: torch.dtype, writes_z: bool
) -> None:
    M, K, N = 3, 5, 7
    element = torch.empty((), dtype=dtype).element_size()
    # x, W and b read, a written, and z written too when the backward reads it.
    expected = element * (M * K + N * K + N + M * N + (M * N if writes_z else 0))
    assert bench.forward_bytes(M, K, N, dtype, activation) == expected
    assert bench.forward_bytes(M, K, N, dtype, activation, bias=False) == expected - element * N


def test_forward_bytes_leaky_relu_keeps_z_for_a_negative_slope(bench: ModuleType) -> None:
    M, K, N = 2, 3, 4
    keeps_a = bench.forward_bytes(M, K, N, torch.float32, "leaky_relu", negative_slope=0.1)
    keeps_z = bench.forward_bytes(M, K, N, torch.float32, "leaky_relu", negative_slope=-0.1)
    assert keeps_z - keeps_a == 4 * M * N


def test_quick_run_on_cpu(
    bench: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TRITONBP_BACKEND", "torch")
    output = tmp_path / "results.json"

    status = bench.main(["--quick", "--device", "cpu", "--output", str(output)])

    stdout = capsys.readouterr().out
    assert status == 0, stdout
    document = json.loads(output.read_text())
    run_metadata = document["metadata"]
    missing = [key for key in METADATA_KEYS if key not in run_metadata]
    assert not missing, f"metadata lacks {missing}: {run_metadata}"
    assert run_metadata["device"] == "cpu"
    assert run_metadata["device_name"].startswith("CPU")
    assert run_metadata["tritonbp_backend"] == "torch"
    assert "--quick" in run_metadata["command"]

    rows = document["rows"]
    M, K, N = bench.QUICK_SHAPE
    assert sorted((row["impl"], row["phase"]) for row in rows) == sorted(
        product(bench.IMPLS, bench.PHASES)
    )
    medians = {(row["impl"], row["phase"]): row["median_ms"] for row in rows}
    for row in rows:
        where = f"{row['impl']} {row['phase']}"
        assert row["status"] == "ok", f"{where}: {row['check']}"
        assert (row["M"], row["K"], row["N"]) == (M, K, N)
        for key in ("median_ms", "low_ms", "high_ms"):
            assert math.isfinite(row[key]), f"{where}: {key} = {row[key]}"
            assert row[key] > 0, f"{where}: {key} = {row[key]}"
        assert row["low_ms"] <= row["median_ms"] <= row["high_ms"], where
        assert row["flops"] == bench.flop_count(row["phase"], M, K, N), where
        seconds = row["median_ms"] * 1e-3
        assert row["tflops"] == pytest.approx(row["flops"] / seconds / 1e12), where
        if row["phase"] == "forward":
            assert row["bytes"] == bench.forward_bytes(M, K, N, torch.float32, row["activation"])
            assert row["gbps"] == pytest.approx(row["bytes"] / seconds / 1e9), where
        else:
            assert row["bytes"] is None, where
            assert row["gbps"] is None, where
        # Not measured on the CPU, so not reported.
        assert row["peak_mib"] is None, where
        if row["impl"] == "tritonbp":
            assert row["error_ratio"] is not None, where
            assert row["error_ratio"] <= 1, where
            eager = medians["eager", row["phase"]]
            compiled = medians["compile", row["phase"]]
            assert row["speedup_vs_eager"] == pytest.approx(eager / row["median_ms"]), where
            assert row["speedup_vs_compile"] == pytest.approx(compiled / row["median_ms"]), where

    header = stdout.splitlines()[0].split()
    assert header[:3] == ["impl", "phase", "shape"]
    assert "TFLOP/s" in header
    assert "GB/s" in header


def test_wrong_results_are_marked_and_not_timed(
    bench: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TRITONBP_BACKEND", "torch")

    def off_by_one(activation: str):
        layer = bench.tritonbp_layer(activation)
        return lambda x, weight, bias: layer(x, weight, bias) + 1

    monkeypatch.setitem(bench.LAYER_FACTORIES, "tritonbp", off_by_one)
    output = tmp_path / "results.json"

    status = bench.main(
        ["--quick", "--device", "cpu", "--impl", "eager", "tritonbp", "--output", str(output)]
    )

    assert status == 1
    rows = json.loads(output.read_text())["rows"]
    for row in rows:
        where = f"{row['impl']} {row['phase']}"
        if row["impl"] == "tritonbp":
            assert row["status"] == "mismatch", where
            assert row["check"].startswith("a ("), f"{where}: {row['check']}"
            assert row["median_ms"] is None, where
            assert row["tflops"] is None, where
        else:
            assert row["status"] == "ok", where
            assert row["median_ms"] > 0, where
    assert "MISMATCH" in capsys.readouterr().out


def test_cpu_without_quick_exits_with_a_message(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "results.json"
    status = bench.main(["--device", "cpu", "--output", str(output)])
    assert status != 0
    assert "CUDA device" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize("shape", ["1,2", "1,2,x", "0,2,3", "1,2,3,4"])
def test_bad_shapes_are_usage_errors(bench: ModuleType, shape: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--device", "cpu", "--shape", shape])
    assert exit_info.value.code == 2


def test_shapes_activations_and_dtypes_combine(bench: ModuleType) -> None:
    args = bench.build_parser().parse_args(
        ["--shape", "8,4,2", "--shape", "16,8,4", "--activation", "relu", "silu"]
    )
    cases = bench.select_cases(args, torch.device("cpu"))
    assert [(case.M, case.K, case.N, case.activation) for case in cases] == [
        (8, 4, 2, "relu"),
        (8, 4, 2, "silu"),
        (16, 8, 4, "relu"),
        (16, 8, 4, "silu"),
    ]
    assert all(case.dtype == torch.bfloat16 for case in cases)

    args = bench.build_parser().parse_args(["--dtype", "float16"])
    cases = bench.select_cases(args, torch.device("cuda"))
    assert len(cases) == len(bench.DEFAULT_CASES)
    assert all(case.dtype == torch.float16 for case in cases)
