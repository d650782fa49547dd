"""The activation registry: the names tritonbp accepts and what each saves for backward.

This is the single list of supported activations. The kernels implement each name in
``tritonbp/kernels/activations.py``, the pure-PyTorch reference in ``reference.py``; both
follow PyTorch's definitions of the forward and of the derivative, kinks included.
"""

from dataclasses import dataclass
from enum import Enum


class SavedForBackward(Enum):
    """Which (M, N) tensor the backward of an activation reads."""

    NOTHING = "nothing"
    PREACTIVATION = "z"
    OUTPUT = "a"


@dataclass(frozen=True)
class ActivationSpec:
    """How one activation is computed and what its derivative needs.

    Attributes:
        name: the registry name, passed to the kernels as a compile-time constant.
        pytorch_equivalent: the PyTorch expression it matches, for docs and errors.
        saves: what the backward reads. ``OUTPUT`` costs no memory beyond the layer's own
            result, which autograd keeps anyway when the next layer needs it.
    """

    name: str
    pytorch_equivalent: str
    saves: SavedForBackward


_SPECS = (
    ActivationSpec("identity", "z", SavedForBackward.NOTHING),
    ActivationSpec("relu", "torch.relu(z)", SavedForBackward.OUTPUT),
    ActivationSpec("leaky_relu", "F.leaky_relu(z, negative_slope)", SavedForBackward.OUTPUT),
    ActivationSpec("gelu", "F.gelu(z)", SavedForBackward.PREACTIVATION),
    ActivationSpec("gelu_tanh", "F.gelu(z, approximate='tanh')", SavedForBackward.PREACTIVATION),
    ActivationSpec("silu", "F.silu(z)", SavedForBackward.PREACTIVATION),
    ActivationSpec("sigmoid", "torch.sigmoid(z)", SavedForBackward.OUTPUT),
    ActivationSpec("tanh", "torch.tanh(z)", SavedForBackward.OUTPUT),
    ActivationSpec("relu_squared", "torch.relu(z) ** 2", SavedForBackward.PREACTIVATION),
)

ACTIVATION_SPECS: dict[str, ActivationSpec] = {spec.name: spec for spec in _SPECS}

ACTIVATIONS: tuple[str, ...] = tuple(ACTIVATION_SPECS)
"""Names of the supported activations; ``None`` is accepted as ``"identity"``."""

DEFAULT_NEGATIVE_SLOPE = 0.01
"""``leaky_relu``'s slope for z < 0 unless told otherwise, as in ``torch.nn.LeakyReLU``."""


def resolve_activation(activation: str | None, negative_slope: float) -> str:
    """Validate an activation argument and return its registry name.

    Args:
        activation: a name from ``ACTIVATIONS`` or ``None`` (the identity).
        negative_slope: ``leaky_relu``'s slope; any other activation must leave it at its
            default, so that a slope given by mistake is not silently ignored.

    Raises:
        TypeError: ``activation`` is not a string or None, or the slope is not a real number.
        ValueError: the name is unknown, or a slope was given to another activation.
    """
    if activation is None:
        activation = "identity"
    if not isinstance(activation, str):
        raise TypeError(
            f"activation: expected one of {ACTIVATIONS} or None, "
            f"got an object of type {type(activation).__name__}"
        )
    if activation not in ACTIVATION_SPECS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS} or None, got {activation!r}")
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, int | float):
        raise TypeError(f"negative_slope: expected a float, got {type(negative_slope).__name__}")
    if activation != "leaky_relu" and negative_slope != DEFAULT_NEGATIVE_SLOPE:
        raise ValueError(
            f"negative_slope: only 'leaky_relu' takes a slope, got {negative_slope} "
            f"with activation {activation!r}"
        )
    return activation


def saved_for_backward(activation: str, negative_slope: float) -> SavedForBackward:
    """What the backward of ``activation`` reads, for a resolved activation name.

    ``leaky_relu`` reads the sign of its input; the output has the same sign only when the
    slope is non-negative, so a negative slope keeps z instead.
    """
    saves = ACTIVATION_SPECS[activation].saves
    if activation == "leaky_relu" and negative_slope < 0:
        return SavedForBackward.PREACTIVATION
    return saves
