"""`runner status`: every job against its host (the reconciler), a gone keeper started again, then
the table, the JSON document, or either redrawn until Ctrl-C."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from runner.base.errors import RunnerError
from runner.cli.common import DURATION, open_store, revive_keepers
from runner.cli.hosts import JSON_OPTION

if TYPE_CHECKING:
    from runner.jobs.state import Job
    from runner.observe.observe import Refreshed


@click.command()
@click.argument("job_ref", metavar="[JOB]", required=False)
@click.option("-w", "--watch", is_flag=True, help="Refresh in place until Ctrl-C (with --json: one document per line).")
@click.option("--interval", type=DURATION, default=2.0, show_default=True, help="Seconds between refreshes with -w.")
@JSON_OPTION
def status(job_ref: str | None, watch: bool, interval: float, as_json: bool) -> None:
    """Show all jobs, or one JOB (id, id prefix or name): progress, GPUs, alerts."""
    with open_store() as store:
        _prewarm_hosts([store.find(job_ref)] if job_ref else store.list_jobs())  # handshakes overlap the imports
        from runner.cli import render
        from runner.pipeline.keepers import api_waits
        from runner.pipeline.reconcile import reconcile

        def poll() -> Refreshed:
            # Every job against its host: a job whose submit died is finished or found running here.
            refreshed = reconcile(store, [store.find(job_ref)] if job_ref else store.list_jobs())
            for note in refreshed.notes:
                render.stderr.print(f"runner: {note}", markup=False)
            # A rented job whose keeper is gone (killed, a reboot) gets it back: it alone tears down.
            revive_keepers(store, refreshed.jobs)
            return refreshed

        def waits(refreshed: Refreshed) -> dict[str, float]:
            return api_waits(store, refreshed.jobs)

        if watch:
            _watch_status(poll, interval, as_json, bool(job_ref), waits)
            return
        refreshed = poll()
        waiting = waits(refreshed)
    if as_json:
        render.print_json(_status_document(refreshed, bool(job_ref), waiting))
    else:
        from runner.cli.statusview import status_view

        render.stdout.print(status_view(refreshed, api_waits=waiting))
    if refreshed.problems:
        for problem in refreshed.problems.values():
            render.stderr.print(f"runner: {problem.error}", markup=False)
        sys.exit(max(problem.error.exit_code for problem in refreshed.problems.values()))


def _prewarm_hosts(jobs: list[Job]) -> None:
    """Start the SSH handshakes with the hosts status will probe; problems are for the probe to report."""
    from runner.hosts import get_host
    from runner.jobs.state import JobState

    # The hosts of running jobs, and of placed ones whose submit is gone (the reconciler asks them too).
    probed = [job for job in jobs if job.job_dir and not job.finished and
              (job.state is JobState.RUNNING or not job.owner_alive())]  # fmt: skip
    for name in sorted({job.host for job in probed}):
        try:
            host = get_host(name)
        except RunnerError:
            continue
        host.prewarm()


def _status_document(refreshed: Refreshed, one_job: bool, api_waits: dict[str, float]) -> dict[str, Any]:
    from runner.cli import render
    from runner.cli.statusview import unreachable_since

    unreachable = unreachable_since(refreshed)
    documents = [
        render.job_document(job, unreachable.get(job.host), refreshed.costs.get(job.id), api_waits.get(job.id))
        for job in refreshed.jobs
    ]
    return documents[0] if one_job else {"jobs": documents}


def _watch_status(
    poll: Callable[[], Refreshed], interval: float, as_json: bool, one_job: bool,
    waits: Callable[[Refreshed], dict[str, float]],
) -> None:  # fmt: skip
    if not as_json:
        from runner.cli.statusview import watch

        watch(poll, interval, waits)
        return
    try:
        while True:
            refreshed = poll()
            print(json.dumps(_status_document(refreshed, one_job, waits(refreshed))), flush=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        return
