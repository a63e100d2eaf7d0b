"""A command's stdin, in whichever form the caller has it: bytes, an open file (the child reads it
directly), or any reader with read(n) or write_to(fd) (pumped through a pipe by a thread, for data
made on the fly)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from runner.hosts.base import Stdin

CHUNK_BYTES = 1024 * 1024


def has_fileno(stdin: Stdin) -> bool:
    try:
        stdin.fileno()  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        return False
    return True


def rewinder(stdin: Stdin) -> Callable[[], object] | None:
    """How to give the same input to a second try, or None when it cannot be given again."""
    if stdin is None or isinstance(stdin, bytes):
        return lambda: None
    if getattr(stdin, "seekable", lambda: False)():
        start = stdin.tell()
        return lambda: stdin.seek(start)
    return None


class StdinFeed:
    """Popen(stdin=feed.arg), then feed.started(); communicate(feed.input); then feed.finish()."""

    def __init__(self, stdin: Stdin) -> None:
        self.input: bytes | None = stdin if isinstance(stdin, bytes) else None
        self._reader: Any = None
        self._read_end = self._write_end = -1
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if stdin is None:
            self.arg: Any = subprocess.DEVNULL
        elif isinstance(stdin, bytes):
            self.arg = subprocess.PIPE
        elif has_fileno(stdin):
            self.arg = stdin
        else:
            self._reader = stdin
            self._read_end, self._write_end = os.pipe()
            self.arg = self._read_end

    def started(self) -> None:
        if self._reader is None:
            return
        os.close(self._read_end)  # the child holds it now: if it dies, our writes fail instead of blocking
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def finish(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """The child was killed: stop pumping (the pipe is broken now) without waiting for the reader."""
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _pump(self) -> None:
        try:
            if hasattr(self._reader, "write_to"):
                self._reader.write_to(self._write_end)  # the reader knows a faster way (sendfile)
                return
            for block in iter(lambda: self._reader.read(CHUNK_BYTES), b""):
                write_all(self._write_end, block)
        except BrokenPipeError:
            pass  # the command ended early (a dropped link): its exit status tells what happened
        except BaseException as error:  # a local read error: reported by finish()
            self._error = error
        finally:
            os.close(self._write_end)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
