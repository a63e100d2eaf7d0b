"""Where things live on a host, under its runner directory (see DESIGN.md, "On the host")."""

from __future__ import annotations

import io
import posixpath
import tarfile
from dataclasses import dataclass
from typing import BinaryIO

from runner import hostside
from runner.base.errors import RunnerError
from runner.hosts.base import CommandResult, Host, Stdin
from runner.hosts.feed import rewinder

AGENT = "agent.py"
AGENT_MISSING = 86  # the exit code of run_agent's check, distinct from the agent's own (0, 1, 2)
WINDOW_SCRIPT = "window.sh"

# $1 the folder, $2 the host's Python, $3 "replace" or nothing. Unpacks the tar on stdin into a new
# folder and renames it into place, unless a folder of this version is there already: one round trip,
# and a running job's files are never touched. "replace" swaps out a folder of this name that answered
# another protocol (its files are not this version's, whatever its name says). Then, only when other
# versions' folders are there, this version's agent removes those no running job uses (best effort:
# the install stands either way).
INSTALL_SCRIPT = """
if [ "$3" = replace ] || [ ! -d "$1" ]; then
  mkdir -p -- "$(dirname -- "$1")" && temporary="$1.tmp.$$" && mkdir -- "$temporary" &&
  tar -x -C "$temporary" -f - || exit 1
  if [ "$3" = replace ] && [ -d "$1" ]; then mv -T -- "$1" "$1.old.$$" || exit 1; fi
  mv -T -- "$temporary" "$1" 2>/dev/null || { rm -rf -- "$temporary"; [ -d "$1" ] || exit 1; }
  rm -rf -- "$1.old.$$"
fi
for other in "$(dirname -- "$1")"/hostside-*; do
  if [ "$other" != "$1" ]; then "$2" -E -S "$1/agent.py" prune >/dev/null 2>&1; exit 0; fi
done
"""


@dataclass(frozen=True)
class JobLayout:
    job_dir: str

    @classmethod
    def on(cls, host: Host, job_id: str) -> JobLayout:
        return cls(posixpath.join(host.root(), "jobs", job_id))

    def file(self, name: str) -> str:
        return posixpath.join(self.job_dir, name)

    @property
    def work(self) -> str:
        return self.file("work")

    @property
    def root(self) -> str:
        """The host's runner directory: job directories are ROOT/jobs/ID."""
        return posixpath.dirname(posixpath.dirname(self.job_dir))


def job_host(host_name: str, job_dir: str | None) -> Host:
    """The host of a placed job, knowing its runner directory from the job's: no round trip to ask."""
    from runner.hosts import get_host

    host = get_host(host_name)
    if job_dir:
        host.learn_root(JobLayout(job_dir).root)
    return host


def hostside_dir(host: Host) -> str:
    return posixpath.join(host.root(), f"hostside-{hostside.version()}")


def agent_path(host: Host) -> str:
    return posixpath.join(hostside_dir(host), AGENT)


def window_script_path(host: Host) -> str:
    return posixpath.join(hostside_dir(host), WINDOW_SCRIPT)


def install_hostside(host: Host, replace: bool = False) -> None:
    """Put this version's agent and window script on the host, if it does not have them yet (with
    replace: even if a folder of their name is there), and remove old versions no running job uses."""
    mode = ["replace"] if replace else []
    host.run(["sh", "-c", INSTALL_SCRIPT, "sh", hostside_dir(host), host.python, *mode], stdin=_hostside_tar()).check()


def _hostside_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in hostside.FILES:
            data = hostside.read(name)
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def agent_argv(host: Host, *args: str) -> list[str]:
    # -S: the agent needs the standard library only, and a job image's site-packages (conda, many .pth
    # files) can cost more to import than the agent's whole work; -E: no PYTHONPATH or PYTHONHOME
    # from the host's environment can change what the agent imports.
    return [host.python, "-E", "-S", agent_path(host), *args]


def run_agent(
    host: Host, *args: str, stdin: Stdin = None, timeout: float | None = 60, stdout: BinaryIO | None = None
) -> CommandResult:
    """Run an agent command, installing this version's agent first if the host lacks it (a job
    submitted by an older runner): no extra round trip when it is there. With stdout, the output is
    appended to that open file instead of returned."""
    rewind = rewinder(stdin)
    check = f'[ -f "$1" ] || exit {AGENT_MISSING}; shift; exec "$@"'
    argv = ["sh", "-c", check, "sh", agent_path(host), *agent_argv(host, *args)]

    def once() -> CommandResult:
        return host.run(argv, stdin=stdin, timeout=timeout) if stdout is None else host.run_into(argv, stdout)

    result = once()
    if result.returncode == AGENT_MISSING:
        install_hostside(host)
        if rewind is None:
            raise RunnerError(f"host '{host.name}' lacked this runner's agent (now installed): run the command again")
        rewind()
        result = once()
    return result
