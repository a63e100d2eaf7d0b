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
    """gitignore-like, and as rsync reads the same patterns (a test checks against a real rsync): a
    pattern without '/' matches any path component; one with a '/' (leading or inside) matches from
    the workdir's top, '*' never crossing a '/' and '**' crossing any number. Either way, matching a
    folder excludes what is under it."""
    parts = PurePosixPath(rel_path).parts
    for pattern in patterns:
        body = pattern.rstrip("/")
        if "/" in body:
            wanted = body.lstrip("/").split("/")
            if any(_segments_match(parts[:count], wanted) for count in range(1, len(parts) + 1)):
                return True
        elif any(fnmatch.fnmatchcase(part, body) for part in parts):
            return True
    return False


def _segments_match(path: Sequence[str], pattern: Sequence[str]) -> bool:
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_segments_match(path[skip:], pattern[1:]) for skip in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], pattern[0]) and _segments_match(path[1:], pattern[1:])
