"""Hosts by name: `local` is always there; remote hosts come from hosts.yaml."""

from __future__ import annotations

from runner.errors import NotFound
from runner.hosts.base import CommandResult, Host
from runner.hosts.local import LocalHost

__all__ = ["CommandResult", "Host", "LocalHost", "get_host", "known_host_names"]


def known_host_names() -> list[str]:
    return ["local"]


def get_host(name: str) -> Host:
    if name == "local":
        return LocalHost()
    raise NotFound(f"unknown host '{name}' (known hosts: {', '.join(known_host_names())})")
