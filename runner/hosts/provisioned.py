"""Hosts a provisioner made for a job (a rented instance), by name: how to reach each one.

A provisioner records the entry once its host answers, so `get_host` finds every host a job can be
on without knowing who made it, and the hosts layer never reaches up into a provisioner. The entry
stays when the host is gone: a job still names its old instance until recovery has started it on
the next one, and a look at it then must find a host that does not answer (exit 3), not an
unknown name (exit 4). One private JSON file per host under RUNNER_HOME/hosts/, replaced
atomically: a command that reads it never sees half an entry.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from runner.base import paths
from runner.base.atomicfile import write_atomically
from runner.hosts.hostsfile import HostEntry


def _path(name: str) -> Path:
    return paths.runner_home() / "hosts" / f"{name}.json"


def remember(name: str, entry: HostEntry) -> None:
    write_atomically(_path(name), json.dumps(asdict(entry)).encode(), mode=0o600)


def entry(name: str) -> HostEntry | None:
    """The entry of a provisioned host, or None for a name no provisioner made."""
    if "/" in name or name.startswith("."):
        return None  # a host name is never a path
    try:
        return HostEntry(**json.loads(_path(name).read_text()))
    except FileNotFoundError:
        return None
