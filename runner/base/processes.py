"""Who a process is, and whether it still lives.

A pid alone is not an identity: pids are reused, and after a reboot the same pid names a stranger.
A process is named by its pid and its start: the boot it belongs to (the kernel's boot id) and its
start time in clock ticks since that boot (/proc/PID/stat field 22). Together they name one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
BOOT_ID = PROC / "sys/kernel/random/boot_id"
STARTTIME_FIELD = 22  # /proc/PID/stat, counting from 1 as proc(5) does
STATE_FIELD = 3


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start: str  # "BOOT_ID:STARTTIME", or "" where this system has no /proc (then only the pid is checked)


def identity(pid: int | None = None) -> ProcessIdentity | None:
    """The identity of process pid (this process by default); None if it does not run."""
    pid = os.getpid() if pid is None else pid
    fields = _stat_fields(pid)
    if fields is None:
        return ProcessIdentity(pid, "") if _signalable(pid) and not PROC.is_dir() else None
    if fields[STATE_FIELD - 1] in ("Z", "X"):  # exited, not yet reaped by its parent: it does nothing more
        return None
    return ProcessIdentity(pid, f"{_boot_id()}:{fields[STARTTIME_FIELD - 1]}")


def alive(pid: int | None, start: str | None) -> bool:
    """Whether the process recorded as (pid, start) still runs: the same pid, started at the same
    moment of the same boot. A record without a start is judged on the pid alone."""
    if not pid:
        return False
    now = identity(pid)
    if now is None:
        return False
    return not start or not now.start or now.start == start


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields, numbered as proc(5) numbers them from 1; None if there is no such process.
    The command name (field 2) may hold spaces and parentheses: it is cut at the last ')'."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    head, _, tail = text.rpartition(")")
    if not head:
        return None
    pid_field, _, comm = head.partition(" (")
    return [pid_field, comm, *tail.split()]


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _signalable(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True
