"""Host keys: verified against known_hosts, recorded only when the user says the host is new.

Two files are read: the user's ~/.ssh/known_hosts (hosts they already trust with ssh) and runner's
own known_hosts in the config directory, where `--trust-new-host` records keys. OpenSSH commands
(rsync, attach) are pointed at the same two files with StrictHostKeyChecking=yes, so both SSH
stacks accept exactly the same keys.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import paramiko

from runner import paths
from runner.errors import HostKeyRejected


def runner_known_hosts() -> Path:
    return paths.config_dir() / "known_hosts"


def user_known_hosts() -> Path:
    return Path("~/.ssh/known_hosts").expanduser()


def fingerprint(key: paramiko.PKey) -> str:
    """The SHA256 fingerprint as OpenSSH prints it, so users can compare it with ssh-keygen -lf."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_known_hosts(client: paramiko.SSHClient) -> None:
    if user_known_hosts().is_file():
        client.load_system_host_keys(str(user_known_hosts()))
    if runner_known_hosts().is_file():
        # As "system" keys: paramiko then never rewrites this file itself; we append to it.
        client.load_system_host_keys(str(runner_known_hosts()))


class PinNewHost(paramiko.MissingHostKeyPolicy):
    """For a host with no known key: record it when trusted, refuse it otherwise, always loudly."""

    def __init__(self, host_name: str, trust_new: bool) -> None:
        self.host_name = host_name
        self.trust_new = trust_new
        self.recorded: str | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        shown = f"{key.get_name()} key {fingerprint(key)}"
        if not self.trust_new:
            raise HostKeyRejected(
                f"host '{self.host_name}' ({hostname}) is not known: it offers the {shown}. "
                f"If that is its key, run again with --trust-new-host to record it"
            )
        _append_known_host(hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.recorded = shown


def changed_key_error(host_name: str, error: paramiko.BadHostKeyException) -> HostKeyRejected:
    return HostKeyRejected(
        f"host '{host_name}' ({error.hostname}) offered a DIFFERENT key than the one recorded: "
        f"got {error.key.get_name()} {fingerprint(error.key)}, expected {error.expected_key.get_name()} "
        f"{fingerprint(error.expected_key)}. Refused. If the host was really reinstalled, remove its old "
        f"line from {runner_known_hosts()} or ~/.ssh/known_hosts"
    )


def _append_known_host(hostname: str, key: paramiko.PKey) -> None:
    path = runner_known_hosts()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
