"""An SSH target as hosts.yaml writes it: user@host[:port], or an alias of ~/.ssh/config.

Apart from the models that validate hosts.yaml, so that the hosts that connect read it without
loading pydantic, and the models without importing the file's reader.
"""

from __future__ import annotations

import re

# user@host:port, host:port, user@[v6addr]:port, or a bare alias; no spaces, no leading '-' (no ssh options)
SSH_TARGET = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9_.][A-Za-z0-9_.-]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.][A-Za-z0-9_.-]*)(?::(?P<port>[0-9]{1,5}))?$"
)


def without_port(target: str) -> str:
    """The target as `ssh` takes it: the port goes in -p, since ssh reads host:port as a host name."""
    has_port = target.rsplit(":", 1)[-1].isdigit() and not target.endswith("]")
    return target.rsplit(":", 1)[0] if has_port else target
