"""Where the vast.ai API key comes from: VAST_API_KEY, else a private file in runner's config dir.

The key rents machines on the user's card: it never goes into a message, a log line, a repr or an argv.
"""

from __future__ import annotations

import os
from pathlib import Path

from runner.base import paths
from runner.base.errors import SpecError
from runner.base.privatefile import read_private_file

KEY_VARIABLE = "VAST_API_KEY"


def api_key_file() -> Path:
    return paths.config_dir() / "vast_api_key"


def load_api_key() -> str:
    from_env = os.environ.get(KEY_VARIABLE, "").strip()
    if from_env:
        return from_env
    path = api_key_file()
    if not path.exists():
        raise SpecError(f"no vast.ai API key: set {KEY_VARIABLE} or write the key to {path} (chmod 600)")
    key = read_private_file(path, "the vast.ai API key file")
    if not key:
        raise SpecError(f"{path}: the vast.ai API key file is empty")
    return key
