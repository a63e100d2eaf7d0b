"""One file from a host to here: resumable, verified, never torn under its final name.

Bytes go to NAME.part (appended from where an interrupted copy stopped) while a second thread
hashes the part file as it grows; the file takes its final name only when its sha256 matches the
host's manifest. A dropped link is retried and resumes; a file that changed on the host (last.pt
at every epoch end) starts over.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from runner.errors import HostUnreachable
from runner.hosts import Host

LINK_ATTEMPTS = 6
HASH_CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the artifact root
    size: int
    sha256: str
    stable: bool = True  # False: it kept changing while the host hashed it


class Changed(Exception):
    """The bytes copied do not hash to the manifest's sha256: the file changed on the host."""


def download(host: Host, remote_path: str, expected: RemoteFile, final: Path) -> None:
    """Copy remote_path to final through final.part; raises Changed if the bytes are not `expected`."""
    part = final.with_name(final.name + ".part")
    if part.exists() and part.stat().st_size > expected.size:
        part.unlink()  # left by a copy of another version: useless to resume from
    hasher = _GrowingFileHasher(part)
    retrying = Retrying(
        retry=retry_if_exception_type(HostUnreachable),
        stop=stop_after_attempt(LINK_ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    try:
        retrying(_append_missing, host, remote_path, part)
    finally:
        digest = hasher.finish()
    if digest != expected.sha256 or part.stat().st_size != expected.size:
        part.unlink(missing_ok=True)  # a torn or newer copy: never kept, and never resumed from
        raise Changed(expected.path)
    os.replace(part, final)


def _append_missing(host: Host, remote_path: str, part: Path) -> None:
    with part.open("ab") as out:
        host.read_into(remote_path, out.tell(), out)  # what arrived before a drop stays for the retry


class _GrowingFileHasher:
    """Hashes a file while another writer appends to it, so verifying costs no second pass."""

    def __init__(self, path: Path) -> None:
        path.touch()
        self._source = path.open("rb")
        self._digest = hashlib.sha256()
        self._writer_done = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def finish(self) -> str:
        self._writer_done.set()
        self._thread.join()
        self._source.close()
        return self._digest.hexdigest()

    def _follow(self) -> None:
        while True:
            done = self._writer_done.is_set()  # read before the chunk: the last one is never missed
            block = self._source.read(HASH_CHUNK_BYTES)
            if block:
                self._digest.update(block)
            elif done:
                return
            else:
                time.sleep(0.005)
