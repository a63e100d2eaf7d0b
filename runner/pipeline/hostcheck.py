"""hosts check: can runner use this host, and what does it offer?"""

from __future__ import annotations

import json
import time
from typing import Any

from runner.base.errors import CommandFailed, RunnerError
from runner.hosts import get_host
from runner.jobs.layout import agent_argv, install_hostside


def check_host(name: str, trust_new: bool) -> dict[str, Any]:
    started = time.monotonic()
    host = get_host(name, trust_new)
    host.handshake()  # a fresh one: the host key is checked now, not trusted from a shared link
    root = host.root()
    connect_seconds = time.monotonic() - started
    install_hostside(host)
    try:
        # GPU tools on a sick driver can take their time; each has 20 s inside the agent.
        facts = json.loads(host.run(agent_argv(host, "facts", root), timeout=180).check().text)
    except CommandFailed as error:
        if error.returncode == 127:
            raise RunnerError(f"host '{name}': {host.python} not found; runner's agent needs Python >= 3.7") from None
        raise
    return {"host": name, "kind": host.kind, "reachable": True, "connect_seconds": round(connect_seconds, 3),
            "runner_dir": root, **facts}  # fmt: skip
