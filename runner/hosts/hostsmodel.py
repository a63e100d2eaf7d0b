"""hosts.yaml validated: the pydantic models behind `runner hosts add` and every edit of the file.
Reading the file for a command goes through runner.hosts.hostsfile, which caches this validation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, field_validator

from runner.base.atomicfile import write_atomically
from runner.base.errors import SpecError
from runner.base.paths import hosts_yaml as hosts_path
from runner.base.yamlfile import NAME_PATTERN, StrictModel, load_yaml_mapping, validate
from runner.hosts.target import SSH_TARGET


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


class RegistrySettings(StrictModel):
    """Where runner pushes the images it builds for rented hosts, which pull them from there."""

    address: str = Field(pattern=r"^[a-z0-9][a-z0-9._:-]*(/[a-z0-9._-]+)*$",
                         description="registry host[:port], then namespaces: ghcr.io/acme")  # fmt: skip
    username: str | None = Field(None, description="the login, when the registry wants one")
    password_file: str | None = Field(
        None, description="a file only you can read (mode 0600) with the password or token; or RUNNER_REGISTRY_PASSWORD"
    )


class HostsFile(StrictModel):
    hosts: dict[str, SshHostEntry] = Field(default_factory=dict)
    registry: RegistrySettings | None = None

    @field_validator("hosts")
    @classmethod
    def _names(cls, hosts: dict[str, SshHostEntry]) -> dict[str, SshHostEntry]:
        for name in hosts:
            if not re.match(NAME_PATTERN, name) or name in ("local", "vast") or name.startswith("vast-"):
                raise ValueError(f"'{name}' cannot name a host (letters, digits, '-', '_'; not local, vast or vast-*)")
        return hosts


def validated(path: Path) -> HostsFile:
    """The file at path, validated; SpecError (file:line:col: field: message) when it is wrong."""
    if not path.exists():
        return HostsFile()
    try:
        data, marks = load_yaml_mapping(path, what="hosts file")
    except SpecError as exc:
        if str(exc).endswith(": empty hosts file"):
            return HostsFile()
        raise
    hosts: HostsFile = validate(HostsFile, data, marks, path)
    return hosts


def add_host(name: str, entry: SshHostEntry) -> None:
    """Add or replace one host, then write the file atomically (a crash leaves the old file whole)."""
    current = validated(hosts_path())
    merged = HostsFile.model_validate({"hosts": {**current.model_dump()["hosts"], name: entry.model_dump()}})
    document: dict[str, object] = {
        "hosts": {key: value.model_dump(exclude_defaults=True) for key, value in merged.hosts.items()}
    }
    if current.registry is not None:  # the rest of the file is kept as it was
        document["registry"] = current.registry.model_dump(exclude_defaults=True)
    write_atomically(hosts_path(), yaml.safe_dump(document, sort_keys=True).encode(), mode=0o600)


def load_registry() -> RegistrySettings | None:
    """The registry of hosts.yaml, if it names one."""
    return validated(hosts_path()).registry
