"""``FusedLinear``: a drop-in ``nn.Linear`` (+ activation) running on the fused kernels."""

import torch
from torch import nn

from tritonbp.activations import DEFAULT_NEGATIVE_SLOPE, resolve_activation
from tritonbp.functional import fused_linear


class FusedLinear(nn.Linear):
    """s(x W^T + b) as one module: ``nn.Linear`` followed by an activation, fused.

    A subclass of ``nn.Linear`` with the same ``weight`` (out_features, in_features) and
    ``bias`` (out_features,) parameters, the same initialisation and the same state_dict
    keys; the activation is a plain attribute, not state, so checkpoints load into either
    class.

    Args:
        in_features, out_features, bias, device, dtype: as for ``nn.Linear``.
        activation: a name from ``tritonbp.ACTIVATIONS``, or None for the identity.
        negative_slope: slope of ``leaky_relu`` for negative inputs (default 0.01, as in
            ``nn.LeakyReLU``); only that activation takes it.

    Raises:
        TypeError / ValueError: an unknown activation, or a slope given to another one.

    Example:
        >>> layer = tritonbp.FusedLinear(32, 64, activation="gelu")
        >>> layer(torch.randn(8, 32)).shape
        torch.Size([8, 64])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        negative_slope: float = DEFAULT_NEGATIVE_SLOPE,
    ) -> None:
        activation = resolve_activation(activation, negative_slope)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.activation = activation
        self.negative_slope = float(negative_slope)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """(..., in_features) -> (..., out_features); see ``tritonbp.fused_linear``."""
        return fused_linear(
            input, self.weight, self.bias, self.activation, negative_slope=self.negative_slope
        )

    def extra_repr(self) -> str:
        text = f"{super().extra_repr()}, activation={self.activation!r}"
        if self.activation == "leaky_relu":
            text += f", negative_slope={self.negative_slope}"
        return text

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        activation: str | None = None,
        *,
        negative_slope: float = DEFAULT_NEGATIVE_SLOPE,
    ) -> "FusedLinear":
        """A ``FusedLinear`` that shares ``linear``'s parameter objects (no copy).

        Training either module updates both; the returned module has the same device and
        dtype as ``linear``.

        Raises:
            TypeError: ``linear`` is not an ``nn.Linear``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        fused = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            activation=activation,
            device="meta",
            negative_slope=negative_slope,
        )
        fused.weight = linear.weight
        fused.bias = linear.bias
        return fused
