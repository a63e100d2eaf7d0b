"""`runner prune`: finished jobs' folders removed from their hosts, and their rows from the store.

Two steps, so the command can ask first: plan() picks the finished jobs (ended before a cutoff, and
with failed_only those that did not succeed: failed, lost or stopped) and asks each host, in one
round trip, what removing them would free; prune() removes them (a second round trip per host) and
deletes the rows of those whose folders are gone, with their events and instances.

Never touched: a job that is not finished (as the store has it; `runner status` brings states up to
date), a job whose processes or tmux session are alive on its host (the host's agent checks, whatever
the store says), a rented job whose instance is not confirmed gone (it may bill, and its row is how
runner finds it). A host that does not answer keeps its jobs, each reported with the reason, and the
other hosts are pruned all the same (the command then exits 3: try again). A rented job whose
instance is gone has no host left: only its rows go.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from runner.base.errors import HostUnreachable, RunnerError
from runner.hosts import Host
from runner.jobs.layout import JobLayout, job_host, run_agent
from runner.jobs.state import FINISHED, Job, JobState, Store

FAILED_STATES = FINISHED - {JobState.SUCCEEDED}  # --failed: every way a job can end without succeeding
IDS_PER_CALL = 500  # far below the command-line limit


@dataclass(frozen=True)
class Removal:
    job: Job
    bytes: int  # on its host: what removing its folder frees (would free, in a plan), as du counts it


@dataclass(frozen=True)
class Left:
    job: Job
    reason: str
    bytes: int = 0  # freed all the same (a folder partly removed: files the host's user may not remove)
    unreachable: bool = False  # its host did not answer: try again later


@dataclass
class Outcome:
    """A plan (what would go) or what prune did (what went), with the jobs left and why."""

    removals: list[Removal] = field(default_factory=list)
    left: list[Left] = field(default_factory=list)

    def bytes_by_host(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        items: list[Removal | Left] = [*self.removals, *self.left]
        for item in items:
            totals[item.job.host] = totals.get(item.job.host, 0) + item.bytes
        return totals


def candidates(store: Store, older_than_s: float | None = None, failed_only: bool = False) -> list[Job]:
    """The finished jobs prune would take: with older_than_s, those that ended (or, never started,
    were created) at least that long ago; with failed_only, those that did not succeed."""
    wanted = FAILED_STATES if failed_only else FINISHED
    cutoff = None if older_than_s is None else time.time() - older_than_s
    return [
        job
        for job in store.list_jobs()
        if job.state in wanted and (cutoff is None or (job.ended_at or job.created_at) <= cutoff)
    ]


def plan(store: Store, jobs: list[Job]) -> Outcome:
    """What removing these jobs would free, host by host; the jobs that would be left, and why."""
    return _each_host(store, jobs, dry_run=True)


def prune(store: Store, planned: Outcome) -> Outcome:
    """Remove the planned jobs' folders and, for each whose folder is gone, its rows."""
    done = _each_host(store, [removal.job for removal in planned.removals], dry_run=False)
    removed = []
    for removal in done.removals:
        if store.delete_finished_job(removal.job.id):
            removed.append(removal)
        else:  # it changed meanwhile (an instance recorded, say): its rows stay, its folder is gone
            done.left.append(Left(removal.job, "its folder is removed, but the store changed meanwhile: rows kept"))
    return Outcome(removed, planned.left + done.left)


def _each_host(store: Store, jobs: Iterable[Job], dry_run: bool) -> Outcome:
    outcome = Outcome()
    on_hosts = []
    for job in jobs:
        rented = store.instances(job.id)
        live = [instance.id for instance in rented if instance.gone_at is None]
        if live:
            outcome.left.append(
                Left(job, f"its instance {live[0]} is not confirmed gone: `runner down {job.id}` first")
            )
        elif rented or job.job_dir is None:
            outcome.removals.append(Removal(job, 0))  # its instance is gone, or it never reached a host
        else:
            on_hosts.append(job)
    for host_name, group in groupby(sorted(on_hosts, key=lambda job: job.host), key=lambda job: job.host):
        _on_host(host_name, list(group), dry_run, outcome)
    return outcome


def _on_host(host_name: str, jobs: list[Job], dry_run: bool, outcome: Outcome) -> None:
    """One host's share: its agent's answer per job; a host that fails leaves all its jobs, saying why."""
    try:
        host = job_host(host_name, jobs[0].job_dir)
        placed = [job for job in jobs if _in_its_jobs_folder(job, host.root())]
        answers = _remove_on_host(host, [job.id for job in placed], dry_run)
    except RunnerError as exc:  # unreachable, unknown, or its agent failed: the others go on
        reason = str(exc) if f"'{host_name}'" in str(exc) else f"host '{host_name}': {exc}"
        outcome.left += [Left(job, reason, unreachable=isinstance(exc, HostUnreachable)) for job in jobs]
        return
    misplaced = [job for job in jobs if job not in placed]
    outcome.left += [Left(job, f"its folder {job.job_dir} is not where runner keeps jobs") for job in misplaced]
    by_id = {job.id: job for job in placed}
    for answer in answers["removed"]:
        outcome.removals.append(Removal(by_id[answer["id"]], int(answer["bytes"])))
    for answer in answers["kept"]:
        reason = f"host '{host_name}' kept it: {answer['reason']}"
        outcome.left.append(Left(by_id[answer["id"]], reason, int(answer.get("bytes", 0))))


def _in_its_jobs_folder(job: Job, root: str) -> bool:
    return job.job_dir == JobLayout(f"{root}/jobs/{job.id}").job_dir


def _remove_on_host(host: Host, job_ids: list[str], dry_run: bool) -> dict[str, list[dict[str, Any]]]:
    """The agent's answers: removed (id, bytes) and kept (id, reason, bytes freed if partly removed)."""
    answers: dict[str, list[dict[str, Any]]] = {"removed": [], "kept": []}
    flag = ["--dry-run"] if dry_run else []
    for start in range(0, len(job_ids), IDS_PER_CALL):
        batch = job_ids[start : start + IDS_PER_CALL]
        answer = json.loads(run_agent(host, "remove-jobs", *flag, *batch, timeout=3600).check().text)
        answers["removed"] += answer["removed"]
        answers["kept"] += answer["kept"]
    return answers
