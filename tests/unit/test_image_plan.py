"""Which image a job gets on a host, from the host's GPUs as the real tools print them (samples/
telemetry): the boxes of the two targets, a mixed box, a box without a GPU, and the job's own choice."""

from __future__ import annotations

from typing import Any

import pytest

from runner.base.errors import SpecError
from runner.hostside import gpuident
from runner.images.plan import ImagePlan, plan_image
from tests.unit.test_gpu_detection import NO_TOOLS, RTX5090_TABLE, RX5600_ROCMINFO, RX6800M_IGPU_CONCISE, sample


def facts_of(**outputs: str) -> dict[str, Any]:
    """The agent's facts of a box whose tools printed these samples (keys: tool names, _ for -)."""
    texts = {**NO_TOOLS, **{tool.replace("_", "-"): sample(name) for tool, name in outputs.items()}}
    gpus = gpuident.identify(texts)
    chosen, reason = gpuident.pick(gpus)
    pick = chosen and {"index": chosen["index"], "vendor": chosen["vendor"], "name": chosen["name"], "reason": reason}
    return {"gpus": gpus, "gpu_pick": pick}


def plan(image: object, facts: dict[str, Any], conv_backend: str | None = None) -> ImagePlan:
    result = plan_image({"image": image, "conv_backend": conv_backend}, facts)
    assert result is not None
    return result


RX5600 = {"rocminfo": RX5600_ROCMINFO}
RTX5090 = {"nvidia_smi": RTX5090_TABLE}
IGPU_AND_RTX = {"nvidia_smi": RTX5090_TABLE, "rocm_smi": RX6800M_IGPU_CONCISE}


def test_an_rx_5600_xt_box_gets_rocm52_with_the_native_convolutions_and_no_amp() -> None:
    chosen = plan("auto", facts_of(**RX5600))
    assert (chosen.build, chosen.vendor) == ("rocm52", "amd")
    assert chosen.env == {"RUNNER_CONV_BACKEND": "native", "HSA_OVERRIDE_GFX_VERSION": "10.3.0", "RUNNER_AMP": "off"}
    assert chosen.reason.startswith("image rocm52 for AMD Radeon RX 5600 XT (gfx1010)")


def test_an_rtx_5090_box_gets_cu128_with_the_gpu_and_pytorch_as_it_comes() -> None:
    chosen = plan("auto", facts_of(**RTX5090))
    assert (chosen.build, chosen.vendor, chosen.env) == ("cu128", "nvidia", {})
    assert chosen.reason == "image cu128 for NVIDIA GeForce RTX 5090"


def test_a_box_with_a_ryzen_igpu_and_an_rtx_gets_the_rtx() -> None:
    facts = facts_of(**IGPU_AND_RTX)
    assert [gpu["integrated"] for gpu in facts["gpus"] if gpu["vendor"] == "amd"].count(True) == 1
    chosen = plan("auto", facts)
    assert (chosen.build, chosen.vendor) == ("cu128", "nvidia")
    assert "integrated" in facts["gpu_pick"]["reason"] and "RTX 5090" in facts["gpu_pick"]["reason"]


def test_a_box_without_a_gpu_runs_cu128_on_the_cpu() -> None:
    chosen = plan("auto", facts_of())
    assert (chosen.build, chosen.vendor, chosen.env) == ("cu128", None, {})
    assert chosen.reason == "image cu128 for no GPU: on the CPU"


def test_rocm52_needs_an_amd_gpu() -> None:
    with pytest.raises(SpecError, match="rocm52 needs an AMD GPU; the host has NVIDIA GeForce RTX 5090"):
        plan("rocm52", facts_of(**RTX5090))


def test_the_jobs_conv_backend_wins_and_reaches_a_cuda_box_too() -> None:
    assert plan("rocm52", facts_of(**RX5600), "im2col").env["RUNNER_CONV_BACKEND"] == "im2col"
    assert plan("cu128", facts_of(**RTX5090), "native").env == {"RUNNER_CONV_BACKEND": "native"}


def test_a_reference_runs_as_it_is_with_the_picked_gpus_flags() -> None:
    chosen = plan("registry.example:5000/team/yolo:7", facts_of(**RTX5090))
    assert (chosen.reference, chosen.build, chosen.vendor) == ("registry.example:5000/team/yolo:7", None, "nvidia")


def test_build_arguments_come_with_the_long_form() -> None:
    chosen = plan({"build": "auto", "args": {"INSTALL_FRAMEWORK": "0"}}, facts_of(**RX5600))
    assert (chosen.build, chosen.build_args) == ("rocm52", {"INSTALL_FRAMEWORK": "0"})


def test_no_image_no_plan() -> None:
    assert plan_image({"image": None}, facts_of(**RTX5090)) is None
