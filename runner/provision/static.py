"""Static hosts: this machine and the hosts of hosts.yaml. They exist before the job and after it,
so provisioning one is finding it and checking it can take the job."""

from __future__ import annotations

from runner.base.errors import NotFound, SpecError
from runner.hosts import Host, get_host
from runner.images.container import plan_container
from runner.jobs.specfile import LoadedJob
from runner.jobs.state import Job, Store
from runner.provision.base import Admission, Log


class StaticProvisioner:
    def __init__(self, name: str, named_by_option: bool, trust_new: bool) -> None:
        self.name = name
        self.named_by_option = named_by_option  # --host: an unknown name is the option's error, not the file's
        self.trust_new = trust_new
        self._host: Host | None = None

    def admit(self, loaded: LoadedJob, log: Log) -> Admission:
        host = self._find(loaded)
        host.root()  # connect and verify the host key now: a refused or unreachable host leaves no job behind
        container = plan_container(host, loaded)  # an image that cannot run there leaves no job behind either
        if container:
            log(container.plan.reason)
        self._host = host
        return Admission(host.name, container=container)

    def _find(self, loaded: LoadedJob) -> Host:
        try:
            return get_host(self.name, self.trust_new)
        except NotFound as exc:
            if self.named_by_option:
                raise SpecError(f"--host: {exc}") from None
            raise loaded.error(("host",), str(exc)) from None

    def provision(self, store: Store, job: Job, log: Log) -> Host:
        host = self._host or get_host(job.host)
        store.remember_host(host.name, host.kind)
        return host

    def release_after_failure(self, store: Store, job: Job, log: Log, keep: bool) -> None:
        """Nothing was made for the job."""

    def after_submit(self, store: Store, job: Job, log: Log) -> None:
        """The host's own monitor watches the job; nothing here needs to."""

    def close(self) -> None:
        """Hosts are closed with the process (runner.hosts)."""
