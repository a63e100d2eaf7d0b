"""The user's settings: `settings.yaml` in the config dir (RUNNER_CONFIG_DIR), defaults for every job.

Today it holds `notify:`, the notifications of a job file that has none. The default is copied into
the job when its file is read, so a later change of settings.yaml never notifies about old jobs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from runner.base import paths
from runner.base.yamlfile import StrictModel, load_yaml_mapping, validate
from runner.jobs.notifyspec import Notify


class Settings(StrictModel):
    notify: Notify | None = Field(None, description="notifications for jobs whose file has no notify:")


def settings_yaml() -> Path:
    return paths.config_dir() / "settings.yaml"


def load_settings() -> Settings:
    """settings.yaml, validated (errors as `file:line:col: field: message`, exit 2); defaults without one."""
    path = settings_yaml()
    if not path.exists():
        return Settings()
    data, marks = load_yaml_mapping(path, what="settings file")
    settings: Settings = validate(Settings, data, marks, path)
    return settings
