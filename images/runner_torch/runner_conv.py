"""The MIOpen bypass of runner's PyTorch images: how nn.Conv2d and batch norm run in a job.

runner picks a backend per job (`conv_backend` in the job file) and passes it to the container as
RUNNER_CONV_BACKEND; sitecustomize.py (beside this file) calls activate_from_env() right after the
job's code imports torch, so the user's training code is not edited.

  miopen  PyTorch as it comes (cuDNN on NVIDIA, MIOpen on ROCm): nothing is changed. Also what an
          unset or empty RUNNER_CONV_BACKEND means.
  native  torch.backends.cudnn.enabled = False. On ROCm that flag is MIOpen's switch: convolution
          AND batch norm then run PyTorch's own kernels (im2col + rocBLAS GEMM in C++) and MIOpen is
          never called. The cheapest way around MIOpen failures on gfx101x.
  im2col  native, plus nn.Conv2d patched at class level to conv2d_im2col() below, a convolution made
          of F.unfold + torch.matmul, for when PyTorch's own convolution kernels fail too. cuDNN stays
          off so batch norm does not fall back onto MIOpen either.

Written for torch 1.13 (the ROCm 5.2 image's torch) as well as 2.x: only F.unfold, F.pad and
torch.matmul, nothing newer. Python 3.7 syntax, like sitecustomize.py.
"""
import os
import sys
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

ENV_BACKEND = "RUNNER_CONV_BACKEND"
ENV_AMP = "RUNNER_AMP"  # "off": autocast and GradScaler on the GPU disabled (fp16 is broken on gfx1010)
BACKENDS = ("native", "im2col", "miopen")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def default_backend(gfx_arch):
    """The backend runner uses when a job names none: native on RDNA1 (gfx101x), whose MIOpen
    convolutions fail or hang on ROCm 5.2; PyTorch as it comes everywhere else."""
    return "native" if (gfx_arch or "").lower().startswith("gfx101") else "miopen"


def _pair(value):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError("expected an int or a pair, got %r" % (value,))
        return int(value[0]), int(value[1])
    return int(value), int(value)


def explicit_padding(padding, kernel_size, dilation, stride=(1, 1)):
    """The padding as F.pad takes it for a 4D input: (left, right, top, bottom).

    'valid' is no padding; 'same' pads d*(k-1) in all per dimension, the smaller half (floor) on the
    left/top, as F.conv2d and nn.Conv2d do, so an even extent pads one more on the right/bottom.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding != "same":
            raise ValueError("padding must be an int, a pair, 'same' or 'valid', not %r" % padding)
        if _pair(stride) != (1, 1):
            raise ValueError("padding='same' is not supported for strided convolutions")
        pads = []
        for k, d in zip(kernel_size, dilation):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return left, right, top, bottom
    ph, pw = _pair(padding)
    return pw, pw, ph, ph


def conv2d_im2col(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros"):
    """F.conv2d's result computed with F.unfold + torch.matmul, differentiable by autograd.

    Takes what F.conv2d takes, plus nn.Conv2d's padding_mode (zeros, reflect, replicate, circular).
    The column tensor holds N*C*kh*kw*Hout*Wout elements (about 9x the input for a 3x3 stride-1
    conv) and autograd keeps it for backward: that memory is the price of not needing any
    convolution kernel. 1x1 kernels skip the unfold: they are one matmul over channels.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError("padding_mode must be one of %s, not %r" % (", ".join(PADDING_MODES), padding_mode))
    unbatched = input.dim() == 3  # nn.Conv2d takes (C, H, W) as a batch of one
    x = input.unsqueeze(0) if unbatched else input
    if x.dim() != 4 or weight.dim() != 4:
        raise RuntimeError("conv2d_im2col: expected a 3D or 4D input and a 4D weight, got %dD and %dD"
                           % (input.dim(), weight.dim()))
    n, channels = x.shape[0], x.shape[1]
    out_channels, group_channels, kh, kw = weight.shape
    if groups < 1 or channels != group_channels * groups or out_channels % groups:
        raise RuntimeError(
            "conv2d_im2col: input has %d channels and weight is %s with groups=%d: expected input "
            "channels = weight.shape[1] * groups and out channels divisible by groups"
            % (channels, tuple(weight.shape), groups))
    stride, dilation = _pair(stride), _pair(dilation)
    left, right, top, bottom = explicit_padding(padding, (kh, kw), dilation, stride)

    unfold_padding = (0, 0)
    if left or right or top or bottom:
        if padding_mode == "zeros" and left == right and top == bottom and (kh, kw) != (1, 1):
            unfold_padding = (top, left)  # unfold pads with zeros itself: no padded copy of the input
        elif padding_mode == "zeros":
            x = F.pad(x, (left, right, top, bottom))  # asymmetric ('same', even extent) or a padded 1x1
        else:
            x = F.pad(x, (left, right, top, bottom), mode=padding_mode)

    if (kh, kw) == (1, 1):
        # Dilation means nothing to a 1x1 kernel; stride picks pixels. A view when stride is 1.
        x = x[:, :, ::stride[0], ::stride[1]]
        out_h, out_w = x.shape[2], x.shape[3]
        cols = x.reshape(n, groups, group_channels, out_h * out_w)
    else:
        height = x.shape[2] + 2 * unfold_padding[0]
        width = x.shape[3] + 2 * unfold_padding[1]
        out_h = (height - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        out_w = (width - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        if out_h < 1 or out_w < 1:
            raise RuntimeError("conv2d_im2col: the kernel (%d, %d) with dilation %s is larger than the "
                               "padded input (%d, %d)" % (kh, kw, dilation, height, width))
        # (N, C*kh*kw, L), rows channel-major: the order of weight.view(O, C/g*kh*kw) within a group.
        cols = F.unfold(x, (kh, kw), dilation=dilation, padding=unfold_padding, stride=stride)
        cols = cols.view(n, groups, group_channels * kh * kw, out_h * out_w)

    # One batched matmul for all groups (depthwise included): (g, O/g, K) @ (N, g, K, L).
    w = weight.reshape(groups, out_channels // groups, group_channels * kh * kw)
    out = torch.matmul(w, cols).reshape(n, out_channels, out_h, out_w)
    if bias is not None:
        # .to: under autocast out is fp16 while bias stays fp32; F.conv2d returns fp16 there too.
        out = out + bias.to(out.dtype).view(1, -1, 1, 1)
    return out.squeeze(0) if unbatched else out


def _im2col_conv_forward(self, input, weight, bias):
    """Replaces nn.Conv2d._conv_forward: Conv2d.forward calls it, and so do subclasses that
    transform the weight first (weight standardisation, LoRA-style wrappers)."""
    return conv2d_im2col(input, weight, bias, self.stride, self.padding, self.dilation, self.groups,
                         self.padding_mode)


_im2col_conv_forward.runner_im2col = True
_original_conv_forward = None


def patch_conv2d():
    """Routes every nn.Conv2d through conv2d_im2col, existing modules included.

    At class level, not per instance: ultralytics' and YOLOv7's fuse() build brand-new nn.Conv2d
    modules, which a per-instance patch would miss. Idempotent.
    """
    global _original_conv_forward
    if conv2d_is_patched():
        return
    _original_conv_forward = nn.Conv2d.__dict__["_conv_forward"]
    nn.Conv2d._conv_forward = _im2col_conv_forward


def unpatch_conv2d():
    """Puts PyTorch's own nn.Conv2d._conv_forward back (for tests, and for code that wants to)."""
    global _original_conv_forward
    if _original_conv_forward is not None:
        nn.Conv2d._conv_forward = _original_conv_forward
        _original_conv_forward = None


def conv2d_is_patched():
    return getattr(nn.Conv2d.__dict__.get("_conv_forward"), "runner_im2col", False)


def apply_backend(name):
    """Applies one of BACKENDS in this process; returns its name. '' or None means miopen."""
    name = (name or "miopen").strip().lower()
    if name not in BACKENDS:
        raise ValueError("%s=%r: expected one of %s" % (ENV_BACKEND, name, ", ".join(BACKENDS)))
    if name in ("native", "im2col"):
        torch.backends.cudnn.enabled = False
    if name == "im2col":
        patch_conv2d()
    return name


def miopen_cache_dirs():
    """Per-container defaults for MIOPEN_USER_DB_PATH and MIOPEN_CUSTOM_CACHE_DIR.

    Jobs sharing one MIOpen find-db corrupted it on ROCm 5.2 ("database disk image is malformed").
    runner sets both at `docker run`; these are for a container started without them. They are
    keyed by the PID namespace, which every process of a container shares (so the kernels MIOpen
    compiled are reused by the training's later processes, which a per-process dir would throw
    away) and no two containers share, even with --network=host or a /tmp mounted from the host.
    """
    try:
        key = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        import socket
        key = socket.gethostname()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    root = os.path.join(tempfile.gettempdir(), "runner-miopen-%s-%d" % (key, uid))
    return os.path.join(root, "db"), os.path.join(root, "cache")


def set_miopen_cache_env(environ=None):
    """Sets the MIOpen cache variables that are unset, before MIOpen reads them (at its first use,
    which comes after `import torch`). Returns the names it set."""
    environ = os.environ if environ is None else environ
    set_now = []
    for name, path in zip(("MIOPEN_USER_DB_PATH", "MIOPEN_CUSTOM_CACHE_DIR"), miopen_cache_dirs()):
        if not environ.get(name):
            os.makedirs(path, mode=0o700, exist_ok=True)
            environ[name] = path
            set_now.append(name)
    return set_now


def disable_amp():
    """Mixed precision off on the GPU whatever the training asks: autocast("cuda") and GradScaler
    are created disabled. At class level, as for Conv2d: trainers build them deep inside (ultralytics'
    `amp=True` default, YOLOv7's `torch.cuda.amp.autocast(enabled=cuda)`), with no switch to reach."""
    autocast = torch.amp.autocast_mode.autocast
    if not getattr(autocast.__init__, "runner_amp_off", False):
        autocast.__init__ = _forced_off(autocast.__init__, lambda args, kwargs: _device(args, kwargs) == "cuda")
    for scaler in _grad_scalers():
        if not getattr(scaler.__init__, "runner_amp_off", False):
            scaler.__init__ = _forced_off(scaler.__init__, lambda args, kwargs: True)


def amp_disabled():
    return getattr(torch.amp.autocast_mode.autocast.__init__, "runner_amp_off", False)


def _forced_off(init, applies):
    import inspect  # here: only a job with RUNNER_AMP=off pays for it
    signature = inspect.signature(init)

    def __init__(self, *args, **kwargs):
        if applies(args, kwargs):
            bound = signature.bind(self, *args, **kwargs)
            bound.arguments["enabled"] = False
            return init(*bound.args, **bound.kwargs)
        return init(self, *args, **kwargs)
    __init__.runner_amp_off = True
    __init__.__wrapped__ = init
    return __init__


def _device(args, kwargs):
    return kwargs.get("device_type", args[0] if args else None)


def _grad_scalers():
    found = [torch.cuda.amp.GradScaler]
    shared = getattr(torch.amp, "GradScaler", None)  # torch >= 2.3: the cuda one subclasses it
    if shared is not None and shared not in found:
        found.insert(0, shared)
    return found


def activate_from_env(environ=None):
    """What sitecustomize runs once torch is imported: RUNNER_CONV_BACKEND, RUNNER_AMP, and on a ROCm
    build of torch the per-container MIOpen cache directories. Returns the backend applied."""
    environ = os.environ if environ is None else environ
    if getattr(torch.version, "hip", None):
        set_miopen_cache_env(environ)
    if environ.get(ENV_AMP, "").strip().lower() in ("off", "0", "false"):
        disable_amp()
    return apply_backend(environ.get(ENV_BACKEND, ""))


if __name__ == "__main__":  # `python -m runner_conv`: what this process would run with
    print("torch %s, %s=%r, Conv2d patched: %s, cudnn enabled: %s" % (
        torch.__version__, ENV_BACKEND, os.environ.get(ENV_BACKEND, ""), conv2d_is_patched(),
        torch.backends.cudnn.enabled), file=sys.stdout)
