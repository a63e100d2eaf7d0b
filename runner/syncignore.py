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
    """gitignore-like: a pattern without '/' matches any path component; one with a '/' (leading or
    inside) matches from the workdir's top. Either way, matching a folder excludes what is under it."""
    parts = PurePosixPath(rel_path).parts
    prefixes = ["/".join(parts[:count]) for count in range(1, len(parts) + 1)]
    for pattern in patterns:
        body = pattern.rstrip("/")
        if "/" in body:
            if any(fnmatch.fnmatchcase(prefix, body.lstrip("/")) for prefix in prefixes):
                return True
        elif any(fnmatch.fnmatchcase(part, body) for part in parts):
            return True
    return False
