"""Accuracy checks against a float64 reference, shared by the test suite and ``tritonbp check``.

A low-precision result is judged by how far it is from the exact answer compared with how far
PyTorch's own result in the same dtype is. For every tensor three versions are computed from
the same (already rounded) inputs:

- ``actual``: the result under test, e.g. ``fused_linear`` in float16;
- ``baseline``: PyTorch's own result in that dtype, e.g. ``F.linear`` + activation in float16;
- ``reference``: the same PyTorch computation in float64, taken as exact.

The result passes when ``max|actual - reference| <= factor * max|baseline - reference| + atol``
with ``factor`` and ``atol`` taken from :data:`TOLERANCES` for the dtype. The bound follows the
problem: a long reduction or a steep activation makes PyTorch's error larger, and the bound with
it, while the floor ``atol`` covers results that PyTorch happens to get (nearly) exact.
Elements where PyTorch's own result overflowed are left out of both maxima.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "TOLERANCES",
    "ErrorReport",
    "Tolerance",
    "assert_matches_reference",
    "measure_error",
]


@dataclass(frozen=True)
class Tolerance:
    """How far a result in one dtype may be from the float64 reference.

    Attributes:
        factor: allowed multiple of PyTorch's own largest error in the same dtype.
        atol: absolute floor added to the bound.
    """

    factor: float
    atol: float


# The floor is counted in units in the last place (ulp) of a value of magnitude 1. float16
# and bfloat16 get one ulp (2**-10 and 2**-7): where PyTorch's own result is exact, as relu
# or identity outputs can be, a different summation order may still round one step apart.
# float32 gets about eight ulps and float64 more: their floors only matter for tensors of
# very small values, since a reduction in these dtypes always carries an error of its own.
TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(factor=2.0, atol=1e-12),
    torch.float32: Tolerance(factor=2.0, atol=1e-6),
    torch.float16: Tolerance(factor=2.0, atol=2**-10),
    torch.bfloat16: Tolerance(factor=2.0, atol=2**-7),
}


@dataclass(frozen=True)
class ErrorReport:
    """The error figures of one tensor against its float64 reference.

    Attributes:
        name: what the tensor is, e.g. ``"dx"``; used in messages.
        dtype: dtype of the result under test.
        shape: shape of the result under test.
        error: largest ``|actual - reference|``; ``inf`` where ``actual`` is not finite but
            the reference is.
        baseline_error: largest ``|baseline - reference|``, PyTorch's own error.
        bound: the largest error allowed, ``factor * baseline_error + atol``.
        index: index of the element with the largest error; ``None`` for an empty tensor.
        value: the result under test at ``index`` (``nan`` for an empty tensor).
        reference_value: the reference at ``index`` (``nan`` for an empty tensor).
        tolerance: the factor and floor the bound was made from.
    """

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    error: float
    baseline_error: float
    bound: float
    index: tuple[int, ...] | None
    value: float
    reference_value: float
    tolerance: Tolerance

    @property
    def passed(self) -> bool:
        """Whether the largest error is within the bound."""
        return self.error <= self.bound

    @property
    def ratio(self) -> float:
        """``error / bound``: below 1 passes; shows how much headroom is left."""
        if self.bound == 0.0:
            return 0.0 if self.error == 0.0 else float("inf")
        return self.error / self.bound

    def describe(self) -> str:
        """One line giving the worst element, its error and the bound."""
        verdict = "within" if self.passed else "exceeds"
        tolerance = self.tolerance
        return (
            f"{self.name} ({_dtype_name(self.dtype)}, shape {tuple(self.shape)}): "
            f"max error {self.error:.3e} at index {self.index} {verdict} bound {self.bound:.3e} "
            f"(= {tolerance.factor:g} x PyTorch's own error {self.baseline_error:.3e} "
            f"+ floor {tolerance.atol:.1e}); value {self.value:.6g}, "
            f"reference {self.reference_value:.6g}"
        )


def measure_error(
    name: str,
    actual: torch.Tensor,
    reference: torch.Tensor,
    baseline: torch.Tensor,
    *,
    tolerance: Tolerance | None = None,
) -> ErrorReport:
    """Measures the error of ``actual`` against ``reference``, with the bound that applies.

    Args:
        name: what the tensor is (``"out"``, ``"dx"``, ``"dW"``, ...), used in messages.
        actual: result under test, any shape ``S``, dtype one of :data:`TOLERANCES`.
        reference: the float64 reference, shape ``S``.
        baseline: PyTorch's own result in ``actual``'s dtype, shape ``S``.
        tolerance: overrides the entry of :data:`TOLERANCES` for ``actual.dtype``.

    Returns:
        The error figures; nothing is raised for a result outside the bound.

    Raises:
        TypeError: if ``reference`` is not float64, if ``baseline`` has another dtype than
            ``actual``, or if the dtype has no tolerance.
        ValueError: if the three shapes differ.

    Example:
        >>> ref = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> half = ref.half()
        >>> measure_error("out", half, ref, half).passed
        True
    """
    if reference.dtype != torch.float64:
        raise TypeError(f"{name}: reference must be float64, got {reference.dtype}")
    if baseline.dtype != actual.dtype:
        raise TypeError(
            f"{name}: baseline must have the dtype of actual ({actual.dtype}), so that "
            f"PyTorch's own error is measured in the same precision; got {baseline.dtype}"
        )
    if tolerance is None:
        if actual.dtype not in TOLERANCES:
            known = ", ".join(_dtype_name(dtype) for dtype in TOLERANCES)
            raise TypeError(
                f"{name}: actual has dtype {actual.dtype}; tolerances exist for {known}"
            )
        tolerance = TOLERANCES[actual.dtype]
    if not (actual.shape == reference.shape == baseline.shape):
        raise ValueError(
            f"{name}: actual, reference and baseline must have one shape, got "
            f"{tuple(actual.shape)}, {tuple(reference.shape)} and {tuple(baseline.shape)}"
        )

    reference = reference.detach()
    actual64 = actual.detach().to(device=reference.device, dtype=torch.float64)
    baseline64 = baseline.detach().to(device=reference.device, dtype=torch.float64)
    error = _elementwise_error(actual64, reference)
    baseline_errors = _elementwise_error(baseline64, reference)
    # Where PyTorch itself overflowed, its error says nothing about the precision the dtype
    # allows, and an infinite bound would let anything pass: leave those elements out.
    overflowed = torch.isinf(baseline_errors)
    error = error.masked_fill(overflowed, 0.0)
    baseline_error = _largest(baseline_errors.masked_fill(overflowed, 0.0))
    bound = tolerance.factor * baseline_error + tolerance.atol

    if error.numel() == 0:
        index, value, reference_value, largest = None, float("nan"), float("nan"), 0.0
    else:
        flat_index = int(torch.argmax(error))
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_index), error.shape))
        value = float(actual64.reshape(-1)[flat_index])
        reference_value = float(reference.reshape(-1)[flat_index])
        largest = float(error.reshape(-1)[flat_index])

    return ErrorReport(
        name=name,
        dtype=actual.dtype,
        shape=tuple(actual.shape),
        error=largest,
        baseline_error=baseline_error,
        bound=bound,
        index=index,
        value=value,
        reference_value=reference_value,
        tolerance=tolerance,
    )


def assert_matches_reference(
    name: str,
    actual: torch.Tensor,
    reference: torch.Tensor,
    baseline: torch.Tensor,
    *,
    tolerance: Tolerance | None = None,
) -> ErrorReport:
    """Asserts that ``actual`` is as close to ``reference`` as :data:`TOLERANCES` demands.

    Takes the same arguments as :func:`measure_error`.

    Returns:
        The error figures, for callers that also want to report the headroom.

    Raises:
        AssertionError: if the largest error exceeds the bound; the message names the tensor,
            the worst element's index, its value, the reference value, the error and the bound.
        TypeError, ValueError: as :func:`measure_error`.

    Example:
        >>> ref = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> report = assert_matches_reference("out", ref.float(), ref, ref.float())
    """
    report = measure_error(name, actual, reference, baseline, tolerance=tolerance)
    if not report.passed:
        raise AssertionError(report.describe())
    return report


def _elementwise_error(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``|values - reference|`` with matching infinities counted as exact and NaN as infinite.

    Both arguments are float64 tensors of one shape; so is the result.
    """
    error = (values - reference).abs()
    # inf - inf is NaN, but an overflow that the reference shares is no error.
    error = torch.where(values == reference, torch.zeros_like(error), error)
    return torch.nan_to_num(error, nan=float("inf"), posinf=float("inf"))


def _largest(error: torch.Tensor) -> float:
    """Largest element of ``error``, 0 for an empty tensor."""
    return float(error.max()) if error.numel() > 0 else 0.0


def _dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).removeprefix("torch.")
