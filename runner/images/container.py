"""A job with an image, on its host: the plan (from the host's GPUs), the image, container.sh.

submit asks for the plan before anything about the job is written (a plan that cannot work there,
rocm52 on a host without an AMD GPU, is bad input: exit 2), writes container.sh beside job.sh with
the rest of the job's files, and builds the image after the dataset check, which is cheaper.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

from runner.base.errors import SpecError
from runner.hosts.base import Host
from runner.images.build import Log, context_root, context_tar, ensure_image, image_tag
from runner.images.plan import ImagePlan, plan_image, requested
from runner.jobs.jobscript import render_container_sh
from runner.jobs.layout import JobLayout, agent_argv, install_hostside
from runner.jobs.specfile import LoadedJob

CONTAINER_SH = "container.sh"


@dataclass(frozen=True)
class ContainerJob:
    plan: ImagePlan
    reference: str  # the image container.sh runs: the reference given, or the tag of the build


def host_facts(host: Host) -> dict[str, Any]:
    """The agent's facts of host: OS, tools, GPUs and the GPU it picks (GPU tools can be slow)."""
    install_hostside(host)
    facts: dict[str, Any] = json.loads(host.run(agent_argv(host, "facts", host.root()), timeout=180).check().text)
    return facts


def plan_container(host: Host, loaded: LoadedJob) -> ContainerJob | None:
    """The container a job runs in on host; None for a job without `image`."""
    spec = loaded.spec.model_dump(mode="json")
    if spec.get("image") is None:
        return None
    reason = host.why_no_docker_engine() if requested(spec["image"])[1] else None
    if reason is not None:  # refused here, while no job exists, not once its files are on the host
        raise loaded.error(("image",), f"host '{host.name}': {reason}")
    try:
        plan = plan_image(spec, host_facts(host))
    except SpecError as exc:
        raise loaded.error(("image",), f"host '{host.name}': {exc}") from None
    assert plan is not None
    if plan.build is None:
        assert plan.reference is not None
        return ContainerJob(plan, plan.reference)
    # The tag is the context's hash: known here, before the host is asked whether it has the image.
    return ContainerJob(plan, image_tag(plan.build, context_tar(context_root(), plan.build), plan.build_args))


def write_container_sh(host: Host, container: ContainerJob, job_id: str, job_name: str, session: str,
                       layout: JobLayout) -> None:  # fmt: skip
    """container.sh in the job directory; the container is named as the job's tmux session."""
    data_dir = posixpath.join(layout.root, "data")
    script = render_container_sh(
        job_id,
        job_name,
        session,
        container.reference,
        container.plan.env,
        container.plan.vendor,
        layout.job_dir,
        data_dir,
    )
    host.write_file(layout.file(CONTAINER_SH), script.encode(), mode=0o700)


def build_image(host: Host, container: ContainerJob, log: Log) -> bool:
    """Build the job's image on host unless it has it; True when it was built."""
    reference, built = ensure_image(host, container.plan, log)
    assert reference == container.reference
    return built
