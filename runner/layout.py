"""Where things live on a host, under its runner directory (see DESIGN.md, "On the host")."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from runner import hostside
from runner.hosts.base import Host

AGENT = "agent.py"
WINDOW_SCRIPT = "window.sh"


@dataclass(frozen=True)
class JobLayout:
    job_dir: str

    @classmethod
    def on(cls, host: Host, job_id: str) -> "JobLayout":
        return cls(posixpath.join(host.root(), "jobs", job_id))

    def file(self, name: str) -> str:
        return posixpath.join(self.job_dir, name)

    @property
    def work(self) -> str:
        return self.file("work")


def agent_path(host: Host) -> str:
    return posixpath.join(host.root(), AGENT)


def window_script_path(host: Host) -> str:
    return posixpath.join(host.root(), WINDOW_SCRIPT)


def install_hostside(host: Host) -> None:
    """Put this version's agent and window script on the host (atomic replace: running jobs keep theirs)."""
    host.write_file(agent_path(host), hostside.read(AGENT), mode=0o755)
    host.write_file(window_script_path(host), hostside.read(WINDOW_SCRIPT), mode=0o755)


def agent_argv(host: Host, *args: str) -> list[str]:
    return [host.python, agent_path(host), *args]
