"""Opening SSH connections: ssh_config honoured (via fabric), host keys pinned, transient failures retried.

Retried (exponential backoff with jitter, bounded in attempts and seconds): refused, reset, timed out,
no banner. Never retried: authentication failures and host-key problems; retrying cannot fix them and
hammering a host with a wrong key is how accounts get locked.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Iterator

import fabric
import paramiko
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential

from runner.base.errors import HostKeyRejected, HostUnreachable, RunnerError
from runner.hosts.hostsfile import HostEntry
from runner.hosts.keys import PinNewHost, changed_key_error, load_known_hosts
from runner.hosts.target import SSH_TARGET

# paramiko logs every failed attempt with a traceback; runner reports failures itself, in one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

MAX_ATTEMPTS = 8
KEEPALIVE_SECONDS = 15  # a dead link is noticed within a minute or so, not at the next TCP timeout
TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ETIMEDOUT, errno.EPIPE,
}  # fmt: skip


def is_transient(error: BaseException) -> bool:
    if isinstance(error, (HostKeyRejected, paramiko.AuthenticationException, paramiko.BadHostKeyException)):
        return False
    if isinstance(error, (paramiko.ssh_exception.NoValidConnectionsError, socket.timeout, socket.gaierror, EOFError)):
        return True  # gaierror: no DNS on a laptop off the network is the same "try again" as no route
    if isinstance(error, OSError):
        return error.errno in TRANSIENT_ERRNOS or isinstance(error, ConnectionError)
    if isinstance(error, paramiko.SSHException):
        # Protocol-level failures are mostly a link or a host in trouble (no banner, key exchange cut
        # off: "No existing session"); only a real mismatch of algorithms is permanent.
        text = str(error).lower()
        return not any(word in text for word in ("incompatible", "no acceptable", "unknown cipher"))
    return False


def connect(name: str, entry: HostEntry, trust_new: bool) -> fabric.Connection:
    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(MAX_ATTEMPTS) | stop_after_delay(entry.retry_seconds),
        wait=wait_random_exponential(multiplier=0.5, max=8),
        reraise=True,
    )
    try:
        return retrying(_connect_once, name, entry, trust_new)
    except paramiko.BadHostKeyException as error:
        raise changed_key_error(name, error) from None
    except paramiko.AuthenticationException as error:
        raise RunnerError(f"host '{name}' ({entry.ssh}): authentication failed: {error}") from None
    except HostKeyRejected:
        raise
    except (OSError, EOFError, paramiko.SSHException) as error:
        if is_transient(error):
            raise HostUnreachable(f"host '{name}' ({entry.ssh}) unreachable: {describe(error)}") from None
        raise RunnerError(f"host '{name}' ({entry.ssh}): cannot connect: {describe(error)}") from None


def describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def _connect_once(name: str, entry: HostEntry, trust_new: bool) -> fabric.Connection:
    connect_kwargs: dict[str, object] = {
        "banner_timeout": entry.connect_timeout,  # a frozen host accepts TCP but never says hello
        "auth_timeout": entry.connect_timeout,
    }
    if entry.identity:
        connect_kwargs["key_filename"] = [os.path.expanduser(entry.identity)]
    # Split user@host:port here: fabric reads "[v6addr]:port" as a host name on port 22.
    target = SSH_TARGET.match(entry.ssh)
    if target is None:  # hosts.yaml validation refuses such targets; a hand-made entry may not have been
        raise RunnerError(f"host '{name}': '{entry.ssh}' is not user@host[:port] or an ssh config alias")
    connection = fabric.Connection(
        target["host"].strip("[]"),
        user=target["user"],
        port=int(target["port"]) if target["port"] else None,
        connect_timeout=max(1, round(entry.connect_timeout)),
        connect_kwargs=connect_kwargs,
    )
    for hop in _hops(connection):
        # fabric's default is AutoAddPolicy: any key, silently. Ours verifies, or records when told to.
        load_known_hosts(hop.client)
        hop.client.set_missing_host_key_policy(
            PinNewHost(name if hop is connection else f"{name} jump host", trust_new)
        )
    try:
        connection.open()
    except BaseException:
        connection.close()
        raise
    connection.transport.set_keepalive(KEEPALIVE_SECONDS)
    return connection


def _hops(connection: fabric.Connection) -> Iterator[fabric.Connection]:
    """The connection and each ProxyJump gateway in front of it."""
    current = connection
    while isinstance(current, fabric.Connection):
        yield current
        current = current.gateway
