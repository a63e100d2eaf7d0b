"""How results look: JSON documents for scripts, rich tables for people. No logic beyond layout."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.fetch import FetchResult
from runner.state import Job, JobState

STATE_STYLES = {
    JobState.RUNNING: "bold cyan",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "bold red",
    JobState.LOST: "bold red",
    JobState.STOPPED: "yellow",
}

# Piped output is read by grep and people's scripts: no 80-column squeeze when stdout is no terminal.
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def elapsed_seconds(job: Job) -> float | None:
    if job.started_at is None:
        return None
    return (job.ended_at or time.time()) - job.started_at


def job_document(job: Job) -> dict[str, Any]:
    elapsed = elapsed_seconds(job)
    return {
        "id": job.id,
        "name": job.name,
        "host": job.host,
        "state": job.state.value,
        "finished": job.finished,
        "exit_code": job.exit_code,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "ended_at": iso(job.ended_at),
        "elapsed_seconds": None if elapsed is None else round(elapsed, 1),
        "last_line": job.last_line,
        "message": job.message,
        "job_file": job.job_file,
        "job_dir": job.job_dir,
        "session": job.session,
    }


def jobs_table(jobs: list[Job]) -> Table:
    headers = ("JOB", "NAME", "HOST", "STATE", "ELAPSED", "EXIT")
    rows = [_job_row(job) for job in jobs]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for index, header in enumerate(headers):
        # On a narrow terminal the last line gives way, never the job id or state.
        widest = max([len(header)] + [len(row[index]) for row in rows])
        table.add_column(header, no_wrap=True, min_width=widest)
    table.add_column("LAST LINE", no_wrap=True, overflow="ellipsis")
    for job, row in zip(jobs, rows):
        state = Text(row[3], style=STATE_STYLES.get(job.state, ""))
        table.add_row(*row[:3], state, *row[4:])
    return table


def _job_row(job: Job) -> list[str]:
    shown = job.message if job.state in (JobState.FAILED, JobState.LOST) and job.message else job.last_line
    exit_code = "" if job.exit_code is None else str(job.exit_code)
    return [job.id, job.name, job.host, job.state.value, duration(elapsed_seconds(job)), exit_code, shown or ""]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def fetch_document(result: FetchResult) -> dict[str, Any]:
    return {
        "job": result.job_id,
        "artifact": result.artifact,
        "dest": str(result.dest),
        "files": [
            {"path": item.path, "size": item.size, "sha256": item.sha256, "copied": item.copied}
            for item in result.files
        ],
        "refused": result.refused,
        "bytes_copied": result.bytes_copied,
        "seconds": round(result.seconds, 3),
    }


def fetch_table(result: FetchResult) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("FILE", "SIZE", "SHA256", ""):
        table.add_column(column, no_wrap=True)
    for item in result.files:
        table.add_row(item.path, human_size(item.size), item.sha256[:16], "copied" if item.copied else "unchanged")
    return table


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
