"""The Host interface: everything runner does on a machine goes through these few operations.

Paths on a host are POSIX strings (the host may not be this machine); commands are argv lists,
never shell strings, so user data cannot be reinterpreted by a shell on the way.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from runner.base.errors import CommandFailed, command_name  # noqa: F401  (re-exported for the hosts)

# A command's input: bytes, or an open file that is read from its current position to its end.
Stdin = bytes | BinaryIO | None


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def check(self) -> CommandResult:
        if self.returncode != 0:
            raise CommandFailed(self.argv, self.returncode, self.stderr.decode("utf-8", "replace"))
        return self


@dataclass(frozen=True)
class SyncStats:
    """What a folder push moved: files and bytes actually sent (0 and 0 when nothing changed)."""

    method: str
    files_sent: int
    bytes_sent: int
    seconds: float


class Host(Protocol):
    name: str
    kind: str
    python: str  # the interpreter that runs the agent on the host
    # A path on this machine is readable on the host as it is (the host is this machine): a dataset
    # here is used in place, not copied.
    shares_this_filesystem: bool

    @property
    def provides_image(self) -> bool:
        """The host is itself a container of the job's image (a rented instance): a job with an image
        runs on it directly, with no container of its own to start or to stop."""
        ...

    @property
    def transport(self) -> str:
        """How commands and files reach it: local, openssh or paramiko (data, for display)."""
        ...

    def root(self) -> str:
        """The runner directory on the host (~/.runner on a remote host)."""
        ...

    @property
    def patience(self) -> float:
        """How long a short command may take before the host counts as unreachable."""
        ...

    def learn_root(self, root: str) -> None:
        """Take root as the runner directory, as a job's directory (ROOT/jobs/ID) shows it."""
        ...

    def run(self, argv: Sequence[str], stdin: Stdin = None, timeout: float | None = 60) -> CommandResult:
        """Run argv on the host and wait for it; never raises for a non-zero exit (see CommandResult.check)."""
        ...

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Replace path atomically with data, creating parent directories."""
        ...

    def run_into(self, argv: Sequence[str], out: BinaryIO) -> CommandResult:
        """Run argv with its stdout appended to the open file out (result.stdout is empty).
        Raises HostUnreachable when the link drops: what arrived stays in out."""
        ...

    def read_into(self, path: str, offset: int, out: BinaryIO) -> None:
        """Append the file's bytes from offset to its end to the open file out.
        Raises HostUnreachable when the link drops (the caller resumes), NotFound when it is gone."""
        ...

    def forward(self, local_port: int, remote_port: int) -> AbstractContextManager[int]:
        """Reach the host's 127.0.0.1:remote_port from this machine's loopback, for the context.
        Yields the local port to connect to: local_port, or the next free one above it when something
        listens there; remote_port itself where the host is this machine (nothing to forward)."""
        ...

    def forward_socket(self, remote_path: str) -> AbstractContextManager[str]:
        """Reach the host's Unix socket at remote_path from this machine, for the context; yields the
        path of the socket here (remote_path itself where the host is this machine)."""
        ...

    def docker_engine(self) -> AbstractContextManager[str | None]:
        """The address (a Docker SDK base_url) of the host's Docker engine, valid for the context; None
        for this machine's own engine, as the environment names it (DOCKER_HOST, else its socket)."""
        ...

    def why_no_docker_engine(self) -> str | None:
        """Why this machine cannot reach the host's Docker engine, or None: asked before a job exists."""
        ...

    def interactive_argv(self, remote_argv: Sequence[str]) -> list[str]:
        """The command that runs remote_argv on the host with this terminal attached."""
        ...

    def handshake(self) -> None:
        """Connect afresh now, so that a host key or a login is checked, not trusted from a shared link."""
        ...

    def prewarm(self) -> None:
        """Start connecting in the background, to overlap whatever this process does before its first
        command. Best effort: a failure is found, and explained, by the first real command."""
        ...

    def close(self) -> None:
        """Close what this process holds open to the host (a link shared with other processes stays)."""
        ...
