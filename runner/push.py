"""push: a local folder to a host, only what changed, resumable, verified by sha256 on arrival.

The fetch engine run the other way. Both sides list their files with sha256 (each side caching hashes
by path, size and mtime, so an unchanged dataset is not read again); only files whose hash differs
move. Small files go in a few tar streams; large ones one by one, resuming an interrupted upload
from its part file on the host. The host's agent places a file under its name only once its bytes
hash to what was sent, so a dropped link or a file changed while it was read never leaves a torn file.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from runner.errors import HostUnreachable, RunnerError
from runner.hosts import Host, SyncStats
from runner.layout import run_agent
from runner.localfiles import LocalFile, list_local_tree
from runner.smallfiles import BATCH_BYTES, BATCH_FILES, SMALL_FILE_BYTES

LINK_ATTEMPTS = 6
ROUNDS_PER_FILE = 3  # a local file rewritten during each of its uploads is reported, not sent torn


@dataclass
class Sent:
    files: int = 0
    bytes: int = 0


def push_tree(host: Host, source: Path, dest: str, exclude: Sequence[str]) -> SyncStats:
    """Make dest on the host hold source's files (less the excluded ones); nothing is deleted there."""
    started = time.monotonic()
    local = list_local_tree(source, exclude)
    remote_files, remote_parts = _list_remote(host, dest)
    wanted = [item for item in local if remote_files.get(item.rel) != item.sha256]
    sent = Sent()
    small = [item for item in wanted if item.size <= SMALL_FILE_BYTES]
    placed = _send_batches(host, dest, small, sent)
    for item in wanted:
        if item.rel not in placed:
            _send_one(host, dest, item, remote_parts.get(_part_rel(item)), sent)
    return SyncStats(host.transport, sent.files, sent.bytes, time.monotonic() - started)


def _list_remote(host: Host, dest: str) -> tuple[dict[str, str], dict[str, int]]:
    answer = json.loads(run_agent(host, "tree", dest, timeout=3600).check().text)
    files = {item["path"]: item["sha256"] for item in answer["files"]}
    parts = {item["part"]: item["size"] for item in answer["parts"]}
    return files, parts


def _part_rel(item: LocalFile) -> str:
    folder, _, name = item.rel.rpartition("/")
    part = f".{name}.{item.sha256[:16]}.runner-part"  # the agent's transfer.part_path
    return f"{folder}/{part}" if folder else part


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
    refuses it on its hash, and the one-by-one path hashes it again."""
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


def _send_one(host: Host, dest: str, item: LocalFile, known_offset: int | None, sent: Sent) -> None:
    for _ in range(ROUNDS_PER_FILE):
        retrying = Retrying(
            retry=retry_if_exception_type((HostUnreachable, _TryAgain)),
            stop=stop_after_attempt(LINK_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.5, max=10),
            reraise=True,
        )
        offsets = [known_offset]  # the listing's part size serves the first attempt; later ones ask
        first_offset = known_offset if known_offset is not None else 0
        if retrying(_upload, host, dest, item, offsets) == "placed":
            sent.files += 1
            sent.bytes += item.size - min(first_offset, item.size)
            return
        item = item.rehashed()  # it changed while it was read: send the version it is now
        known_offset = 0
    raise RunnerError(f"{item.path}: changed during each of {ROUNDS_PER_FILE} uploads; try again when it holds still")


def _upload(host: Host, dest: str, item: LocalFile, offsets: list[int | None]) -> str:
    offset = offsets.pop() if offsets else None
    if offset is None:
        answer = run_agent(host, "part-size", dest, item.rel, item.sha256).check()
        offset = json.loads(answer.text).get("size", 0)
    if offset > item.size:
        offset = 0
    with item.path.open("rb") as source:
        source.seek(offset)
        fields = [str(item.size), item.sha256, str(item.mtime_ns), format(item.mode, "o"), str(offset)]
        answer = json.loads(run_agent(host, "receive", dest, item.rel, *fields, stdin=source, timeout=None).check().text)
    status = answer["status"]
    if status == "refused":
        raise RunnerError(f"host '{host.name}' refused {item.rel}: it would land outside {dest}")
    if status in ("busy", "moved"):
        raise _TryAgain(status)
    return "placed" if status == "placed" else "changed"
