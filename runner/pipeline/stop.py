"""stop: Ctrl-C the training, wait a grace period, then end the session and every job process.

The Ctrl-C is the agent's (`agent stop`, runner/hostside/jobend.py): under the job directory's lock it
records the stop and sends the keys only if the training has not ended, so a stop racing the
training's own end is decided on the host, exactly: delivered, the job is `stopped`; not delivered,
it ends as the training did (`succeeded` for exit code 0).
"""

from __future__ import annotations

import json
import time

from runner.base.errors import RunnerError
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
    delivered = deliver_stop(host, job.job_dir)
    if not _ends_within(host, job.job_dir, grace_seconds) and delivered:
        if job.spec.image is not None and not host.provides_image:  # it would outlive its `docker run` client
            host.run(session.stop_container_argv(job.session))
        host.run(session.kill_session_argv(job.session))
        run_agent(host, "kill", job.id).check()
        store.add_event(job.id, "killed", f"still running {grace_seconds:g}s after Ctrl-C")
    return refresh_one(store, store.get(job.id))


def deliver_stop(host: Host, job_dir: str) -> bool:
    """The agent's stop: True if it was delivered (recorded, and Ctrl-C sent), False if the training
    had ended first (its exit code is then recorded, or about to be)."""
    result = run_agent(host, "stop", job_dir).check()
    try:
        answer = json.loads(result.text)
    except ValueError:
        raise RunnerError(f"host '{host.name}': the agent's stop answered unreadable output") from None
    return bool(answer.get("delivered")) if isinstance(answer, dict) else False


def _ends_within(host: Host, job_dir: str, grace_seconds: float) -> bool:
    deadline = time.monotonic() + grace_seconds
    while True:
        seen = probe(host, [job_dir])[job_dir]
        if seen.exit_code is not None or not seen.session_alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
