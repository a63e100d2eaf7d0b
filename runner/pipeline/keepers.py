"""Which rented jobs need a keeper, whether theirs still lives, and what it is waiting on. Light on
purpose (the store and a lock file only): `runner status` asks this of every job it shows.

- One keeper per job: it holds RUNNER_HOME/locks/keep-JOB.lock (flock, its pid inside) for its
  whole life, so a keeper killed or lost with a reboot frees it, and a second one exits at once.
- ensure_keepers: a rented job that is running, or ended with an instance its teardown must still
  destroy, and whose lock is free, gets its keeper started again.
- api_waits: the jobs whose keeper is waiting out a vast.ai outage, and since when (its events
  `api-unreachable` and `api-reachable`, and the pseudo-host API_HOST in the store's hosts).
"""

from __future__ import annotations

from pathlib import Path

from runner.base import paths
from runner.base.heldlock import holder_pid, is_held
from runner.jobs.state import Job, JobState, Store

API_HOST = "vast.ai"  # the provider's API, as a host of the store's hosts table: unreachable since ...
API_UNREACHABLE, API_REACHABLE = "api-unreachable", "api-reachable"
KEEPER_RESTARTED = "keeper-restarted"
RENTED_PREFIX = "vast-"  # a rented job's host: vast-INSTANCE_ID


def keeper_lock_path(job_id: str) -> Path:
    return paths.locks_dir() / f"keep-{job_id}.lock"


def keeper_pid(job_id: str) -> int | None:
    """The pid of the job's keeper while one runs, else None."""
    return holder_pid(keeper_lock_path(job_id))


def is_rented(store: Store, job: Job) -> bool:
    return job.host.startswith(RENTED_PREFIX) or bool(store.instances(job.id))


def needs_keeper(store: Store, job: Job) -> bool:
    """Running on a rented instance, or ended there with an instance its teardown still has to destroy.
    A job that never ran is its submit's (and the reconciler's): a keeper would tear down an instance
    that `submit --keep` kept."""
    if not is_rented(store, job):
        return False
    if job.state is JobState.RUNNING:
        return True
    if not job.finished or job.started_at is None or not store.instances(job.id, live_only=True):
        return False
    return teardown_policy(store, job) == "on_exit" or (
        teardown_policy(store, job) == "on_success" and job.state is JobState.SUCCEEDED
    )


def teardown_policy(store: Store, job: Job) -> str:
    """The job's `teardown`, except that a spent budget destroys the instance whatever it says."""
    if store.last_event(job.id, ("max_cost",)) is not None:
        return "on_exit"
    return job.spec.teardown


def ensure_keepers(store: Store, jobs: list[Job]) -> list[tuple[str, int]]:
    """Start the keeper again of every job here that needs one and has none; (job id, pid) of each."""
    started = []
    for job in jobs:
        if is_held(keeper_lock_path(job.id)) or not needs_keeper(store, job):
            continue
        from runner.provision.vast.renting import start_keeper  # only when one is needed: it is heavy to import

        pid = start_keeper(job.id, reason="its keeper was gone; started again")
        store.add_event(job.id, KEEPER_RESTARTED, f"pid {pid}")
        started.append((job.id, pid))
    return started


def api_waits(store: Store, jobs: list[Job]) -> dict[str, float]:
    """Since when each job's keeper has been waiting for the vast.ai API to answer, by job id."""
    waits = {}
    for job in jobs:
        last = store.last_event(job.id, (API_UNREACHABLE, API_REACHABLE))
        if last is None or last.kind != API_UNREACHABLE or not needs_keeper(store, job):
            continue
        waits[job.id] = store.unreachable_since(API_HOST) or last.at
    return waits
