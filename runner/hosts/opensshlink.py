"""The OpenSSH transport of an SSH host: commands, bulk data and forwards through the `ssh` program.

One multiplexed connection per host serves every command, and OpenSSH moves data several times
faster than paramiko. paramiko (the host's ParamikoSession) is opened only to explain a refused
connection precisely, and to record a new host's key when the user asked to trust it.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO

from runner.base.errors import HostUnreachable, NotFound, RunnerError, command_name
from runner.hosts.base import CommandResult, Stdin
from runner.hosts.feed import rewinder
from runner.hosts.openssh import SSH_FAILED, control_dir, last_line, openssh_argv, run_openssh, stop_master
from runner.hosts.opensshforward import ForwardNotReady, forwarding, listening
from runner.hosts.sshsession import ParamikoSession
from runner.hosts.target import without_port

# What ssh prints when it never got to run the command: safe to run it again once the cause is known.
NOT_STARTED = (
    "connect to host", "kex_exchange_identification", "banner exchange", "Could not resolve hostname",
    "Host key verification failed", "Permission denied", "Connection refused", "Connection timed out",
    "No route to host", "HOST IDENTIFICATION HAS CHANGED", "host key for", "Too many authentication failures",
)  # fmt: skip
PORT_FORWARD_SECONDS = 10.0
SOCKET_FORWARD_SECONDS = 20.0


class OpenSshTransport:
    name = "openssh"
    cannot_forward_sockets: str | None = None

    def __init__(self, session: ParamikoSession) -> None:
        self._session = session
        self._host, self._entry = session.name, session.entry
        self._warming: subprocess.Popen[bytes] | None = None

    def run(self, argv: Sequence[str], stdin: Stdin, timeout: float | None) -> CommandResult:
        if self._session.trust_new and not self._session.verified:
            self._session.connection()  # records a new host's key, as the user asked, before OpenSSH needs it
        rewind = rewinder(stdin)
        code, stdout, stderr = self._run(argv, stdin, timeout)
        if code == SSH_FAILED and not self._session.verified:
            self._session.connection()  # raises the precise reason: unknown or changed key, login, unreachable
            if rewind and any(sign in stderr for sign in NOT_STARTED):  # transient, and nothing ran: again
                rewind()
                code, stdout, stderr = self._run(argv, stdin, timeout)
        if code == SSH_FAILED:
            raise HostUnreachable(
                f"host '{self._host}' unreachable: connection lost running {command_name(argv)}: {last_line(stderr)}"
            )
        return CommandResult(list(argv), code, stdout, stderr.encode())

    def run_into(self, argv: Sequence[str], out: BinaryIO) -> CommandResult:
        out.flush()
        code, _, stderr = self._run(argv, None, None, stdout=out)
        if code == SSH_FAILED:
            raise HostUnreachable(
                f"host '{self._host}' unreachable: connection lost running {command_name(argv)}: {last_line(stderr)}"
            )
        return CommandResult(list(argv), code, b"", stderr.encode())

    def read_into(self, path: str, offset: int, out: BinaryIO) -> None:
        # `cat` outruns `tail -c +N`: tail is for resuming. Bytes go straight into the file.
        remote = ["cat", "--", path] if offset == 0 else ["tail", "-c", f"+{offset + 1}", "--", path]
        out.flush()
        code, _, stderr = self._run(remote, None, None, stdout=out)
        if code == SSH_FAILED:
            raise HostUnreachable(f"host '{self._host}': connection lost copying {path}: {last_line(stderr)}")
        if code != 0 and "No such file" in stderr:
            raise NotFound(f"host '{self._host}': {path} is gone")
        if code != 0:
            raise RunnerError(f"host '{self._host}': copying {path} failed: {last_line(stderr)}")

    @contextmanager
    def forward(self, local_port: int, remote_port: int) -> Iterator[None]:
        try:
            with forwarding(self._entry, f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}",
                            lambda: listening(local_port), PORT_FORWARD_SECONDS):  # fmt: skip
                yield
        except ForwardNotReady as error:
            if error.ended:
                raise RunnerError(f"the forward to local port {local_port} ended before it listened") from None
            raise RunnerError(f"the forward on local port {local_port} did not start listening") from None

    @contextmanager
    def forward_socket(self, remote_path: str, what: str) -> Iterator[tuple[str, Callable[[], str]]]:
        """A socket here leading to remote_path there, and what ssh said so far, for the context."""
        # The private folder of the SSH master sockets: whoever reaches this socket reaches remote_path.
        local = str(control_dir() / f"forward-{secrets.token_hex(6)}.sock")
        try:
            with forwarding(
                self._entry, f"{local}:{remote_path}", lambda: os.path.exists(local), SOCKET_FORWARD_SECONDS
            ) as said:
                yield local, said
        except ForwardNotReady as error:
            if error.ended:
                raise HostUnreachable(f"host '{self._host}': no link to {what}: {error.said or 'ssh exited'}") from None
            raise HostUnreachable(
                f"host '{self._host}': no link to {what} within {SOCKET_FORWARD_SECONDS:g}s"
            ) from None
        finally:
            try:
                os.unlink(local)
            except FileNotFoundError:
                pass

    def prewarm(self) -> None:
        """Start the shared connection's handshake now, in the background, so it overlaps whatever
        this process does before its first command (status: its imports)."""
        if self._warming is None and not self._session.trust_new:
            argv = [*openssh_argv(self._entry), without_port(self._entry.ssh), "true"]
            devnull = subprocess.DEVNULL
            self._warming = subprocess.Popen(argv, stdin=devnull, stdout=devnull, stderr=devnull)

    def _run(
        self, argv: Sequence[str], stdin: Stdin, timeout: float | None, stdout: BinaryIO | None = None
    ) -> tuple[int, bytes, str]:
        target = without_port(self._entry.ssh)
        self._wait_for_warming()
        try:
            return run_openssh([*openssh_argv(self._entry), target, shlex.join(argv)], stdin, timeout, stdout)
        except subprocess.TimeoutExpired:
            # A master whose link hung would keep every later command waiting: the next one starts afresh.
            stop_master(openssh_argv(self._entry), target)
            raise HostUnreachable(
                f"host '{self._host}' unreachable: no answer within {timeout:g}s running {command_name(argv)}"
            ) from None

    def _wait_for_warming(self) -> None:
        # A command started before the handshake ended would make a connection of its own.
        if self._warming is not None:
            try:
                self._warming.wait(timeout=self._entry.connect_timeout)
            except subprocess.TimeoutExpired:
                self._warming.kill()
                self._warming.wait()
            self._warming = None
