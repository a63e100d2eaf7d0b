"""Artifact sets fetched while the job runs: the `--every` loop, and the background fetchers that run it
for the job file's `artifacts.NAME.sync_every`.

A background sync is nothing but `runner fetch NAME JOB --every INTERVAL --dest DEST`, started by
`runner submit` once the job runs, in a session of its own (a closed terminal does not end it), its
output appended to RUNNER_HOME/syncs/JOB-NAME.log and its pid in JOB-NAME.pid beside it (removed when
it ends). It ends by itself after a last fetch once the job has ended, however it ended (`runner stop`
included), so nothing needs to stop it. A host that does not answer never ends the sync of a running
job: the loop says so and looks again an interval later.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runner.base import paths
from runner.base.atomicfile import write_atomically
from runner.base.detached import start_detached
from runner.base.durations import format_duration
from runner.base.errors import HostUnreachable, NotFound, RunnerError
from runner.jobs.spec import ArtifactSync
from runner.jobs.state import Job, Store
from runner.observe.observe import refresh_one
from runner.transfer.fetch import FetchResult, fetch

# Consecutive failures (other than the host of a running job not answering) before a sync gives up:
# a fault that outlasts this many intervals needs the user, not another try.
MAX_FAILURES = 5

Note = Callable[[str], None]


@dataclass(frozen=True)
class Sync:
    """A background fetcher started for one artifact set."""

    artifact: str
    every_s: float
    dest: Path
    pid: int
    log: Path


def default_dest(job_id: str) -> Path:
    """Where `runner fetch` puts a set when not told: artifacts/JOB_ID in the current directory."""
    return Path("artifacts") / job_id


def sync_dest(sync: ArtifactSync, job_file: Path, job_id: str, cwd: Path | None = None) -> Path:
    """A sync's destination, absolute: `dest` is relative to the job file; none is fetch's default,
    in the directory `runner submit` ran in."""
    if sync.dest is None:
        return ((cwd or Path.cwd()) / default_dest(job_id)).resolve()
    return (job_file.resolve().parent / Path(sync.dest).expanduser()).resolve()


def log_path(job_id: str, artifact: str) -> Path:
    return paths.syncs_dir() / f"{job_id}-{artifact}.log"


def pid_path(job_id: str, artifact: str) -> Path:
    return paths.syncs_dir() / f"{job_id}-{artifact}.pid"


def start_syncs(store: Store, job: Job) -> list[Sync]:
    """Start one detached `runner fetch --every` per set of the job's; it outlives this process."""
    started = []
    for name, sync in job.spec.artifact_sync.items():
        try:
            started.append(start_sync(store, job, name, sync))
        except OSError as exc:  # RUNNER_HOME unwritable, no processes left: rare, and the job runs on
            every = format_duration(sync.every_s)
            raise RunnerError(
                f"job {job.id} is running, but the sync of {name} did not start ({exc});"
                f" `runner fetch {name} {job.id} --every {every}` does it by hand"
            ) from None
    return started


def start_sync(store: Store, job: Job, artifact: str, sync: ArtifactSync) -> Sync:
    dest = sync_dest(sync, Path(job.job_file), job.id, cwd=Path(job.resolved.submit_dir))
    every = format_duration(sync.every_s)
    argv = [sys.executable, "-m", "runner", "fetch", artifact, job.id, "--every", every, "--dest", str(dest)]
    log = log_path(job.id, artifact)
    pid = start_detached(argv, log, f"syncing {artifact} of job {job.id} every {every} to {dest}")
    write_atomically(pid_path(job.id, artifact), f"{pid}\n".encode(), mode=0o644)
    store.add_event(job.id, "sync", f"{artifact} every {every} to {dest} (pid {pid}, log {log})")
    return Sync(artifact, sync.every_s, dest, pid, log)


def fetch_every(
    store: Store, job: Job, artifact: str, dest: Path, every: float, fetched: Callable[[FetchResult], None], note: Note
) -> FetchResult:
    """Fetch the set every `every` seconds while the job runs, then once more after it ended; returns
    that last fetch. A host that does not answer is waited for while the job runs; other failures are
    tried again, up to MAX_FAILURES in a row (after the job ended, an unreachable host too)."""
    failures = 0
    try:
        first = True
        while True:
            try:
                result = fetch_locked(job, artifact, dest, note)
            except RunnerError as exc:
                if first and isinstance(exc, NotFound):
                    raise  # no such set, or the job never reached its host: no retry mends that
                failures = _failed(exc, failures, job, every, note)
            else:
                if job.finished:
                    return result
                failures = 0
                fetched(result)
            first = False
            while True:  # an interval later, where is the job? (it is waited for while its host is away)
                time.sleep(every)
                try:
                    job = refresh_one(store, job)
                    break
                except RunnerError as exc:
                    failures = _failed(exc, failures, job, every, note)
    finally:
        _forget_pid(job.id, artifact)


def _failed(exc: RunnerError, failures: int, job: Job, every: float, note: Note) -> int:
    """The failure count after exc; raises exc when the loop should give up."""
    waited_for = isinstance(exc, HostUnreachable) and not job.finished  # a dropped link never ends the sync
    if not waited_for:
        failures += 1
    if exc.exit_code == 2 or failures >= MAX_FAILURES:  # exit 2: a changed host key, bad input: the user's call
        raise exc
    note(f"{exc}; trying again in {format_duration(every)}")
    return failures


def fetch_locked(job: Job, artifact: str, dest: Path, note: Note) -> FetchResult:
    """One fetch, alone in its destination: two sets synced to one folder (artifacts/JOB_ID, say) take
    turns rather than write its manifest over each other."""
    with _dest_lock(dest, note, wait=True):
        return fetch(job, artifact, dest)


def fetch_unless_busy(job: Job, artifact: str, dest: Path, note: Note) -> FetchResult | None:
    """fetch_locked, or None at once when another fetch into dest is under way (it brings the same)."""
    with _dest_lock(dest, note, wait=False) as locked:
        return fetch(job, artifact, dest) if locked else None


@contextmanager
def _dest_lock(dest: Path, note: Note, wait: bool) -> Iterator[bool]:
    key = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:16]
    lock = paths.locks_dir() / f"fetch-{key}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            note(f"waiting for another fetch into {dest} to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield True  # the lock goes with the file's closing


def _forget_pid(job_id: str, artifact: str) -> None:
    """A background sync removes its pid file as it ends (an interactive --every loop finds another pid)."""
    path = pid_path(job_id, artifact)
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
