"""push: a local folder to a host, only what changed, resumable, verified by sha256 on arrival.

The fetch engine run the other way. The host lists its files with sha256 (cached there by path,
size and mtime); a local file moves when the host lacks it, holds another size, or another hash
(local hashes are cached too, so an unchanged dataset is not read again). Small files go in a few
tar streams; large ones one by one, each hashed here first (cached: once per version of the file)
and sent into the host's part of that content (ROOT/parts/SHA256-SIZE.runner-part), so an upload cut
short, by a dropped link, a killed submit or a full disk, is resumed by the next push of the same
bytes, from any job; hashed again as it is read. The host's agent places a file under its name only
once its bytes hash to what the sender read, and the sender voids an upload when the file changed
while it read it: a dropped link or a file being written never leaves a torn file under the final name.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from runner.base.errors import HostUnreachable, RunnerError
from runner.hosts import Host, SyncStats
from runner.hosts.feed import write_all
from runner.hostside.transfer import hash_prefix  # the agent's own: both sides hash alike
from runner.jobs.layout import run_agent
from runner.transfer import progress as transferprogress
from runner.transfer.localfiles import LocalFile, LocalTree
from runner.transfer.smallfiles import BATCH_BYTES, BATCH_FILES, SMALL_FILE_BYTES

LINK_ATTEMPTS = 6
ROUNDS_PER_FILE = 3  # a local file rewritten during each of its uploads is reported, not sent torn
READ_BYTES = 1024 * 1024
VOID = b"-" * 64  # sent instead of the sha256 when the file changed while it was read


@dataclass
class Sent:
    files: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class RemoteEntry:
    size: int
    sha256: str


def push_tree(host: Host, source: Path, dest: str, exclude: Sequence[str]) -> SyncStats:
    """Make dest on the host hold source's files (less the excluded ones); nothing is deleted there."""
    started = time.monotonic()
    local = LocalTree(source, exclude)
    remote = _list_remote(host, dest)
    sent = Sent()
    try:
        wanted = [item for item in local.files if _differs(local, item, remote.files.get(item.rel))]
        transferprogress.current().add_total(sum(item.size for item in wanted))
        small = [local.hashed(item) for item in wanted if item.size <= SMALL_FILE_BYTES]
        placed = _send_batches(host, dest, small, sent)
        for item in wanted:
            if item.rel not in placed:
                item = local.hashed(item)  # its content names its part on the host
                _send_one(host, dest, local, item, remote.held.get(_content(item)), sent)
    finally:
        local.save()
    _remove_old_layout_parts(host, dest, remote.old_parts)
    return SyncStats(host.transport, sent.files, sent.bytes, time.monotonic() - started)


def _differs(local: LocalTree, item: LocalFile, there: RemoteEntry | None) -> bool:
    # Only a file of the same size is worth hashing to compare: any other is sent without a look.
    return there is None or there.size != item.size or local.hashed(item).sha256 != there.sha256


@dataclass(frozen=True)
class RemoteTree:
    files: dict[str, RemoteEntry]  # by relative path
    held: dict[tuple[str, int], int]  # the host's parts: bytes held, by (sha256, size) of the whole file
    old_parts: list[str]  # parts an older agent left inside dest (relative paths): never resumed now


def _list_remote(host: Host, dest: str) -> RemoteTree:
    answer = json.loads(run_agent(host, "tree", dest, timeout=3600).check().text)
    return RemoteTree(
        files={item["path"]: RemoteEntry(item["size"], item["sha256"]) for item in answer["files"]},
        held={(item["sha256"], item["size"]): item["have"] for item in answer.get("held", [])},
        old_parts=sorted(item["part"] for item in answer["parts"]),
    )


def _content(item: LocalFile) -> tuple[str, int]:
    """What names a file's part on the host: the sha256 and size of its whole content."""
    assert item.sha256 is not None, f"{item.rel} is hashed before it is sent"
    return item.sha256, item.size


def _remove_old_layout_parts(host: Host, dest: str, parts: list[str]) -> None:
    """Parts an older runner's interrupted uploads left in the destination: nothing resumes them now."""
    for start in range(0, len(parts), 500):  # far below the command-line limit
        run_agent(host, "remove-parts", dest, *parts[start : start + 500]).check()


# Small files: tar streams


def _send_batches(host: Host, dest: str, items: list[LocalFile], sent: Sent) -> set[str]:
    placed: set[str] = set()
    for batch in _batches(items):
        stream, included = _batch_stream(batch)
        result = run_agent(host, "receive-batch", dest, stdin=stream, timeout=None)
        if result.returncode != 0:
            continue  # the one-by-one path takes these, and reports what is wrong
        for rel in json.loads(result.text)["placed"]:
            placed.add(rel)
            sent.files += 1
            sent.bytes += included[rel]
            transferprogress.current().advance(included[rel])
    return placed


def _batches(items: list[LocalFile]) -> list[list[LocalFile]]:
    batches: list[list[LocalFile]] = [[]]
    size = 0
    for item in items:
        if batches[-1] and (size + item.size > BATCH_BYTES or len(batches[-1]) >= BATCH_FILES):
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += item.size
    return [batch for batch in batches if batch]


def _batch_stream(batch: list[LocalFile]) -> tuple[bytes, dict[str, int]]:
    """The header line and the tar. A file that changed since it was hashed goes anyway: the agent
    refuses it on its hash, and the one-by-one path sends it again."""
    header = [
        {"path": item.rel, "size": item.size, "sha256": item.sha256, "mode": item.mode, "mtime_ns": item.mtime_ns}
        for item in batch
    ]
    buffer = io.BytesIO()
    buffer.write(json.dumps(header).encode() + b"\n")
    included = {}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for item in batch:
            try:
                archive.add(str(item.path), arcname=item.rel, recursive=False)
            except OSError:
                continue  # gone since it was listed
            included[item.rel] = item.size
    return buffer.getvalue(), included


# Large files: one by one, resumable


class _TryAgain(Exception):
    """The host could not take the upload now (another push of the same file, a moved offset)."""


def _send_one(host: Host, dest: str, local: LocalTree, item: LocalFile, known_offset: int | None, sent: Sent) -> None:
    """Upload one large, hashed file, resuming from the bytes the host holds of its content
    (known_offset, from the listing); sent counts only the bytes that cross the link."""
    for _ in range(ROUNDS_PER_FILE):
        retrying = Retrying(
            retry=retry_if_exception_type((HostUnreachable, _TryAgain)),
            stop=stop_after_attempt(LINK_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.5, max=10),
            reraise=True,
        )
        offsets = [known_offset]  # the listing's part size serves the first attempt; later ones ask
        first_offset = min(known_offset or 0, item.size)
        try:
            answer = retrying(_upload, host, dest, item, offsets)
        except _TryAgain:
            raise RunnerError(
                f"host '{host.name}': another push of {item.rel} (the same bytes) is under way; try again when it ends"
            ) from None
        if answer["status"] == "placed":
            local.record(item, answer["sha256"])
            sent.files += 1
            sent.bytes += item.size - first_offset
            return
        item = local.hashed(item.restat())  # it changed while it was read: send the version it is now
        known_offset = None  # its part (another content) is asked for
    raise RunnerError(f"{item.path}: changed during each of {ROUNDS_PER_FILE} uploads; try again when it holds still")


def _upload(host: Host, dest: str, item: LocalFile, offsets: list[int | None]) -> dict[str, Any]:
    offset = offsets.pop() if offsets else None
    sha256, size = _content(item)
    if offset is None:
        answer = run_agent(host, "part-size", sha256, str(size)).check()
        offset = json.loads(answer.text).get("size", 0)
    if offset > item.size:
        offset = 0  # not a part of this content after all: start over
    with _HashingReader(item, offset) as source:
        fields = [str(item.size), str(item.mtime_ns), format(item.mode, "o"), str(offset), sha256]
        # The reader reads as a binary file does, which is all the host's stdin feed asks of it.
        reply: dict[str, Any] = json.loads(
            run_agent(host, "receive", dest, item.rel, *fields, stdin=cast(BinaryIO, source), timeout=None).check().text
        )
    status = reply["status"]
    if status == "refused":
        raise RunnerError(f"host '{host.name}' refused {item.rel}: it would land outside {dest}")
    if status in ("busy", "moved"):
        raise _TryAgain(status)
    if status == "no-space":
        raise RunnerError(
            f"host '{host.name}' ran out of disk space receiving {item.rel}: {_mib(reply['size'])} of"
            f" {_mib(item.size)} arrived and stay for the next push ({_mib(reply['free'])} free);"
            " `runner prune` removes finished jobs' folders"
        )
    return reply  # placed; or mismatch / incomplete: the file changed (or shrank) while it was read


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


class _HashingReader:
    """The file's bytes from offset to its listed size, then the sha256 of all of it, or VOID when
    the file changed while it was read. write_to() moves the bytes with sendfile (no copy through
    Python) while a thread hashes the file beside it; read() is the portable path. Rewindable to its
    start, for a command that must be run again."""

    def __init__(self, item: LocalFile, offset: int) -> None:
        self.item, self.offset = item, offset
        self._file = item.path.open("rb")
        self.seek(offset)

    def __enter__(self) -> _HashingReader:
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, position: int) -> None:
        if position != self.offset:
            raise ValueError("a hashing reader only goes back to where it started")
        self._position, self._trailer_sent = position, False

    def write_to(self, fd: int) -> None:
        hashed: list[str] = []
        hasher = threading.Thread(
            target=lambda: hashed.append(hash_prefix(str(self.item.path), self.item.size).hexdigest())
        )
        hasher.start()
        try:
            while self._position < self.item.size:
                moved = os.sendfile(fd, self._file.fileno(), self._position, self.item.size - self._position)
                if moved == 0:
                    break  # it shrank: the hash below cannot match its listing
                self._position += moved
                transferprogress.current().advance(moved)
        finally:
            hasher.join()
        whole = self._position == self.item.size and hashed and self._held_still()
        write_all(fd, hashed[0].encode() if whole else VOID)

    def read(self, size: int = READ_BYTES) -> bytes:
        if self._position < self.item.size:
            self._file.seek(self._position)
            block = self._file.read(min(size, self.item.size - self._position))
            self._position = self._position + len(block) if block else self.item.size
            if block:
                transferprogress.current().advance(len(block))
                return block
        if self._trailer_sent:
            return b""
        self._trailer_sent = True
        whole = hash_prefix(str(self.item.path), self.item.size).hexdigest()
        return whole.encode() if self._held_still() else VOID

    def _held_still(self) -> bool:
        info = os.stat(self._file.fileno())
        return (info.st_size, info.st_mtime_ns) == (self.item.size, self.item.mtime_ns)
