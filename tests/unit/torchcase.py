"""Shared by the tests of the images' MIOpen bypass (images/runner_torch): torch (required in CI),
runner_conv imported the way the image does, and the comparison against F.conv2d.

Exactness is checked in float64 with tolerances a thousand times float64's rounding: the im2col
product sums the same terms as PyTorch's kernels in another order, so bit-identity is not expected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

if os.environ.get("CI"):
    import torch  # CI installs torch (scripts/install test): there a missing torch fails, never skips
else:
    # A developer's .venv from before torch joined the test dependencies: skip, and say why.
    torch = pytest.importorskip("torch", reason="torch is not installed: run scripts/install test")

from torch import nn

HOOK_DIR = Path(__file__).resolve().parents[2] / "images" / "runner_torch"
sys.path.insert(0, str(HOOK_DIR))  # the image's way: that folder on PYTHONPATH
import runner_conv  # noqa: E402

TIGHT = {"rtol": 1e-12, "atol": 1e-12}
DOUBLE = torch.float64


@pytest.fixture(autouse=True)
def _restore_torch():
    """Every test leaves nn.Conv2d and the cuDNN switch as it found them."""
    enabled = torch.backends.cudnn.enabled
    yield
    runner_conv.unpatch_conv2d()
    torch.backends.cudnn.enabled = enabled


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_conv_matches(conv: nn.Conv2d, x: torch.Tensor, seed: int = 0) -> None:
    """conv2d_im2col on conv's parameters against conv itself (PyTorch's F.conv2d, with F.pad for
    the padding modes other than zeros): output, input grad, weight grad and bias grad."""
    assert not runner_conv.conv2d_is_patched()
    x_ref = x.detach().clone().requires_grad_(True)
    x_new = x.detach().clone().requires_grad_(True)
    ref = conv(x_ref)
    weight = conv.weight.detach().clone().requires_grad_(True)
    bias = None if conv.bias is None else conv.bias.detach().clone().requires_grad_(True)
    new = runner_conv.conv2d_im2col(
        x_new, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups, conv.padding_mode
    )
    assert new.shape == ref.shape and new.dtype == ref.dtype
    torch.testing.assert_close(new, ref, **TIGHT)

    grad_out = torch.randn(ref.shape, dtype=ref.dtype, generator=_seeded(seed + 1))
    conv.zero_grad()
    ref.backward(grad_out)
    new.backward(grad_out)
    torch.testing.assert_close(x_new.grad, x_ref.grad, **TIGHT)
    torch.testing.assert_close(weight.grad, conv.weight.grad, **TIGHT)
    if bias is not None:
        torch.testing.assert_close(bias.grad, conv.bias.grad, **TIGHT)


def make_conv(in_ch, out_ch, kernel, seed=0, **kwargs) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(in_ch, out_ch, kernel, **kwargs).to(DOUBLE)


def make_input(shape, seed=0) -> torch.Tensor:
    return torch.randn(shape, dtype=DOUBLE, generator=_seeded(seed))
