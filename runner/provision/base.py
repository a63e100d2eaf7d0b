"""What a job's lifecycle asks of the place its host comes from.

A static host (local, hosts.yaml) exists before the job and after it: provisioning it is finding it.
A rented one (vast.ai) is made for the job and given back after it. submit, the keeper and recovery
drive both through this one interface, so none of them asks which kind it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from runner.hosts import Host
    from runner.images.container import ContainerJob
    from runner.jobs.specfile import LoadedJob
    from runner.jobs.state import Job, Store

Log = Callable[[str], None]


@dataclass(frozen=True)
class Admission:
    """A job the provisioner will take, as it takes it: decided before the job exists."""

    host_name: str  # the job's host as stored at first (a rented job's is named once rented)
    container: ContainerJob | None = None  # the container it runs in on a static host with an image
    pushed_image: str | None = None  # the image runner built and pushed for a rented host to pull


class Provisioner(Protocol):
    def admit(self, loaded: LoadedJob, log: Log) -> Admission:
        """Refuse bad input (SpecError, exit 2) before anything is written anywhere."""
        ...

    def provision(self, store: Store, job: Job, log: Log) -> Host:
        """The host the job runs on, reachable; a rented one is in the store before it is waited on."""
        ...

    def release_after_failure(self, store: Store, job: Job, log: Log, keep: bool) -> None:
        """The submit failed: give back what was made for the job (unless keep)."""
        ...

    def after_submit(self, store: Store, job: Job, log: Log) -> None:
        """The job is started (or already over): whatever must watch it from now on starts."""
        ...

    def close(self) -> None: ...
