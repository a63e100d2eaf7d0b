"""logs: a job's train.log as the training printed it, whole, its last lines, or followed to the end."""

from __future__ import annotations

import time
from collections.abc import Callable

from runner.hosts import Host, get_host
from runner.layout import JobLayout
from runner.errors import HostUnreachable, NotFound
from runner.observe import refresh_one
from runner.state import Job, Store

FOLLOW_POLL_SECONDS = 1.0
TAIL_WINDOW_BYTES = 1024 * 1024  # `logs -f -n N` looks this far back for its N lines


def read_log(job: Job, last_lines: int | None) -> bytes:
    host, path = _log_location(job)
    argv = ["tail", "-n", str(last_lines), path] if last_lines is not None else ["cat", path]
    result = host.run(argv, timeout=300)
    return result.stdout if result.returncode == 0 else b""


def follow_log(
    store: Store, job: Job, last_lines: int | None, write: Callable[[bytes], None], notify: Callable[[str], None]
) -> Job:
    """Write the log, then what it gains, until the job has finished and nothing new came; returns the job.
    A host that stops answering is waited for (notify says so): the training goes on without us."""
    host, path = _log_location(job)
    offset = 0
    if last_lines is not None:
        # Measure first, then cut the window at that size: no byte is shown twice or skipped.
        offset = _size(host, path)
        window_start = max(0, offset - TAIL_WINDOW_BYTES)
        window = host.run(["tail", "-c", f"+{window_start + 1}", path], timeout=300).stdout[: offset - window_start]
        write(_last_lines(window, last_lines))
    while True:
        try:
            finished = job.finished
            chunk = host.run(["tail", "-c", f"+{offset + 1}", path], timeout=300).stdout
            if chunk:
                write(chunk)
                offset += len(chunk)
            if finished:
                return job
            time.sleep(FOLLOW_POLL_SECONDS)
            job = refresh_one(store, job)
        except HostUnreachable as error:
            notify(f"{error}; still waiting")
            time.sleep(FOLLOW_POLL_SECONDS * 5)


def _log_location(job: Job) -> tuple[Host, str]:
    if not job.job_dir:
        raise NotFound(f"job {job.id} never reached its host: it has no log")
    return get_host(job.host), JobLayout(job.job_dir).file("train.log")


def _last_lines(data: bytes, count: int) -> bytes:
    if count <= 0:
        return b""
    # Lines end at \n only, as for tail -n: \r progress updates stay inside their line.
    complete = data.endswith(b"\n")
    lines = data.split(b"\n")
    if complete:
        lines.pop()
    return b"\n".join(lines[-count:]) + (b"\n" if complete else b"")


def _size(host: Host, path: str) -> int:
    result = host.run(["wc", "-c", path])
    return int(result.text.split()[0]) if result.returncode == 0 else 0
