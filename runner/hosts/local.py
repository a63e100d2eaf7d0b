"""The local host: this machine, with its job directories under RUNNER_HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from runner.base import paths
from runner.base.atomicfile import write_atomically
from runner.base.errors import NotFound
from runner.hosts.base import CommandResult, Stdin
from runner.hosts.feed import StdinFeed

CHUNK_BYTES = 4 * 1024 * 1024


class LocalHost:
    kind = "local"

    def __init__(self, name: str = "local") -> None:
        self.name = name
        # The agent runs under the controller's own interpreter: it is known to exist here.
        self.python = sys.executable

    def root(self) -> str:
        return str(paths.local_host_root())

    def learn_root(self, root: str) -> None:
        """Known here already."""

    patience = 60.0
    transport = "local"
    shares_this_filesystem = True
    provides_image = False

    def run(self, argv: Sequence[str], stdin: Stdin = None, timeout: float | None = 60) -> CommandResult:
        feed = StdinFeed(stdin)
        with subprocess.Popen(
            list(argv), stdin=feed.arg, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_host_environment()
        ) as process:
            feed.started()
            try:
                stdout, stderr = process.communicate(feed.input, timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                feed.abandon()
                raise
            feed.finish()
        return CommandResult(list(argv), process.returncode, stdout, stderr)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        write_atomically(Path(path), data, mode)

    def run_into(self, argv: Sequence[str], out: BinaryIO) -> CommandResult:
        out.flush()
        completed = subprocess.run(list(argv), stdout=out, stderr=subprocess.PIPE, check=False, env=_host_environment())
        return CommandResult(list(argv), completed.returncode, b"", completed.stderr)

    def read_into(self, path: str, offset: int, out: BinaryIO) -> None:
        try:
            with open(path, "rb") as source:
                source.seek(offset)
                shutil.copyfileobj(source, out, CHUNK_BYTES)
        except FileNotFoundError:
            raise NotFound(f"{path} is gone") from None

    # What a remote host needs a link for is here already: each of these gives it as it is.

    @contextmanager
    def forward(self, local_port: int, remote_port: int) -> Iterator[int]:
        yield remote_port  # it already serves on this machine's loopback

    @contextmanager
    def forward_socket(self, remote_path: str) -> Iterator[str]:
        yield remote_path

    @contextmanager
    def docker_engine(self) -> Iterator[None]:
        yield None  # the Docker SDK finds this machine's engine itself (DOCKER_HOST, else the socket)

    def why_no_docker_engine(self) -> None:
        return None

    def interactive_argv(self, remote_argv: Sequence[str]) -> list[str]:
        return list(remote_argv)

    def handshake(self) -> None:
        """Nothing to connect to."""

    def prewarm(self) -> None:
        """Nothing to connect to."""

    def close(self) -> None:
        """Nothing held open."""


def _host_environment() -> dict[str, str]:
    # Running inside a tmux pane must not make our tmux commands talk to that pane's client.
    env = dict(os.environ)
    env.pop("TMUX", None)
    env.pop("TMUX_PANE", None)
    return env
