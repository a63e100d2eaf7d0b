"""The paramiko transport of an SSH host, for machines without an `ssh` program (or hosts.yaml
`transport: paramiko`): slower than OpenSSH for bulk data, but needs nothing outside Python.
It forwards TCP ports (paramikoforward) but no Unix socket, so it reaches no Docker engine."""

from __future__ import annotations

import shlex
import shutil
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import BinaryIO

import paramiko

from runner.base.errors import HostUnreachable, NotFound, RunnerError, command_name
from runner.hosts.base import CommandResult, Stdin
from runner.hosts.paramikoforward import LocalForward
from runner.hosts.sshconnect import describe
from runner.hosts.sshsession import ParamikoSession

CHUNK_BYTES = 4 * 1024 * 1024


class ParamikoTransport:
    name = "paramiko"
    cannot_forward_sockets: str | None

    def __init__(self, session: ParamikoSession) -> None:
        self._session = session
        # Unix sockets travel only over OpenSSH: paramiko has no client side of OpenSSH's streamlocal forwards.
        if shutil.which("ssh") is None:
            self.cannot_forward_sockets = "OpenSSH's ssh on this machine, and there is none on PATH"
        else:
            self.cannot_forward_sockets = "OpenSSH's ssh, and hosts.yaml sets this host's transport: paramiko"

    def run(self, argv: Sequence[str], stdin: Stdin, timeout: float | None) -> CommandResult:
        return run_over_paramiko(self._session, argv, stdin, timeout)

    def run_into(self, argv: Sequence[str], out: BinaryIO) -> CommandResult:
        return run_over_paramiko(self._session, argv, None, None, stdout=out)

    def read_into(self, path: str, offset: int, out: BinaryIO) -> None:
        read_over_sftp(self._session, path, offset, out)

    @contextmanager
    def forward(self, local_port: int, remote_port: int) -> Iterator[None]:
        transport = self._session.connection().transport
        assert transport is not None  # connection() returns an open connection
        with LocalForward(transport, local_port, remote_port):
            yield

    def forward_socket(self, remote_path: str, what: str) -> AbstractContextManager[tuple[str, Callable[[], str]]]:
        raise RunnerError(f"host '{self._session.name}': reaching {what} needs {self.cannot_forward_sockets}")

    def prewarm(self) -> None:
        """A paramiko handshake in this process would hold up the imports it should overlap: none."""


def run_over_paramiko(
    host: ParamikoSession, argv: Sequence[str], stdin: Stdin, timeout: float | None, stdout: BinaryIO | None = None
) -> CommandResult:
    """Run argv on the host; its output is returned, or appended to the open file stdout when given."""
    transport = host.connection().transport
    try:
        channel = transport.open_session(timeout=host.entry.connect_timeout)
        channel.settimeout(timeout)
        channel.exec_command(shlex.join(argv))
        stderr = _read_in_background(channel.makefile_stderr("rb"))
        if isinstance(stdin, bytes):
            channel.sendall(stdin)
        elif stdin is not None:
            for block in iter(lambda: stdin.read(CHUNK_BYTES), b""):
                channel.sendall(block)
        channel.shutdown_write()
        output = _drain(channel, stdout)
        code = channel.recv_exit_status()
        stderr.join()
    except (TimeoutError, paramiko.SSHException, EOFError, OSError) as error:
        host.close()
        raise HostUnreachable(
            f"host '{host.name}' unreachable: connection lost running {command_name(argv)}: {describe(error)}"
        ) from None
    return CommandResult(list(argv), code, output, stderr.data)


def _drain(channel: paramiko.Channel, out: BinaryIO | None) -> bytes:
    if out is None:
        return channel.makefile("rb").read()
    for block in iter(lambda: channel.recv(CHUNK_BYTES), b""):
        out.write(block)
    return b""


def read_over_sftp(host: ParamikoSession, path: str, offset: int, out: BinaryIO) -> None:
    try:
        with host.connection().client.open_sftp() as sftp, sftp.open(path, "rb") as source:
            source.seek(offset)
            source.prefetch()
            for block in iter(lambda: source.read(CHUNK_BYTES), b""):
                out.write(block)
    except FileNotFoundError:
        raise NotFound(f"host '{host.name}': {path} is gone") from None
    except (OSError, paramiko.SSHException, EOFError) as error:
        # A dropped link surfaces as SSH or socket errors, or 'Socket is closed'; a local problem
        # (a full disk, a permission) is reported as itself.
        link_errors = (socket.timeout, ConnectionError, paramiko.SSHException, EOFError)
        if isinstance(error, link_errors) or str(error) == "Socket is closed":
            host.close()
            raise HostUnreachable(f"host '{host.name}': connection lost copying {path}: {describe(error)}") from None
        raise RunnerError(f"host '{host.name}': copying {path}: {describe(error)}") from None


class _Collector(threading.Thread):
    def __init__(self, stream: paramiko.ChannelFile) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.data = b""

    def run(self) -> None:
        try:
            self.data = self.stream.read()
        except (OSError, paramiko.SSHException, EOFError):
            pass


def _read_in_background(stream: paramiko.ChannelFile) -> _Collector:
    # stderr drained beside stdout: a chatty command must not stall on a full stderr window.
    collector = _Collector(stream)
    collector.start()
    return collector
