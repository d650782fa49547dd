"""Which implementation runs for tensors on a given device.

``"triton"``: the fused Triton kernels. On CUDA they are compiled; on the CPU they run
through Triton's interpreter, which must be switched on with ``TRITON_INTERPRET=1`` before
tritonbp first launches a kernel (Triton reads it when the kernels are defined).
``"torch"``: the pure-PyTorch reference in ``tritonbp.reference``, same semantics.

By default CUDA tensors get ``"triton"`` and CPU tensors ``"torch"``. The environment
variable ``TRITONBP_BACKEND`` (``triton`` or ``torch``) forces one for every device; it is
read at each call, so it can be changed at run time.
"""

import importlib.util
import os

import torch

BACKENDS = ("triton", "torch")
BACKEND_VARIABLE = "TRITONBP_BACKEND"


def triton_available() -> bool:
    """Whether the ``triton`` package is installed (it is not on every platform)."""
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """Whether Triton's interpreter is on, which lets the kernels run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _forced_backend() -> str | None:
    value = os.environ.get(BACKEND_VARIABLE, "").strip().lower()
    if not value:
        return None
    if value not in BACKENDS:
        raise ValueError(f"{BACKEND_VARIABLE}: expected one of {BACKENDS}, got {value!r}")
    return value


def backend_for(device: torch.device | str) -> str:
    """The backend that runs tritonbp's ops for tensors on ``device``.

    Args:
        device: a ``torch.device`` or a string such as ``"cuda:0"`` or ``"cpu"``.

    Returns:
        ``"triton"`` or ``"torch"``.

    Raises:
        ValueError: ``TRITONBP_BACKEND`` holds something other than ``triton`` or ``torch``.
        RuntimeError: ``triton`` is forced (or the device is CUDA) but cannot run here:
            Triton is not installed, or a CPU device without ``TRITON_INTERPRET=1``.
        NotImplementedError: a device type other than CPU and CUDA.

    Example:
        >>> tritonbp.backend_for("cpu")
        'torch'
    """
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise NotImplementedError(
            f"device: tritonbp runs on 'cpu' and 'cuda' tensors, got {device.type!r}"
        )
    forced = _forced_backend()
    backend = forced or ("triton" if device.type == "cuda" else "torch")
    if backend == "torch":
        return backend
    if not triton_available():
        raise RuntimeError(
            "the Triton backend needs the 'triton' package, which is not installed; "
            f"install it or set {BACKEND_VARIABLE}=torch"
        )
    if device.type == "cpu" and not interpreter_enabled():
        raise RuntimeError(
            f"{BACKEND_VARIABLE}=triton on CPU tensors runs the kernels through Triton's "
            "interpreter: set TRITON_INTERPRET=1 in the environment before tritonbp first "
            "launches a kernel"
        )
    return backend
