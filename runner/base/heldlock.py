"""A lock a process holds for as long as it lives, its pid written inside: one keeper per job.

flock, not a pid file alone: the kernel drops the lock when its holder dies, however it dies
(SIGKILL, a reboot), so a stale file never blocks the next holder. The pid inside is for people and
tests ("who holds it?"); whether the lock is held is asked of the kernel, never read from the file.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

LOOK_TRIES, LOOK_PAUSE_S = 5, 0.1


class HeldLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting on a holder; False when another process holds it. A few quick
        tries: is_held's look takes the lock for an instant, and must not pass for a holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        for attempt in range(LOOK_TRIES):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == LOOK_TRIES - 1:
                    handle.close()
                    return False
                time.sleep(LOOK_PAUSE_S)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the flock
            self._handle = None

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def is_held(path: Path) -> bool:
    """Whether some process holds the lock at path now (a missing file: nobody does)."""
    try:
        handle = path.open("r")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # the shared lock taken here goes with the file's close


def holder_pid(path: Path) -> int | None:
    """The pid the holder wrote, while the lock is held; None when nobody holds it."""
    if not is_held(path):
        return None
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
