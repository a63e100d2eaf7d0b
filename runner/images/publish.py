"""Images runner builds for rented hosts: built on this machine's Docker engine (a rented instance is
itself a container, with no engine to build in), then pushed to the registry of hosts.yaml, which
the instance pulls from. The tag is the build's content hash, so an unchanged image is neither
rebuilt nor pushed again (the registry has its layers). The password never reaches an argv or a log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runner.base.errors import RunnerError
from runner.base.privatefile import read_private_file
from runner.hosts.hostsmodel import RegistrySettings
from runner.images.build import Log, ensure_image
from runner.images.plan import ImagePlan

PASSWORD_ENV = "RUNNER_REGISTRY_PASSWORD"


def registry_password(registry: RegistrySettings) -> str | None:
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not registry.password_file:
        return None
    return read_private_file(Path(registry.password_file).expanduser(), "registry.password_file")


def image_login(registry: RegistrySettings) -> str | None:
    """vast.ai's image_login for a private registry: `-u USER -p PASSWORD HOST`."""
    password = registry_password(registry)
    if not (registry.username and password):
        return None
    return f"-u {registry.username} -p {password} {registry.address.split('/')[0]}"


def publish(plan: ImagePlan, registry: RegistrySettings, log: Log) -> str:
    """Build plan's image here unless this engine has it, push it; returns the reference to pull."""
    from runner.hosts import LocalHost
    from runner.hosts.dockerlink import docker_client

    here = LocalHost()
    tag, _ = ensure_image(here, plan, log)
    name, version = tag.split(":")
    repository = f"{registry.address.rstrip('/')}/{name}"
    with docker_client(here) as client:
        client.images.get(tag).tag(repository, version)
        _push(client, repository, version, _auth(registry))
    log(f"pushed {repository}:{version}")
    return f"{repository}:{version}"


def _auth(registry: RegistrySettings) -> dict[str, Any] | None:
    password = registry_password(registry)
    return {"username": registry.username, "password": password} if registry.username and password else None


def _push(client: Any, repository: str, version: str, auth: dict[str, Any] | None) -> None:
    for chunk in client.images.push(repository, version, stream=True, decode=True, auth_config=auth):
        if "error" in chunk:  # the per-layer progress is left out: the summary line says it went
            raise RunnerError(f"pushing {repository}:{version} failed: {chunk['error'].strip()}")
