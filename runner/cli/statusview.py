"""`runner status`'s screen: the jobs table, then each alert in a line, then hosts that did not
answer; `status -w` redraws it in place (rich Live) until Ctrl-C."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from runner.cli import render
from runner.jobs.state import JobState
from runner.observe.observe import Refreshed


def status_view(
    refreshed: Refreshed, with_problems: bool = False, api_waits: dict[str, float] | None = None
) -> RenderableType:
    """The screen; hosts that did not answer are listed in it only when asked (status -w): a plain
    status reports them once, on stderr. api_waits: since when each job's keeper waits for vast.ai."""
    unreachable = unreachable_since(refreshed)
    parts: list[RenderableType] = []
    if refreshed.jobs:
        parts.append(render.jobs_table(refreshed.jobs, unreachable, refreshed.costs, api_waits))
    else:
        parts.append(Text("no jobs yet: `runner submit JOBFILE` starts one"))
    for job in refreshed.jobs:
        if job.state is JobState.SUCCEEDED:
            continue  # a finished good run's old warnings are history, not news
        for alert in (job.snapshot or {}).get("alerts") or []:
            parts.append(Text(f"{job.id} {alert['kind']}: {alert['message']}", style="red"))
    for job_id, since in (api_waits or {}).items():
        clock = time.strftime("%H:%M", time.localtime(since))
        parts.append(Text(f"{job_id} vast.ai unreachable since {clock}: its keeper waits it out; the instance"
                          " may be billing", style="yellow"))  # fmt: skip
    for name, problem in refreshed.problems.items() if with_problems else ():
        parts.append(Text(f"host {name}: {problem.error}", style="yellow"))
    return Group(*parts)


def unreachable_since(refreshed: Refreshed) -> dict[str, float]:
    return {name: p.unreachable_since for name, p in refreshed.problems.items() if p.unreachable_since}


def watch(
    poll: Callable[[], Refreshed], interval: float, waits: Callable[[Refreshed], dict[str, float]] | None = None
) -> None:
    """Redraw until interrupted; a host that does not answer is shown in place and the watch goes on.
    waits: the jobs whose keeper waits for vast.ai, by id (see status_view)."""

    def view() -> RenderableType:
        refreshed = poll()
        return status_view(refreshed, with_problems=True, api_waits=waits(refreshed) if waits else None)

    with Live(view(), console=render.stdout, auto_refresh=False, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(view(), refresh=True)
        except KeyboardInterrupt:
            return
