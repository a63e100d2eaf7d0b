"""What `runner prune` shows: the jobs it would remove (before it asks), what it freed, what it left."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from runner.cli.render import human_size, iso

if TYPE_CHECKING:
    from runner.pipeline.prune import Outcome


def plan_table(planned: Outcome) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("JOB", "NAME", "HOST", "STATE", "ENDED", "SIZE"):
        table.add_column(column, no_wrap=True)
    for removal in planned.removals:
        job = removal.job
        ended = iso(job.ended_at or job.created_at) or ""
        table.add_row(job.id, job.name, job.host, job.state.value, ended, human_size(removal.bytes))
    return table


def by_host(outcome: Outcome) -> str:
    """'200.0 MiB on box, 4.0 KiB on local'"""
    return ", ".join(f"{human_size(size)} on {host}" for host, size in sorted(outcome.bytes_by_host().items()))


def question(planned: Outcome) -> str:
    count = len(planned.removals)
    return f"remove {count} job{'s' if count != 1 else ''} ({by_host(planned)}) and their records?"


def freed_lines(done: Outcome) -> list[str]:
    count = len(done.removals)
    return [f"{count} job{'s' if count != 1 else ''} removed; freed {by_host(done) or 'nothing'}", *left_lines(done)]


def left_lines(outcome: Outcome) -> list[str]:
    return [f"left {left.job.id} ({left.job.name} on {left.job.host}): {left.reason}" for left in outcome.left]


def document(done: Outcome) -> dict[str, Any]:
    return {
        "removed": [
            {"id": item.job.id, "name": item.job.name, "host": item.job.host, "state": item.job.state.value,
             "bytes": item.bytes}
            for item in done.removals
        ],
        "left": [
            {"id": item.job.id, "name": item.job.name, "host": item.job.host, "reason": item.reason,
             "bytes": item.bytes}
            for item in done.left
        ],
        "freed_bytes": done.bytes_by_host(),
    }  # fmt: skip
