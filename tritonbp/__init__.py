"""tritonbp: dense layers whose forward and backward run as fused Triton kernels.

``FusedLinear`` replaces ``nn.Linear`` (+ activation); ``fused_linear`` is its functional
form. ``backend_for`` tells which implementation runs on a device.
"""

from tritonbp.activations import ACTIVATIONS
from tritonbp.backend import backend_for
from tritonbp.function import FusedLinearFunction
from tritonbp.functional import fused_linear
from tritonbp.modules import FusedLinear
from tritonbp.reference import reference_activation

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "FusedLinear",
    "FusedLinearFunction",
    "backend_for",
    "fused_linear",
    "reference_activation",
]
