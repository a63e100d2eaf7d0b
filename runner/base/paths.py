"""Where runner keeps its state and its configuration on the controller."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def runner_home() -> Path:
    """State (state.db) and the local host's job directories; RUNNER_HOME overrides."""
    override = os.environ.get("RUNNER_HOME")
    if override:
        return Path(override).expanduser().resolve()
    return Path(platformdirs.user_data_dir("runner", appauthor=False))


def config_dir() -> Path:
    """hosts.yaml and settings; RUNNER_CONFIG_DIR overrides."""
    override = os.environ.get("RUNNER_CONFIG_DIR")
    if override:
        return Path(override).expanduser().resolve()
    return Path(platformdirs.user_config_dir("runner", appauthor=False))


def hosts_yaml() -> Path:
    """The user's named hosts (and the registry runner publishes to)."""
    return config_dir() / "hosts.yaml"


def state_db() -> Path:
    return runner_home() / "state.db"


def local_host_root() -> Path:
    """The local host's runner directory: the same layout a remote host keeps in ~/.runner."""
    return runner_home() / "local"


def runner_known_hosts() -> Path:
    """Host keys recorded by `--trust-new-host`; read together with the user's own known_hosts."""
    return config_dir() / "known_hosts"


def user_known_hosts() -> Path:
    return Path("~/.ssh/known_hosts").expanduser()


def syncs_dir() -> Path:
    """The background syncs' logs and pid files (`artifacts.NAME.sync_every`): JOB_ID-NAME.log / .pid."""
    return runner_home() / "syncs"


def locks_dir() -> Path:
    return runner_home() / "locks"
