"""Commands and downloads over paramiko, for machines without an `ssh` program (or hosts.yaml
`transport: paramiko`): slower than OpenSSH for bulk data, but needs nothing outside Python."""

from __future__ import annotations

import shlex
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

import paramiko

from runner.base.errors import HostUnreachable, NotFound, RunnerError
from runner.hosts.base import CommandResult, Stdin, command_name
from runner.hosts.sshconnect import describe

if TYPE_CHECKING:
    from runner.hosts.ssh import SshHost

CHUNK_BYTES = 4 * 1024 * 1024


def run_over_paramiko(
    host: SshHost, argv: Sequence[str], stdin: Stdin, timeout: float | None, stdout: BinaryIO | None = None
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
    except (socket.timeout, paramiko.SSHException, EOFError, OSError) as error:
        host.close()
        raise HostUnreachable(f"host '{host.name}' unreachable: connection lost running {command_name(argv)}: {describe(error)}") from None
    return CommandResult(list(argv), code, output, stderr.data)


def _drain(channel: paramiko.Channel, out: BinaryIO | None) -> bytes:
    if out is None:
        return channel.makefile("rb").read()
    for block in iter(lambda: channel.recv(CHUNK_BYTES), b""):
        out.write(block)
    return b""


def read_over_sftp(host: SshHost, path: str, offset: int, out: BinaryIO) -> None:
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
