"""A local port forward over paramiko, for hosts reached without OpenSSH.

Not fabric's `forward_local`: its accept loop opens each connection's channel itself, so the first
connection the host refuses (TensorBoard not up yet, a look a moment too early) ends the loop, and
the port goes on accepting connections that nothing serves. Here a refused connection is closed and
the next one is served.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import paramiko

CHUNK_BYTES = 64 * 1024
POLL_SECONDS = 0.2  # how soon the threads notice the forward is closing


class LocalForward:
    """127.0.0.1:local_port here -> 127.0.0.1:remote_port as the host sees it, open for a `with`."""

    def __init__(self, transport: paramiko.Transport, local_port: int, remote_port: int) -> None:
        self._transport, self._remote = transport, ("127.0.0.1", remote_port)
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", local_port))
        self._listener.settimeout(POLL_SECONDS)
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> LocalForward:
        self._start(self._accept_loop)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._closing.set()
        for thread in self._threads:
            thread.join()
        self._listener.close()

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="runner-forward")
        self._threads = [*(each for each in self._threads if each.is_alive()), thread]  # one per connection
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, address = self._listener.accept()
            except TimeoutError:
                continue
            try:
                channel = self._transport.open_channel("direct-tcpip", self._remote, address)
            except (paramiko.ChannelException, paramiko.SSHException, EOFError):
                client.close()  # the browser sees the connection end, as with OpenSSH; the forward stays
                continue
            self._start(self._pump, client, channel)

    def _pump(self, client: socket.socket, channel: paramiko.Channel) -> None:
        """Copy both ways until either side ends or the forward closes."""
        with client, channel:
            while not self._closing.is_set():
                ends: list[Any] = [client, channel]  # both have fileno(): what select needs
                readable, _, _ = select.select(ends, [], [], POLL_SECONDS)
                if client in readable and not _copy(client.recv, channel.sendall):
                    return
                if channel in readable and not _copy(channel.recv, client.sendall):
                    return


def _copy(receive: Callable[[int], bytes], send: Callable[[bytes], object]) -> bool:
    """One chunk from receive to send; False at the end of the stream or on a broken side."""
    try:
        data = receive(CHUNK_BYTES)
        if not data:
            return False
        send(data)
    except OSError:
        return False
    return True
