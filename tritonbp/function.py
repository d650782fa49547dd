"""The autograd Function of the fused dense layer: it orchestrates, the custom ops compute."""

import torch

from tritonbp import ops  # noqa: F401  (registers torch.ops.tritonbp.*)
from tritonbp.activations import SavedForBackward, saved_for_backward


class FusedLinearFunction(torch.autograd.Function):
    """a = s(x W^T + b) for 2-D x, with the hand-fused backward of ``tritonbp.ops``.

    The forward keeps only what the backward will read: z or a for the activation
    derivative (nothing for the identity), x only if W needs a gradient, W only if x does,
    and nothing at all when no input requires a gradient. The backward computes exactly the
    gradients in ``ctx.needs_input_grad``. It is differentiable once: building a graph of
    the backward (``create_graph=True``) raises an error rather than dropping terms.

    Use ``tritonbp.fused_linear`` rather than calling ``apply`` directly: it validates the
    arguments, applies autocast and accepts any leading dimensions.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        activation: str,
        negative_slope: float,
    ) -> torch.Tensor:
        needs_x_grad, needs_weight_grad, needs_bias_grad = ctx.needs_input_grad[:3]
        saves = SavedForBackward.NOTHING
        if needs_x_grad or needs_weight_grad or needs_bias_grad:
            saves = saved_for_backward(activation, negative_slope)
        store_z = saves is SavedForBackward.PREACTIVATION
        a, z = torch.ops.tritonbp.fused_linear_fwd(
            x, weight, bias, activation, negative_slope, store_z
        )
        saved = {SavedForBackward.PREACTIVATION: z, SavedForBackward.OUTPUT: a}.get(saves)
        ctx.save_for_backward(
            saved,
            x if needs_weight_grad else None,
            weight if needs_x_grad else None,
        )
        ctx.activation = activation
        ctx.negative_slope = negative_slope
        return a

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        saved, x, weight = ctx.saved_tensors
        if torch.is_grad_enabled() and any(
            tensor is not None and tensor.requires_grad
            for tensor in (grad_output, saved, x, weight)
        ):
            # A graph built through the kernels would silently drop the second-order terms.
            raise RuntimeError(
                "tritonbp: the fused layer's backward is not differentiable, so double "
                "backward (create_graph=True through a FusedLinear) is not supported; use "
                "nn.Linear and the activation from torch for second derivatives"
            )
        needs_x_grad, needs_weight_grad, needs_bias_grad = ctx.needs_input_grad[:3]
        grad_x, grad_weight, grad_bias = torch.ops.tritonbp.fused_linear_bwd(
            grad_output,
            saved,
            x,
            weight,
            ctx.activation,
            ctx.negative_slope,
            needs_x_grad,
            needs_weight_grad,
            needs_bias_grad,
        )
        return (
            grad_x if needs_x_grad else None,  # x
            grad_weight if needs_weight_grad else None,  # weight
            grad_bias if needs_bias_grad else None,  # bias
            None,  # activation: a name, not differentiable
            None,  # negative_slope: a constant of the layer
        )
