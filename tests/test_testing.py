"""The accuracy helpers in tritonbp.testing: bounds, reports and failure messages."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tritonbp.testing import (
    TOLERANCES,
    Tolerance,
    assert_matches_reference,
    measure_error,
)

LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


def _three_versions(
    dtype: torch.dtype, shape: tuple[int, ...] = (4, 5)
) -> tuple[torch.Tensor, torch.Tensor]:
    """A float64 reference and PyTorch's rounding of it to ``dtype`` (the baseline)."""
    reference = torch.randn(shape, dtype=torch.float64)
    return reference, reference.to(dtype)


def test_tolerance_table_covers_the_float_dtypes() -> None:
    assert set(TOLERANCES) == {torch.float64, torch.float32, torch.float16, torch.bfloat16}
    floors = [TOLERANCES[dtype].atol for dtype in (torch.float64, *LOW_PRECISION)]
    assert floors == sorted(floors), "a less precise dtype must not get a tighter floor"
    assert all(tolerance.factor >= 1.0 for tolerance in TOLERANCES.values())


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_result_as_good_as_pytorch_passes(dtype: torch.dtype) -> None:
    reference, baseline = _three_versions(dtype)
    report = assert_matches_reference("out", baseline.clone(), reference, baseline)
    assert report.passed
    assert report.error == pytest.approx(report.baseline_error)
    assert report.bound == pytest.approx(
        TOLERANCES[dtype].factor * report.baseline_error + TOLERANCES[dtype].atol
    )
    assert report.ratio < 1.0


def test_wrong_element_fails_naming_tensor_index_values_and_bound() -> None:
    reference, baseline = _three_versions(torch.float16)
    actual = baseline.clone()
    actual[2, 3] += 1.0

    with pytest.raises(AssertionError) as failure:
        assert_matches_reference("dW", actual, reference, baseline)

    message = str(failure.value)
    report = measure_error("dW", actual, reference, baseline)
    assert message.startswith("dW (float16, shape (4, 5))")
    assert "at index (2, 3)" in message
    assert f"value {float(actual[2, 3]):.6g}" in message
    assert f"reference {float(reference[2, 3]):.6g}" in message
    assert f"max error {report.error:.3e}" in message
    assert f"bound {report.bound:.3e}" in message


def test_measure_error_reports_a_failure_without_raising() -> None:
    reference, baseline = _three_versions(torch.bfloat16, shape=(3, 2, 7))
    actual = baseline.clone()
    actual[1, 0, 6] = 100.0

    report = measure_error("dx", actual, reference, baseline)

    assert not report.passed
    assert report.ratio > 1.0
    assert report.index == (1, 0, 6)
    assert report.value == 100.0
    assert report.reference_value == float(reference[1, 0, 6])
    assert report.dtype == torch.bfloat16
    assert report.shape == (3, 2, 7)


def test_bound_is_a_multiple_of_pytorchs_own_error() -> None:
    reference = torch.zeros(8, dtype=torch.float64)
    baseline = torch.zeros(8, dtype=torch.float32)
    baseline[0] = 1e-3  # PyTorch's own error: 1e-3
    tolerance = Tolerance(factor=2.0, atol=0.0)

    within = torch.zeros(8, dtype=torch.float32)
    within[5] = 1.9e-3
    outside = torch.zeros(8, dtype=torch.float32)
    outside[5] = 2.1e-3

    assert measure_error("out", within, reference, baseline, tolerance=tolerance).passed
    assert not measure_error("out", outside, reference, baseline, tolerance=tolerance).passed


def test_floor_applies_where_pytorch_is_exact() -> None:
    reference = torch.ones(4, dtype=torch.float64)
    baseline = torch.ones(4, dtype=torch.float16)
    atol = TOLERANCES[torch.float16].atol

    close = baseline.clone()
    close[1] += 2**-10  # one unit in the last place of 1.0 in float16: exactly the floor
    report = measure_error("out", close, reference, baseline)

    assert report.baseline_error == 0.0
    assert report.bound == atol
    assert report.passed


def test_nan_fails_where_the_reference_is_finite() -> None:
    reference, baseline = _three_versions(torch.float32)
    actual = baseline.clone()
    actual[0, 4] = float("nan")

    report = measure_error("db", actual, reference, baseline)

    assert not report.passed
    assert report.error == math.inf
    assert report.index == (0, 4)


def test_matching_infinities_are_no_error() -> None:
    reference = torch.tensor([1.0, math.inf, -math.inf], dtype=torch.float64)
    baseline = reference.half()
    assert assert_matches_reference("out", baseline.clone(), reference, baseline).error == 0.0


def test_elements_where_pytorch_overflows_are_left_out() -> None:
    # 1e5 overflows float16: PyTorch's own result there is inf, and says nothing about the
    # precision float16 allows elsewhere.
    reference = torch.tensor([1e5, 0.5], dtype=torch.float64)
    baseline = reference.half()
    actual = baseline.clone()
    actual[1] = 0.75

    report = measure_error("out", actual, reference, baseline)

    assert math.isfinite(report.bound)
    assert report.index == (1,)
    assert not report.passed


def test_empty_tensor_passes() -> None:
    reference = torch.empty(0, 16, dtype=torch.float64)
    baseline = reference.float()
    report = assert_matches_reference("dx", baseline.clone(), reference, baseline)
    assert report.index is None
    assert report.error == 0.0


def test_reference_must_be_float64() -> None:
    values = torch.ones(3)
    with pytest.raises(TypeError, match="reference must be float64"):
        measure_error("out", values, values, values)


def test_baseline_must_share_the_dtype_of_actual() -> None:
    reference = torch.ones(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="baseline must have the dtype of actual"):
        measure_error("out", reference.half(), reference, reference.float())


def test_dtype_without_tolerance_is_rejected() -> None:
    reference = torch.ones(3, dtype=torch.float64)
    integers = torch.ones(3, dtype=torch.int32)
    with pytest.raises(TypeError, match="actual has dtype torch.int32"):
        measure_error("out", integers, reference, integers)


def test_shapes_must_agree() -> None:
    reference = torch.ones(2, 3, dtype=torch.float64)
    wrong = torch.ones(3, 2)
    with pytest.raises(ValueError, match=r"dx: .* \(3, 2\), \(2, 3\) and \(3, 2\)"):
        measure_error("dx", wrong, reference, wrong)


@given(
    values=st.lists(
        st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=1, max_size=64
    ),
    dtype=st.sampled_from(LOW_PRECISION),
)
def test_pytorchs_own_rounding_always_passes(values: list[float], dtype: torch.dtype) -> None:
    reference = torch.tensor(values, dtype=torch.float64)
    baseline = reference.to(dtype)
    assert measure_error("out", baseline.clone(), reference, baseline).passed
