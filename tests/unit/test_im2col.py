"""The im2col Conv2d against F.conv2d, forward and backward, across groups, strides, dilations,
paddings and padding modes (see tests/unit/torchcase.py for how exactness is judged)."""

from __future__ import annotations

import itertools

import pytest

from tests.unit.torchcase import (  # noqa: F401  (_restore_torch is an autouse fixture, found by name)
    _restore_torch,
    assert_conv_matches,
    make_conv,
    make_input,
    nn,
    runner_conv,
    torch,
)

# The references' own notice (F.conv2d pads a copy for 'same' with an even kernel), not a failure.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


# Every padding mode x every kind of padding x square, non-square, 1x1 and even kernels ('same' with
# an even extent pads one more on the right/bottom than on the left/top).
PADDING_CASES = list(
    itertools.product(
        ["zeros", "reflect", "replicate", "circular"],
        [0, 1, (1, 2), "same", "valid"],
        [(3, 3), (1, 1), (2, 3), (4, 1), (5, 2)],
    )
)


@pytest.mark.parametrize(("padding_mode", "padding", "kernel"), PADDING_CASES, ids=str)
def test_padding_modes_match_conv2d(padding_mode, padding, kernel):
    conv = make_conv(3, 5, kernel, padding=padding, padding_mode=padding_mode)
    assert_conv_matches(conv, make_input((2, 3, 7, 9)))


# (in, out, groups): plain, grouped, depthwise (groups = channels), depthwise with a multiplier of 2.
GROUPS = [(4, 6, 1), (4, 6, 2), (6, 9, 3), (6, 6, 6), (4, 8, 4)]
GEOMETRY_CASES = list(itertools.product(GROUPS, [1, 2, (2, 1)], [1, 2, (1, 3)], [True, False]))


@pytest.mark.parametrize(("channels", "stride", "dilation", "bias"), GEOMETRY_CASES, ids=str)
def test_groups_stride_dilation_bias_match_conv2d(channels, stride, dilation, bias):
    in_ch, out_ch, groups = channels
    conv = make_conv(in_ch, out_ch, 3, padding=1, stride=stride, dilation=dilation, groups=groups, bias=bias)
    assert_conv_matches(conv, make_input((2, in_ch, 11, 10)))


# The combinations a model is most likely to hit together: each padding mode with groups, strides,
# dilations, 'same' with dilation (asymmetric), odd sizes, no bias.
MIXED_CASES = (
    [
        dict(in_ch=6, out_ch=6, kernel=3, groups=6, stride=2, padding=1, padding_mode=mode, bias=False)
        for mode in ("zeros", "reflect", "replicate", "circular")
    ]
    + [
        dict(in_ch=4, out_ch=8, kernel=(3, 2), groups=2, dilation=(2, 3), padding="same", padding_mode=mode)
        for mode in ("zeros", "reflect", "replicate", "circular")
    ]
    + [
        dict(in_ch=4, out_ch=4, kernel=(2, 4), groups=4, dilation=2, padding="same", padding_mode="zeros"),
        dict(in_ch=3, out_ch=2, kernel=1, stride=2, padding=1, padding_mode="zeros"),  # padded, strided 1x1
        dict(in_ch=3, out_ch=2, kernel=1, stride=(2, 3), padding=(1, 2), padding_mode="reflect", dilation=3),
        dict(in_ch=4, out_ch=6, kernel=1, groups=2, stride=2),  # grouped strided 1x1
        dict(in_ch=3, out_ch=4, kernel=(1, 5), stride=(1, 2), padding=(0, 2), padding_mode="circular"),
        dict(in_ch=2, out_ch=3, kernel=(7, 7), stride=3, padding=3, bias=False),
        dict(in_ch=2, out_ch=3, kernel=3, padding=(0, 1), padding_mode="replicate", dilation=(3, 1)),
    ]
)


@pytest.mark.parametrize("case", MIXED_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_mixed_cases_match_conv2d(case):
    case = dict(case)
    conv = make_conv(case.pop("in_ch"), case.pop("out_ch"), case.pop("kernel"), **case)
    assert_conv_matches(conv, make_input((3, conv.in_channels, 13, 12)))


@pytest.mark.parametrize("batch", [1, 0])
def test_single_and_empty_batches(batch):
    conv = make_conv(4, 6, 3, padding=1, groups=2)
    assert_conv_matches(conv, make_input((batch, 4, 8, 8)))


def test_unbatched_input():
    """nn.Conv2d takes a (C, H, W) input as a batch of one, and so does the fallback."""
    conv = make_conv(3, 4, 3, padding="same", padding_mode="reflect")
    assert_conv_matches(conv, make_input((3, 9, 8)))


def test_non_contiguous_input():
    conv = make_conv(4, 6, 3, padding=1)
    x = make_input((2, 4, 9, 10)).to(memory_format=torch.channels_last)
    assert_conv_matches(conv, x)
    assert_conv_matches(conv, make_input((2, 4, 10, 9)).transpose(2, 3))


def test_float32_yolo_layer_within_float32_rounding():
    """Training runs in float32: a YOLOv8n-like 3x3 stride-2 layer agrees to float32's rounding."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, stride=2, padding=1)
    x = torch.randn(2, 16, 64, 64)
    new = runner_conv.conv2d_im2col(x, conv.weight, conv.bias, conv.stride, conv.padding)
    torch.testing.assert_close(new, conv(x), rtol=1e-5, atol=1e-5)


def test_gradcheck():
    """Autograd's own numerical check of the fallback's gradients, bias included."""
    x = make_input((1, 4, 6, 5)).requires_grad_(True)
    weight = make_input((4, 2, 2, 3), seed=1).requires_grad_(True)
    bias = make_input((4,), seed=2).requires_grad_(True)

    def conv(x, weight, bias):
        return runner_conv.conv2d_im2col(
            x, weight, bias, stride=(1, 2), padding="valid", dilation=(2, 1), groups=2, padding_mode="zeros"
        )

    assert torch.autograd.gradcheck(conv, (x, weight, bias))
    assert torch.autograd.gradcheck(
        lambda x, w, b: runner_conv.conv2d_im2col(x, w, b, padding="same", groups=2, padding_mode="reflect"),
        (x, weight, bias),
    )


def test_rejects_what_conv2d_rejects():
    x = make_input((1, 4, 8, 8))
    with pytest.raises(RuntimeError, match="channels"):
        runner_conv.conv2d_im2col(x, make_input((6, 3, 3, 3)))  # 4 channels, weight wants 3
    with pytest.raises(RuntimeError, match="channels"):
        runner_conv.conv2d_im2col(x, make_input((5, 2, 3, 3)), groups=2)  # 5 outputs in 2 groups
    with pytest.raises(ValueError, match="strided"):
        runner_conv.conv2d_im2col(x, make_input((4, 4, 3, 3)), stride=2, padding="same")
    with pytest.raises(ValueError, match="padding_mode"):
        runner_conv.conv2d_im2col(x, make_input((4, 4, 3, 3)), padding_mode="mirror")
    with pytest.raises(RuntimeError, match="larger"):
        runner_conv.conv2d_im2col(x, make_input((4, 4, 5, 5)), dilation=3)


def test_explicit_padding_of_same_is_floor_left_rest_right():
    # kernel (4, 2), dilation (1, 3): totals 3 and 3 -> top 1 bottom 2, left 1 right 2
    assert runner_conv.explicit_padding("same", (4, 2), (1, 3)) == (1, 2, 1, 2)
    assert runner_conv.explicit_padding("same", (3, 5), (2, 1)) == (2, 2, 2, 2)
    assert runner_conv.explicit_padding((1, 2), (3, 3), (1, 1)) == (2, 2, 1, 1)
    assert runner_conv.explicit_padding("valid", (3, 3), (1, 1)) == (0, 0, 0, 0)
