"""Where the vast.ai API key comes from: VAST_API_KEY, else a private file in runner's config dir.

The key rents machines on the user's card: it never goes into a message, a log line, a repr or an argv.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runner import paths
from runner.errors import SpecError

KEY_VARIABLE = "VAST_API_KEY"


def api_key_file() -> Path:
    return paths.config_dir() / "vast_api_key"


def load_api_key() -> str:
    from_env = os.environ.get(KEY_VARIABLE, "").strip()
    if from_env:
        return from_env
    path = api_key_file()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SpecError(f"no vast.ai API key: set {KEY_VARIABLE} or write the key to {path} (chmod 600)") from None
    if stat.S_IMODE(mode) & 0o077:
        # As ssh does with a private key: a key others could read or replace is refused, not used.
        raise SpecError(
            f"{path}: the vast.ai API key file is open to other users (mode {stat.S_IMODE(mode):04o}): run chmod 600 {path}"
        )
    key = path.read_text().strip()
    if not key:
        raise SpecError(f"{path}: the vast.ai API key file is empty")
    return key
