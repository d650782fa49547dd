"""The fused layer's forward and backward as ``torch.library`` custom ops.

Registered as ``torch.ops.tritonbp.fused_linear_fwd`` and ``torch.ops.tritonbp.fused_linear_bwd``
with fake (meta) implementations, so that ``torch.compile`` traces through them without a
graph break and FakeTensor shape propagation works. Each op runs the backend that
``backend_for`` names for its tensors' device. Gradients that are not asked for, and z when
it is not stored, come back as empty tensors: custom ops cannot return None.
"""

import torch

from tritonbp import reference
from tritonbp.backend import backend_for


def _launch_module():
    # Imported on first use: importing the kernels fixes Triton's interpreter setting, which
    # the command-line tool and the tests decide after tritonbp itself is imported.
    from tritonbp import launch

    return launch


@torch.library.custom_op("tritonbp::fused_linear_fwd", mutates_args=())
def fused_linear_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str,
    negative_slope: float,
    store_z: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """a = s(x W^T + b) for x (M, K), W (N, K), b (N); also z (M, N) when ``store_z``.

    Returns ``(a, z)`` with z an empty tensor unless ``store_z``.
    """
    if backend_for(x.device) == "triton":
        return _launch_module().fused_linear_fwd(
            x, weight, bias, activation, negative_slope, store_z
        )
    return reference.fused_linear_forward(x, weight, bias, activation, negative_slope, store_z)


@fused_linear_fwd.register_fake
def _(x, weight, bias, activation, negative_slope, store_z):
    a = x.new_empty((x.shape[0], weight.shape[0]))
    return a, torch.empty_like(a) if store_z else x.new_empty(0)


@torch.library.custom_op("tritonbp::fused_linear_bwd", mutates_args=())
def fused_linear_bwd(
    dy: torch.Tensor,
    saved: torch.Tensor | None,
    x: torch.Tensor | None,
    weight: torch.Tensor | None,
    activation: str,
    negative_slope: float,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dW, db) for dy = dC/da (M, N); see ``tritonbp.reference.fused_linear_backward``.

    ``saved`` is what the forward kept (z or a, or None for the identity); ``x`` is needed
    only for dW and ``weight`` only for dx. Gradients not asked for are empty tensors.
    """
    arguments = (dy, saved, x, weight, activation, negative_slope, need_dx, need_dw, need_db)
    if backend_for(dy.device) == "triton":
        return _launch_module().fused_linear_bwd(*arguments)
    return reference.fused_linear_backward(*arguments)


@fused_linear_bwd.register_fake
def _(dy, saved, x, weight, activation, negative_slope, need_dx, need_dw, need_db):
    rows, out_features = dy.shape
    in_features = reference.input_features(x, weight)
    dx = dy.new_empty((rows, in_features)) if need_dx else dy.new_empty(0)
    dw = dy.new_empty((out_features, in_features)) if need_dw else dy.new_empty(0)
    db = dy.new_empty(out_features) if need_db else dy.new_empty(0)
    return dx, dw, db
