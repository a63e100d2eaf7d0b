"""Where jobs really are: one agent probe per host, hosts polled in parallel, then compare-and-set
transitions in the store. A host that does not answer changes no job: it is an observation
("unreachable since ..."), never a state."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner.base.errors import HostUnreachable, RunnerError
from runner.hosts import Host
from runner.jobs.agentanswers import Snapshot, probe_answer
from runner.jobs.layout import job_host
from runner.jobs.notifyevents import ALERT_EVENTS
from runner.jobs.state import Job, JobState, Store, ended_state
from runner.observe.notify import ALERT, deliver

MAX_PARALLEL_HOSTS = 8


@dataclass(frozen=True)
class Observation:
    session_alive: bool | None  # None: tmux could not be asked, so nothing is concluded from it
    exit_code: int | None
    last_line: str | None
    processes_alive: bool | None = None  # processes carrying the job's RUNNER_JOB_ID; None: unknown
    snapshot: Snapshot | None = None  # the host monitor's status.json
    exit_age_s: float | None = None  # how long ago the exit code was written, by the host's clock
    stop_delivered: bool | None = None  # the host's record of a stop that came before the end; None: not kept
    stop: dict[str, Any] | None = None  # that stop: {"by": "runner stop" | "max_duration", "message"}

    @property
    def ended(self) -> bool:
        return self.exit_code is not None or (self.session_alive is False and not self.processes_alive)


@dataclass(frozen=True)
class HostProblem:
    error: RunnerError
    unreachable_since: float | None  # set when the host did not answer (exit 3), None for other errors


@dataclass
class Refreshed:
    jobs: list[Job]
    problems: dict[str, HostProblem] = field(default_factory=dict)  # by host name
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by job id, for jobs on rented instances
    notes: list[str] = field(default_factory=list)  # what was done to jobs besides probing them, one line each


# Decides a job that is not running from the same probe of its host (runner/pipeline/reconcile.py; the
# observation is None when the host had no answer for it). True: it moved the job to running, and the
# observation is then applied as to any running job.
Settle = Callable[[Store, Job, Observation | None], bool]


def probe(host: Host, job_dirs: list[str]) -> dict[str, Observation]:
    """One command on the host reports every listed job (an agent of another protocol is replaced)."""
    reported = probe_answer(host, job_dirs)["jobs"]
    return {
        job_dir: Observation(
            seen["session_alive"],
            seen["exit_code"],
            seen["last_line"],
            seen["processes_alive"],
            seen.get("snapshot"),
            seen.get("exit_age_s"),
            seen.get("stop_delivered"),  # absent from older agents' answers: the older rule then
            seen.get("stop"),
        )
        for job_dir, seen in reported.items()
    }


def next_state(job: Job, seen: Observation) -> JobState | None:
    """The state the observation proves for this snapshot of the job, or None when it is still running.
    A session gone without an exit code was killed, or the host rebooted."""
    if not seen.ended:
        return None
    return ended_state(job.stop_requested_at is not None, seen.exit_code, seen.stop_delivered)


def refresh(store: Store, jobs: list[Job], settle: dict[str, Settle] | None = None) -> Refreshed:
    """Bring running jobs up to date with their hosts; finished jobs are left as they are.
    settle: placed jobs (by id) that are not running, asked in the same probe of their host and
    decided by their Settle; an unanswering host leaves them as they are too."""
    settle = settle or {}
    by_host: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        if (job.state is JobState.RUNNING or job.id in settle) and job.job_dir:
            by_host[job.host].append(job)
    problems: dict[str, HostProblem] = {}
    with ThreadPoolExecutor(max_workers=MAX_PARALLEL_HOSTS) as pool:
        futures = {name: pool.submit(_probe_host, name, host_jobs) for name, host_jobs in by_host.items()}
    for name, future in futures.items():
        try:
            seen = future.result()
        except HostUnreachable as error:
            problems[name] = HostProblem(error, store.mark_unreachable(name))
            continue
        except RunnerError as error:
            problems[name] = HostProblem(error, None)
            continue
        store.mark_reachable(name)
        for job in by_host[name]:
            observed = seen.get(job.job_dir or "")
            if job.id not in settle or settle[job.id](store, job, observed):
                _apply(store, job, observed)
    fresh = [store.get(job.id) for job in jobs]
    deliver(store, fresh)  # what this look found, or another process left unsent: each event once
    return Refreshed(fresh, problems, {job.id: cost for job in fresh if (cost := cost_of(store, job))})


def cost_of(store: Store, job: Job) -> dict[str, Any] | None:
    """$/h of the job's instance and what its instances have cost so far (None: nothing was rented for it)."""
    instances = store.instances(job.id)
    if not instances:
        return None
    live = [instance for instance in instances if instance.gone_at is None]
    return {
        "dph": (live or instances)[-1].dph,
        "so_far": round(sum(instance.cost() for instance in instances), 4),
        "instances": [instance.id for instance in instances],
        "live": [instance.id for instance in live],
    }


def refresh_one(store: Store, job: Job) -> Job:
    """Refresh one job; a host problem is raised, not reported. The job is read anew first: a rented
    job may have moved to another instance since the caller last looked."""
    job = store.get(job.id)
    refreshed = refresh(store, [job])
    problem = refreshed.problems.get(job.host)
    if problem:
        raise problem.error
    return refreshed.jobs[0]


def _probe_host(host_name: str, jobs: list[Job]) -> dict[str, Observation]:
    job_dirs = [job.job_dir for job in jobs if job.job_dir]
    host = job_host(host_name, job_dirs[0])  # the probe is the host's one round trip
    return probe(host, job_dirs)


def _apply(store: Store, job: Job, seen: Observation | None) -> None:
    if seen is None:
        return
    if seen.last_line != job.last_line:
        store.set_last_line(job.id, seen.last_line)
    if seen.snapshot and seen.snapshot != job.snapshot:
        store.set_snapshot(job.id, dict(seen.snapshot))
        _note_new_alerts(store, job, seen.snapshot)
    if seen.ended:
        unrecorded = "the tmux session ended without recording an exit code" if seen.exit_code is None else None
        ended_at = time.time() - seen.exit_age_s if seen.exit_age_s is not None else None  # not when we noticed
        limit = _max_duration_message(seen.stop)
        ended = store.record_end(
            job.id, seen.exit_code, message=limit or unrecorded, ended_at=ended_at, stop_delivered=seen.stop_delivered
        )
        if limit and ended is JobState.STOPPED:  # record_end finishes a job once: the event comes once
            store.add_event(job.id, "max_duration", limit)


def _note_new_alerts(store: Store, job: Job, snapshot: Snapshot) -> None:
    """An `alert` event (detail: the kind) the first time the job shows an alert of a kind: the news that
    notifications send. add_event_once keeps it one event, however many processes see it at once."""
    before = {alert.get("kind") for alert in (job.snapshot or {}).get("alerts") or []}
    for alert in snapshot.get("alerts") or []:
        kind = alert.get("kind") if isinstance(alert, dict) else None
        if kind in ALERT_EVENTS and kind not in before:  # the host's word: only kinds runner knows
            store.add_event_once(job.id, ALERT, str(kind))


def _max_duration_message(stop: dict[str, Any] | None) -> str | None:
    """The message of a stop the host's monitor made at max_duration ("max_duration 2h reached"), or None.
    What a host sends is untrusted: only a short one-line text is taken."""
    if not isinstance(stop, dict) or stop.get("by") != "max_duration":
        return None
    message = stop.get("message")
    if not isinstance(message, str):
        return "max_duration reached"
    return " ".join(message.split())[:200] or "max_duration reached"
