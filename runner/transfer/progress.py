"""Progress of a fetch or a push: a rich bar on a terminal, nothing otherwise (and nothing with
--json). The engines report to whatever reporter is active, so no signature carries it around."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class _Quiet:
    def add_total(self, nbytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass


QUIET = _Quiet()
_active: Any = QUIET  # shared by the threads of one transfer (the hasher thread reports too)


def current() -> Any:
    return _active


@contextmanager
def shown(label: str, enabled: bool, console: Console | None = None) -> Iterator[None]:
    """While the block runs, transfers report to a bar labelled label on console (when enabled): the
    command hands in its own console, since this layer knows none."""
    global _active
    if not enabled:
        yield
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        _active = _Bar(progress, progress.add_task(label, total=0))
        try:
            yield
        finally:
            _active = QUIET


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task = progress, task
        self.lock = threading.Lock()
        self.total = 0

    def add_total(self, nbytes: int) -> None:
        with self.lock:
            self.total += nbytes
            self.progress.update(self.task, total=self.total)

    def advance(self, nbytes: int) -> None:
        self.progress.update(self.task, advance=nbytes)
