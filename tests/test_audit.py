"""The compile audit: every kernel compiled for sm_80 and sm_90 must fit and use tensor cores.

``test_default_plan_passes`` is the gate: it compiles the default plan of ``tritonbp audit``
(no GPU needed) and fails on any row that does not compile, spills registers, needs more
shared memory than its target has, or misses the tensor cores. The other tests check the
pieces on a handful of rows.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tritonbp import audit
from tritonbp.activations import ACTIVATIONS, SavedForBackward, saved_for_backward
from tritonbp.kernels import KERNELS, tiles_for

KERNEL_NAMES = tuple(KERNELS)


def _variant(kernel: str, dtype: str, label: str) -> audit.Variant:
    """The launchable variant of ``kernel`` whose table label is ``label``."""
    variants = audit.launchable_variants(kernel, dtype)
    return next(variant for variant in variants if variant.label == label)


def _clean_env(cache_dir: Path) -> dict[str, str]:
    """This process's environment for a child, without the interpreter and with its own cache."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITONBP_CACHE_DIR"] = str(cache_dir)
    return env


# ---------------------------------------------------------------------------------------------
# The gate.


def test_default_plan_passes() -> None:
    rows = audit.run_audit(audit.default_plan())
    assert rows
    failing = [row for row in rows if not row.passed]
    if failing:
        pytest.fail(
            f"{len(failing)} of {len(rows)} audit rows fail (run 'tritonbp audit' for the table):\n"
            + audit.format_table(failing),
            pytrace=False,
        )


# ---------------------------------------------------------------------------------------------
# Plans and variants.


@pytest.mark.parametrize("dtype", tuple(audit.DTYPES))
@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_variants_cover_every_activation(kernel: str, dtype: str) -> None:
    variants = audit.launchable_variants(kernel, dtype)
    assert {variant.activation for variant in variants} == set(ACTIVATIONS)
    assert len(set(variants)) == len(variants), "a variant is listed twice"
    precisions = {variant.input_precision for variant in variants}
    assert precisions == ({"ieee", "tf32"} if dtype == "float32" else {"ieee"})


def test_forward_stores_z_exactly_where_the_backward_reads_it() -> None:
    for variant in audit.launchable_variants("fwd", "bfloat16"):
        flags = dict(variant.flags)
        if flags["STORE_Z"]:
            saves = saved_for_backward(variant.activation, variant.negative_slope)
            assert saves is SavedForBackward.PREACTIVATION, variant.label
    stored = {
        variant.activation
        for variant in audit.launchable_variants("fwd", "bfloat16")
        if dict(variant.flags)["STORE_Z"]
    }
    assert stored == {"leaky_relu", "gelu", "gelu_tanh", "silu", "relu_squared"}


def test_backward_variants_follow_the_launch_wrappers() -> None:
    for variant in audit.launchable_variants("bwd_dx", "bfloat16"):
        if variant.activation == "identity":
            assert not dict(variant.flags)["STORE_DELTA"]
    flag_sets = {variant.flags for variant in audit.launchable_variants("bwd_dw", "bfloat16")}
    assert {tuple(value for _, value in flags) for flags in flag_sets} == {
        (True, True),
        (True, False),
        (False, True),
    }


def test_launchable_variants_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="kernel"):
        audit.launchable_variants("fwd_typo", "bfloat16")
    with pytest.raises(ValueError, match="dtype"):
        audit.launchable_variants("fwd", "float64")


def test_default_plan_covers_every_configuration_and_variant() -> None:
    plan = audit.default_plan()
    assert len(set(plan)) == len(plan)
    assert set(plan) <= set(audit.full_plan())
    for target in audit.TARGETS:
        for kernel in KERNEL_NAMES:
            rows = [case for case in plan if (case.target, case.kernel) == (target, kernel)]
            for dtype, (_, size) in audit.DTYPES.items():
                tiles = {case.tile for case in rows if case.dtype == dtype}
                assert tiles == {tuple(tile) for tile in tiles_for(kernel, target, size)}
            planned = {case.variant for case in rows}
            assert set(audit.launchable_variants(kernel, "bfloat16")) <= planned


def test_filters_select_rows() -> None:
    plan = audit.default_plan()
    selected = audit.filter_cases(plan, ["kernel=fwd", "target=sm_90", "dtype=bf16", "gelu +z"])
    assert selected
    for case in selected:
        assert (case.kernel, case.target, case.dtype) == ("fwd", 90, "bfloat16")
        assert "gelu +z" in case.variant.label
    assert audit.filter_cases(plan, ["activation=relu"]) == [
        case for case in plan if case.variant.activation == "relu"
    ]
    with pytest.raises(ValueError, match="colour"):
        audit.filter_cases(plan, ["colour=blue"])


# ---------------------------------------------------------------------------------------------
# Verdicts.


def _row(target: int = 90, **results: object) -> audit.AuditRow:
    """A row of a bf16 forward case with the given results."""
    variant = _variant("fwd", "bfloat16", "relu +bias")
    case = audit.AuditCase("fwd", (64, 64, 64, 4, 4), "bfloat16", variant, target)
    fields = {"registers": 96, "spill_bytes": 0, "shared_bytes": 65536, "tensor_cores": "wgmma"}
    fields.update(results)
    return audit.AuditRow(case, **fields)


def test_verdict_of_each_failure() -> None:
    assert _row().passed
    assert _row(spill_bytes=8).failures == ("spills 8 B",)
    assert _row(shared_bytes=232449).failures == ("shared memory 232449 B > 232448 B",)
    assert _row(tensor_cores="mma").failures == ("no wgmma",)
    assert _row(target=80, tensor_cores="mma").passed
    assert _row(error="CompilationError: ...").failures == ("does not compile",)


def test_fp32_without_tf32_needs_no_tensor_cores() -> None:
    variant = _variant("fwd", "float32", "relu +bias")
    case = audit.AuditCase("fwd", (64, 64, 32, 4, 4), "float32", variant, 90)
    assert not case.expects_tensor_cores
    tf32 = _variant("fwd", "float32", "relu +bias tf32")
    assert audit.AuditCase("fwd", (64, 64, 32, 4, 4), "float32", tf32, 90).expects_tensor_cores


def test_table_lists_failures_and_ends_with_a_verdict() -> None:
    text = audit.format_table([_row(), _row(spill_bytes=24)])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["kernel", "config", "dtype"]
    assert lines[2].endswith("FAIL: spills 24 B")
    assert lines[-1] == "FAIL: 1 of 2 rows fail"
    assert audit.format_table([_row()]).splitlines()[-1].startswith("PASS: 1 of 1")


def test_table_shows_each_compile_error_once() -> None:
    error = "CompilationError: TypeError('no such thing')"
    text = audit.format_table([_row(error=error), _row(target=80, error=error)])
    assert text.count("no such thing") == 1
    assert "and 1 more rows:" in text
    assert text.splitlines()[-1] == "FAIL: 2 of 2 rows fail"


# ---------------------------------------------------------------------------------------------
# Compiling, specializing and caching, on a few cheap rows.


def test_oversized_tile_is_flagged(tmp_path: Path) -> None:
    # A plain GEMM (dW alone, identity) over 4 stages of 64x512 and 512x64 bf16 operand tiles:
    # 512 KiB of shared memory, more than either target has.
    variant = _variant("bwd_dw", "bfloat16", "identity +dw")
    cases = [
        audit.AuditCase("bwd_dw", (64, 64, 512, 4, 4), "bfloat16", variant, target)
        for target in audit.TARGETS
    ]
    rows = audit.run_audit(cases, cache_dir=tmp_path)
    for row in rows:
        assert row.error is None, row.error
        assert not row.passed
        assert any(reason.startswith("shared memory") for reason in row.failures), row.failures


def test_second_run_reads_the_cache(tmp_path: Path) -> None:
    variant = _variant("bwd_dw", "bfloat16", "identity +db")
    case = audit.AuditCase("bwd_dw", (64, 64, 64, 4, 4), "bfloat16", variant, 90)
    (first,) = audit.run_audit([case], cache_dir=tmp_path)
    (second,) = audit.run_audit([case], cache_dir=tmp_path)
    assert not first.cached
    assert second.cached
    assert second.registers == first.registers
    assert second.shared_bytes == first.shared_bytes


_SPECIALIZATION_PROBE = """
import json
from tritonbp import audit
from tritonbp.kernels import KERNELS

results = {}
for kernel in ("fwd", "bwd_dx", "bwd_dw"):
    variant = audit.launchable_variants(kernel, "bfloat16")[0]
    case = audit.AuditCase(kernel, (128, 128, 64, 8, 4), "bfloat16", variant, 90)
    signature, constexprs, attrs, options = audit.kernel_specialization(case)
    names = KERNELS[kernel][0].arg_names
    results[kernel] = {
        "signature": signature,
        "constexprs": {names[path[0]]: value for path, value in constexprs.items()},
        "divisible": [
            names[path[0]] for path, found in attrs.items() if ["tt.divisibility", 16] in found
        ],
        "options": options,
        "by_hand_agrees": audit._specialization(case, by_hand=True) == audit._specialization(case),
    }
print(json.dumps(results))
"""


def test_specialization_is_what_the_jit_uses(tmp_path: Path) -> None:
    # The kernels of this process may be the interpreter's; a clean process has the GPU ones.
    completed = subprocess.run(
        [sys.executable, "-c", _SPECIALIZATION_PROBE],
        capture_output=True,
        text=True,
        env=_clean_env(tmp_path),
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout.strip().splitlines()[-1])

    forward = results["fwd"]
    assert forward["signature"]["x_ptr"] == "*bf16"
    # Unit strides become the constant 1, as the JIT makes them; other strides and sizes are
    # 32-bit and divisible by 16, pointers 16-byte aligned.
    for stride in ("stride_xk", "stride_wk", "stride_on"):
        assert forward["constexprs"][stride] == 1
    for name in ("x_ptr", "w_ptr", "b_ptr", "a_ptr", "z_ptr", "M", "N", "K", "stride_xm"):
        assert name in forward["divisible"]
    assert forward["signature"]["M"] == "i32"
    assert forward["constexprs"]["BLOCK_M"] == 128
    assert forward["options"]["num_warps"] == 8
    assert forward["options"]["num_stages"] == 4
    for kernel in KERNEL_NAMES:
        assert results[kernel]["by_hand_agrees"], kernel


def test_command_line_prints_json_and_exit_status(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tritonbp",
            "audit",
            "--json",
            "--filter",
            "kernel=bwd_dw",
            "--filter",
            "variant=identity +db",
            "--target",
            "90",
        ],
        capture_output=True,
        text=True,
        env=_clean_env(tmp_path),
        timeout=300,
        check=False,
    )
    rows = json.loads(completed.stdout)
    assert completed.returncode == (0 if all(row["passed"] for row in rows) else 1)
    assert rows
    assert {(row["kernel"], row["target"]) for row in rows} == {("bwd_dw", 90)}
    for key in ("registers", "spill_bytes", "shared_bytes", "tensor_cores", "tma", "compile_s"):
        assert key in rows[0]


def test_command_line_rejects_a_bad_filter() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tritonbp", "audit", "--filter", "colour=blue"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2
    assert "colour" in completed.stderr
