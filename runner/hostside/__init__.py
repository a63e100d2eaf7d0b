"""Files runner copies to a host: the agent (stdlib only, Python >= 3.7) and the window script."""

from __future__ import annotations

from importlib import resources


def read(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()
