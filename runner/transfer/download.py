"""One file from a host to here: resumable, verified, never torn under its final name.

Bytes go to NAME.part (appended from where an interrupted copy stopped) while a second thread
hashes the part file as it grows; the file takes its final name only when its sha256 matches the
host's: from the manifest, or, for a large file not hashed yet, computed by the host as it sends
the file (one read on the host instead of two), with its word that the file held still meanwhile.
A dropped link is retried and resumes; a file that changed on the host (last.pt at every epoch end)
starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from runner.base.errors import HostUnreachable, NotFound, RunnerError
from runner.hosts import Host
from runner.jobs.layout import run_agent
from runner.transfer import progress as transferprogress

LINK_ATTEMPTS = 6
HASH_CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the artifact root
    size: int
    sha256: str | None  # None: not hashed yet; the host hashes it while sending it
    stable: bool = True  # False: it kept changing while the host looked at it


class Changed(Exception):
    """The bytes copied are not one whole version of the file: it changed on the host."""


def download(host: Host, root: str, expected: RemoteFile, final: Path) -> RemoteFile:
    """Copy root/expected.path to final through final.part and return what was verified.
    Raises Changed when the bytes are not one whole version of the file."""
    part = final.with_name(final.name + ".part")
    if part.exists() and part.stat().st_size > expected.size:
        part.unlink()  # left by a copy of another version: useless to resume from
    hasher = _GrowingFileHasher(part)
    report: dict[str, Any] = {}
    retrying = Retrying(
        retry=retry_if_exception_type(HostUnreachable),
        stop=stop_after_attempt(LINK_ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    try:
        retrying(_append_missing, host, root, expected, part, report)
    finally:
        digest = hasher.finish()
    # A file hashed in the manifest must match that hash; one hashed while sent, the sender's report
    # (which also says whether the file held still while it was read).
    wanted = expected.sha256 or (report.get("sha256") if report.get("stable") else None)
    size = expected.size if expected.sha256 else report.get("size")
    if digest != wanted or part.stat().st_size != size:
        part.unlink(missing_ok=True)  # a torn or newer copy: never kept, and never resumed from
        raise Changed(expected.path)
    os.replace(part, final)
    return RemoteFile(expected.path, size, digest)


def _append_missing(host: Host, root: str, expected: RemoteFile, part: Path, report: dict[str, Any]) -> None:
    with part.open("ab") as out:  # what arrived before a drop stays for the retry
        if expected.sha256:
            host.read_into(posixpath.join(root, expected.path), out.tell(), out)
            return
        result = run_agent(host, "send", root, expected.path, str(out.tell()), stdout=out)
    lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
    answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if result.returncode != 0:
        reason = answer.get("error") or (lines[-1] if lines else f"exit {result.returncode}")
        error = NotFound if "No such file" in reason else RunnerError
        raise error(f"host '{host.name}': sending {expected.path} failed: {reason}")
    report.update(answer)


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
                transferprogress.current().advance(len(block))  # what is hashed has arrived
            elif done:
                return
            else:
                time.sleep(0.005)
