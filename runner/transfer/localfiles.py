"""The local side of a push: the files of a folder, and their sha256 when a comparison needs it,
cached by path, size and mtime (in RUNNER_HOME) so a 10 GB dataset that did not change is not read
again. A file the host does not have is not hashed up front: the upload hashes it as it reads it."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runner.base import paths
from runner.base.atomicfile import write_atomically
from runner.transfer.syncignore import is_excluded

HASH_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LocalFile:
    path: Path
    rel: str  # POSIX, relative to the folder pushed
    size: int
    mtime_ns: int
    mode: int
    sha256: str | None = None  # None: not hashed yet

    def restat(self) -> LocalFile:
        info = self.path.stat()
        return replace(self, size=info.st_size, mtime_ns=info.st_mtime_ns, mode=stat.S_IMODE(info.st_mode), sha256=None)


class LocalTree:
    """Regular files under source, less the excluded ones. Symlinks are not followed or sent: a link
    means something on this machine that it may not mean on the host."""

    def __init__(self, source: Path, exclude: Sequence[str]) -> None:
        self._cache = _HashCache(source)
        self.files = [self._with_cached_hash(item) for item in _walk(source, exclude)]

    def hashed(self, item: LocalFile) -> LocalFile:
        if item.sha256:
            return item
        return self.record(item, sha256_of(item.path))

    def record(self, item: LocalFile, sha256: str) -> LocalFile:
        """Remember item's hash (as of its size and mtime), learnt by hashing it or sending it."""
        self._cache.put(item.rel, item.size, item.mtime_ns, sha256)
        return replace(item, sha256=sha256)

    def save(self) -> None:
        self._cache.save()

    def _with_cached_hash(self, item: LocalFile) -> LocalFile:
        return replace(item, sha256=self._cache.get(item.rel, item.size, item.mtime_ns))


def _walk(source: Path, exclude: Sequence[str]) -> list[LocalFile]:
    found = []
    for folder, subfolders, names in os.walk(source):
        rel_folder = Path(folder).relative_to(source).as_posix()
        subfolders[:] = sorted(name for name in subfolders if not is_excluded(_join(rel_folder, name), exclude))
        for name in sorted(names):
            rel = _join(rel_folder, name)
            path = Path(folder, name)
            info = path.lstat()
            if not is_excluded(rel, exclude) and stat.S_ISREG(info.st_mode):
                found.append(LocalFile(path, rel, info.st_size, info.st_mtime_ns, stat.S_IMODE(info.st_mode)))
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


class _HashCache:
    def __init__(self, source: Path) -> None:
        key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:20]
        self.path = paths.runner_home() / "hashcache" / f"{key}.json"
        try:
            self.entries: dict[str, list[Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def get(self, rel: str, size: int, mtime_ns: int) -> str | None:
        entry = self.entries.get(rel)
        return entry[2] if entry and entry[:2] == [size, mtime_ns] else None

    def put(self, rel: str, size: int, mtime_ns: int, digest: str) -> None:
        if self.entries.get(rel) != [size, mtime_ns, digest]:
            self.entries[rel] = [size, mtime_ns, digest]
            self.changed = True

    def save(self) -> None:
        if self.changed:
            write_atomically(self.path, json.dumps(self.entries).encode(), mode=0o600)


def _join(rel_folder: str, name: str) -> str:
    return name if rel_folder == "." else f"{rel_folder}/{name}"
