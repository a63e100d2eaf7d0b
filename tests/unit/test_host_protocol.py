"""The Host protocol's answers that need no connection: what the local host gives as it is, and which
SSH transport a host gets (the forwards themselves are tested end to end, in tests/e2e)."""

from __future__ import annotations

import shutil
import socket

import pytest

from runner.hosts.base import Host
from runner.hosts.hostsfile import HostEntry
from runner.hosts.local import LocalHost
from runner.hosts.ssh import SshHost, free_local_port


def test_the_local_host_needs_no_link_for_what_a_remote_one_forwards() -> None:
    host: Host = LocalHost()
    with host.forward(7000, 6006) as port:
        assert port == 6006  # TensorBoard already serves on this machine's loopback
    with host.forward_socket("/var/run/docker.sock") as path:
        assert path == "/var/run/docker.sock"
    with host.docker_engine() as address:
        assert address is None  # the Docker SDK's own default: DOCKER_HOST, else the local socket
    assert host.why_no_docker_engine() is None
    assert host.interactive_argv(["tmux", "attach-session", "-t", "x"]) == ["tmux", "attach-session", "-t", "x"]
    assert host.shares_this_filesystem
    # Nothing to connect to, start or close: each is done at once.
    host.handshake()
    host.prewarm()
    host.close()


def test_a_paramiko_host_says_why_it_reaches_no_docker_engine() -> None:
    host: Host = SshHost("box", HostEntry(ssh="trainer@127.0.0.1:2222", transport="paramiko"))
    assert host.transport == "paramiko"
    assert not host.shares_this_filesystem
    reason = host.why_no_docker_engine()
    assert reason is not None and reason.startswith("image builds need OpenSSH's ssh")
    with pytest.raises(Exception, match="image builds need OpenSSH's ssh"), host.docker_engine():
        pass


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs OpenSSH's ssh on PATH")
def test_an_ssh_host_goes_over_openssh_where_there_is_one_and_attaches_with_it() -> None:
    host: Host = SshHost("box", HostEntry(ssh="trainer@127.0.0.1:2222"))
    assert host.transport == "openssh"
    assert host.why_no_docker_engine() is None
    argv = host.interactive_argv(["tmux", "attach-session", "-t", "a b"])
    assert argv[0] == "ssh" and argv[-3:] == ["-t", "trainer@127.0.0.1", "tmux attach-session -t 'a b'"]
    assert argv[argv.index("-p") + 1] == "2222"


def test_a_taken_local_port_gives_the_next_free_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert free_local_port(port) > port
