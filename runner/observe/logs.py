"""logs: a job's train.log, whole, its last lines, or followed to the end; rendered as a terminal leaves it
(each \\r-updated progress bar in its final state) or raw, byte for byte as recorded.

Rendering happens here, on the controller, with the host's own renderer (runner.hostside.progress). It works
line by line (lines end at \\n, as for tail -n; \\r updates stay inside their line), so a rendered log has as
many lines as the raw one, a log is read in blocks rather than held whole, and `-n N` needs only a tail window.
The recorder lines of util-linux `script` (`Script started on ...`) are not removed: run.sh's `script` sends
its typescript to /dev/null and is quiet (-q), so a log that holds them had them printed by the job itself.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from runner.base import paths
from runner.base.atomicfile import replacing
from runner.base.errors import HostUnreachable, NotFound
from runner.hosts import Host, get_host
from runner.hosts.local import LocalHost
from runner.hostside.progress import ESCAPE, render_carriage_returns
from runner.jobs.layout import JobLayout
from runner.jobs.state import Job, Store
from runner.observe.observe import refresh_one

FOLLOW_POLL_SECONDS = 1.0
FIRST_WINDOW_BYTES = 256 * 1024  # `-n N` first reads this much of the log's end...
WINDOW_CAP_BYTES = 64 * 1024 * 1024  # ...and widens 4x at a time until N lines are in it, up to this
STREAM_BLOCK_BYTES = 1024 * 1024

Write = Callable[[bytes], None]


def show_log(job: Job, last_lines: int | None, write: Write, *, raw: bool = False, color: bool = True) -> None:
    """Write the log as it stands: rendered (colours kept when color), or raw, the bytes exactly as recorded.
    A bar still being updated is rendered in its current state."""
    host, path = _log_location(job)
    if raw:
        if last_lines is None:
            _stream(host, path, 0, write)
        else:
            result = host.run(["tail", "-n", str(last_lines), "--", path], timeout=300)
            write(result.stdout if result.returncode == 0 else b"")
        return
    renderer = LineRenderer(write, color)
    if last_lines is None:
        _stream(host, path, 0, renderer.feed)
    elif last_lines > 0:
        renderer.feed(_last_lines(_tail_window(host, path, last_lines), last_lines))
    renderer.finish()


def follow_log(
    store: Store,
    job: Job,
    last_lines: int | None,
    write: Write,
    notify: Callable[[str], None],
    *,
    raw: bool = False,
    color: bool = True,
) -> Job:
    """Write the log, then what it gains, until the job has finished and nothing new came; returns the job.
    Rendered, a line is written once its \\n has come: a bar being updated by \\r is held back and shows once,
    in its final state; what is held when the job ends is written then. Raw, bytes are written as they come.
    A host that stops answering is waited for (notify says so): the training goes on without us."""
    host, path = _log_location(job)
    renderer = None if raw else LineRenderer(write, color)
    sink = write if renderer is None else renderer.feed
    offset = 0
    if last_lines is not None:
        # Measure first, then cut the window at that size: no byte is shown twice or skipped.
        offset = _size(host, path)
        window = _tail_window(host, path, last_lines, end=offset) if last_lines > 0 else b""
        if renderer is None:
            sink(_last_lines(window, last_lines))
        else:
            # N complete lines; the line being written goes to the renderer, which holds it until it ends.
            complete = window.rfind(b"\n") + 1
            sink(_last_lines(window[:complete], last_lines) + window[complete:])

    def take(block: bytes) -> None:
        nonlocal offset
        offset += len(block)
        sink(block)

    while True:
        try:
            finished = job.finished
            _stream(host, path, offset, take)
            if finished:
                break
            time.sleep(FOLLOW_POLL_SECONDS)
            job = refresh_one(store, job)
        except HostUnreachable as error:
            notify(f"{error}; still waiting")
            time.sleep(FOLLOW_POLL_SECONDS * 5)
    if renderer is not None:
        renderer.finish()
    return job


def wants_color(choice: str, stream: TextIO) -> bool:
    """--color: always, never, or auto, as ls, grep and git do it: colours only when stream is a terminal,
    never when NO_COLOR is set (no-color.org), always when FORCE_COLOR is (as runner's other output does)."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty()


class LineRenderer:
    """Renders a log that arrives in pieces cut anywhere (inside a \\r\\n, a UTF-8 character, an escape code).
    Bytes are kept until their line's \\n is there, then the complete lines are rendered and written, so the
    result equals rendering the whole log at once. finish() writes the line still open, as it stands."""

    def __init__(self, write: Write, color: bool = True) -> None:
        self._write = write
        self._color = color
        self._held = bytearray()

    def feed(self, data: bytes) -> None:
        end = data.rfind(b"\n") + 1  # looks at the new bytes only: a long bar line is not searched again
        if not end:
            self._held += data
            return
        self._held += data[:end]
        block = bytes(self._held)
        self._held = bytearray(data[end:])
        self._write(render_log(block, self._color))

    def finish(self) -> None:
        if self._held:
            block = bytes(self._held)
            self._held.clear()
            self._write(render_log(block, self._color))


def render_log(data: bytes, color: bool = True) -> bytes:
    """Raw log bytes as a terminal leaves them; with color False, every escape code is removed too.
    Bytes that are not UTF-8 pass through unchanged."""
    text: str = render_carriage_returns(data.decode("utf-8", "surrogateescape"))
    if not color:
        text = ESCAPE.sub("", text)
    return text.encode("utf-8", "surrogateescape")


def saved_log(job_id: str) -> Path:
    """Where a rented job's train.log is kept here once the job ended: its instance goes, and the
    log lives beside the workdir, not in it, so no artifact fetch brings it."""
    return paths.runner_home() / "logs" / f"{job_id}.log"


def save_log(job: Job) -> int:
    """Copy the job's train.log from its host to saved_log (whole, or not at all); its size."""
    host, path = _log_location(job)
    target = saved_log(job.id)
    with replacing(target, mode=0o600) as out:  # private: what a training prints is its own
        host.read_into(path, 0, out)
    return target.stat().st_size


def _log_location(job: Job) -> tuple[Host, str]:
    if not job.job_dir:
        raise NotFound(f"job {job.id} never reached its host: it has no log")
    saved = saved_log(job.id)
    if saved.is_file():  # saved as the job ended, before its instance was destroyed
        return LocalHost(), str(saved)
    return get_host(job.host), JobLayout(job.job_dir).file("train.log")


def _stream(host: Host, path: str, offset: int, consume: Write) -> None:
    """Pass the file's bytes from offset to its end to consume, block by block as they arrive: a 1 GB log
    is never held whole. A file not there (yet) gives nothing. HostUnreachable comes after the bytes that
    did arrive were consumed, so the caller can resume at what it has."""
    read_end, write_end = os.pipe()
    failures: list[BaseException] = []

    def copy() -> None:
        try:
            with open(write_end, "wb") as out:
                host.read_into(path, offset, out)
        except BaseException as error:
            failures.append(error)

    reader = threading.Thread(target=copy, name="log-reader", daemon=True)
    reader.start()
    with open(read_end, "rb", buffering=0) as source:
        for block in iter(lambda: source.read(STREAM_BLOCK_BYTES), b""):
            consume(block)
    reader.join()
    if failures and not isinstance(failures[0], NotFound):
        raise failures[0]


def _tail_window(host: Host, path: str, count: int, end: int | None = None) -> bytes:
    """The end of the file (of its first `end` bytes when given), from a line start, with at least `count`
    complete lines where the file has them. The window widens 4x at a time up to WINDOW_CAP_BYTES; lines
    longer than that are cut: the oldest then shows from the cut on, which for a bar is its final state."""
    size = FIRST_WINDOW_BYTES
    while True:
        if end is None:
            data = host.run(["tail", "-c", str(size), "--", path], timeout=300).stdout
            whole = len(data) < size
        else:
            start = max(0, end - size)
            data = host.run(["tail", "-c", f"+{start + 1}", "--", path], timeout=300).stdout[: end - start]
            whole = start == 0
        if whole:
            return data
        first = data.find(b"\n") + 1  # the window's first line may have begun before it
        if data.count(b"\n", first) >= count:
            return data[first:]
        if size >= WINDOW_CAP_BYTES:
            cut = 0
            while cut < min(3, len(data)) and 0x80 <= data[cut] < 0xC0:  # not inside a UTF-8 character
                cut += 1
            return data[cut:]
        size *= 4


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
