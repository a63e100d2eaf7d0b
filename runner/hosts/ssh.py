"""A host reached over SSH: a home workstation, any box with sshd, or a rented instance.

Commands run on one kept-open connection (paramiko, via fabric for ssh_config and ProxyJump).
Folders move with rsync over OpenSSH where both ends have it, else over SFTP; either way only files
whose size or modification time differ are sent, so an unchanged dataset costs nothing.
"""

from __future__ import annotations

import posixpath
import shlex
import shutil
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import fabric
import paramiko

from runner.errors import HostUnreachable, NotFound, RunnerError
from runner.hosts.base import CommandResult, SyncStats
from runner.hosts.openssh import openssh_argv, rsync_push, stream_openssh
from runner.hosts.sftpsync import sftp_push
from runner.hosts.sshconnect import connect, describe
from runner.hostsfile import SshHostEntry

CHUNK_BYTES = 4 * 1024 * 1024

# Writes a file atomically from stdin in one round trip; the path comes as "$1", never inside the script.
WRITE_FILE_SCRIPT = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1.tmp.$$" && chmod "$2" "$1.tmp.$$" && mv -f -- "$1.tmp.$$" "$1"'


class SshHost:
    kind = "ssh"

    def __init__(self, name: str, entry: SshHostEntry, trust_new: bool = False) -> None:
        self.name = name
        self.entry = entry
        self.python = entry.python
        self.trust_new = trust_new
        self._connection: fabric.Connection | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._root: str | None = None
        self._remote_has_rsync: bool | None = None

    # connection

    def connection(self) -> fabric.Connection:
        if self._connection is None or not self._connection.is_connected:
            self.close()
            self._connection = connect(self.name, self.entry, self.trust_new)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection, self._sftp = None, None

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.connection().client.open_sftp()
        return self._sftp

    # the Host interface

    def root(self) -> str:
        if self._root is None:
            home = self.run(["sh", "-c", "cd && pwd"]).check().text.strip()
            self._root = posixpath.join(home, ".runner")
        return self._root

    def run(self, argv: Sequence[str], stdin: bytes | None = None, timeout: float | None = 60) -> CommandResult:
        transport = self.connection().transport
        try:
            channel = transport.open_session(timeout=self.entry.connect_timeout)
            channel.settimeout(timeout)
            channel.exec_command(shlex.join(argv))
            stderr = _read_in_background(channel.makefile_stderr("rb"))
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            stdout = channel.makefile("rb").read()
            code = channel.recv_exit_status()
            stderr.join()
        except (socket.timeout, paramiko.SSHException, EOFError, OSError) as error:
            self.close()
            raise HostUnreachable(f"host '{self.name}': connection lost running {argv[0]}: {describe(error)}") from None
        return CommandResult(list(argv), code, stdout, stderr.data)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.run(["sh", "-c", WRITE_FILE_SCRIPT, "sh", path, format(mode, "o")], stdin=data).check()

    def put_tree(self, source: Path, dest: str, exclude: Sequence[str]) -> SyncStats:
        self.run(["mkdir", "-p", "--", dest]).check()
        if self._uses_rsync():
            return rsync_push(self.openssh_target(), self.openssh_options(), source, dest, exclude)
        try:
            return sftp_push(self.sftp(), source, dest, exclude)
        except (OSError, paramiko.SSHException, EOFError) as error:
            raise self._link_error(error, f"pushing {source}") from None

    def read_into(self, path: str, offset: int, out: BinaryIO) -> None:
        # OpenSSH moves bulk data several times faster than paramiko, and writes it straight into the
        # file; SFTP is the fallback without a local ssh. `cat` outruns `tail -c +N`: tail is for resuming.
        if shutil.which("ssh"):
            remote = ["cat", "--", path] if offset == 0 else ["tail", "-c", f"+{offset + 1}", "--", path]
            argv = [*openssh_argv(self.entry), self.openssh_target(), shlex.join(remote)]
            stream_openssh(self.name, argv, path, out)
            return
        try:
            with self.sftp().open(path, "rb") as source:
                source.seek(offset)
                source.prefetch()
                for block in iter(lambda: source.read(CHUNK_BYTES), b""):
                    out.write(block)
        except FileNotFoundError:
            raise NotFound(f"host '{self.name}': {path} is gone") from None
        except (OSError, paramiko.SSHException, EOFError) as error:
            raise self._link_error(error, f"copying {path}") from None

    def _link_error(self, error: BaseException, doing: str) -> Exception:
        """A dropped link during SFTP surfaces as SSH or socket errors, or 'Socket is closed'; a local
        problem (a full disk, a permission) is reported as itself."""
        link_errors = (socket.timeout, ConnectionError, paramiko.SSHException, EOFError)
        if isinstance(error, link_errors) or str(error) == "Socket is closed":
            self.close()
            return HostUnreachable(f"host '{self.name}': connection lost {doing}: {describe(error)}")
        return RunnerError(f"host '{self.name}': {doing}: {describe(error)}")

    # OpenSSH, for rsync and interactive attach

    def openssh_target(self) -> str:
        return self.entry.ssh.rsplit(":", 1)[0] if _has_port(self.entry.ssh) else self.entry.ssh

    def openssh_options(self) -> list[str]:
        return openssh_argv(self.entry)[1:]

    def interactive_argv(self, remote_argv: Sequence[str]) -> list[str]:
        return [*openssh_argv(self.entry), "-t", self.openssh_target(), shlex.join(remote_argv)]

    def _uses_rsync(self) -> bool:
        if self.entry.sync != "auto":
            return self.entry.sync == "rsync"
        if self._remote_has_rsync is None:
            self._remote_has_rsync = self.run(["sh", "-c", "command -v rsync"]).returncode == 0
        return self._remote_has_rsync and shutil.which("rsync") is not None and shutil.which("ssh") is not None


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


def _has_port(target: str) -> bool:
    return target.rsplit(":", 1)[-1].isdigit() and not target.endswith("]")
