"""One file from a host to here: resumable, verified, never torn under its final name.

Bytes go to NAME.part (appended from where an interrupted copy stopped), hashed as they arrive;
the file takes its final name only when its sha256 matches the host's manifest. A dropped link is
retried and resumes; a file that changed on the host (last.pt at every epoch end) starts over.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from runner.errors import HostUnreachable, RunnerError
from runner.hosts import Host

LINK_ATTEMPTS = 6


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
    retrying = Retrying(
        retry=retry_if_exception_type(HostUnreachable),
        stop=stop_after_attempt(LINK_ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    digest = retrying(_copy_resuming, host, remote_path, expected, part)
    if digest != expected.sha256 or part.stat().st_size != expected.size:
        part.unlink(missing_ok=True)  # a torn or newer copy: never kept, and never resumed from
        raise Changed(expected.path)
    os.replace(part, final)


def _copy_resuming(host: Host, remote_path: str, expected: RemoteFile, part: Path) -> str:
    """Append what part lacks; returns the sha256 of the whole part file."""
    digest = hashlib.sha256()
    offset = _hash_existing(part, digest, expected.size)
    with part.open("ab") as out:

        def sink(block: bytes) -> None:
            out.write(block)
            digest.update(block)
            if out.tell() > expected.size:
                raise _Grew()

        try:
            host.read_into(remote_path, offset, sink)
        except _Grew:
            pass  # it grew on the host: the hash check fails and the caller starts over
        except HostUnreachable:
            out.flush()  # what arrived stays, for the retry to resume from
            raise
    return digest.hexdigest()


class _Grew(RunnerError):
    pass


def _hash_existing(part: Path, digest: "hashlib._Hash", size_limit: int) -> int:
    """Hash what an earlier attempt left in part; returns where to resume."""
    if not part.exists():
        return 0
    if part.stat().st_size > size_limit:
        part.unlink()
        return 0
    with part.open("rb") as existing:
        for block in iter(lambda: existing.read(4 * 1024 * 1024), b""):
            digest.update(block)
        return existing.tell()
