"""A host reached over SSH: a home workstation, any box with sshd, or a rented instance.

Commands and bulk data go through OpenSSH where this machine has `ssh`: one multiplexed connection
per host serves every command, and OpenSSH moves data several times faster than paramiko. paramiko
(through fabric, for ssh_config and ProxyJump) is the fallback without a local ssh, and the one that
explains a refused connection (unknown or changed host key, authentication, unreachable) precisely;
it is imported only when needed, since importing it costs more than a multiplexed command.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

from runner.base.errors import HostUnreachable, NotFound, RunnerError
from runner.hosts.base import CommandResult, Stdin, command_name
from runner.hosts.feed import rewinder
from runner.hosts.openssh import SSH_FAILED, last_line, openssh_argv, run_openssh, stop_master
from runner.hosts.hostsfile import HostEntry

if TYPE_CHECKING:
    import fabric

# Writes a file atomically from stdin in one round trip; the path comes as "$1", never inside the script.
WRITE_FILE_SCRIPT = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1.tmp.$$" && chmod "$2" "$1.tmp.$$" && mv -f -- "$1.tmp.$$" "$1"'

# What ssh prints when it never got to run the command: safe to run it again once the cause is known.
NOT_STARTED = (
    "connect to host", "kex_exchange_identification", "banner exchange", "Could not resolve hostname",
    "Host key verification failed", "Permission denied", "Connection refused", "Connection timed out",
    "No route to host", "HOST IDENTIFICATION HAS CHANGED", "host key for", "Too many authentication failures",
)  # fmt: skip


class SshHost:
    kind = "ssh"

    def __init__(self, name: str, entry: HostEntry, trust_new: bool = False) -> None:
        self.name = name
        self.entry = entry
        self.python = entry.python
        self.trust_new = trust_new
        self.uses_openssh = entry.transport != "paramiko" and shutil.which("ssh") is not None
        self._connection: fabric.Connection | None = None
        self._verified = False  # paramiko connected once in this process: keys and login are fine
        self._root: str | None = None
        self._warming: subprocess.Popen[bytes] | None = None

    @property
    def transport(self) -> str:
        return "openssh" if self.uses_openssh else "paramiko"

    @property
    def patience(self) -> float:
        """How long a short command may take before the host counts as unreachable."""
        return self.entry.connect_timeout + self.entry.retry_seconds

    # paramiko

    def connection(self) -> fabric.Connection:
        if self._connection is None or not self._connection.is_connected:
            from runner.hosts.sshconnect import connect

            self.close()
            self._connection = connect(self.name, self.entry, self.trust_new)
            self._verified = True
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None

    # the Host interface

    def root(self) -> str:
        if self._root is None:
            home = self.run(["sh", "-c", "cd && pwd"], timeout=self.patience).check().text.strip()
            self._root = f"{home}/.runner"
        return self._root

    def prewarm(self) -> None:
        """Start the shared connection's handshake now, in the background, so it overlaps whatever
        this process does before its first command (status: its imports). Best effort: a failure
        here is found, and explained, by the first real command."""
        if self.uses_openssh and self._warming is None and not self.trust_new:
            argv = [*openssh_argv(self.entry), self.openssh_target(), "true"]
            devnull = subprocess.DEVNULL
            self._warming = subprocess.Popen(argv, stdin=devnull, stdout=devnull, stderr=devnull)

    def learn_root(self, root: str) -> None:
        """The runner directory, as a job's directory (ROOT/jobs/ID) shows it: no round trip to ask."""
        self._root = self._root or root

    def run(self, argv: Sequence[str], stdin: Stdin = None, timeout: float | None = 60) -> CommandResult:
        if not self.uses_openssh:
            from runner.hosts.paramikorun import run_over_paramiko

            return run_over_paramiko(self, argv, stdin, timeout)
        if self.trust_new and not self._verified:
            self.connection()  # records a new host's key, as the user asked, before OpenSSH needs it
        rewind = rewinder(stdin)
        code, stdout, stderr = self._run_openssh(argv, stdin, timeout)
        if code == SSH_FAILED and not self._verified:
            self.connection()  # raises the precise reason: unknown or changed key, login, unreachable
            if rewind and any(sign in stderr for sign in NOT_STARTED):  # transient, and nothing ran: again
                rewind()
                code, stdout, stderr = self._run_openssh(argv, stdin, timeout)
        if code == SSH_FAILED:
            raise HostUnreachable(f"host '{self.name}' unreachable: connection lost running {command_name(argv)}: {last_line(stderr)}")
        return CommandResult(list(argv), code, stdout, stderr.encode())

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.run(["sh", "-c", WRITE_FILE_SCRIPT, "sh", path, format(mode, "o")], stdin=data).check()

    def run_into(self, argv: Sequence[str], out: BinaryIO) -> CommandResult:
        if not self.uses_openssh:
            from runner.hosts.paramikorun import run_over_paramiko

            return run_over_paramiko(self, argv, None, None, stdout=out)
        out.flush()
        code, _, stderr = self._run_openssh(argv, None, None, stdout=out)
        if code == SSH_FAILED:
            raise HostUnreachable(f"host '{self.name}' unreachable: connection lost running {command_name(argv)}: {last_line(stderr)}")
        return CommandResult(list(argv), code, b"", stderr.encode())

    def read_into(self, path: str, offset: int, out: BinaryIO) -> None:
        if not self.uses_openssh:
            from runner.hosts.paramikorun import read_over_sftp

            read_over_sftp(self, path, offset, out)
            return
        # `cat` outruns `tail -c +N`: tail is for resuming. Bytes go straight into the file.
        remote = ["cat", "--", path] if offset == 0 else ["tail", "-c", f"+{offset + 1}", "--", path]
        out.flush()
        code, _, stderr = self._run_openssh(remote, None, None, stdout=out)
        if code == SSH_FAILED:
            raise HostUnreachable(f"host '{self.name}': connection lost copying {path}: {last_line(stderr)}")
        if code != 0 and "No such file" in stderr:
            raise NotFound(f"host '{self.name}': {path} is gone")
        if code != 0:
            raise RunnerError(f"host '{self.name}': copying {path} failed: {last_line(stderr)}")

    # OpenSSH

    def _run_openssh(
        self, argv: Sequence[str], stdin: Stdin, timeout: float | None, stdout: BinaryIO | None = None
    ) -> tuple[int, bytes, str]:
        command = [*openssh_argv(self.entry), self.openssh_target(), shlex.join(argv)]
        self._wait_for_warming()
        try:
            return run_openssh(command, stdin, timeout, stdout)
        except subprocess.TimeoutExpired:
            # A master whose link hung would keep every later command waiting: the next one starts afresh.
            stop_master(openssh_argv(self.entry), self.openssh_target())
            raise HostUnreachable(f"host '{self.name}' unreachable: no answer within {timeout:g}s running {command_name(argv)}") from None

    def _wait_for_warming(self) -> None:
        # A command started before the handshake ended would make a connection of its own.
        if self._warming is not None:
            try:
                self._warming.wait(timeout=self.entry.connect_timeout)
            except subprocess.TimeoutExpired:
                self._warming.kill()
                self._warming.wait()
            self._warming = None

    def openssh_target(self) -> str:
        return self.entry.ssh.rsplit(":", 1)[0] if _has_port(self.entry.ssh) else self.entry.ssh

    def interactive_argv(self, remote_argv: Sequence[str]) -> list[str]:
        # Uses a running master, but never becomes one: a master left behind would hold this terminal.
        return [*openssh_argv(self.entry), "-o", "ControlMaster=no", "-t", self.openssh_target(), shlex.join(remote_argv)]


def _has_port(target: str) -> bool:
    return target.rsplit(":", 1)[-1].isdigit() and not target.endswith("]")
