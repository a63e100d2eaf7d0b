"""A job on a rented vast.ai instance, kept from the controller once it runs, so that no path leaves
an instance billing unseen (the renting itself is runner.provision.vast).

- The keeper (`runner keep JOB`, detached like the artifact syncs, its log in
  RUNNER_HOME/syncs/JOB-keep.log) watches the job: `resources.max_cost` stops it when reached; an
  interrupted or lost instance is replaced as `retry` says (recovery.py); when the job ends, it
  fetches the weights a last time and destroys the instance as `teardown` says.
- `runner down JOB` destroys a job's instances and waits until the API confirms they are gone;
  `runner down --orphans` does so for instances labelled `runner:` that no running job owns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runner.base.errors import HostUnreachable, RunnerError
from runner.jobs.state import Job, JobState, Store
from runner.provision.vast.provisioner import LABEL_PREFIX
from runner.provision.vast.renting import teardown
from runner.transfer.artifactsync import fetch_locked, fetch_unless_busy

if TYPE_CHECKING:
    from runner.provision.vast.api import VastClient

Log = Callable[[str], None]
KEEP_POLL_S = 10.0


def orphans(client: VastClient, store: Store) -> list[dict[str, Any]]:
    """Instances labelled by runner that no job of this store still running owns."""
    running = {job.id for job in store.list_jobs() if not job.finished}
    found = []
    for record in client.instances():
        label = record.get("label") or ""
        if label.startswith(LABEL_PREFIX) and label[len(LABEL_PREFIX) :] not in running:
            found.append(record)
    return found


def keep(store: Store, job_id: str, log: Log, poll_s: float = KEEP_POLL_S) -> Job:
    """Watch a running job on a rented instance until it ends, then fetch and tear down."""
    from runner.observe.observe import refresh_one
    from runner.pipeline.stop import stop
    from runner.provision.vast.api import VastClient

    job = store.get(job_id)
    budget_spent = False
    with VastClient() as client:
        while not job.finished:
            try:
                job = refresh_one(store, store.get(job_id))
                if job.spec.retry and not job.finished:
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
    limit = job.spec.resources.max_cost
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
    dest = job.resolved.artifacts_dir(job.id)
    try:
        result = fetch_locked(job, "weights", dest, log) if wait else fetch_unless_busy(job, "weights", dest, log)
    except RunnerError as exc:
        log(f"fetching job {job.id}'s weights failed: {exc}")
        return False
    if result is not None and result.bytes_copied:
        log(f"fetched {len(result.files)} weight files of job {job.id} into {dest}")
    return True
