"""vast.ai as a provisioner: a job's host is an instance rented for it, and given back after it.

- admit: refuse what cannot be rented (no image, no registry for an image runner builds, no API
  key), and build and push the image runner builds before anything is rented: a failed build costs nothing.
- provision: rent, wait, pin the host key (provisioner.py); the instance is in the store from its first moment.
- a failed submit destroys the instance (unless --keep); a job that runs gets a keeper
  (`runner keep JOB`, detached, its log in RUNNER_HOME/syncs/JOB-keep.log), which tears it down at the end.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from runner.base import paths
from runner.base.detached import start_detached
from runner.base.errors import RunnerError
from runner.hosts import Host, get_host
from runner.hosts.hostsmodel import load_registry
from runner.images.plan import ImagePlan, requested
from runner.jobs.specfile import LoadedJob
from runner.jobs.state import Job, JobState, Store
from runner.provision.base import Admission, Log
from runner.provision.vast.provisioner import destroy_until_gone, provision

if TYPE_CHECKING:
    from runner.provision.vast.api import VastClient


class VastProvisioner:
    def __init__(self) -> None:
        self._client: VastClient | None = None

    @property
    def client(self) -> VastClient:
        if self._client is None:
            from runner.provision.vast.api import VastClient  # httpx and tenacity: only for commands that rent

            self._client = VastClient()
        return self._client

    def admit(self, loaded: LoadedJob, log: Log) -> Admission:
        check_rentable(loaded)
        return Admission("vast", pushed_image=publish_image(loaded, log))

    def provision(self, store: Store, job: Job, log: Log) -> Host:
        store.transition(job.id, JobState.PROVISIONING, frozenset({JobState.SUBMITTED}))
        return get_host(provision(self.client, store, job, log))

    def release_after_failure(self, store: Store, job: Job, log: Log, keep: bool) -> None:
        instances = store.instances(job.id, live_only=True)
        if keep:
            ids = ", ".join(str(instance.id) for instance in instances)
            log(f"--keep: instance {ids} is left running and billing: `runner down {job.id}` destroys it")
            return
        for instance in instances:
            try:
                destroy_until_gone(self.client, store, instance.id, log)
            except RunnerError as exc:  # the submit's own error is the one to raise; this one must show too
                log(f"instance {instance.id} could not be destroyed ({exc}): `runner down {job.id}` tries again")

    def after_submit(self, store: Store, job: Job, log: Log) -> None:
        if job.finished:
            teardown(self.client, store, job, log)
        else:
            start_keeper(job.id)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def check_rentable(loaded: LoadedJob) -> None:
    """Bad input for a rented host, refused before anything is rented."""
    from runner.provision.vast.key import load_api_key

    image = loaded.spec.image
    if image is None:
        raise loaded.error(("host",), "host vast runs the job in an image: give `image` (a reference, or cu128)")
    if requested(loaded.spec.model_dump(mode="json")["image"])[1] and load_registry() is None:
        raise loaded.error(("image",), "host vast pulls the images runner builds from a registry: name one in"
                           " hosts.yaml (registry: {address: ghcr.io/you}), or give an image reference")  # fmt: skip
    load_api_key()  # missing, or in a file others can read: exit 2 now, not after renting


def publish_image(loaded: LoadedJob, log: Log) -> str | None:
    """Where runner builds the job's image: built here and pushed, before anything is rented; returns
    the pushed reference (None for an image the job names as it is)."""
    from runner.images.publish import publish

    _, build, args = requested(loaded.spec.model_dump(mode="json")["image"])
    if build is None:
        return None
    # Rented GPUs are NVIDIA ones but for an AMD card asked for by name.
    kind = build if build != "auto" else "rocm52" if _amd(loaded) else "cu128"
    registry = load_registry()
    assert registry is not None  # check_rentable refused the job otherwise
    return publish(ImagePlan(None, kind, args, reason=f"image {kind} for vast.ai"), registry, log)


def _amd(loaded: LoadedJob) -> bool:
    gpu = (loaded.spec.resources.gpu or "").upper()
    return gpu.startswith(("RX ", "RADEON", "MI"))


def teardown(client: VastClient, store: Store, job: Job, log: Log, policy: str | None = None) -> None:
    """Destroy the job's instances as its `teardown` (or policy) says, now that it has ended."""
    policy = policy or job.spec.teardown
    if policy == "never" or (policy == "on_success" and job.state is not JobState.SUCCEEDED):
        ids = ", ".join(str(instance.id) for instance in store.instances(job.id, live_only=True))
        if ids:
            log(f"teardown: {policy}: instance {ids} kept, and billing: `runner down {job.id}` destroys it")
        return
    down(client, store, job, log)


def down(client: VastClient, store: Store, job: Job, log: Log) -> list[int]:
    """Destroy every live instance of the job, confirmed gone; returns their ids."""
    destroyed = []
    for instance in store.instances(job.id, live_only=True):
        destroy_until_gone(client, store, instance.id, log)
        destroyed.append(instance.id)
    return destroyed


def start_keeper(job_id: str, reason: str = "") -> int:
    """`runner keep JOB` in a session of its own, so that it outlives this process and its terminal.
    A keeper already running (its lock held) makes this one exit at once."""
    log = paths.syncs_dir() / f"{job_id}-keep.log"
    first_line = f"keeping job {job_id}" + (f": {reason}" if reason else "")
    return start_detached([sys.executable, "-m", "runner", "keep", job_id], log, first_line)
