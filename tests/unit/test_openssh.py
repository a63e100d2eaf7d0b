"""runner's OpenSSH settings: the shared-connection sockets stay private, host keys stay strict."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.base.errors import RunnerError
from runner.hosts import openssh


@pytest.fixture(autouse=True)
def own_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    openssh._write_ssh_config.cache_clear()


def test_the_socket_folder_is_private_and_short() -> None:
    folder = openssh.control_dir()
    assert folder.stat().st_mode & 0o777 == 0o700 and folder.stat().st_uid == os.getuid()
    assert len(str(folder / ("x" * 40))) < 100  # %C is 40 hex digits; a Unix socket path must fit in ~104 bytes


def test_a_socket_folder_others_can_enter_is_refused() -> None:
    folder = openssh.control_dir()
    folder.chmod(0o755)
    try:
        with pytest.raises(RunnerError, match="not a private folder"):
            openssh.control_dir()
    finally:
        folder.chmod(0o700)


def test_the_config_multiplexes_and_never_learns_host_keys(tmp_path: Path) -> None:
    user_config = tmp_path / "home" / ".ssh" / "config"
    user_config.parent.mkdir(parents=True)
    user_config.write_text("Host *\n  StrictHostKeyChecking no\n")  # a user's lax default must not win
    text = openssh.write_ssh_config().read_text()
    assert "StrictHostKeyChecking yes" in text and "BatchMode yes" in text
    assert "ControlMaster auto" in text and f"ControlPersist {openssh.CONTROL_PERSIST_SECONDS}" in text
    assert f'ControlPath "{openssh.control_dir()}/%C"' in text
    # In ssh_config the first value wins: runner's settings come before the user's file is included.
    assert text.index("StrictHostKeyChecking yes") < text.index(f'Include "{user_config}"')
