"""Hosts by name: `local` is always there; SSH hosts come from hosts.yaml.

One Host object per name and process, so a command that talks to a host several times reuses
one SSH connection.
"""

from __future__ import annotations

import atexit

from runner.hosts import provisioned
from runner.hosts.base import CommandResult, Host, SyncStats
from runner.hosts.hostsfile import HostEntry, host_entry, load_hosts
from runner.hosts.local import LocalHost
from runner.hosts.ssh import SshHost

__all__ = ["CommandResult", "Host", "LocalHost", "SshHost", "SyncStats", "forget_host", "get_host", "known_host_names"]

_open_hosts: dict[str, Host] = {}


def known_host_names() -> list[str]:
    return ["local", *sorted(load_hosts().hosts)]


def get_host(name: str, trust_new: bool = False) -> Host:
    host = _open_hosts.get(name)
    if host is None:
        host = LocalHost() if name == "local" else SshHost(name, _entry(name), trust_new)
        _open_hosts[name] = host
    if trust_new and isinstance(host, SshHost):
        host.trust_new = True
    return host


def forget_host(name: str) -> None:
    """Close this process's connection to the host and forget it: its entry changed (an instance started
    again has a new address), and the next get_host must read it anew."""
    host = _open_hosts.pop(name, None)
    if host is not None:
        host.close()


def _entry(name: str) -> HostEntry:
    """The entry a provisioner recorded for a host it made (a rented instance), else hosts.yaml's."""
    return provisioned.entry(name) or host_entry(name)


@atexit.register
def _close_all() -> None:
    for host in _open_hosts.values():
        host.close()
    _open_hosts.clear()
