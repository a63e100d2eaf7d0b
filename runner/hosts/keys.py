"""Host keys: verified against known_hosts, recorded only when the user says the host is new.

Two files are read: the user's ~/.ssh/known_hosts (hosts they already trust with ssh) and runner's
own known_hosts in the config directory, where `--trust-new-host` records keys. OpenSSH commands
(commands, file transfers, attach) are pointed at the same two files with StrictHostKeyChecking=yes, so both SSH
stacks accept exactly the same keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

import paramiko

from runner.base.errors import HostKeyRejected
from runner.base.paths import runner_known_hosts, user_known_hosts


def fingerprint(key: paramiko.PKey) -> str:
    """The SHA256 fingerprint as OpenSSH prints it, so users can compare it with ssh-keygen -lf."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_known_hosts(client: paramiko.SSHClient) -> None:
    """Both files' keys into the client. Lines paramiko cannot read (OpenSSH's @cert-authority and
    @revoked markers, unknown key types) are skipped one by one instead of failing the whole file."""
    known = client.get_host_keys()
    for path in (user_known_hosts(), runner_known_hosts()):
        for line in _readable_lines(path):
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
            except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError, binascii.Error):
                continue
            if entry is None:
                continue
            for name in entry.hostnames:
                known.add(name, entry.key.get_name(), entry.key)


def _readable_lines(path: Path) -> list[str]:
    """known_hosts lines paramiko can read: marker lines (@cert-authority, @revoked) are OpenSSH's
    alone and make paramiko fail on the whole file, so they are left to OpenSSH."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", "@"))]


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
