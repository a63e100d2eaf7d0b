"""TensorBoard on a host's loopback, reached from here through an SSH port forward."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from runner.errors import NotFound, RunnerError, UsageError
from runner.hosts import SshHost, get_host
from runner.state import Job

PORTS_TO_TRY = 100


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
    forward = host.connection().forward_local(
        local_port=local_port, remote_port=board["port"], remote_host="127.0.0.1", local_host="127.0.0.1"
    )
    with forward:
        _wait_listening(local_port)  # fabric binds in a thread: the URL is printed only once it answers
        yield f"http://127.0.0.1:{local_port}/"


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
