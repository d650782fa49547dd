"""Test set-up shared by the whole suite.

Without a CUDA device, every Triton kernel runs on the CPU in Triton's interpreter. Triton
reads TRITON_INTERPRET when ``@triton.jit`` decorates a kernel, that is when the kernel modules
are imported, so it is set here, before anything imports ``tritonbp``.
"""

import os
import random

import numpy as np
import pytest
import torch
from hypothesis import settings

# None of the imports above loads tritonbp; everything that does comes after this line.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

# The interpreter runs a kernel thousands of times slower than a GPU, so no per-example
# deadline; derandomized examples make every run test the same inputs.
settings.register_profile("tritonbp", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("tritonbp")

SEED = 0


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Says in the run's header where kernels run and with which versions."""
    if torch.cuda.is_available():
        where = f"CUDA ({torch.cuda.get_device_name()})"
    else:
        where = "CPU only: Triton kernels run in the interpreter (TRITON_INTERPRET=1)"
    return [f"tritonbp: {where}; torch {torch.__version__}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips the tests marked ``gpu`` when no CUDA device is present, saying why."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; torch finds none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    """Seeds every random generator a test may draw from, before each test."""
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)


@pytest.fixture
def device() -> torch.device:
    """The device under test: CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
