"""A host reached over SSH: a home workstation, any box with sshd, or a rented instance.

Commands and bulk data go through one of two transports, chosen once per host: OpenSSH where this
machine has `ssh` (opensshlink: one multiplexed connection per host serves every command, and it
moves data several times faster than paramiko), else paramiko (paramikorun, through fabric for
ssh_config and ProxyJump). paramiko is also the one that explains a refused connection precisely, so
both hold the host's ParamikoSession; it is imported only when needed, since importing it costs more
than a multiplexed command.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import BinaryIO, Protocol

from runner.base.errors import RunnerError, UsageError
from runner.hosts.base import CommandResult, Stdin
from runner.hosts.hostsfile import HostEntry
from runner.hosts.openssh import interactive_argv
from runner.hosts.sshsession import ParamikoSession
from runner.hosts.target import without_port

# Writes a file atomically from stdin in one round trip; the path comes as "$1", never inside the script.
WRITE_FILE_SCRIPT = (
    'mkdir -p -- "$(dirname -- "$1")" && cat > "$1.tmp.$$" && chmod "$2" "$1.tmp.$$" && mv -f -- "$1.tmp.$$" "$1"'
)
REMOTE_DOCKER_SOCKET = "/var/run/docker.sock"  # where Debian's, Ubuntu's and Docker's own packages put it
PORTS_TO_TRY = 100


class SshTransport(Protocol):
    """How an SshHost's commands, files and forwards travel: OpenSshTransport or ParamikoTransport."""

    name: str  # openssh or paramiko
    cannot_forward_sockets: str | None  # what a Unix socket's forward would need ("OpenSSH's ssh ..."), or None

    def run(self, argv: Sequence[str], stdin: Stdin, timeout: float | None) -> CommandResult: ...
    def run_into(self, argv: Sequence[str], out: BinaryIO) -> CommandResult: ...
    def read_into(self, path: str, offset: int, out: BinaryIO) -> None: ...
    def forward(self, local_port: int, remote_port: int) -> AbstractContextManager[None]: ...
    def forward_socket(self, remote_path: str, what: str) -> AbstractContextManager[tuple[str, Callable[[], str]]]: ...
    def prewarm(self) -> None: ...


class SshHost:
    kind = "ssh"
    shares_this_filesystem = False

    def __init__(self, name: str, entry: HostEntry, trust_new: bool = False) -> None:
        self.name = name
        self.entry = entry
        self.python = entry.python
        self._session = ParamikoSession(name, entry, trust_new)
        self._via = _transport(entry, self._session)
        self._root: str | None = None

    @property
    def trust_new(self) -> bool:
        """Record the host's key on first contact (--trust-new-host), instead of refusing an unknown one."""
        return self._session.trust_new

    @trust_new.setter
    def trust_new(self, value: bool) -> None:
        self._session.trust_new = value

    @property
    def transport(self) -> str:
        return self._via.name

    @property
    def provides_image(self) -> bool:
        return self.entry.provides_image

    @property
    def patience(self) -> float:
        """How long a short command may take before the host counts as unreachable."""
        return self.entry.connect_timeout + self.entry.retry_seconds

    def handshake(self) -> None:
        self._session.connection()  # paramiko's: it tells an unknown or changed key from a refused login

    def close(self) -> None:
        self._session.close()

    def prewarm(self) -> None:
        self._via.prewarm()

    def root(self) -> str:
        if self._root is None:
            home = self.run(["sh", "-c", "cd && pwd"], timeout=self.patience).check().text.strip()
            self._root = f"{home}/.runner"
        return self._root

    def learn_root(self, root: str) -> None:
        """The runner directory, as a job's directory (ROOT/jobs/ID) shows it: no round trip to ask."""
        self._root = self._root or root

    def run(self, argv: Sequence[str], stdin: Stdin = None, timeout: float | None = 60) -> CommandResult:
        return self._via.run(argv, stdin, timeout)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.run(["sh", "-c", WRITE_FILE_SCRIPT, "sh", path, format(mode, "o")], stdin=data).check()

    def run_into(self, argv: Sequence[str], out: BinaryIO) -> CommandResult:
        return self._via.run_into(argv, out)

    def read_into(self, path: str, offset: int, out: BinaryIO) -> None:
        self._via.read_into(path, offset, out)

    @contextmanager
    def forward(self, local_port: int, remote_port: int) -> Iterator[int]:
        port = free_local_port(local_port)
        with self._via.forward(port, remote_port):
            yield port

    @contextmanager
    def forward_socket(self, remote_path: str) -> Iterator[str]:
        with self._via.forward_socket(remote_path, remote_path) as (local, _):
            yield local

    @contextmanager
    def docker_engine(self) -> Iterator[str]:
        """The engine's socket there, forwarded to a private socket here over OpenSSH, with runner's
        ssh_config (see dockerlink). An engine's error inside the context says what the link said."""
        from runner.hosts.dockerlink import is_docker_error

        reason = self.why_no_docker_engine()
        if reason is not None:
            raise RunnerError(f"host '{self.name}': {reason}")
        with self._via.forward_socket(REMOTE_DOCKER_SOCKET, "its Docker engine") as (local, said):
            try:
                yield f"unix://{local}"
            except Exception as exc:
                if not is_docker_error(exc):
                    raise
                raise RunnerError(f"host '{self.name}': its Docker engine did not answer: {said() or exc}") from None

    def why_no_docker_engine(self) -> str | None:
        needs = self._via.cannot_forward_sockets
        return None if needs is None else f"image builds need {needs}"

    def interactive_argv(self, remote_argv: Sequence[str]) -> list[str]:
        return interactive_argv(self.entry, remote_argv)  # OpenSSH's, whichever transport runs commands

    def openssh_target(self) -> str:
        """The target as `ssh` takes it (for the benchmarks, which stop the shared connection)."""
        return without_port(self.entry.ssh)


def _transport(entry: HostEntry, session: ParamikoSession) -> SshTransport:
    if entry.transport != "paramiko" and shutil.which("ssh") is not None:
        from runner.hosts.opensshlink import OpenSshTransport

        return OpenSshTransport(session)
    from runner.hosts.paramikorun import ParamikoTransport  # imports paramiko: only for the hosts that use it

    return ParamikoTransport(session)


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
