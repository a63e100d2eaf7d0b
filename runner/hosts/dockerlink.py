"""The Docker engine of a host, through the Docker SDK: this machine's own, or a remote one over SSH.

A remote engine is reached by forwarding a private Unix socket here to the engine's socket there,
over OpenSSH with runner's ssh_config: the same pinned host keys, identity, ProxyJump and timeouts
as every other command. The SDK's own `ssh://` transport would bypass all of that (its paramiko
client reads only ~/.ssh/known_hosts and ~/.ssh/config; its ssh-binary mode takes no config file),
so it could neither verify a host pinned by `--trust-new-host` nor use hosts.yaml's identity.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

from runner.base.errors import HostUnreachable, RunnerError
from runner.hosts.base import Host
from runner.hosts.openssh import control_dir, end_forward, forward_argv, last_line

if TYPE_CHECKING:
    import docker

REMOTE_SOCKET = "/var/run/docker.sock"  # where Debian's, Ubuntu's and Docker's own packages put it
FORWARD_START_SECONDS = 20.0
# Builds of the framework layers download gigabytes and run for many minutes between log lines.
API_TIMEOUT_SECONDS = 3600


@contextmanager
def docker_client(host: Host) -> Iterator[docker.DockerClient]:
    """A Docker SDK client of host's engine, open for the context."""
    import docker

    if host.kind == "local":
        client = docker.from_env(timeout=API_TIMEOUT_SECONDS)  # DOCKER_HOST, else the local socket
        try:
            yield client
        finally:
            client.close()
        return
    with _forwarded_socket(host) as socket_path:
        client = docker.DockerClient(base_url=f"unix://{socket_path}", timeout=API_TIMEOUT_SECONDS)
        try:
            yield client
        finally:
            client.close()


def why_no_engine(host: Host) -> str | None:
    """Why this machine cannot reach host's Docker engine, or None: asked before a job exists."""
    import shutil

    from runner.hosts.ssh import SshHost

    if host.kind == "local" or (isinstance(host, SshHost) and host.uses_openssh):
        return None
    if shutil.which("ssh") is None:
        return "image builds need OpenSSH's ssh on this machine, and there is none on PATH"
    return "image builds need OpenSSH's ssh, and hosts.yaml sets this host's transport: paramiko"


@contextmanager
def _forwarded_socket(host: Host) -> Iterator[str]:
    """A socket here that leads to the engine's socket on host, for the context."""
    reason = why_no_engine(host)
    if reason is not None:
        raise RunnerError(f"host '{host.name}': {reason}")
    # The private folder of the SSH master sockets: whoever reaches this socket commands the engine.
    local = str(control_dir() / f"docker-{secrets.token_hex(6)}.sock")
    argv = forward_argv(host.entry, host.openssh_target(), f"{local}:{REMOTE_SOCKET}")
    # stderr in a file: it says why a forwarded connection was refused (no engine, no permission).
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            _wait_for_socket(host, process, local, errors)
            yield local
        except Exception as exc:
            if _is_docker_error(exc):
                raise RunnerError(f"host '{host.name}': its Docker engine did not answer: {_said(errors) or exc}") from None
            raise
        finally:
            end_forward(process)
            try:
                os.unlink(local)
            except FileNotFoundError:
                pass


def _is_docker_error(exc: Exception) -> bool:
    import docker.errors
    import requests.exceptions

    return isinstance(exc, (docker.errors.DockerException, requests.exceptions.ConnectionError))


def _said(errors: BinaryIO) -> str:
    errors.seek(0)
    text = errors.read().decode("utf-8", "replace")
    return last_line(text) if text.strip() else ""


def _wait_for_socket(host: Host, process: subprocess.Popen[bytes], path: str, errors: BinaryIO) -> None:
    deadline = time.monotonic() + FORWARD_START_SECONDS
    while not os.path.exists(path):
        if process.poll() is not None:
            raise HostUnreachable(f"host '{host.name}': no link to its Docker engine: {_said(errors) or 'ssh exited'}")
        if time.monotonic() > deadline:
            raise HostUnreachable(f"host '{host.name}': no link to its Docker engine within {FORWARD_START_SECONDS:g}s")
        time.sleep(0.05)
