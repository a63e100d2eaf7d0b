"""hosts.yaml: the user's named hosts, in the config directory (RUNNER_CONFIG_DIR overrides).

    hosts:
      gpubox:
        ssh: trainer@192.168.1.20:2222      # user@host[:port], or an alias from ~/.ssh/config
        identity: ~/.ssh/id_ed25519         # optional

Validation (runner.hostsmodel, pydantic) runs when the file changed since it was last validated;
otherwise the validated entries come from a cache keyed by the file's size and mtime, so a command
like `runner status` starts without loading pydantic.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runner import __version__
from runner.base import paths
from runner.base.atomicfile import write_atomically
from runner.base.errors import NotFound


@dataclass(frozen=True)
class HostEntry:
    """One validated host (the fields of hostsmodel.SshHostEntry)."""

    ssh: str
    identity: str | None = None
    python: str = "python3"
    connect_timeout: float = 10
    retry_seconds: float = 30
    transport: str = "auto"
    # The name its host key is pinned under, instead of its address: a rented instance's address and
    # port are reused by later instances, each with a new key (set by runner, never in hosts.yaml).
    host_key_alias: str | None = None
    # The host is a container of the job's image (a rented instance): a job with an image runs in it
    # directly, with no container of its own (set by runner, never in hosts.yaml).
    provides_image: bool = False


@dataclass(frozen=True)
class Hosts:
    hosts: dict[str, HostEntry] = field(default_factory=dict)


def hosts_path() -> Path:
    return paths.hosts_yaml()


def load_hosts() -> Hosts:
    path = hosts_path()
    key = _file_key(path)
    cached = _read_cache()
    if cached and cached.get("key") == key:
        return Hosts({name: HostEntry(**entry) for name, entry in cached["hosts"].items()})
    from runner.hosts.hostsmodel import validated

    entries = {name: HostEntry(**entry.model_dump()) for name, entry in validated(path).hosts.items()}
    if key is not None:
        document = {"key": key, "hosts": {name: asdict(entry) for name, entry in entries.items()}}
        write_atomically(_cache_path(), json.dumps(document).encode(), mode=0o600)
    return Hosts(entries)


def host_entry(name: str) -> HostEntry:
    hosts = load_hosts().hosts
    if name not in hosts:
        raise NotFound(f"unknown host '{name}' (known hosts: {', '.join(['local', *sorted(hosts)])})")
    return hosts[name]


def _file_key(path: Path) -> list[Any] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return [__version__, str(path), info.st_size, info.st_mtime_ns, info.st_ino]  # a new runner validates anew


def _cache_path() -> Path:
    return paths.runner_home() / "cache" / "hosts.json"


def _read_cache() -> dict[str, Any] | None:
    try:
        cached: dict[str, Any] = json.loads(_cache_path().read_text())
        return cached
    except (OSError, ValueError):
        return None
