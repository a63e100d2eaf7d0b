"""The local host: this machine, with its job directories under RUNNER_HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from runner import paths
from runner.atomicfile import write_atomically
from runner.errors import NotFound
from runner.hosts.base import CommandResult, SyncStats
from runner.syncignore import is_excluded


CHUNK_BYTES = 4 * 1024 * 1024


class LocalHost:
    kind = "local"

    def __init__(self, name: str = "local") -> None:
        self.name = name
        # The agent runs under the controller's own interpreter: it is known to exist here.
        self.python = sys.executable

    def root(self) -> str:
        return str(paths.local_host_root())

    def run(self, argv: Sequence[str], stdin: bytes | None = None, timeout: float | None = 60) -> CommandResult:
        completed = subprocess.run(
            list(argv), input=stdin, capture_output=True, timeout=timeout, check=False, env=_host_environment()
        )
        return CommandResult(list(argv), completed.returncode, completed.stdout, completed.stderr)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        write_atomically(Path(path), data, mode)

    def put_tree(self, source: Path, dest: str, exclude: Sequence[str]) -> SyncStats:
        started = time.monotonic()
        sent = [0, 0]

        def ignored(folder: str, names: list[str]) -> set[str]:
            rel_folder = Path(folder).relative_to(source)
            return {name for name in names if is_excluded((rel_folder / name).as_posix(), exclude)}

        def copy_if_changed(src: str, dst: str) -> None:
            there, here = Path(dst), Path(src).stat()
            if there.is_file() and there.stat().st_size == here.st_size and int(there.stat().st_mtime) == int(here.st_mtime):
                return
            shutil.copy2(src, dst)
            sent[0] += 1
            sent[1] += here.st_size

        shutil.copytree(source, dest, ignore=ignored, symlinks=True, dirs_exist_ok=True, copy_function=copy_if_changed)
        return SyncStats("copy", sent[0], sent[1], time.monotonic() - started)

    def read_into(self, path: str, offset: int, out: BinaryIO) -> None:
        try:
            with open(path, "rb") as source:
                source.seek(offset)
                shutil.copyfileobj(source, out, CHUNK_BYTES)
        except FileNotFoundError:
            raise NotFound(f"{path} is gone") from None


def _host_environment() -> dict[str, str]:
    # Running inside a tmux pane must not make our tmux commands talk to that pane's client.
    env = dict(os.environ)
    env.pop("TMUX", None)
    env.pop("TMUX_PANE", None)
    return env
