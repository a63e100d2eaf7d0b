"""What is left out when a workdir is copied to a host: .git, caches, and what .runnerignore lists."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

ALWAYS_EXCLUDED = (".git", "__pycache__", ".runnerignore")


def load_excludes(workdir: Path) -> list[str]:
    """ALWAYS_EXCLUDED plus .runnerignore's patterns (gitignore-like: '#' comments, blank lines skipped)."""
    patterns = list(ALWAYS_EXCLUDED)
    ignore_file = workdir / ".runnerignore"
    if ignore_file.is_file():
        for line in ignore_file.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line)
    return patterns


def is_excluded(rel_path: str, patterns: Sequence[str]) -> bool:
    """A pattern without '/' matches any path component; one with '/' matches from the workdir's top."""
    path = PurePosixPath(rel_path)
    for pattern in patterns:
        anchored = pattern.strip("/")
        if "/" in anchored:
            if fnmatch.fnmatch(str(path), anchored):
                return True
        elif any(fnmatch.fnmatch(part, anchored) for part in path.parts):
            return True
    return False
