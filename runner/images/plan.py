"""Which container image a job runs in, and what the container needs from its host's GPU.

`image: auto | rocm52 | cu128` (or `{build: ..., args: {...}}`) builds one of runner's Dockerfiles
on the host (see imagebuild.py); any other value is an image reference, run as it is. The host's
GPUs come from the agent's `facts` (gpuident.py): the picked one decides the image for `auto`, the
device flags, and on AMD the MIOpen bypass (conv_backend) and the gfx override.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runner.base.errors import SpecError

BUILDS = ("rocm52", "cu128")  # runner's Dockerfiles; `auto` picks one of them
# RDNA1 has no kernels in ROCm 5.2's libraries: it runs gfx1030's under this override. So do the
# RDNA2 chips other than gfx1030, for which the override is the well-trodden way on consumer cards.
GFX_OVERRIDES = {"gfx1010": "10.3.0", "gfx1011": "10.3.0", "gfx1012": "10.3.0", "gfx1031": "10.3.0",
                 "gfx1032": "10.3.0", "gfx1034": "10.3.0", "gfx1035": "10.3.0", "gfx1036": "10.3.0"}  # fmt: skip


@dataclass(frozen=True)
class ImagePlan:
    """What `docker run` starts, and how."""

    reference: str | None  # an image reference run as it is; None: built from `build`
    build: str | None  # "rocm52" | "cu128": runner's Dockerfile.<build>, built on the host
    build_args: dict[str, str] = field(default_factory=dict)
    vendor: str | None = None  # "amd" | "nvidia": the device flags; None runs on the CPU
    env: dict[str, str] = field(default_factory=dict)  # for the container: the bypass, the gfx override
    reason: str = ""  # one line for the user: what was picked, and why


def plan_image(spec: dict[str, Any], facts: dict[str, Any]) -> ImagePlan | None:
    """The plan for a job (its stored spec) on a host (the agent's facts); None without `image`.
    Raises SpecError when the image cannot run there (rocm52 on a host without an AMD GPU)."""
    image = spec.get("image")
    if image is None:
        return None
    gpu = _picked(facts)
    reference, build, args = requested(image)
    if build == "auto":
        build = "rocm52" if gpu and gpu["vendor"] == "amd" else "cu128"
    vendor = _vendor_for(build, gpu, facts)
    env = _container_env(vendor, gpu, spec.get("conv_backend"))
    return ImagePlan(reference, build, args, vendor, env, _reason(reference, build, gpu, env))


def requested(image: str | dict[str, Any]) -> tuple[str | None, str | None, dict[str, str]]:
    """The job file's `image` as (reference, build, build args): a reference to run as it is (build
    None), or one of runner's Dockerfiles to build (auto, rocm52, cu128; reference None)."""
    if isinstance(image, dict):
        return None, image.get("build", "auto"), dict(image.get("args") or {})
    if image == "auto" or image in BUILDS:
        return None, image, {}
    return image, None, {}


def _picked(facts: dict[str, Any]) -> dict[str, Any] | None:
    pick = facts.get("gpu_pick")
    if not pick:
        return None
    for gpu in facts.get("gpus") or []:
        if gpu.get("vendor") == pick.get("vendor") and gpu.get("index") == pick.get("index"):
            return {**gpu, "reason": pick.get("reason", "")}
    return None


def _vendor_for(build: str | None, gpu: dict[str, Any] | None, facts: dict[str, Any]) -> str | None:
    vendor = gpu["vendor"] if gpu else None
    if build == "rocm52" and vendor != "amd":
        found = ", ".join(g.get("name") or "?" for g in facts.get("gpus") or []) or "no GPU"
        raise SpecError(f"rocm52 needs an AMD GPU; the host has {found}")
    if build == "cu128" and vendor != "nvidia":
        return None  # cu128's torch runs on the CPU: hosts without an NVIDIA GPU run CPU containers
    return vendor


def _container_env(vendor: str | None, gpu: dict[str, Any] | None, conv_backend: str | None) -> dict[str, str]:
    env: dict[str, str] = {}
    gfx = (gpu or {}).get("gfx") or ""
    if vendor == "amd":
        conv_backend = conv_backend or default_conv_backend(gfx)
        if gfx in GFX_OVERRIDES:
            env["HSA_OVERRIDE_GFX_VERSION"] = GFX_OVERRIDES[gfx]
        if gfx.startswith("gfx101"):
            env["RUNNER_AMP"] = "off"  # fp16 is broken on RDNA1
    if conv_backend:
        env["RUNNER_CONV_BACKEND"] = conv_backend
    return env


def default_conv_backend(gfx: str) -> str:
    """native on RDNA1 (gfx101x), whose MIOpen convolutions fail or hang on ROCm 5.2, and where the
    gfx target is unknown (the safe side); MIOpen, PyTorch as it comes, on other AMD GPUs."""
    return "native" if not gfx or gfx.startswith("gfx101") else "miopen"


def _reason(reference: str | None, build: str | None, gpu: dict[str, Any] | None, env: dict[str, str]) -> str:
    what = reference or build
    where = f"{gpu['name']}" + (f" ({gpu['gfx']})" if gpu.get("gfx") else "") if gpu else "no GPU: on the CPU"
    extras = [f"{name}={value}" for name, value in sorted(env.items())]
    return f"image {what} for {where}" + (f"; {', '.join(extras)}" if extras else "")
