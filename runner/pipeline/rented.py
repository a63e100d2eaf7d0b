"""Jobs on rented vast.ai instances, from the controller: rent one for the job, run the job there as
on any SSH host, and give it back, so that no path leaves an instance billing unseen.

- submit rents (hosts/vast.py), then places and starts the job as on an SSH host; any failure up to
  a running session destroys the instance (unless --keep), and the job is failed.
- Once the job runs, a keeper (`runner keep JOB`, detached like the artifact syncs, its log in
  RUNNER_HOME/syncs/JOB-keep.log) watches it: `resources.max_cost` stops it when reached; when the
  job ends, it fetches the weights a last time and destroys the instance as `teardown` says.
- `runner down JOB` destroys a job's instances and waits until the API confirms they are gone;
  `runner down --orphans` does so for instances labelled `runner:` that no running job owns.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.base import paths
from runner.transfer.artifactsync import default_dest, fetch_locked, fetch_unless_busy, start_detached
from runner.base.errors import HostUnreachable, RunnerError
from runner.hosts import get_host
from runner.provision.vast.provisioner import LABEL_PREFIX, destroy_until_gone, provision
from runner.images.plan import requested
from runner.jobs.specfile import LoadedJob
from runner.jobs.state import ACTIVE, Job, JobState, Store

if TYPE_CHECKING:
    from runner.provision.vast.api import VastClient
    from runner.pipeline.submit import Submitted

Log = Callable[[str], None]
KEEP_POLL_S = 10.0


def check_rentable(loaded: LoadedJob) -> None:
    """Bad input for a rented host, refused before anything is rented."""
    from runner.provision.vast.key import load_api_key
    from runner.hosts.hostsmodel import load_registry

    image = loaded.spec.image
    if image is None:
        raise loaded.error(("host",), "host vast runs the job in an image: give `image` (a reference, or cu128)")
    if requested(image)[1] and load_registry() is None:
        raise loaded.error(("image",), "host vast pulls the images runner builds from a registry: name one in"
                           " hosts.yaml (registry: {address: ghcr.io/you}), or give an image reference")  # fmt: skip
    load_api_key()  # missing, or in a file others can read: exit 2 now, not after renting


def published_spec(loaded: LoadedJob, log: Log) -> dict[str, Any]:
    """The job's spec as stored, with `pushed_image` where runner builds the image: built here and
    pushed before anything is rented, so a failed build costs nothing."""
    from runner.hosts.hostsmodel import load_registry
    from runner.images.publish import publish
    from runner.images.plan import ImagePlan

    spec = loaded.spec.model_dump(mode="json")
    _, build, args = requested(spec["image"])
    if build is None:
        return spec
    # Rented GPUs are NVIDIA ones but for an AMD card asked for by name.
    kind = build if build != "auto" else "rocm52" if _amd(spec) else "cu128"
    registry = load_registry()
    assert registry is not None
    spec["pushed_image"] = publish(ImagePlan(None, kind, args, reason=f"image {kind} for vast.ai"), registry, log)
    return spec


def _amd(spec: dict[str, Any]) -> bool:
    gpu = ((spec.get("resources") or {}).get("gpu") or "").upper()
    return gpu.startswith(("RX ", "RADEON", "MI"))


def submit_rented(
    store: Store, loaded: LoadedJob, run: Callable[[Job, Any], Submitted], log: Log, keep: bool
) -> Submitted:
    """Rent an instance for the job, then `run` it there (submit's placing and starting)."""
    from runner.provision.vast.api import VastClient

    check_rentable(loaded)
    spec = published_spec(loaded, log)
    job = store.create_job(loaded.spec.name, "vast", spec, str(loaded.path.resolve()))
    store.transition(job.id, JobState.PROVISIONING, frozenset({JobState.SUBMITTED}))
    with VastClient() as client:
        try:
            name = provision(client, store, job.id, spec, log)
            store.set_host(job.id, name)
            store.remember_host(name, "vast")
            submitted = run(store.get(job.id), get_host(name))
        except BaseException as exc:  # Ctrl-C included: a rented instance must not outlive a failed submit
            store.transition(job.id, JobState.FAILED, ACTIVE, message=f"submit failed: {exc or type(exc).__name__}")
            _give_back_after_failure(client, store, job.id, log, keep)
            raise
        if submitted.job.finished:
            teardown(client, store, submitted.job, log)
    if not submitted.job.finished:
        start_keeper(job.id)
    return submitted


def _give_back_after_failure(client: VastClient, store: Store, job_id: str, log: Log, keep: bool) -> None:
    instances = store.instances(job_id, live_only=True)
    if keep:
        ids = ", ".join(str(instance.id) for instance in instances)
        log(f"--keep: instance {ids} is left running and billing: `runner down {job_id}` destroys it")
        return
    for instance in instances:
        try:
            destroy_until_gone(client, store, instance.id, log)
        except RunnerError as exc:  # the submit's own error is the one to raise; this one must show too
            log(f"instance {instance.id} could not be destroyed ({exc}): `runner down {job_id}` tries again")


def teardown(client: VastClient, store: Store, job: Job, log: Log, policy: str | None = None) -> None:
    """Destroy the job's instances as its `teardown` (or policy) says, now that it has ended."""
    policy = policy or job.spec.get("teardown", "on_exit")
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


def orphans(client: VastClient, store: Store) -> list[dict[str, Any]]:
    """Instances labelled by runner that no job of this store still running owns."""
    running = {job.id for job in store.list_jobs() if not job.finished}
    found = []
    for record in client.instances():
        label = record.get("label") or ""
        if label.startswith(LABEL_PREFIX) and label[len(LABEL_PREFIX):] not in running:
            found.append(record)
    return found


def start_keeper(job_id: str) -> int:
    """`runner keep JOB` in a session of its own, so that it outlives this process and its terminal."""
    log = paths.syncs_dir() / f"{job_id}-keep.log"
    return start_detached([sys.executable, "-m", "runner", "keep", job_id], log, f"keeping job {job_id}")


def keep(store: Store, job_id: str, log: Log, poll_s: float = KEEP_POLL_S) -> Job:
    """Watch a running job on a rented instance until it ends, then fetch and tear down."""
    from runner.provision.vast.api import VastClient
    from runner.observe.observe import refresh_one
    from runner.pipeline.stop import stop

    job = store.get(job_id)
    budget_spent = False
    with VastClient() as client:
        while not job.finished:
            try:
                job = refresh_one(store, store.get(job_id))
                if job.spec.get("retry") and not job.finished:
                    _fetch_weights(job, log, wait=False)  # the checkpoint a retry resumes from
            except HostUnreachable as exc:
                log(f"{exc}; looking again in {poll_s:g}s")
            if not job.finished and _over_budget(store, job, log):
                budget_spent = True
                job = stop(store, job, grace_seconds=30)
            if not job.finished:
                job = _carry_on_if_gone(client, store, job, log)
                time.sleep(poll_s)
        if job.state is not JobState.LOST:  # a lost instance has nothing left to fetch
            _save_log(job, log)
        if _fetch_weights(job, log) or job.state is JobState.LOST:
            # max_cost stops the instance too, whatever teardown says: the budget is spent.
            teardown(client, store, job, log, "on_exit" if budget_spent else None)
        else:
            log(f"the instance of job {job.id} is kept, and billing, until its weights are fetched:"
                f" `runner fetch weights {job.id}`, then `runner down {job.id}`")  # fmt: skip
    return job


def _carry_on_if_gone(client: VastClient, store: Store, job: Job, log: Log) -> Job:
    from runner.pipeline import recovery

    cause = recovery.interruption(client, job, recovery.unreachable_for(store, job))
    if cause is None:
        return job
    if recovery.may_retry(store, job, cause):
        return recovery.carry_on(client, store, job, cause, log)
    if cause == "lost":
        return job  # SSH silent, the API says running: a link down is waited out, never a failure
    log(f"job {job.id}: its instance is {cause}, and no retry is left for that: the job is lost")
    store.record_end(job.id, None, message=f"instance {cause}")
    return store.get(job.id)


def _over_budget(store: Store, job: Job, log: Log) -> bool:
    limit = (job.spec.get("resources") or {}).get("max_cost")
    spent = sum(instance.cost() for instance in store.instances(job.id))
    if limit is None or spent < limit:
        return False
    log(f"job {job.id} has cost ${spent:.2f}, reaching resources.max_cost ${limit:.2f}: stopping it")
    store.add_event(job.id, "max_cost", f"${spent:.2f} of ${limit:.2f}")
    return True


def _save_log(job: Job, log: Log) -> None:
    """train.log here before the instance goes (`runner logs` reads it then); a failure is reported,
    and teardown goes on: the weights, not the log, decide whether the instance may go."""
    from runner.observe.logs import save_log

    try:
        size = save_log(job)
    except RunnerError as exc:
        log(f"job {job.id}'s train.log could not be saved here: {exc}")
        return
    log(f"saved job {job.id}'s train.log here ({size} bytes)")


def _fetch_weights(job: Job, log: Log, wait: bool = True) -> bool:
    """The weights into artifacts/JOB here: before the instance can go, the last checkpoint must not
    go with it. False when the fetch failed. Without wait, a fetch already under way (a background
    sync, stuck on a host that went away) is left to it: the keeper must go on watching."""
    dest = Path.cwd() / default_dest(job.id)
    try:
        result = fetch_locked(job, "weights", dest, log) if wait else fetch_unless_busy(job, "weights", dest, log)
    except RunnerError as exc:
        log(f"fetching job {job.id}'s weights failed: {exc}")
        return False
    if result is not None and result.bytes_copied:
        log(f"fetched {len(result.files)} weight files of job {job.id} into {dest}")
    return True
