"""A job on a rented vast.ai instance, kept from the controller once it runs, so that no path leaves
an instance billing unseen (the renting itself is runner.provision.vast).

- The keeper (`runner keep JOB`, detached like the artifact syncs, its log in
  RUNNER_HOME/syncs/JOB-keep.log, one per job under its lock: keepers.py) watches the job:
  `resources.max_cost` stops it when reached; an interrupted or lost instance is replaced as `retry`
  says (recovery.py); when the job ends, it fetches the weights a last time and destroys the instance
  as `teardown` says. vast.ai not answering is waited out, never fatal (apioutage.py); a keeper that
  is gone is started again by the next `runner status` (keepers.ensure_keepers).
- `runner down JOB` destroys a job's instances and waits until the API confirms they are gone;
  `runner down --orphans` does so for instances labelled `runner:` whose job is finished, unknown
  here, or owned by a submit that died, and says why it left each other one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from runner.base import paths
from runner.base.errors import HostUnreachable, RunnerError
from runner.base.heldlock import HeldLock
from runner.jobs.state import Job, JobState, Store
from runner.observe.notify import deliver
from runner.pipeline.keepers import keeper_lock_path, keeper_pid, teardown_policy
from runner.provision.vast.provisioner import LABEL_PREFIX
from runner.provision.vast.renting import teardown
from runner.transfer.artifactsync import fetch_locked, fetch_unless_busy

if TYPE_CHECKING:
    from runner.pipeline.apioutage import ApiOutage
    from runner.provision.vast.api import VastClient

Log = Callable[[str], None]
KEEP_POLL_S = 10.0
# One API call's own retries in the keeper; past them the keeper's backoff takes over (apioutage.py),
# so that SSH watching and the budget go on while vast.ai is away.
KEEP_API_RETRY_S = 20.0


@dataclass(frozen=True)
class Verdict:
    """What `down --orphans` does with one instance labelled runner:, and why."""

    instance_id: int
    job_id: str
    destroy: bool
    reason: str


def judge_instances(client: VastClient, store: Store) -> list[Verdict]:
    """Every instance labelled by runner, judged: destroy when its job is finished, unknown to this
    store, or still being submitted by a process that is gone; else left, with the reason."""
    jobs = {job.id: job for job in store.list_jobs()}
    verdicts = []
    for record in client.instances():
        label = record.get("label") or ""
        if label.startswith(LABEL_PREFIX):
            job_id = label[len(LABEL_PREFIX) :]
            verdicts.append(Verdict(int(record["id"]), job_id, *_verdict(jobs.get(job_id))))
    return verdicts


def _verdict(job: Job | None) -> tuple[bool, str]:
    if job is None:
        return True, "its job is unknown to this store"
    if job.finished:
        return True, f"its job is {job.state.value}"
    if job.state is JobState.RUNNING:
        pid = keeper_pid(job.id)
        if pid is None:
            return False, "its job is running; its keeper is gone: `runner status` starts it again"
        return False, f"its job is running, kept by its keeper (pid {pid})"
    if job.owner_pid is None:
        return False, f"its job is {job.state.value}, from a runner that recorded no submit process to check"
    if not job.owner_alive():
        return True, f"its job is {job.state.value} and its submit (pid {job.owner_pid}) is gone"
    return False, f"its job is {job.state.value}: its submit (pid {job.owner_pid}) is at work"


def keep(store: Store, job_id: str, log: Log, poll_s: float = KEEP_POLL_S) -> Job | None:
    """Watch a running job on a rented instance until it ends, then fetch and tear down. None when
    another keeper holds the job's lock: this one has nothing to do."""
    from runner.pipeline.apioutage import ApiOutage
    from runner.provision.vast.api import VastClient

    lock = HeldLock(keeper_lock_path(job_id))
    if not lock.acquire():
        return None
    with lock, VastClient(retry_seconds=KEEP_API_RETRY_S) as client:
        api = ApiOutage(store, job_id, log, answers=lambda: client.answers)
        job = _watch(client, store, store.get(job_id), api, log, poll_s)
        if job.finished:  # else the store went away under it: nobody is left to keep for
            _finish(client, store, job, api, log)
            # What the teardown added (instance_destroyed) is news now, not at the next `runner status`.
            deliver(store, [store.get(job_id)])
    return job


def _watch(client: VastClient, store: Store, job: Job, api: ApiOutage, log: Log, poll_s: float) -> Job:
    """Until the job ends: its host asked over SSH, its budget checked, its instance asked of vast.ai
    when the API's backoff allows. Returned unfinished when the store is gone (RUNNER_HOME removed)."""
    from runner.observe.observe import refresh_one

    while not job.finished:
        if _store_gone(log):
            return job
        try:
            job = refresh_one(store, store.get(job.id))
            if job.spec.retry and not job.finished:
                _fetch_weights(job, log, wait=False)  # the checkpoint a retry resumes from
        except HostUnreachable as exc:
            log(f"{exc}; looking again in {poll_s:g}s")
        if not job.finished and _over_budget(store, job, log):
            job = _stop_for_budget(store, job, log)
        if not job.finished:
            job = api.try_now(partial(_carry_on_if_gone, client, store, job, log), "asking for the instance") or job
            time.sleep(poll_s)
    return job


def _finish(client: VastClient, store: Store, job: Job, api: ApiOutage, log: Log) -> None:
    from runner.pipeline import recovery

    # An instance its safety net ended (nobody looked when the job ended) runs again for the fetch.
    api.until_done(partial(recovery.start_if_ended, client, store, job, log), "starting the instance again",
                   lambda: _store_gone(log))  # fmt: skip
    if job.state is not JobState.LOST:  # a lost instance has nothing left to fetch
        _save_log(job, log)
    if _fetch_weights(job, log) or job.state is JobState.LOST:
        # max_cost stops the instance too, whatever teardown says: the budget is spent.
        policy = teardown_policy(store, job)
        api.until_done(partial(teardown, client, store, job, log, policy), "destroying the instance",
                       lambda: _store_gone(log))  # fmt: skip
    else:
        log(f"the instance of job {job.id} is kept, and billing, until its weights are fetched:"
            f" `runner fetch weights {job.id}`, then `runner down {job.id}`")  # fmt: skip


def _store_gone(log: Log) -> bool:
    """The store this keeper keeps for was removed (RUNNER_HOME deleted): no one will ever look."""
    if paths.state_db().exists():
        return False
    log(f"the store {paths.state_db()} is gone: nothing left to keep for, the keeper ends")
    return True


def _carry_on_if_gone(client: VastClient, store: Store, job: Job, log: Log) -> Job:
    from runner.pipeline import recovery

    cause = recovery.interruption(client, job, recovery.unreachable_for(store, job))
    if cause is None:
        return job
    if cause == recovery.ENDED:  # no interruption: the instance's safety net saw the job end
        return recovery.record_outcome(client, store, job, log)
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
    if store.last_event(job.id, ("max_cost",)) is None:  # said once, however often it is checked after
        log(f"job {job.id} has cost ${spent:.2f}, reaching resources.max_cost ${limit:.2f}: stopping it")
        store.add_event(job.id, "max_cost", f"${spent:.2f} of ${limit:.2f}")
    return True


def _stop_for_budget(store: Store, job: Job, log: Log) -> Job:
    """The stop; a host that does not answer now is asked again at the next look."""
    from runner.pipeline.stop import stop

    try:
        return stop(store, job, grace_seconds=30)
    except HostUnreachable as exc:
        log(f"stopping job {job.id} for its budget: {exc}; trying again at the next look")
        return store.get(job.id)


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
