"""fetch: copy an artifact set from a job's host, verified by sha256, never torn under its final name.

Each file is copied to NAME.part, hashed, and renamed into place only when its hash matches the
host's manifest. A file rewritten on the host while it was copied (last.pt at every epoch end)
fails the hash and is listed and copied again.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runner.errors import NotFound, RunnerError
from runner.hosts import Host, get_host
from runner.layout import JobLayout, agent_argv
from runner.state import Job

ATTEMPTS_PER_FILE = 3
MANIFEST_SECONDS = 3600  # hashing hundreds of checkpoints can take long; the SSH keepalive catches a dead link


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str


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
    refused: list[str]
    seconds: float

    @property
    def bytes_copied(self) -> int:
        return sum(item.size for item in self.files if item.copied)


def fetch(job: Job, artifact: str, dest: Path) -> FetchResult:
    globs = job.spec["artifacts"].get(artifact)
    if globs is None:
        names = ", ".join(sorted(job.spec["artifacts"]))
        raise NotFound(f"job {job.id} has no artifact set '{artifact}' (it has: {names})")
    if not job.job_dir:
        raise NotFound(f"job {job.id} never reached its host: there is nothing to fetch")
    host = get_host(job.host)
    work = JobLayout(job.job_dir).work
    started = time.monotonic()
    listed, refused = _manifest(host, work, globs)
    files = [_fetch_one(host, work, remote, dest) for remote in listed]
    return FetchResult(job.id, artifact, dest, files, refused, time.monotonic() - started)


def _manifest(host: Host, root: str, globs: list[str]) -> tuple[list[RemoteFile], list[str]]:
    answer = json.loads(host.run(agent_argv(host, "manifest", root, *globs), timeout=MANIFEST_SECONDS).check().text)
    files = [RemoteFile(item["path"], item["size"], item["sha256"]) for item in answer["files"]]
    safe = [item for item in files if _is_safe_relative(item.path)]
    unsafe = [item.path for item in files if not _is_safe_relative(item.path)]
    return safe, sorted(answer["refused"] + unsafe)


def _fetch_one(host: Host, root: str, remote: RemoteFile, dest: Path) -> FetchedFile:
    final = dest / remote.path
    if final.is_file() and final.stat().st_size == remote.size and _sha256(final) == remote.sha256:
        return FetchedFile(remote.path, remote.size, remote.sha256, copied=False)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    for _ in range(ATTEMPTS_PER_FILE):
        host.get_file(str(PurePosixPath(root, remote.path)), part)
        digest = _sha256(part)
        if digest == remote.sha256:
            os.replace(part, final)
            return FetchedFile(remote.path, remote.size, digest, copied=True)
        # Rewritten while we copied: list it again and take the new version.
        remote = _relist(host, root, remote.path)
    part.unlink(missing_ok=True)
    raise RunnerError(f"{remote.path}: changed on the host during each of {ATTEMPTS_PER_FILE} copies; try again")


def _relist(host: Host, root: str, rel_path: str) -> RemoteFile:
    listed, _ = _manifest(host, root, [glob.escape(rel_path)])
    if not listed:
        raise NotFound(f"{rel_path}: disappeared from the host while it was being fetched")
    return listed[0]


def _is_safe_relative(path: str) -> bool:
    pure = PurePosixPath(path)
    return bool(path) and not pure.is_absolute() and ".." not in pure.parts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()
