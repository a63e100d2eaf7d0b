"""TensorBoard on a host's loopback, reached from here through the host's port forward."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runner.base.errors import NotFound
from runner.hosts import get_host
from runner.jobs.state import Job

# Each ends a forward as Ctrl-C does: `kill PID` or a closed terminal must not leave ssh forwarding.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stopped(BaseException):
    """Raised by the stop signals' handler: a BaseException, as KeyboardInterrupt is, so that no
    library's `except Exception` on the way can swallow it."""


def _stop(signum: int, frame: object) -> None:
    for each in STOP_SIGNALS:  # a second Ctrl-C must not cut short the cleanup the first one began
        signal.signal(each, signal.SIG_IGN)
    raise _Stopped


def forward_until_stopped(job: Job, preferred_port: int | None, announce: Callable[[str], None]) -> None:
    """Forward the job's TensorBoard, announce its URL, and hold the forward until a stop signal.

    runner's own handlers, not the inherited dispositions: a non-interactive shell starts `cmd &` with
    SIGINT ignored, and Python then never turns it into KeyboardInterrupt. ssh, started after them,
    gets the default dispositions back at exec instead of an inherited SIG_IGN."""
    previous: dict[int, Any] = {}
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, _stop)
        with tensorboard_url(job, preferred_port) as url:
            announce(url)
            while True:
                # Short sleeps, not signal.pause(): a signal that lands on another thread (paramiko's),
                # or just before pause() is entered, would not wake it. Python runs the handler in
                # this thread once the sleep ends, so a stop waits a second at most.
                time.sleep(1)
    except _Stopped:
        return
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def tensorboard_url(job: Job, preferred_port: int | None) -> Iterator[str]:
    """The URL of the job's TensorBoard, valid while the context is open."""
    board = job.spec.tensorboard
    if not board:
        raise NotFound(f"job {job.id} has TensorBoard turned off (tensorboard: null in its job file)")
    host = get_host(job.host)
    with host.forward(preferred_port or board.port, board.port) as port:
        yield f"http://127.0.0.1:{port}/"
