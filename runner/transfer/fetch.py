"""fetch: copy an artifact set from a job's host: only what changed, resumable, verified by sha256.

One command on the host lists the set (its hashes cached there by size and mtime); the destination
keeps a manifest of what it already holds, so a second fetch with nothing changed moves no byte and
costs that one round trip, however many files there are. Names from the host are checked before
anything is written: no path leaves the destination.
"""

from __future__ import annotations

import glob
import json
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from runner.base.atomicfile import write_atomically
from runner.base.errors import NotFound, RunnerError
from runner.hosts import Host
from runner.jobs.layout import JobLayout, job_host, run_agent
from runner.jobs.state import Job
from runner.transfer import progress as transferprogress
from runner.transfer.download import Changed, RemoteFile, download
from runner.transfer.smallfiles import SMALL_FILE_BYTES, fetch_small_files

ROUNDS_PER_FILE = 3  # a file rewritten during each of its copies is reported, not fetched torn
MANIFEST_SECONDS = 3600  # hashing hundreds of new checkpoints takes time; the SSH keepalive catches a dead link
LOCAL_MANIFEST = ".runner-manifest.json"


@dataclass(frozen=True)
class FetchedFile:
    path: str
    size: int
    sha256: str
    copied: bool  # False: the destination already held these exact bytes


@dataclass(frozen=True)
class FetchResult:
    job_id: str
    artifact: str
    dest: Path
    files: list[FetchedFile]
    refused: list[str]  # names that would leave the destination or the host's root
    changing: list[str]  # files still being written on the host: left for the next fetch
    seconds: float

    @property
    def bytes_copied(self) -> int:
        return sum(item.size for item in self.files if item.copied)


def fetch(job: Job, artifact: str, dest: Path) -> FetchResult:
    globs = job.spec.artifact_globs(artifact)
    if globs is None:
        names = ", ".join(sorted(job.spec.artifacts))
        raise NotFound(f"job {job.id} has no artifact set '{artifact}' (it has: {names})")
    if not job.job_dir:
        raise NotFound(f"job {job.id} never reached its host: there is nothing to fetch")
    host = job_host(job.host, job.job_dir)
    started = time.monotonic()
    listed, refused = list_remote(host, JobLayout(job.job_dir).work, globs)
    files, changing = fetch_files(host, JobLayout(job.job_dir).work, listed, dest, refused)
    return FetchResult(job.id, artifact, dest, files, sorted(refused), changing, time.monotonic() - started)


def list_remote(host: Host, root: str, globs: list[str]) -> tuple[list[RemoteFile], list[str]]:
    defer = f"--defer-hash-over={SMALL_FILE_BYTES}"  # large files are hashed while they are sent
    answer = json.loads(run_agent(host, "manifest", defer, root, *globs, timeout=MANIFEST_SECONDS).check().text)
    files = [
        RemoteFile(item["path"], item["size"], item["sha256"], item.get("stable", True)) for item in answer["files"]
    ]
    return files, list(answer["refused"])


def fetch_files(
    host: Host, root: str, listed: list[RemoteFile], dest: Path, refused: list[str]
) -> tuple[list[FetchedFile], list[str]]:
    """Bring every listed file to dest; unsafe names go to `refused`, unsettled ones are returned."""
    have = LocalManifest(dest)
    fetched, changing, wanted = [], [], []
    for remote in listed:
        final = safe_destination(dest, remote.path)
        if final is None:
            refused.append(remote.path)
        elif have.holds(remote, final):
            fetched.append(FetchedFile(remote.path, remote.size, _hash_of(remote), copied=False))
        elif not remote.stable:
            changing.append(remote.path)
        else:
            wanted.append((remote, final))

    def arrived(got: RemoteFile, final: Path) -> None:
        have.record(got, final)
        fetched.append(FetchedFile(got.path, got.size, _hash_of(got), copied=True))

    transferprogress.current().add_total(sum(remote.size for remote, _ in wanted))
    try:
        # Small files come in a few tar streams (one round trip per batch); whatever a batch could not
        # deliver verified, and every large file, is copied one by one, resumably.
        batched = fetch_small_files(host, root, [pair for pair in wanted if pair[0].size <= SMALL_FILE_BYTES])
        for got, final in batched:
            arrived(got, final)
            transferprogress.current().advance(got.size)
        delivered = {got.path for got, _ in batched}
        for remote, final in wanted:
            if remote.path not in delivered:
                arrived(_fetch_one(host, root, remote, final), final)
    finally:
        have.save()  # what did arrive is remembered even when a later file fails
    return fetched, changing


def safe_destination(dest: Path, name: str) -> Path | None:
    """Where name goes under dest, or None when it would land outside it (.., absolute, via a symlink)."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\0" in name:
        return None
    final = dest.joinpath(*pure.parts)
    root = dest.resolve()
    # The parent as it resolves now: a symlink inside dest must not carry the write elsewhere.
    if not final.parent.resolve().is_relative_to(root) or final.is_symlink():
        return None
    return final


def _fetch_one(host: Host, root: str, remote: RemoteFile, final: Path) -> RemoteFile:
    final.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(ROUNDS_PER_FILE):
        try:
            return download(host, root, remote, final)
        except Changed:
            remote = _relist(host, root, remote.path)  # rewritten while copied: take the new version
    raise RunnerError(f"{remote.path}: changed on the host during each of {ROUNDS_PER_FILE} copies; try again")


def _relist(host: Host, root: str, rel_path: str) -> RemoteFile:
    listed, _ = list_remote(host, root, [glob.escape(rel_path)])
    if not listed:
        raise NotFound(f"{rel_path}: disappeared from the host while it was being fetched")
    return listed[0]


def _hash_of(verified: RemoteFile) -> str:
    """The sha256 of a file held here already or just fetched: both were checked against it."""
    assert verified.sha256 is not None
    return verified.sha256


class LocalManifest:
    """What dest already holds: path -> [size, mtime_ns, sha256], trusted while size and mtime match."""

    def __init__(self, dest: Path) -> None:
        self.path = dest / LOCAL_MANIFEST
        try:
            self.entries: dict[str, list[Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def holds(self, remote: RemoteFile, final: Path) -> bool:
        entry = self.entries.get(remote.path)
        if not entry or not final.is_file() or remote.sha256 is None or entry[2] != remote.sha256:
            return False
        stat = final.stat()
        return [stat.st_size, stat.st_mtime_ns] == entry[:2]

    def record(self, remote: RemoteFile, final: Path) -> None:
        stat = final.stat()
        self.entries[remote.path] = [stat.st_size, stat.st_mtime_ns, remote.sha256]

    def save(self) -> None:
        write_atomically(self.path, json.dumps(self.entries).encode(), mode=0o644)
