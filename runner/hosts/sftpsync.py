"""Pushing a folder over SFTP, for hosts without rsync: rsync's quick check (size and mtime) per file,
one directory listing per folder, and mtimes set after each upload so the next push can skip it."""

from __future__ import annotations

import os
import posixpath
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import paramiko

from runner.hosts.base import SyncStats
from runner.syncignore import is_excluded


def sftp_push(sftp: paramiko.SFTPClient, source: Path, dest: str, exclude: Sequence[str]) -> SyncStats:
    started = time.monotonic()
    files_sent = bytes_sent = 0
    for folder, subfolders, files in os.walk(source):
        rel_folder = Path(folder).relative_to(source).as_posix()
        subfolders[:] = [name for name in subfolders if not is_excluded(_join(rel_folder, name), exclude)]
        remote_folder = dest if rel_folder == "." else posixpath.join(dest, rel_folder)
        existing = _listing(sftp, remote_folder)
        for name in files:
            if is_excluded(_join(rel_folder, name), exclude):
                continue
            local = Path(folder, name)
            if local.is_symlink() or not local.is_file():
                continue
            info = local.stat()
            there = existing.get(name)
            if there is not None and there.st_size == info.st_size and there.st_mtime == int(info.st_mtime):
                continue
            remote = posixpath.join(remote_folder, name)
            # Uploaded beside its final name, then renamed: a broken push never leaves a torn file there.
            partial = posixpath.join(remote_folder, f".{name}.runner-partial")
            sftp.put(str(local), partial)
            sftp.utime(partial, (int(info.st_atime), int(info.st_mtime)))
            sftp.chmod(partial, stat.S_IMODE(info.st_mode))
            sftp.posix_rename(partial, remote)
            files_sent += 1
            bytes_sent += info.st_size
    return SyncStats("sftp", files_sent, bytes_sent, time.monotonic() - started)


def _listing(sftp: paramiko.SFTPClient, remote_folder: str) -> dict[str, paramiko.SFTPAttributes]:
    try:
        return {entry.filename: entry for entry in sftp.listdir_attr(remote_folder)}
    except FileNotFoundError:
        sftp.mkdir(remote_folder)
        return {}


def _join(rel_folder: str, name: str) -> str:
    return name if rel_folder == "." else f"{rel_folder}/{name}"
