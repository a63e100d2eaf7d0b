"""Where jobs really are: one agent probe per host, then compare-and-set transitions in the store."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from runner.errors import RunnerError
from runner.hosts import Host, get_host
from runner.layout import agent_argv
from runner.state import ACTIVE, Job, JobState, Store


@dataclass(frozen=True)
class Observation:
    session_alive: bool
    exit_code: int | None
    last_line: str | None


def probe(host: Host, job_dirs: list[str]) -> dict[str, Observation]:
    """One command on the host reports every listed job."""
    result = host.run(agent_argv(host, "probe", *job_dirs)).check()
    try:
        reported = json.loads(result.text)["jobs"]
    except (ValueError, KeyError) as exc:
        raise RunnerError(f"host '{host.name}': the agent's probe answered unreadable output ({exc})") from None
    return {
        job_dir: Observation(bool(seen["session_alive"]), seen["exit_code"], seen["last_line"])
        for job_dir, seen in reported.items()
    }


def next_state(job: Job, seen: Observation) -> JobState | None:
    """The state the observation proves, or None when the job is where the store says."""
    stop_requested = job.stop_requested_at is not None
    if seen.exit_code is not None:
        if stop_requested:
            return JobState.STOPPED
        return JobState.SUCCEEDED if seen.exit_code == 0 else JobState.FAILED
    if seen.session_alive:
        return None
    # The session is gone and never wrote an exit code: killed, or the host rebooted.
    return JobState.STOPPED if stop_requested else JobState.LOST


def refresh(store: Store, jobs: list[Job]) -> list[Job]:
    """Bring running jobs up to date with their hosts; finished jobs are left as they are."""
    by_host: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.state is JobState.RUNNING and job.job_dir:
            by_host[job.host].append(job)
    for host_name, host_jobs in by_host.items():
        host = get_host(host_name)
        seen = probe(host, [job.job_dir for job in host_jobs if job.job_dir])
        for job in host_jobs:
            _apply(store, job, seen.get(job.job_dir or ""))
    return [store.get(job.id) for job in jobs]


def _apply(store: Store, job: Job, seen: Observation | None) -> None:
    if seen is None:
        return
    if seen.last_line != job.last_line:
        store.set_last_line(job.id, seen.last_line)
    state = next_state(job, seen)
    if state is not None:
        message = None if state is not JobState.LOST else "the tmux session ended without recording an exit code"
        store.transition(job.id, state, ACTIVE, exit_code=seen.exit_code, message=message)
