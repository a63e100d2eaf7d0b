"""OpenSSH: the transport for commands and bulk data wherever a local `ssh` exists.

One multiplexed connection per host (ControlMaster) carries every command of every runner process
for a minute after the last one, so a command costs a round trip, not a handshake. Host keys are
checked against the same files as paramiko's (StrictHostKeyChecking yes: never learned here).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from runner.base import paths
from runner.base.atomicfile import write_atomically
from runner.base.errors import RunnerError
from runner.base.paths import runner_known_hosts, user_known_hosts
from runner.hosts.base import Stdin
from runner.hosts.feed import StdinFeed
from runner.hosts.hostsfile import HostEntry
from runner.hosts.target import SSH_TARGET, without_port

SSH_FAILED = 255  # ssh's own exit code: the link or the login failed, not the remote command
CONTROL_PERSIST_SECONDS = 300  # a status or fetch within 5 minutes of the last one pays no handshake


def openssh_argv(entry: HostEntry) -> list[str]:
    """`ssh` with runner's config file, plus this host's port and key when hosts.yaml gives them."""
    argv = ["ssh", "-F", str(write_ssh_config()), "-o", f"ConnectTimeout={max(1, round(entry.connect_timeout))}"]
    match = SSH_TARGET.match(entry.ssh)
    if match and match["port"]:
        argv += ["-p", match["port"]]
    if entry.identity:
        argv += ["-i", str(Path(entry.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
    if entry.host_key_alias:
        argv += ["-o", f"HostKeyAlias={entry.host_key_alias}"]
    return argv


def interactive_argv(entry: HostEntry, remote_argv: Sequence[str]) -> list[str]:
    """`ssh -t` running remote_argv with this terminal attached. It uses a running master, but never
    becomes one: a master left behind would hold this terminal."""
    return [*openssh_argv(entry), "-o", "ControlMaster=no", "-t", without_port(entry.ssh), shlex.join(remote_argv)]


def write_ssh_config() -> Path:
    return _write_ssh_config(paths.config_dir())


@functools.cache
def _write_ssh_config(config_dir: Path) -> Path:
    """runner's ssh_config: its own security settings first (in ssh_config the first value wins), then
    the user's ~/.ssh/config. A file, not -o options, because ProxyJump hops are separate ssh processes
    that get the file (-F) but not the options: every hop is verified the same way."""
    lines = [
        "# Written by runner for the ssh commands it runs; rewritten by each runner process.",
        "Host *",
        "    BatchMode yes",  # never stop to ask for a password or passphrase
        "    StrictHostKeyChecking yes",  # keys are trusted through runner or ssh beforehand, never here
        f"    UserKnownHostsFile {_quoted(runner_known_hosts())} {_quoted(user_known_hosts())}",
        "    ServerAliveInterval 15",  # notice a dead link instead of hanging on it
        "    ServerAliveCountMax 4",
        "    ConnectTimeout 15",
        # AES-GCM runs on the CPU's AES instructions: on most machines it moves bulk data faster than
        # OpenSSH's default chacha20-poly1305; chacha20 stays acceptable for hosts without them.
        "    Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com",
        # One connection per host, shared by every command for a while after the last: a status or a
        # fetch pays one handshake, not one per command. Concurrent first commands race to be the
        # master; the losers run over their own connection, which is still correct.
        "    ControlMaster auto",
        f"    ControlPath {_quoted(control_dir() / '%C')}",
        f"    ControlPersist {CONTROL_PERSIST_SECONDS}",
    ]
    user_config = Path("~/.ssh/config").expanduser()
    if user_config.is_file():
        lines += ["Match all", f"Include {_quoted(user_config)}"]
    path = config_dir / "ssh_config"
    write_atomically(path, ("\n".join(lines) + "\n").encode(), mode=0o644)
    return path


def control_dir() -> Path:
    """A private folder for the master sockets, with a short path: a Unix socket path is limited to
    about 100 bytes, too few for RUNNER_HOME. One folder per config dir keeps separate setups apart."""
    tag = hashlib.sha256(str(paths.config_dir()).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"runner-ssh-{os.getuid()}-{tag}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
        # Whoever can reach the sockets can run commands on the hosts: the folder must be ours alone.
        raise RunnerError(f"{folder} is not a private folder of this user; remove it and try again")
    return folder


def run_openssh(
    argv: list[str], stdin: Stdin, timeout: float | None, stdout: BinaryIO | None = None
) -> tuple[int, bytes, str]:
    """Run an ssh command line: (exit code, stdout, stderr); stdout goes to the open file when given.
    stderr goes through a file, not a pipe: a master that stays in the background (ControlPersist)
    keeps the first command's stderr open, and reading a pipe to its end would wait for it to exit."""
    feed = StdinFeed(stdin)
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            argv, stdin=feed.arg, stdout=stdout if stdout is not None else subprocess.PIPE, stderr=errors
        )
        feed.started()
        try:
            output, _ = process.communicate(feed.input, timeout=timeout)
        except subprocess.TimeoutExpired:
            # Not communicate() again: a multiplexed client hands its stdout to the master, which
            # would keep the pipe open until its own link times out.
            process.kill()
            process.wait()
            if process.stdout:
                process.stdout.close()
            feed.abandon()
            raise
        feed.finish()
        errors.seek(0)
        return process.returncode, output or b"", errors.read().decode("utf-8", "replace")


def stop_master(base_argv: list[str], target: str) -> None:
    """Close the host's shared connection: the next command makes a fresh one (after a link hung)."""
    subprocess.run([*base_argv, "-O", "exit", target], capture_output=True, timeout=10, check=False)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _quoted(path: Path) -> str:
    # ssh_config splits values on spaces; double quotes keep a path with one whole.
    return f'"{path}"'
