"""What the commands share: the store, opened for one command and closed after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from runner.base import paths

if TYPE_CHECKING:
    from runner.jobs.state import Store


@contextmanager
def open_store() -> Iterator[Store]:
    from runner.jobs.state import Store

    store = Store(paths.state_db())
    try:
        yield store
    finally:
        store.close()
