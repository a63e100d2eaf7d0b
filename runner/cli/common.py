"""What the commands share: the store, opened for one command and closed after it; a job looked up by
reference, with its keeper started again where it is gone; the duration option type."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from runner.base import paths
from runner.base.durations import parse_duration

if TYPE_CHECKING:
    from runner.jobs.state import Job, Store


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.2 on, and 8.1 is allowed
    """30s, 10m, 1h or plain seconds (runner.durations, shared with the job file)."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


@contextmanager
def open_store() -> Iterator[Store]:
    from runner.jobs.state import Store

    store = Store(paths.state_db())
    try:
        yield store
    finally:
        store.close()


def find_job(store: Store, ref: str | None) -> Job:
    """The job by id, id prefix or name; a rented job whose keeper is gone (killed, a reboot) gets it
    back from whichever runner command looks at it next, not only from `runner status`."""
    job = store.find(ref)
    revive_keepers(store, [job])
    return job


def revive_keepers(store: Store, jobs: list[Job]) -> None:
    """Start the keeper again of each rented job here that needs one and has none; one line each."""
    from runner.cli import render
    from runner.pipeline.keepers import ensure_keepers

    for job_id, pid in ensure_keepers(store, jobs):
        render.stderr.print(f"runner: job {job_id}: its keeper was gone; started again (pid {pid})")
