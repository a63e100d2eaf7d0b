"""stop: Ctrl-C the training, wait a grace period, then end the session and every job process."""

from __future__ import annotations

import time

from runner.hosts import Host
from runner.jobs import session
from runner.jobs.layout import job_host, run_agent
from runner.jobs.state import ACTIVE, Job, JobState, Store
from runner.observe.observe import probe, refresh_one

POLL_SECONDS = 0.5


def stop(store: Store, job: Job, grace_seconds: float) -> Job:
    if job.finished:
        return job
    if job.state is not JobState.RUNNING:
        # Still being submitted: submit checks for the stop before it starts the session, and ends the
        # session if the stop came just after. A job that reached running meanwhile is stopped below.
        store.request_stop(job.id)
        if store.transition(job.id, JobState.STOPPED, ACTIVE - {JobState.RUNNING}, message="stopped before it started"):
            return store.get(job.id)
    # Where the job really is first: one that already ended is reported as it ended, not as stopped.
    # (Reaching the host before recording the stop also leaves the job as it was if the host is down.)
    job = refresh_one(store, store.get(job.id))
    if job.finished or not (job.session and job.job_dir):
        return job
    host = job_host(job.host, job.job_dir)
    store.request_stop(job.id)
    host.run(session.interrupt_argv(job.session))
    if not _ends_within(host, job.job_dir, grace_seconds):
        if job.spec.image is not None and not host.provides_image:  # it would outlive its `docker run` client
            host.run(session.stop_container_argv(job.session))
        host.run(session.kill_session_argv(job.session))
        run_agent(host, "kill", job.id).check()
        store.add_event(job.id, "killed", f"still running {grace_seconds:g}s after Ctrl-C")
    return refresh_one(store, store.get(job.id))


def _ends_within(host: Host, job_dir: str, grace_seconds: float) -> bool:
    deadline = time.monotonic() + grace_seconds
    while True:
        seen = probe(host, [job_dir])[job_dir]
        if seen.exit_code is not None or not seen.session_alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
