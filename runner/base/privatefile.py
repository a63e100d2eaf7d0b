"""Secrets kept in files: the vast.ai API key, a registry's password. As ssh does with a private key,
a file others could read or replace is refused, not used (exit 2, naming the fix)."""

from __future__ import annotations

import stat
from pathlib import Path

from runner.base.errors import SpecError


def read_private_file(path: Path, what: str) -> str:
    """The stripped text of path; SpecError when it is missing or open to other users."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise SpecError(f"{path}: {what}: {exc.strerror}") from None
    if mode & 0o077:
        raise SpecError(f"{path}: {what} can be read by others: chmod 600 {path} (its mode is {mode:04o})")
    return path.read_text().strip()
