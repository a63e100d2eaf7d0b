"""Shared by the tests of the push engine: the real agent on the local host, with RUNNER_HOME and
the agent's hash cache in tmp, and small helpers to feed it uploads."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from runner.hosts.local import LocalHost
from runner.hostside import transfer
from runner.hostside.hostfiles import PROTOCOL
from runner.jobs.layout import run_agent

MTIME_NS = 1_600_000_000_123_456_789


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent is installed under RUNNER_HOME/local and caches its hashes beside itself there;
    # in-process calls would otherwise cache beside the package's agent.py, inside the repo.
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "runner-home"))
    monkeypatch.setattr(transfer.HashCache, "folder", str(tmp_path / "hashcache"))
    # In-process calls collect parts where the installed agent does: the local host's parts folder.
    monkeypatch.setattr(transfer.Parts, "folder", str(parts_folder(tmp_path)))


def parts_folder(tmp_path: Path) -> Path:
    """The local host's parts folder (ROOT/parts, beside the installed agent's folder)."""
    return tmp_path / "runner-home" / "local" / "parts"


def part_of(tmp_path: Path, content: bytes | str, size: int | None = None) -> Path:
    """Where the host collects an upload of that content (its bytes, or its sha256 and size)."""
    if isinstance(content, bytes):
        content, size = _sha256(content), len(content)
    return parts_folder(tmp_path) / f"{content}-{size}.runner-part"


@pytest.fixture
def host() -> LocalHost:
    return LocalHost()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim").write_bytes(b"precious")
    return folder


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _call(host: LocalHost, *args: str, stdin: bytes | None = None) -> dict[str, Any]:
    result = run_agent(host, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    answer = json.loads(result.text)
    assert answer.pop("protocol") == PROTOCOL  # every answer carries it; the rest is the command's
    return answer


def _version(size: int, mtime_ns: int = MTIME_NS) -> str:
    return f"{size}-{mtime_ns}"


def _receive(host: LocalHost, root: Path, rel: str, data: bytes, size: int, trailer: bytes | str = b"", offset: int = 0,
             mode: int = 0o640, mtime_ns: int = MTIME_NS, content: str | None = None) -> dict[str, Any]:  # fmt: skip
    """receive: data (bytes offset.. of the file) then the trailer (the sender's sha256 of the whole file).
    content: the sha256 the sender hashed before it sent (its part's name): the trailer's when not given."""
    content = content or (trailer if isinstance(trailer, str) else trailer.decode())
    fields = [str(size), str(mtime_ns), format(mode, "o"), str(offset), content]
    trailer = trailer.encode() if isinstance(trailer, str) else trailer
    return _call(host, "receive", str(root), rel, *fields, stdin=data + trailer)


def _batch(entries: list[dict[str, Any]], members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(json.dumps(entries).encode() + b"\n")
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def _member(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, target: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def _entry(name: str, data: bytes) -> dict[str, Any]:
    return {"path": name, "size": len(data), "sha256": _sha256(data), "mode": 0o644, "mtime_ns": MTIME_NS}


def _files_under(folder: Path) -> dict[str, bytes]:
    """Every regular file (symlinks not followed) under folder, with its content."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[path.relative_to(folder).as_posix()] = path.read_bytes()
    return found


def _snapshot(tmp_path: Path, dest: Path) -> dict[str, bytes]:
    """Everything under tmp_path except dest and the runner's own folders: what must never change."""
    return {rel: data for rel, data in _files_under(tmp_path).items()
            if not rel.startswith((dest.name + "/", "runner-home/", "hashcache/"))}  # fmt: skip
