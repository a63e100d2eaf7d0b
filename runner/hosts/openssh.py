"""OpenSSH command lines (rsync's transport, interactive attach), with the same trust as paramiko's."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from runner import paths
from runner.atomicfile import write_atomically
from runner.errors import HostUnreachable, NotFound, RunnerError
from runner.hosts.base import SyncStats
from runner.hosts.keys import runner_known_hosts, user_known_hosts
from runner.hostsfile import SSH_TARGET, SshHostEntry
from runner.syncignore import rsync_patterns

RSYNC_TRANSIENT_EXIT_CODES = {10, 12, 30, 35, 255}  # socket I/O, protocol stream, timeouts, ssh failed


def openssh_argv(entry: SshHostEntry) -> list[str]:
    """`ssh` with runner's config file, plus this host's port and key when hosts.yaml gives them."""
    argv = ["ssh", "-F", str(write_ssh_config()), "-o", f"ConnectTimeout={max(1, round(entry.connect_timeout))}"]
    match = SSH_TARGET.match(entry.ssh)
    if match and match["port"]:
        argv += ["-p", match["port"]]
    if entry.identity:
        argv += ["-i", str(Path(entry.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
    return argv


def write_ssh_config() -> Path:
    """runner's ssh_config: its own security settings first (in ssh_config the first value wins), then
    the user's ~/.ssh/config. A file, not -o options, because ProxyJump hops are separate ssh processes
    that get the file (-F) but not the options: every hop is verified the same way."""
    lines = [
        "# Written by runner for the ssh commands it runs (rsync, attach); rewritten on every use.",
        "Host *",
        "    BatchMode yes",                        # never stop to ask for a password or passphrase
        "    StrictHostKeyChecking yes",            # keys are trusted through runner or ssh beforehand, never here
        f"    UserKnownHostsFile {_quoted(runner_known_hosts())} {_quoted(user_known_hosts())}",
        "    ServerAliveInterval 15",               # notice a dead link instead of hanging on it
        "    ServerAliveCountMax 4",
        "    ConnectTimeout 15",
        # AES-GCM runs on the CPU's AES instructions: on most machines it moves bulk data faster than
        # OpenSSH's default chacha20-poly1305; chacha20 stays acceptable for hosts without them.
        "    Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com",
    ]
    user_config = Path("~/.ssh/config").expanduser()
    if user_config.is_file():
        lines += ["Match all", f"Include {_quoted(user_config)}"]
    path = paths.config_dir() / "ssh_config"
    write_atomically(path, ("\n".join(lines) + "\n").encode(), mode=0o644)
    return path


def stream_openssh(host_name: str, argv: list[str], path: str, out: BinaryIO) -> None:
    """Run argv (an ssh command that prints a file) with its output going straight into out."""
    out.flush()
    completed = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, check=False)
    stderr, code = completed.stderr.decode("utf-8", "replace"), completed.returncode
    if code == 255:  # ssh's own failure: the link, not the command
        raise HostUnreachable(f"host '{host_name}': connection lost copying {path}: {_last_line(stderr)}")
    if code != 0 and "No such file" in stderr:
        raise NotFound(f"host '{host_name}': {path} is gone")
    if code != 0:
        raise RunnerError(f"host '{host_name}': copying {path} failed: {_last_line(stderr)}")


def rsync_push(target: str, ssh_options: list[str], source: Path, dest: str, exclude: Sequence[str]) -> SyncStats:
    argv = [
        "rsync", "--archive", "--stats",
        "--partial-dir=.rsync-partial",        # an interrupted file resumes from here, never under its name
        "--delay-updates",                     # files take their final names together, at the end
        "--protect-args",                      # remote paths are not reinterpreted by the remote shell
        "--rsh", shlex.join(["ssh", *ssh_options]),
        *[f"--exclude={pattern}" for pattern in rsync_patterns(exclude)],
        f"{source}/", f"{target}:{dest}/",
    ]  # fmt: skip
    started = time.monotonic()
    retrying = Retrying(
        retry=retry_if_exception_type(HostUnreachable),
        stop=stop_after_attempt(4),
        wait=wait_random_exponential(multiplier=1, max=10),
        reraise=True,
    )
    output = retrying(_run_rsync, argv)  # a rerun sends only what the broken one did not
    return SyncStats(
        method="rsync",
        files_sent=_stat(output, r"Number of regular files transferred: ([\d,]+)"),
        bytes_sent=_stat(output, r"Total transferred file size: ([\d,]+)"),
        seconds=time.monotonic() - started,
    )


def _run_rsync(argv: list[str]) -> str:
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    if completed.returncode in RSYNC_TRANSIENT_EXIT_CODES:
        raise HostUnreachable(f"rsync exited {completed.returncode}: {_last_line(completed.stderr)}")
    if completed.returncode != 0:
        raise RunnerError(f"rsync exited {completed.returncode}: {_last_line(completed.stderr)}")
    return completed.stdout


def _stat(output: str, pattern: str) -> int:
    match = re.search(pattern, output)
    return int(match[1].replace(",", "")) if match else 0


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _quoted(path: Path) -> str:
    # ssh_config splits values on spaces; double quotes keep a path with one whole.
    return f'"{path}"'
