"""The job's tmux session: argv builders (pure) and the two operations that use them.

Layout: train | monitor | gpu | cpu | tensorboard | shell. tmux runs each window's command
through `sh -c`, so every command is one string made with shlex.join from an argv list.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

from runner.base.errors import CommandFailed
from runner.hosts import Host, get_host
from runner.jobs.state import Job

WINDOWS = ("train", "monitor", "gpu", "cpu", "tensorboard", "shell")
# Wide enough that progress bars are not cut at 80 columns in train.log.
PANE_COLUMNS, PANE_ROWS = 200, 50


@dataclass(frozen=True)
class Window:
    name: str
    command: list[str]


def session_name(job_name: str, job_id: str) -> str:
    # tmux treats '.' and ':' in names as target separators.
    return "runner-" + re.sub(r"[^A-Za-z0-9_-]", "_", job_name) + "-" + job_id


def target(session: str, window: str | None = None) -> str:
    # '=' asks tmux for an exact session match: job "a" must never hit session "a-2".
    return f"={session}:{window}" if window else f"={session}"


def new_session_argv(session: str, first: Window, cwd: str) -> list[str]:
    return [
        "tmux", "new-session", "-d", "-s", session, "-n", first.name,
        "-x", str(PANE_COLUMNS), "-y", str(PANE_ROWS), "-c", cwd, shlex.join(first.command),
    ]  # fmt: skip


def new_window_argv(session: str, window: Window, cwd: str) -> list[str]:
    return ["tmux", "new-window", "-d", "-t", target(session), "-n", window.name, "-c", cwd, shlex.join(window.command)]


def has_session_argv(session: str) -> list[str]:
    return ["tmux", "has-session", "-t", target(session)]


def interrupt_argv(session: str) -> list[str]:
    """Ctrl-C in the train window, as a user at the keyboard would stop a training."""
    return ["tmux", "send-keys", "-t", target(session, "train"), "C-c"]


def kill_session_argv(session: str) -> list[str]:
    return ["tmux", "kill-session", "-t", target(session)]


def stop_container_argv(session: str) -> list[str]:
    """Removes the container of a job with an image (named as its session), running or not."""
    return ["sh", "-c", 'docker rm -f "$1" >/dev/null 2>&1 || true', "sh", session]


def attach_argv(job: Job, window: str) -> list[str]:
    """The command that attaches a terminal to the job's session, over SSH for remote hosts."""
    remote = ["tmux", "attach-session", "-t", target(job.session or "", window)]
    host = get_host(job.host)
    return host.interactive_argv(remote)


def start_argv(session: str, windows: list[Window], cwd: str) -> list[str]:
    """One tmux invocation for the whole layout: one round trip, and the server runs the list in
    order before any other client's command, so a job that ends at once cannot close its session
    before the other windows exist."""
    first, *rest = windows
    argv = new_session_argv(session, first, cwd)
    for window in rest:
        argv += [";", *new_window_argv(session, window, cwd)[1:]]
    return argv


# When several tmux clients start the first server at once, all but one can see it vanish under them.
SERVER_RACE_MESSAGES = ("server exited unexpectedly", "lost server")


class _ServerRace(Exception):
    pass


def start(host: Host, session: str, windows: list[Window], cwd: str) -> None:
    retrying = Retrying(
        retry=retry_if_exception_type(_ServerRace),
        stop=stop_after_attempt(5),
        wait=wait_random(0.05, 0.5),
        reraise=True,
    )
    try:
        retrying(_start_once, host, session, windows, cwd)
    except _ServerRace as race:
        raise race.args[0] from None


def _start_once(host: Host, session: str, windows: list[Window], cwd: str) -> None:
    result = host.run(start_argv(session, windows, cwd))
    stderr = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0 and any(text in stderr for text in SERVER_RACE_MESSAGES) and not is_alive(host, session):
        raise _ServerRace(CommandFailed(result.argv, result.returncode, stderr))
    result.check()


def is_alive(host: Host, session: str) -> bool:
    return host.run(has_session_argv(session)).returncode == 0
