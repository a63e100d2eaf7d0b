"""Forwards over OpenSSH: one `ssh -N -L` process per forward, for a TCP port (TensorBoard) or a Unix
socket (the Docker engine) alike.

Each forward runs on a connection of its own, not the shared master: the forward must end with this
process, and a refused one must end ssh too (ExitOnForwardFailure), to be seen. OpenSSH knows every
host key runner pins (a rented instance's by its alias), as for commands.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from runner.hosts.hostsfile import HostEntry
from runner.hosts.openssh import last_line, openssh_argv
from runner.hosts.target import without_port

POLL_SECONDS = 0.05


class ForwardNotReady(Exception):
    """The forward never served: ssh exited first (ended), or the wait ran out. said: ssh's last line."""

    def __init__(self, ended: bool, said: str) -> None:
        super().__init__(said)
        self.ended = ended
        self.said = said


@contextmanager
def forwarding(
    entry: HostEntry, forward: str, ready: Callable[[], bool], seconds: float
) -> Iterator[Callable[[], str]]:
    """`ssh -L forward` to the host for the context, entered once ready() is true (ForwardNotReady if
    it never is). Yields what ssh has said so far: why it refused a forwarded connection, if it did."""
    # stderr in a file: it says why a forwarded connection was refused (no engine, no permission).
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            forward_argv(entry, forward), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors
        )
        said = functools.partial(_said, errors)
        try:
            _wait_ready(process, ready, seconds, said)
            yield said
        finally:
            end_forward(process)


def forward_argv(entry: HostEntry, forward: str) -> list[str]:
    return [
        *openssh_argv(entry), "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ExitOnForwardFailure=yes",
        "-o", "StreamLocalBindUnlink=yes", "-N", "-L", forward, without_port(entry.ssh),
    ]  # fmt: skip


def end_forward(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=3)  # a forward has nothing to flush: a slow exit is not worth waiting out
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def listening(port: int) -> bool:
    """Whether something accepts connections on this machine's 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _wait_ready(
    process: subprocess.Popen[bytes], ready: Callable[[], bool], seconds: float, said: Callable[[], str]
) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if process.poll() is not None:
            raise ForwardNotReady(True, said())
        if time.monotonic() > deadline:
            raise ForwardNotReady(False, said())
        time.sleep(POLL_SECONDS)


def _said(errors: BinaryIO) -> str:
    errors.seek(0)
    text = errors.read().decode("utf-8", "replace")
    return last_line(text) if text.strip() else ""
