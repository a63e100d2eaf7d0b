"""The Docker engine of a host, through the Docker SDK: this machine's own, or a remote one over SSH.

A remote engine is reached by forwarding a private Unix socket here to the engine's socket there,
over OpenSSH with runner's ssh_config: the same pinned host keys, identity, ProxyJump and timeouts
as every other command. The SDK's own `ssh://` transport would bypass all of that (its paramiko
client reads only ~/.ssh/known_hosts and ~/.ssh/config; its ssh-binary mode takes no config file),
so it could neither verify a host pinned by `--trust-new-host` nor use hosts.yaml's identity.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from runner.hosts.base import Host

if TYPE_CHECKING:
    import docker

# Builds of the framework layers download gigabytes and run for many minutes between log lines.
API_TIMEOUT_SECONDS = 3600


@contextmanager
def docker_client(host: Host) -> Iterator[docker.DockerClient]:
    """A Docker SDK client of host's engine, open for the context."""
    import docker

    with host.docker_engine() as address:
        if address is None:
            client = docker.from_env(timeout=API_TIMEOUT_SECONDS)  # DOCKER_HOST, else the local socket
        else:
            client = docker.DockerClient(base_url=address, timeout=API_TIMEOUT_SECONDS)
        try:
            yield client
        finally:
            client.close()


def is_docker_error(exc: Exception) -> bool:
    """An error of the engine or of the way to it, as the Docker SDK raises them."""
    import docker.errors
    import requests.exceptions

    return isinstance(exc, (docker.errors.DockerException, requests.exceptions.ConnectionError))
