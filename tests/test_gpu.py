"""The compiled kernels on a CUDA device, at shapes that take the autotuned configurations."""

import pytest
import torch

import tritonbp
from tritonbp.check import Case, check_case

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("activation", tritonbp.ACTIVATIONS)
@pytest.mark.parametrize(
    "shape",
    [((4, 512, 1024), 4096), ((1000, 3000), 1500), ((8192, 128), 128)],
    ids=lambda s: f"{s[0]}x{s[1]}",
)
def test_large_shapes_match_pytorch(shape, activation, dtype):
    input_shape, out_features = shape
    case = Case(input_shape=input_shape, out_features=out_features, bias=True)
    for report in check_case(activation, dtype, case, torch.device("cuda")):
        assert report.passed, report.describe()


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_float32_follows_the_tf32_setting(allow_tf32, monkeypatch):
    """With TF32 off the kernels match an fp64 product to fp32 accuracy; with it on they
    are as close as PyTorch's own TF32 matmul."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", allow_tf32)
    x = torch.randn(256, 1024, device="cuda")
    weight = torch.randn(512, 1024, device="cuda") / 32
    exact = (x.double() @ weight.double().T).float()
    error = (tritonbp.fused_linear(x, weight) - exact).abs().max().item()
    pytorch_error = (x @ weight.T - exact).abs().max().item()
    assert error <= 2 * pytorch_error + 1e-5, (error, pytorch_error)
    if not allow_tf32:
        assert error < 1e-3
