"""The MIOpen bypass of the PyTorch images (images/runner_torch): the im2col Conv2d against F.conv2d,
forward and backward, the class-level patch, the backends, and the sitecustomize hook as the image
runs it (PYTHONPATH plus RUNNER_CONV_BACKEND, a plain `python`).

Exactness is checked in float64 with tolerances a thousand times float64's rounding: the im2col
product sums the same terms as PyTorch's kernels in another order, so bit-identity is not expected.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if os.environ.get("CI"):
    import torch  # CI installs torch (scripts/install test): there a missing torch fails, never skips
else:
    # A developer's .venv from before torch joined the test dependencies: skip, and say why.
    torch = pytest.importorskip("torch", reason="torch is not installed: run scripts/install test")

from torch import nn  # noqa: E402

HOOK_DIR = Path(__file__).resolve().parents[2] / "images" / "runner_torch"
sys.path.insert(0, str(HOOK_DIR))  # the image's way: that folder on PYTHONPATH
import runner_conv  # noqa: E402

TIGHT = {"rtol": 1e-12, "atol": 1e-12}
# The references' own notice (F.conv2d pads a copy for 'same' with an even kernel), not a failure.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
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
    new = runner_conv.conv2d_im2col(x_new, weight, bias, conv.stride, conv.padding, conv.dilation,
                                    conv.groups, conv.padding_mode)
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


# Every padding mode x every kind of padding x square, non-square, 1x1 and even kernels ('same' with
# an even extent pads one more on the right/bottom than on the left/top).
PADDING_CASES = list(itertools.product(
    ["zeros", "reflect", "replicate", "circular"],
    [0, 1, (1, 2), "same", "valid"],
    [(3, 3), (1, 1), (2, 3), (4, 1), (5, 2)],
))


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
MIXED_CASES = [
    dict(in_ch=6, out_ch=6, kernel=3, groups=6, stride=2, padding=1, padding_mode=mode, bias=False)
    for mode in ("zeros", "reflect", "replicate", "circular")
] + [
    dict(in_ch=4, out_ch=8, kernel=(3, 2), groups=2, dilation=(2, 3), padding="same", padding_mode=mode)
    for mode in ("zeros", "reflect", "replicate", "circular")
] + [
    dict(in_ch=4, out_ch=4, kernel=(2, 4), groups=4, dilation=2, padding="same", padding_mode="zeros"),
    dict(in_ch=3, out_ch=2, kernel=1, stride=2, padding=1, padding_mode="zeros"),  # padded, strided 1x1
    dict(in_ch=3, out_ch=2, kernel=1, stride=(2, 3), padding=(1, 2), padding_mode="reflect", dilation=3),
    dict(in_ch=4, out_ch=6, kernel=1, groups=2, stride=2),  # grouped strided 1x1
    dict(in_ch=3, out_ch=4, kernel=(1, 5), stride=(1, 2), padding=(0, 2), padding_mode="circular"),
    dict(in_ch=2, out_ch=3, kernel=(7, 7), stride=3, padding=3, bias=False),
    dict(in_ch=2, out_ch=3, kernel=3, padding=(0, 1), padding_mode="replicate", dilation=(3, 1)),
]


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
        return runner_conv.conv2d_im2col(x, weight, bias, stride=(1, 2), padding="valid", dilation=(2, 1),
                                         groups=2, padding_mode="zeros")

    assert torch.autograd.gradcheck(conv, (x, weight, bias))
    assert torch.autograd.gradcheck(
        lambda x, w, b: runner_conv.conv2d_im2col(x, w, b, padding="same", groups=2, padding_mode="reflect"),
        (x, weight, bias))


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


# -- the class-level patch -------------------------------------------------------------------------

class _CallCounter:
    def __init__(self, monkeypatch):
        self.calls = 0
        real = runner_conv.conv2d_im2col

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(runner_conv, "conv2d_im2col", counting)


def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """What ultralytics' fuse() does (utils/torch_utils.py): a brand-new nn.Conv2d, built after the
    patch, with the batch norm folded into its weight and bias."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                      bias=True).requires_grad_(False).to(conv.weight.device, conv.weight.dtype)
    w_conv = conv.weight.clone().view(conv.out_channels, -1)
    w_bn = torch.diag(bn.weight.div(torch.sqrt(bn.eps + bn.running_var)))
    fused.weight.copy_(torch.mm(w_bn, w_conv).view(fused.weight.shape))
    b_conv = torch.zeros(conv.weight.shape[0], dtype=conv.weight.dtype) if conv.bias is None else conv.bias
    b_bn = bn.bias - bn.weight.mul(bn.running_mean).div(torch.sqrt(bn.running_var + bn.eps))
    fused.bias.copy_(torch.mm(w_bn, b_conv.reshape(-1, 1)).reshape(-1) + b_bn)
    return fused


def test_patch_is_class_level_and_survives_a_fuse_rebuild(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False).to(DOUBLE)  # built before the patch
    bn = nn.BatchNorm2d(16).to(DOUBLE)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    model = nn.Sequential(conv, bn).eval()
    x = make_input((2, 8, 16, 16))
    expected = model(x)

    counter = _CallCounter(monkeypatch)
    runner_conv.patch_conv2d()
    assert runner_conv.conv2d_is_patched()
    torch.testing.assert_close(model(x), expected, **TIGHT)  # the module built before the patch
    assert counter.calls == 1

    fused = fuse_conv_and_bn(conv, bn)  # built after: a new instance, no per-instance state
    assert "_conv_forward" not in vars(fused) and "forward" not in vars(fused)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), expected, **TIGHT)
    assert counter.calls == 2


def test_patched_module_matches_unpatched_forward_and_backward():
    conv = make_conv(6, 6, 3, padding="same", padding_mode="circular", groups=3)
    x = make_input((2, 6, 9, 9))
    ref_x = x.clone().requires_grad_(True)
    ref = conv(ref_x)
    ref.sum().backward()
    ref_weight_grad = conv.weight.grad.clone()
    conv.zero_grad()

    runner_conv.patch_conv2d()
    new_x = x.clone().requires_grad_(True)
    new = conv(new_x)
    assert new.grad_fn is not None and "Convolution" not in type(new.grad_fn).__name__
    new.sum().backward()
    torch.testing.assert_close(new, ref, **TIGHT)
    torch.testing.assert_close(new_x.grad, ref_x.grad, **TIGHT)
    torch.testing.assert_close(conv.weight.grad, ref_weight_grad, **TIGHT)


def test_subclasses_that_call_conv_forward_are_patched_too(monkeypatch):
    class StandardizedConv2d(nn.Conv2d):  # weight standardisation, as some detectors use
        def forward(self, x):
            w = self.weight
            w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
            return self._conv_forward(x, w, self.bias)

    torch.manual_seed(0)
    conv = StandardizedConv2d(4, 4, 3, padding=1).to(DOUBLE)
    x = make_input((1, 4, 8, 8))
    expected = conv(x)
    counter = _CallCounter(monkeypatch)
    runner_conv.patch_conv2d()
    torch.testing.assert_close(conv(x), expected, **TIGHT)
    assert counter.calls == 1


def test_patch_is_idempotent_and_unpatch_restores():
    original = nn.Conv2d.__dict__["_conv_forward"]
    runner_conv.patch_conv2d()
    runner_conv.patch_conv2d()
    assert runner_conv.conv2d_is_patched()
    runner_conv.unpatch_conv2d()
    assert nn.Conv2d.__dict__["_conv_forward"] is original
    assert not runner_conv.conv2d_is_patched()


# -- backends and the MIOpen cache directories ------------------------------------------------------

def test_backends():
    assert runner_conv.apply_backend("miopen") == "miopen"
    assert torch.backends.cudnn.enabled and not runner_conv.conv2d_is_patched()
    assert runner_conv.apply_backend("") == "miopen"
    assert torch.backends.cudnn.enabled

    assert runner_conv.apply_backend(" Native ") == "native"
    assert torch.backends.cudnn.enabled is False and not runner_conv.conv2d_is_patched()

    torch.backends.cudnn.enabled = True
    assert runner_conv.apply_backend("im2col") == "im2col"
    assert torch.backends.cudnn.enabled is False and runner_conv.conv2d_is_patched()

    with pytest.raises(ValueError, match="RUNNER_CONV_BACKEND"):
        runner_conv.apply_backend("winograd")


def test_default_backend_is_native_on_rdna1_only():
    assert runner_conv.default_backend("gfx1010") == "native"
    assert runner_conv.default_backend("gfx1012") == "native"
    assert runner_conv.default_backend("gfx1030") == "miopen"
    assert runner_conv.default_backend(None) == "miopen"


def test_miopen_cache_dirs_are_set_only_when_unset(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_conv.tempfile, "gettempdir", lambda: str(tmp_path))
    environ = {"MIOPEN_CUSTOM_CACHE_DIR": "/job/miopen-cache"}  # what runner passes to docker run
    assert runner_conv.set_miopen_cache_env(environ) == ["MIOPEN_USER_DB_PATH"]
    assert environ["MIOPEN_CUSTOM_CACHE_DIR"] == "/job/miopen-cache"
    db = Path(environ["MIOPEN_USER_DB_PATH"])
    assert db.is_dir() and db.parent.parent == tmp_path
    # Every process of a container gets the same directory, so MIOpen's compiled kernels are reused.
    assert runner_conv.miopen_cache_dirs() == runner_conv.miopen_cache_dirs()


@pytest.mark.parametrize("hip", [None, "5.2.21151-afdc89f8"])
def test_activate_from_env_sets_miopen_dirs_on_rocm_only(hip, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_conv.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.version, "hip", hip, raising=False)
    environ = {"RUNNER_CONV_BACKEND": "native"}
    assert runner_conv.activate_from_env(environ) == "native"
    assert ("MIOPEN_USER_DB_PATH" in environ) == bool(hip)
    assert ("MIOPEN_CUSTOM_CACHE_DIR" in environ) == bool(hip)


# -- the sitecustomize hook, as the image runs it --------------------------------------------------

PROBE = textwrap.dedent("""
    import json, sys
    before = sorted(m for m in ("torch", "runner_conv") if m in sys.modules)
    import torch
    import torch.nn.functional as F
    from torch import nn
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2).double()
    x = torch.randn(2, 4, 10, 10, dtype=torch.float64)
    same = torch.allclose(conv(x), F.conv2d(x, conv.weight, conv.bias, 2, 1, 1, 2), rtol=1e-12, atol=1e-12)
    print(json.dumps({
        "imported_at_start": before,
        "patched": getattr(nn.Conv2d.__dict__["_conv_forward"], "runner_im2col", False),
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "same": same,
        "sitecustomize": sys.modules["sitecustomize"].__file__,
    }))
""")


def run_python(code, backend=None, pythonpath=(HOOK_DIR,), python=sys.executable):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RUNNER_CONV_BACKEND")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env["PYTHONWARNINGS"] = "ignore"  # torch's own import-time warnings are not the hook's
    if backend is not None:
        env["RUNNER_CONV_BACKEND"] = backend
    return subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, timeout=120)


def probe(backend=None, **kwargs):
    proc = run_python(PROBE, backend, **kwargs)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1]), proc.stderr


def test_hook_im2col_patches_every_conv2d_after_import_torch():
    result, stderr = probe("im2col")
    assert result["imported_at_start"] == []  # neither torch nor runner_conv is imported at startup
    assert result["sitecustomize"] == str(HOOK_DIR / "sitecustomize.py")
    assert result["patched"] is True and result["cudnn_enabled"] is False and result["same"] is True
    assert "runner sitecustomize" not in stderr


def test_hook_native_turns_cudnn_off():
    result, stderr = probe("native")
    assert result["cudnn_enabled"] is False and result["patched"] is False and result["same"] is True
    assert "runner sitecustomize" not in stderr


@pytest.mark.parametrize("backend", [None, "miopen"])  # "" too: test_backends
def test_hook_miopen_or_unset_changes_nothing(backend):
    result, stderr = probe(backend)
    assert result["cudnn_enabled"] is True and result["patched"] is False
    assert "runner sitecustomize" not in stderr


def test_hook_with_a_bad_backend_warns_once_and_goes_on():
    result, stderr = probe("winograd")
    assert result["cudnn_enabled"] is True and result["patched"] is False and result["same"] is True
    warnings = [line for line in stderr.splitlines() if line.startswith("runner sitecustomize")]
    assert len(warnings) == 1 and "winograd" in warnings[0]


def test_hook_without_runner_conv_warns_once_and_torch_still_imports(tmp_path):
    """A broken image (sitecustomize copied without runner_conv.py) must not break the user's python."""
    (tmp_path / "sitecustomize.py").write_text((HOOK_DIR / "sitecustomize.py").read_text())
    proc = run_python("import torch; print(torch.ones(2).sum().item())", "im2col", pythonpath=[tmp_path])
    assert proc.returncode == 0 and proc.stdout.strip() == "2.0"
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("runner sitecustomize")]
    assert len(warnings) == 1 and "runner_conv" in warnings[0]


def test_hook_in_a_python_without_torch_does_nothing(tmp_path):
    """A real python with no torch (a fresh venv): starts silently, and `import torch` fails as it
    would without the hook."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    code = ("import sys, json\n"
            "print(sys.modules['sitecustomize'].__file__)\n"
            "try:\n    import torch\nexcept ModuleNotFoundError as e:\n    print(repr(e))\n")
    proc = run_python(code, "im2col", python=python)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(HOOK_DIR / "sitecustomize.py"),
                                        "ModuleNotFoundError(\"No module named 'torch'\")"]
    assert proc.stderr == ""


def test_hook_lets_a_failing_torch_import_fail_as_it_would(tmp_path):
    """A torch that raises while importing: the user sees torch's error, not the hook's."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('libamdhip64.so: cannot open')\n")
    proc = run_python("import torch", "im2col", pythonpath=[HOOK_DIR, tmp_path])
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "ImportError: libamdhip64.so: cannot open"
    assert "runner sitecustomize" not in proc.stderr


def test_hook_chains_to_the_next_sitecustomize(tmp_path):
    """The base image's own sitecustomize (Debian's, a conda env's) further down sys.path still runs."""
    (tmp_path / "sitecustomize.py").write_text("import builtins\nbuiltins.base_image_hook_ran = True\n")
    code = ("import builtins, sys\n"
            "print(getattr(builtins, 'base_image_hook_ran', False))\n"
            "print([type(f).__name__ for f in sys.meta_path].count('_TorchImportHook'))\n")
    proc = run_python(code, "im2col", pythonpath=[HOOK_DIR, HOOK_DIR, tmp_path])  # listed twice: no loop
    assert proc.stdout.split() == ["True", "1"] and proc.stderr == ""
    (tmp_path / "sitecustomize.py").write_text("raise RuntimeError('base hook broken')\n")
    proc = run_python("print('started')", pythonpath=[HOOK_DIR, tmp_path])
    assert proc.returncode == 0 and proc.stdout.strip() == "started"
    assert proc.stderr.count("runner sitecustomize") == 1 and "base hook broken" in proc.stderr
