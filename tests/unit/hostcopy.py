"""The host-side files as a host holds them: copied into a folder of their own (no runner package
around them) and imported by the agent's own bootstrap, with -E -S as run_agent runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runner import hostside

# Loads agent.py without running a command: its bootstrap makes its folder the package `hostside`.
BOOTSTRAP = "import runpy, sys; runpy.run_path(sys.argv.pop(1), run_name='agent'); sys.argv[0] = '-c'\n"


def copy_hostside(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in hostside.FILES:
        (folder / name).write_bytes(hostside.read(name))
    return folder


def run_in_copy(folder: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """code run after the agent's bootstrap, in a fresh interpreter whose working directory is elsewhere."""
    return subprocess.run([sys.executable, "-E", "-S", "-c", BOOTSTRAP + code, str(folder / "agent.py"), *args],
                          capture_output=True, text=True, cwd=folder.parent, timeout=60)  # fmt: skip
