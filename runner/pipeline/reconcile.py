"""The reconciler: a job's state is what its host shows, whichever runner process looks.

A job is carried to `running` by its submit (the owner, recorded with the job: runner/base/processes.py).
While the owner lives, a job short of running is its to move. Once the owner is gone (SIGKILLed, its
machine rebooted) nobody would move it again, so the reconciler finishes the step from the truth:

| the job's owner | placed on its host | the host shows                        | the job becomes                |
|-----------------|--------------------|---------------------------------------|--------------------------------|
| alive           | -                  | -                                     | left to its owner              |
| gone            | no                 | -                                     | failed: submit was interrupted |
| gone            | yes                | an exit code                          | succeeded/failed/stopped       |
| gone            | yes                | its tmux session or its processes     | running                        |
| gone            | yes                | neither (tmux answered)               | failed: submit was interrupted |
| gone            | yes                | no answer, or tmux could not be asked | left as it is                  |

Placed jobs are asked in the probe `runner status` makes anyway (one round trip per host, as for
running jobs: observe.refresh). A job failed as interrupted gives back its rented instances, unless it
was submitted with `--keep`; a failure to destroy one is reported, never raised. The process whose
compare-and-set wins the transition does that, so two `runner status` side by side destroy once.
"""

from __future__ import annotations

from functools import partial

from runner.base.errors import RunnerError
from runner.jobs.state import ACTIVE, Job, JobState, Store
from runner.observe.observe import Observation, Refreshed, Settle, refresh

INTERRUPTED = "submit was interrupted"
SHORT_OF_RUNNING = ACTIVE - {JobState.RUNNING}  # the states a submit moves a job through


def reconcile(store: Store, jobs: list[Job]) -> Refreshed:
    """observe.refresh for running jobs, and every job short of running whose submit is gone decided
    from its host in the same probe. Returns the jobs as they are now, with a note per decision."""
    notes: list[str] = []
    orphaned = [job for job in jobs if job.state in SHORT_OF_RUNNING and not job.owner_alive()]
    for job in orphaned:
        if not job.job_dir:  # never placed: nothing of it can run anywhere
            fail_interrupted(store, job, notes)
    settle: dict[str, Settle] = {job.id: partial(_settle, notes) for job in orphaned if job.job_dir}
    refreshed = refresh(store, jobs, settle)
    refreshed.notes[:0] = notes
    return refreshed


def _settle(notes: list[str], store: Store, job: Job, seen: Observation | None) -> bool:
    """A placed job whose submit is gone, against what its host showed. True: it is running now."""
    if seen is None:
        return False
    if seen.exit_code is not None or seen.session_alive or seen.processes_alive:
        # The training was started: from here on it is a running job like any other (its end, if it
        # came already, is read from the same observation by observe.refresh).
        if not store.transition(job.id, JobState.RUNNING, SHORT_OF_RUNNING):
            return False  # moved meanwhile (stopped, or decided by another runner)
        store.add_event(job.id, "submit-interrupted", f"while {job.state.value}; the training had started")
        notes.append(f"job {job.id}: its submit was interrupted while {job.state.value}; the training had started")
        return True
    if seen.session_alive is False:  # tmux answered: no session, no process, no exit code
        fail_interrupted(store, job, notes)
    return False


def fail_interrupted(store: Store, job: Job, notes: list[str]) -> None:
    """Fail a job whose submit died before its training started, and give back what was rented for it."""
    message = f"{INTERRUPTED} while {job.state.value}"
    if not store.transition(job.id, JobState.FAILED, SHORT_OF_RUNNING, message=message):
        return  # another runner won the transition: its instances are that runner's to give back
    notes.append(f"job {job.id}: {INTERRUPTED} while {job.state.value}: failed")
    release_instances(store, store.get(job.id), notes)


def release_instances(store: Store, job: Job, notes: list[str]) -> None:
    """The provisioner's own path for a failed submit: destroy until the API confirms, or keep with --keep."""
    if not store.instances(job.id, live_only=True):
        return
    from runner.provision import RENTING, provisioner_for  # httpx is imported only where something was rented

    provisioner = provisioner_for(RENTING)
    try:
        provisioner.release_after_failure(store, job, notes.append, job.keep)
    except RunnerError as exc:  # no API key any more, say: the status must still show every job
        notes.append(f"job {job.id}: its instances could not be destroyed ({exc}): `runner down {job.id}` tries again")
    finally:
        provisioner.close()
