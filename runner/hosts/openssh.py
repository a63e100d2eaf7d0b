"""OpenSSH command lines (rsync's transport, interactive attach), with the same trust as paramiko's."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from runner.errors import HostUnreachable, RunnerError
from runner.hosts.base import SyncStats
from runner.hosts.keys import runner_known_hosts, user_known_hosts
from runner.hostsfile import SSH_TARGET, SshHostEntry

RSYNC_TRANSIENT_EXIT_CODES = {10, 12, 30, 35, 255}  # socket I/O, protocol stream, timeouts, ssh failed


def openssh_argv(entry: SshHostEntry) -> list[str]:
    """`ssh` and the options every runner ssh call carries, each for a reason."""
    argv = [
        "ssh",
        "-o", "BatchMode=yes",                 # never stop to ask for a password or passphrase
        "-o", "StrictHostKeyChecking=yes",     # keys are trusted through runner (--trust-new-host) or ssh, never here
        "-o", f"UserKnownHostsFile={_quoted(runner_known_hosts())} {_quoted(user_known_hosts())}",
        "-o", f"ConnectTimeout={max(1, round(entry.connect_timeout))}",
        "-o", "ServerAliveInterval=15",        # notice a dead link instead of hanging on it
        "-o", "ServerAliveCountMax=4",
    ]  # fmt: skip
    match = SSH_TARGET.match(entry.ssh)
    if match and match["port"]:
        argv += ["-p", match["port"]]
    if entry.identity:
        argv += ["-i", str(Path(entry.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
    return argv


def rsync_push(target: str, ssh_options: list[str], source: Path, dest: str, exclude: Sequence[str]) -> SyncStats:
    argv = [
        "rsync", "--archive", "--stats", "--partial",
        "--protect-args",                      # remote paths are not reinterpreted by the remote shell
        "--rsh", shlex.join(["ssh", *ssh_options]),
        *[f"--exclude={pattern}" for pattern in exclude],
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
    # ssh splits UserKnownHostsFile on spaces; a path with one must be double-quoted.
    return f'"{path}"' if " " in str(path) else str(path)
