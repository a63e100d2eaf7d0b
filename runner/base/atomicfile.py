"""Replacing a file on this machine so that readers see the old version or the new one, never half."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write data beside path under a unique temporary name, then rename it over path."""
    with replacing(path, mode) as out:
        out.write(data)


@contextmanager
def replacing(path: Path, mode: int) -> Iterator[BinaryIO]:
    """A file to write path's new content into, renamed over path when the context ends well and
    removed when it does not: for content that arrives in pieces, too large to hold whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
