"""hosts.yaml and how connection failures are classified."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from runner.base.errors import HostKeyRejected, NotFound, SpecError
from runner.hosts.hostsfile import host_entry, load_hosts
from runner.hosts.hostsmodel import SshHostEntry, add_host
from runner.hosts.sshconnect import is_transient


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNNER_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.mark.parametrize("target", ["trainer@gpubox:2222", "gpubox", "10.0.0.5", "u@[fe80::1]:22", "lab-box.local"])
def test_ssh_targets_that_are_accepted(target: str) -> None:
    assert SshHostEntry(ssh=target).ssh == target


@pytest.mark.parametrize("target", ["-oProxyCommand=touch /tmp/x", "a b", "user@", "host:port", "x;y", ""])
def test_ssh_targets_that_are_refused(target: str) -> None:
    with pytest.raises(ValueError):
        SshHostEntry(ssh=target)


def test_a_bad_hosts_file_names_its_line(config_dir: Path) -> None:
    (config_dir / "hosts.yaml").write_text("hosts:\n  box:\n    ssh: me@box\n    conect_timeout: 3\n")
    with pytest.raises(SpecError) as caught:
        load_hosts()
    assert str(caught.value) == (
        f"{config_dir / 'hosts.yaml'}:4:5: hosts.box.conect_timeout: unknown field 'conect_timeout',"
        " did you mean 'connect_timeout'?"
    )


def test_the_validation_cache_never_hides_an_edit(config_dir: Path) -> None:
    (config_dir / "hosts.yaml").write_text("hosts:\n  box:\n    ssh: me@box\n")
    assert load_hosts().hosts["box"].ssh == "me@box"
    assert load_hosts().hosts["box"].ssh == "me@box"  # from the cache now
    (config_dir / "hosts.yaml").write_text("hosts:\n  box:\n    ssh: me@box:22x\n")  # same size, new content
    with pytest.raises(SpecError):
        load_hosts()
    (config_dir / "hosts.yaml").write_text("hosts:\n  box:\n    ssh: me@other\n")
    assert load_hosts().hosts["box"].ssh == "me@other"


def test_status_with_validated_hosts_starts_without_pydantic_or_paramiko(config_dir: Path) -> None:
    (config_dir / "hosts.yaml").write_text("hosts:\n  box:\n    ssh: me@box\n")
    load_hosts()  # validated once, as `runner hosts add` or any earlier command does
    script = (
        "import sys\nfrom runner.cli.app import cli\ncli.main(['status'], standalone_mode=False)\n"
        "print(sorted(name for name in ('pydantic', 'paramiko', 'fabric', 'yaml') if name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_add_host_keeps_the_others_and_unknown_names_list_the_known(config_dir: Path) -> None:
    add_host("a", SshHostEntry(ssh="me@a:2200", identity="~/.ssh/a"))
    add_host("b", SshHostEntry(ssh="b"))
    assert host_entry("a").identity == "~/.ssh/a" and host_entry("b").ssh == "b"
    with pytest.raises(NotFound, match=r"unknown host 'c' \(known hosts: local, a, b\)"):
        host_entry("c")
    with pytest.raises(ValueError):
        add_host("local", SshHostEntry(ssh="x"))
    assert sorted(load_hosts().hosts) == ["a", "b"]


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        TimeoutError("timed out"),
        paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 22): OSError("refused")}),
        paramiko.SSHException("Error reading SSH protocol banner"),
        paramiko.SSHException("No existing session"),
        EOFError(),
    ],
)
def test_transient_failures_are_retried(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        paramiko.AuthenticationException("Authentication failed."),
        paramiko.BadHostKeyException(
            "h",
            paramiko.Ed25519Key.generate()
            if hasattr(paramiko.Ed25519Key, "generate")
            else paramiko.RSAKey.generate(1024),
            paramiko.RSAKey.generate(1024),
        ),
        HostKeyRejected("unknown host"),
        paramiko.SSHException("Incompatible ssh peer (no acceptable kex algorithm)"),
        PermissionError(errno.EACCES, "denied"),
    ],
)
def test_authentication_and_key_failures_are_never_retried(error: BaseException) -> None:
    assert not is_transient(error)


def test_known_hosts_marker_lines_do_not_break_the_others(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.hosts.keys import load_known_hosts

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    key = paramiko.RSAKey.generate(1024)
    (home / ".ssh" / "known_hosts").write_text(
        f"@cert-authority *.corp {key.get_name()} {key.get_base64()}\n"
        f"@revoked old.example {key.get_name()} {key.get_base64()}\n"
        "broken.example ssh-ed25519 not-base64!!\n"
        f"[gpubox]:2222 {key.get_name()} {key.get_base64()}\n"
    )
    client = paramiko.SSHClient()
    load_known_hosts(client)
    assert client.get_host_keys().lookup("[gpubox]:2222")[key.get_name()] == key
    assert client.get_host_keys().lookup("old.example") is None
