"""The local side of a push: the files of a folder with their sha256, hashes cached by path, size
and mtime (in RUNNER_HOME), so a 10 GB dataset that did not change is not read again."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from runner import paths
from runner.atomicfile import write_atomically
from runner.syncignore import is_excluded

HASH_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LocalFile:
    path: Path
    rel: str  # POSIX, relative to the folder pushed
    size: int
    mtime_ns: int
    mode: int
    sha256: str

    def rehashed(self) -> "LocalFile":
        info = self.path.stat()
        return replace(self, size=info.st_size, mtime_ns=info.st_mtime_ns, mode=stat.S_IMODE(info.st_mode), sha256=sha256_of(self.path))


def list_local_tree(source: Path, exclude: Sequence[str]) -> list[LocalFile]:
    """Regular files under source, less the excluded ones. Symlinks are not followed or sent: a link
    means something on this machine that it may not mean on the host."""
    cache = _HashCache(source)
    found = []
    for folder, subfolders, names in os.walk(source):
        rel_folder = Path(folder).relative_to(source).as_posix()
        subfolders[:] = sorted(name for name in subfolders if not is_excluded(_join(rel_folder, name), exclude))
        for name in sorted(names):
            rel = _join(rel_folder, name)
            path = Path(folder, name)
            info = path.lstat()
            if is_excluded(rel, exclude) or not stat.S_ISREG(info.st_mode):
                continue
            digest = cache.get(rel, info) or sha256_of(path)
            cache.put(rel, info, digest)
            found.append(LocalFile(path, rel, info.st_size, info.st_mtime_ns, stat.S_IMODE(info.st_mode), digest))
    cache.save()
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
            self.entries: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def get(self, rel: str, info: os.stat_result) -> str | None:
        entry = self.entries.get(rel)
        return entry[2] if entry and entry[:2] == [info.st_size, info.st_mtime_ns] else None

    def put(self, rel: str, info: os.stat_result, digest: str) -> None:
        if self.entries.get(rel) != [info.st_size, info.st_mtime_ns, digest]:
            self.entries[rel] = [info.st_size, info.st_mtime_ns, digest]
            self.changed = True

    def save(self) -> None:
        if self.changed:
            write_atomically(self.path, json.dumps(self.entries).encode(), mode=0o600)


def _join(rel_folder: str, name: str) -> str:
    return name if rel_folder == "." else f"{rel_folder}/{name}"
