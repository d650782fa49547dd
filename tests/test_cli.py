"""The command line: ``tritonbp --help``, lazy subcommands, and ``tritonbp check`` end to end."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tritonbp.check import Case, CaseResult, format_report
from tritonbp.cli import SUBCOMMANDS, main
from tritonbp.testing import measure_error


def _run(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m tritonbp ARGS`` in a clean process, as a user would.

    The variables that select the kernels' mode are removed: the command must set up what it
    needs by itself.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITONBP_BACKEND")}
    return subprocess.run(
        [sys.executable, "-m", "tritonbp", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )


def test_help_lists_every_subcommand() -> None:
    completed = _run("--help")
    assert completed.returncode == 0, completed.stderr
    for subcommand in SUBCOMMANDS:
        assert subcommand.name in completed.stdout


def test_console_script_runs() -> None:
    script = shutil.which("tritonbp", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the tritonbp script is not installed next to this Python")
    completed = subprocess.run(
        [script, "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("tritonbp ")


def test_unknown_subcommand_is_a_usage_error() -> None:
    completed = _run("no-such-command")
    assert completed.returncode == 2
    assert "invalid choice" in completed.stderr


def test_help_imports_no_subcommand() -> None:
    probe = (
        "import sys\n"
        "from tritonbp.cli import SUBCOMMANDS, main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = [s.module for s in SUBCOMMANDS if s.module in sys.modules]\n"
        "loaded += [m for m in sys.modules if m.startswith('tritonbp.kernels')]\n"
        "print(loaded)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "[]"


def test_subcommand_help_shows_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tritonbp check")
    for option in ("--device", "--dtype", "--activation", "--backend"):
        assert option in out


def test_check_passes_on_this_machine() -> None:
    completed = _run("check")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    verdict = completed.stdout.strip().splitlines()[-1]
    assert verdict.startswith("PASS: "), completed.stdout
    expected_device = "cuda" if torch.cuda.is_available() else "cpu (Triton interpreter)"
    assert f"device {expected_device}, backend triton" in completed.stdout


def test_check_rejects_an_unknown_activation() -> None:
    completed = _run("check", "--activation", "relu6")
    assert completed.returncode == 2
    assert "relu6" in completed.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_check_on_missing_cuda_says_so() -> None:
    completed = _run("check", "--device", "cuda")
    assert completed.returncode == 2
    assert "no CUDA device" in completed.stderr


def _result(activation: str, error: float, *, failure: str | None = None) -> CaseResult:
    """A float16 result whose single tensor has the given error against a zero reference."""
    reference = torch.zeros(2, 3, dtype=torch.float64)
    actual = torch.zeros(2, 3, dtype=torch.float16)
    actual[1, 2] = error
    report = measure_error("out", actual, reference, torch.zeros_like(actual))
    case = Case(input_shape=(2, 8), out_features=3, bias=False)
    reports = () if failure is not None else (report,)
    return CaseResult(activation, torch.float16, case, reports, failure)


def test_report_of_passing_results_ends_with_pass() -> None:
    text = format_report([_result("relu", 0.0), _result("tanh", 0.0)], elapsed_s=1.25)
    assert text.splitlines()[-1] == "PASS: 2 of 2 checks within tolerance in 1.2 s"
    assert "failures:" not in text


def test_report_names_each_failure_and_ends_with_fail() -> None:
    results = [
        _result("relu", 0.0),
        _result("gelu", 0.5),
        _result("silu", 0.0, failure="NotImplementedError: no kernel"),
    ]
    lines = format_report(results).splitlines()

    assert lines[-1] == "FAIL: 2 of 3 checks outside tolerance"
    gelu_row = next(line for line in lines if line.startswith("gelu"))
    assert gelu_row.endswith("FAIL")
    assert any("gelu, float16" in line and "at index (1, 2)" in line for line in lines)
    assert any("silu, float16" in line and "NotImplementedError" in line for line in lines)


def test_report_of_nothing_fails() -> None:
    assert format_report([]).splitlines()[-1] == "FAIL: nothing was checked"
