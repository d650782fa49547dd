"""Backend selection: defaults per device, the TRITONBP_BACKEND override, clear refusals."""

import pytest
import torch

import tritonbp


def test_defaults(monkeypatch):
    monkeypatch.delenv("TRITONBP_BACKEND", raising=False)
    assert tritonbp.backend_for("cpu") == "torch"
    assert tritonbp.backend_for(torch.device("cuda", 0)) == "triton"


@pytest.mark.parametrize("forced", ["triton", "torch", " Torch "])
def test_the_variable_forces_a_backend(forced, monkeypatch):
    monkeypatch.setenv("TRITONBP_BACKEND", forced)
    assert tritonbp.backend_for("cpu") == forced.strip().lower()
    assert tritonbp.backend_for("cuda") == forced.strip().lower()


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITONBP_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        tritonbp.backend_for("cpu")


def test_other_devices_are_refused():
    with pytest.raises(NotImplementedError, match="'cpu' and 'cuda'"):
        tritonbp.backend_for("meta")
