"""The MIOpen bypass around the im2col Conv2d: the class-level patch, the backends, and the
sitecustomize hook as the image runs it (PYTHONPATH plus RUNNER_CONV_BACKEND, a plain `python`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unit.torchcase import (  # noqa: F401  (_restore_torch is an autouse fixture, found by name)
    DOUBLE,
    HOOK_DIR,
    TIGHT,
    _restore_torch,
    make_conv,
    make_input,
    nn,
    runner_conv,
    torch,
)

# The references' own notice (F.conv2d pads a copy for 'same' with an even kernel), not a failure.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


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
    fused = (
        nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            kernel_size=conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
        )
        .requires_grad_(False)
        .to(conv.weight.device, conv.weight.dtype)
    )
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
    code = (
        "import sys, json\n"
        "print(sys.modules['sitecustomize'].__file__)\n"
        "try:\n    import torch\nexcept ModuleNotFoundError as e:\n    print(repr(e))\n"
    )
    proc = run_python(code, "im2col", python=python)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        str(HOOK_DIR / "sitecustomize.py"),
        "ModuleNotFoundError(\"No module named 'torch'\")",
    ]
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
    code = (
        "import builtins, sys\n"
        "print(getattr(builtins, 'base_image_hook_ran', False))\n"
        "print([type(f).__name__ for f in sys.meta_path].count('_TorchImportHook'))\n"
    )
    proc = run_python(code, "im2col", pythonpath=[HOOK_DIR, HOOK_DIR, tmp_path])  # listed twice: no loop
    assert proc.stdout.split() == ["True", "1"] and proc.stderr == ""
    (tmp_path / "sitecustomize.py").write_text("raise RuntimeError('base hook broken')\n")
    proc = run_python("print('started')", pythonpath=[HOOK_DIR, tmp_path])
    assert proc.returncode == 0 and proc.stdout.strip() == "started"
    assert proc.stderr.count("runner sitecustomize") == 1 and "base hook broken" in proc.stderr


AMP_PROBE = textwrap.dedent("""
    import json, warnings
    import torch
    with warnings.catch_warnings(record=True) as seen:
        # On a torch without CUDA, torch itself disables both, with a warning, when asked to enable them:
        # asked with enabled=False (runner's patch), it has nothing to warn about.
        warnings.simplefilter("always")
        cast = torch.autocast("cuda", torch.bfloat16)
        scaler = torch.cuda.amp.GradScaler(init_scale=1024.0)
    print(json.dumps({
        "autocast": cast._enabled, "dtype_kept": cast.fast_dtype == torch.bfloat16, "scaler": scaler._enabled,
        "cpu_autocast": torch.autocast("cpu")._enabled,
        "asked_enabled": [str(w.message) for w in seen if "not available" in str(w.message)],
    }))
""")


@pytest.mark.parametrize("amp", ["off", None])
def test_hook_runner_amp_off_creates_gpu_autocast_and_grad_scaling_disabled(amp, monkeypatch):
    """What the ROCm image does on gfx1010, where fp16 is broken: the training's AMP is turned off
    without editing it; the CPU's autocast is left alone. Without RUNNER_AMP, the training's own
    enabled=True reaches torch (which, here without CUDA, disables them itself and says so)."""
    if amp:
        monkeypatch.setenv("RUNNER_AMP", amp)
    proc = run_python(AMP_PROBE)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["dtype_kept"] is True and result["cpu_autocast"] is True
    assert (result["autocast"], result["scaler"]) == (False, False) or torch.cuda.is_available()
    assert (len(result["asked_enabled"]) == 0) is bool(amp), result["asked_enabled"]
