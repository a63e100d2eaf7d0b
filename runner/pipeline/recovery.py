"""A rented job whose instance is interrupted or lost, carried on elsewhere (the job file's `retry`).

Interrupted: the API says the instance exited, went offline or is gone. Lost: the API says running,
but SSH has not answered for `retry.lost_after` (LOST_AFTER_S by default). Either way, when
`retry.on` names the cause and tries are left, the keeper destroys the old instance, rents a new
one, pushes the workdir and the checkpoints it fetched last (artifacts/JOB, as they lay under the
workdir), and starts the session with `resume` in place of `run`. The job stays `running` throughout:
it never ran to an end.

Ended: the instance exited and its log (vast's logs endpoint) holds the outcome line of its safety net
(runner.provision.vast.safetynet): the job ended while no controller looked. That is no interruption:
the job's true end is recorded from the line, and the instance is started again for the final fetch.
An instance that exited without that line stays an interruption.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from runner.hosts import Host, get_host
from runner.jobs.spec import LOST_AFTER_S
from runner.jobs.specfile import stored_job
from runner.jobs.state import ACTIVE, Job, JobState, Store
from runner.provision.vast.provisioner import (
    FAILED,
    StartFailed,
    destroy_until_gone,
    instance_id_of,
    instance_log,
    provision,
    start_again,
)
from runner.provision.vast.safetynet import Outcome, read_outcome

if TYPE_CHECKING:
    from runner.provision.vast.api import VastClient

Log = Callable[[str], None]
MANIFEST = ".runner-manifest.json"  # fetch's record of what it brought: not part of the checkpoints
ENDED = "ended"  # the instance's safety net ended it: the job is over (record_outcome), not interrupted
EXITED = "exited"  # what vast shows of an instance whose container ended


def interruption(client: VastClient, job: Job, unreachable_for: float | None) -> str | None:
    """ "ended", "interrupted", "lost" or None for the job's current instance."""
    instance_id = instance_id_of(job.host)
    if instance_id is None:
        return None
    record = client.instance(instance_id)
    if record is not None and record.get("actual_status") == EXITED and outcome(client, job) is not None:
        return ENDED
    if record is None or record.get("actual_status") in FAILED or record.get("cur_state") == "unloaded":
        return "interrupted"
    if unreachable_for is not None and unreachable_for >= lost_after(job):
        return "lost"
    return None


def outcome(client: VastClient, job: Job) -> Outcome | None:
    """The outcome line of the job in its instance's log, read through the API; None without one."""
    instance_id = instance_id_of(job.host)
    return None if instance_id is None else read_outcome(instance_log(client, instance_id), job.id)


def record_outcome(client: VastClient, store: Store, job: Job, log: Log) -> Job:
    """The job's true end from its instance's outcome line: succeeded or failed by its exit code,
    stopped when the safety net stopped it (the budget), with the reason."""
    ended = outcome(client, job)
    if ended is None:
        return job
    log(f"job {job.id}: its instance ended while no controller looked: {ended.message}, exit code"
        f" {'none' if ended.exit_code is None else ended.exit_code}")  # fmt: skip
    store.add_event(job.id, "safety-net", ended.message)
    if ended.stopped:
        store.transition(job.id, JobState.STOPPED, ACTIVE, exit_code=ended.exit_code, message=ended.message)
    else:
        store.record_end(job.id, ended.exit_code, message=None if ended.exit_code is not None else ended.message)
    return store.get(job.id)


def start_if_ended(client: VastClient, store: Store, job: Job, log: Log) -> None:
    """Before the final fetch of a job that is over: an instance whose container ended (its safety net
    ended it) is started again and reached, so that the weights can be fetched before it is destroyed.
    One that will not start is reported: the fetch then fails, and the instance is kept (storage bills)."""
    instance_id = instance_id_of(job.host)
    if instance_id is None or job.state is JobState.LOST or store.unreachable_since(job.host) is None:
        return  # SSH answered at the last look: nothing to start, and no need of the API (it may be down)
    record = client.instance(instance_id)
    if record is None or record.get("actual_status") not in (EXITED, "stopped"):
        return
    try:
        start_again(client, store, instance_id, log)
    except StartFailed as exc:
        log(f"job {job.id}: {exc}")


def lost_after(job: Job) -> float:
    """The job's grace; the default for a job stored before `lost_after` existed."""
    return job.spec.retry.lost_after if job.spec.retry else LOST_AFTER_S


def may_retry(store: Store, job: Job, cause: str) -> bool:
    policy = job.spec.retry
    return policy is not None and cause in policy.on and _tries(store, job) < policy.max


def carry_on(client: VastClient, store: Store, job: Job, cause: str, log: Log) -> Job:
    """Move the job to a new instance and resume it there."""
    old = instance_id_of(job.host)
    log(f"job {job.id}: instance {old} {cause}; renting another (retry {_tries(store, job) + 1})")
    store.add_event(job.id, "retry", f"instance {old} {cause}")
    if old is not None:
        destroy_until_gone(client, store, old, log)
    name = provision(client, store, job, log)
    _restart_on(store, job, get_host(name), log)
    # Only now: a status that probed the new host before its session started would find no session,
    # no exit code and no process there, and call the job lost.
    store.set_host(job.id, name)
    return store.get(job.id)


def _tries(store: Store, job: Job) -> int:
    return len([event for event in store.events(job.id) if event.kind == "retry"])


def _restart_on(store: Store, job: Job, host: Host, log: Log) -> None:
    from runner.jobs import session
    from runner.jobs.layout import JobLayout
    from runner.pipeline.placement import plan_datasets
    from runner.pipeline.submit import Submitted, job_windows, place_job
    from runner.transfer.push import push_tree

    # The job as submit stored it, never the job file: it may be gone, or say something else by now.
    resume = job.spec.resume or job.spec.run
    loaded = stored_job(job, job.spec.model_copy(update={"run": list(resume)}))
    layout = JobLayout.on(host, job.id)
    name = session.session_name(job.name, job.id)
    place_job(host, loaded, job, layout, name, plan_datasets(loaded), Submitted(job))
    checkpoints = job.resolved.artifacts_dir(job.id)
    if checkpoints.is_dir():
        stats = push_tree(host, checkpoints, layout.work, exclude=[MANIFEST])
        log(f"pushed the last fetched checkpoints: {stats.files_sent} files, {stats.bytes_sent} bytes")
    store.set_placement(job.id, layout.job_dir, name)
    session.start(host, name, job_windows(host, loaded, layout), cwd=layout.work)
    log(f"job {job.id} resumed on {host.name}: {'; '.join(resume)}")


def unreachable_for(store: Store, job: Job) -> float | None:
    since = store.unreachable_since(job.host)
    return None if since is None else time.time() - since
