"""hosts.yaml: the user's named hosts, in the config directory (RUNNER_CONFIG_DIR overrides).

    hosts:
      gpubox:
        ssh: trainer@192.168.1.20:2222      # user@host[:port], or an alias from ~/.ssh/config
        identity: ~/.ssh/id_ed25519         # optional
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, field_validator

from runner import paths
from runner.atomicfile import write_atomically
from runner.errors import NotFound, SpecError
from runner.spec import NAME_PATTERN, StrictModel
from runner.specfile import load_yaml_mapping, validate

# user@host:port, host:port, user@[v6addr]:port, or a bare alias; no spaces, no leading '-' (no ssh options)
SSH_TARGET = re.compile(r"^(?:(?P<user>[A-Za-z0-9_.][A-Za-z0-9_.-]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.][A-Za-z0-9_.-]*)(?::(?P<port>[0-9]{1,5}))?$")


class SshHostEntry(StrictModel):
    ssh: str = Field(description="user@host[:port], or a Host alias from ~/.ssh/config")
    identity: str | None = Field(None, description="private key file")
    python: str = Field("python3", description="the interpreter that runs runner's agent on the host")
    connect_timeout: float = Field(10, gt=0, description="seconds for one connection attempt")
    retry_seconds: float = Field(30, ge=0, description="how long transient connection failures are retried")
    transport: Literal["auto", "openssh", "paramiko"] = Field(
        "auto", description="auto: OpenSSH where this machine has ssh (fastest), else paramiko"
    )

    @field_validator("ssh")
    @classmethod
    def _target(cls, target: str) -> str:
        if not SSH_TARGET.match(target):
            raise ValueError(f"'{target}' is not user@host[:port] or an ssh config alias")
        return target


class HostsFile(StrictModel):
    hosts: dict[str, SshHostEntry] = Field(default_factory=dict)

    @field_validator("hosts")
    @classmethod
    def _names(cls, hosts: dict[str, SshHostEntry]) -> dict[str, SshHostEntry]:
        for name in hosts:
            if not re.match(NAME_PATTERN, name) or name in ("local", "vast"):
                raise ValueError(f"'{name}' cannot name a host (letters, digits, '-', '_'; not local or vast)")
        return hosts


def hosts_path() -> Path:
    return paths.config_dir() / "hosts.yaml"


def load_hosts() -> HostsFile:
    path = hosts_path()
    if not path.exists():
        return HostsFile()
    try:
        data, marks = load_yaml_mapping(path, what="hosts file")
    except SpecError as exc:
        if str(exc).endswith(": empty hosts file"):
            return HostsFile()
        raise
    return validate(HostsFile, data, marks, path)


def host_entry(name: str) -> SshHostEntry:
    hosts = load_hosts().hosts
    if name not in hosts:
        raise NotFound(f"unknown host '{name}' (known hosts: {', '.join(['local', *sorted(hosts)])})")
    return hosts[name]


def add_host(name: str, entry: SshHostEntry) -> None:
    """Add or replace one host, then write the file atomically (a crash leaves the old file whole)."""
    current = load_hosts()
    merged = HostsFile.model_validate({"hosts": {**current.model_dump()["hosts"], name: entry.model_dump()}})
    document = {"hosts": {key: value.model_dump(exclude_defaults=True) for key, value in merged.hosts.items()}}
    write_atomically(hosts_path(), yaml.safe_dump(document, sort_keys=True).encode(), mode=0o600)
