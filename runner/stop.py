"""stop: Ctrl-C the training, wait a grace period, then end the session and every job process."""

from __future__ import annotations

import time

from runner import session
from runner.hosts import get_host
from runner.layout import agent_argv
from runner.observe import probe, refresh_one
from runner.state import ACTIVE, Job, JobState, Store

POLL_SECONDS = 0.5


def stop(store: Store, job: Job, grace_seconds: float) -> Job:
    if job.finished:
        return job
    if not (job.session and job.job_dir):
        # Never started on its host: there is nothing to interrupt.
        store.request_stop(job.id)
        store.transition(job.id, JobState.STOPPED, ACTIVE, message="stopped before it started")
        return store.get(job.id)
    host = get_host(job.host)
    host.root()  # reach the host before recording the stop: an unreachable host must leave the job as it was
    store.request_stop(job.id)
    host.run(session.interrupt_argv(job.session))
    if not _ends_within(host, job.job_dir, grace_seconds):
        host.run(session.kill_session_argv(job.session))
        host.run(agent_argv(host, "kill", job.id)).check()
        store.add_event(job.id, "killed", f"still running {grace_seconds:g}s after Ctrl-C")
    return refresh_one(store, store.get(job.id))


def _ends_within(host, job_dir: str, grace_seconds: float) -> bool:
    deadline = time.monotonic() + grace_seconds
    while True:
        seen = probe(host, [job_dir])[job_dir]
        if seen.exit_code is not None or not seen.session_alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
