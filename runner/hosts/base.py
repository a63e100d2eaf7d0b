"""The Host interface: everything runner does on a machine goes through these few operations.

Paths on a host are POSIX strings (the host may not be this machine); commands are argv lists,
never shell strings, so user data cannot be reinterpreted by a shell on the way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol, Union

from runner.base.errors import CommandFailed, command_name  # noqa: F401  (re-exported for the hosts)


# A command's input: bytes, or an open file that is read from its current position to its end.
Stdin = Union[bytes, BinaryIO, None]


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def check(self) -> "CommandResult":
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
    transport: str  # how commands and files reach it: local, openssh or paramiko

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
