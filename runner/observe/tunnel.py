"""TensorBoard on a host's loopback, reached from here through an SSH port forward."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runner.base.errors import NotFound, RunnerError, UsageError
from runner.hosts import SshHost, get_host
from runner.jobs.state import Job

PORTS_TO_TRY = 100
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
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def free_local_port(preferred: int) -> int:
    """preferred if nothing listens there, else the next free port above it."""
    for port in range(preferred, min(preferred + PORTS_TO_TRY, 65536)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise UsageError(f"no free local port in {preferred}..{preferred + PORTS_TO_TRY - 1}")


@contextmanager
def tensorboard_url(job: Job, preferred_port: int | None) -> Iterator[str]:
    """The URL of the job's TensorBoard, valid while the context is open."""
    board = job.spec.get("tensorboard")
    if not board:
        raise NotFound(f"job {job.id} has TensorBoard turned off (tensorboard: null in its job file)")
    host = get_host(job.host)
    if not isinstance(host, SshHost):
        yield f"http://127.0.0.1:{board['port']}/"  # it already serves on this machine's loopback
        return
    local_port = free_local_port(preferred_port or board["port"])
    if host.uses_openssh:  # OpenSSH knows every host key runner pins (a rented instance's by its alias)
        with _openssh_forward(host, local_port, board["port"]):
            yield f"http://127.0.0.1:{local_port}/"
        return
    with _paramiko_forward(host, local_port, board["port"]):
        yield f"http://127.0.0.1:{local_port}/"


@contextmanager
def _paramiko_forward(host: SshHost, local_port: int, remote_port: int) -> Iterator[None]:
    from runner.hosts.paramikoforward import LocalForward

    transport = host.connection().transport
    assert transport is not None  # connection() returns an open connection
    with LocalForward(transport, local_port, remote_port):
        yield


@contextmanager
def _openssh_forward(host: SshHost, local_port: int, remote_port: int) -> Iterator[None]:
    from runner.hosts.openssh import end_forward, forward_argv

    argv = forward_argv(host.entry, host.openssh_target(), f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}")
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(local_port, alive=lambda: process.poll() is None)
        yield
    finally:
        end_forward(process)


def _wait_listening(port: int, timeout: float = 10.0, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if not alive():
                raise RunnerError(f"the forward to local port {port} ended before it listened") from None
            if time.monotonic() > deadline:
                raise RunnerError(f"the forward on local port {port} did not start listening") from None
            time.sleep(0.05)
