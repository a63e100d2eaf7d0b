"""Processes that outlive the runner command that starts them: background syncs, a rented job's keeper."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from runner.base import paths


def start_detached(argv: list[str], log: Path, first_line: str) -> int:
    """Start argv so that it outlives this process, its output appended to log; returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out, open(os.devnull, "rb") as nothing:
        out.write(f"{_stamp()} {first_line}\n".encode())
        out.flush()
        # Its own session: no terminal hangup or Ctrl-C of `runner submit` reaches it. Only the log and
        # /dev/null are inherited, so whoever reads submit's output (a pipe) is not kept waiting for it.
        process = subprocess.Popen(
            argv, stdin=nothing, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            cwd="/", env=_environment(),
        )  # fmt: skip
    return process.pid


def _environment() -> dict[str, str]:
    # It runs in / (so nothing it does can depend on where it was started): runner's own folders go
    # with it as absolute paths, whatever relative ones this process was given.
    folders = {"RUNNER_HOME": str(paths.runner_home()), "RUNNER_CONFIG_DIR": str(paths.config_dir())}
    return {**os.environ, **folders, "PYTHONUNBUFFERED": "1"}


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
