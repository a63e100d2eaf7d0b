"""Every error runner raises on purpose, and the exit code each one means.

    RunnerError                 exit 1   something failed: a remote command, a job step
    ├── SpecError               exit 2   a job file or hosts file is wrong (file:line:col: field: message)
    ├── UsageError              exit 2   the command line asks for something that cannot be done
    ├── HostKeyRejected         exit 2   a host's SSH key is unknown (see --trust-new-host) or changed
    ├── PreflightFailed         exit 2   the job's dataset has errors (its first offenders as file:line)
    ├── HostUnreachable         exit 3   the host or API cannot be reached now; try again
    ├── NotFound                exit 4   no such job, host or artifact set
    └── CommandFailed           exit 1   a command on a host exited non-zero

The CLI catches RunnerError, prints its one-line message to stderr and exits with `exit_code`.
Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class RunnerError(Exception):
    exit_code = 1


class SpecError(RunnerError):
    exit_code = 2


class UsageError(RunnerError):
    exit_code = 2


class PreflightFailed(RunnerError):
    """The dataset check found errors: the job is refused before its training starts."""

    exit_code = 2


class HostUnreachable(RunnerError):
    exit_code = 3


class NotFound(RunnerError):
    exit_code = 4


class CommandFailed(RunnerError):
    """A command on a host exited non-zero; keeps what it printed for the message."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(f"{command_name(argv)} exited {returncode}: {last}")


class HostKeyRejected(RunnerError):
    """An unknown or changed host key. Refused, never retried: trusting a key is the user's decision."""

    exit_code = 2


def command_name(argv: Sequence[str]) -> str:
    """What a command is, in a word or two, for messages: `agent probe`, `tar`, `tmux`."""
    words = list(argv)
    if words[:2] == ["sh", "-c"] and len(words) > 4:
        words = words[4:]  # our `sh -c SCRIPT sh ARGS...` wrappers: the arguments say what it is
    for index, word in enumerate(words[:-1]):
        if word.endswith("/agent.py") and index > 0:  # `python3 -E -S .../agent.py COMMAND ...`
            return f"agent {words[index + 1]}"
    return words[0].rsplit("/", 1)[-1] if words else "a command"
