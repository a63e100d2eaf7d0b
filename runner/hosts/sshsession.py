"""A host's paramiko connection, shared by both SSH transports.

The paramiko transport runs everything over it. The OpenSSH transport opens it only to explain a
refused connection precisely (unknown or changed host key, authentication, unreachable) and to record
a new host's key when the user asked to trust it; OpenSSH itself never learns keys.
fabric and paramiko are imported when the connection is first opened: importing them costs more than
a multiplexed OpenSSH command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.hosts.hostsfile import HostEntry

if TYPE_CHECKING:
    import fabric


class ParamikoSession:
    def __init__(self, name: str, entry: HostEntry, trust_new: bool) -> None:
        self.name = name
        self.entry = entry
        self.trust_new = trust_new
        self.verified = False  # connected once in this process: the host key and the login are fine
        self._connection: fabric.Connection | None = None

    def connection(self) -> fabric.Connection:
        """The open connection, opened (again) when there is none or it dropped."""
        if self._connection is None or not self._connection.is_connected:
            from runner.hosts.sshconnect import connect

            self.close()
            self._connection = connect(self.name, self.entry, self.trust_new)
            self.verified = True
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None
