"""A loopback SSH docker host: this machine's own sshd on a 127.0.0.1 port, with the Docker engine
beside it, logged into as a user of the docker group. The faithful stand-in for a home workstation
with a GPU (DESIGN.md): the containers runner starts there mount the user's job directories, which
only works when sshd and the engine share one filesystem, as they do on a real workstation.

Needs root (to start sshd and create the user), as CI runs; elsewhere the tests that use it skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import wait_for
from tests.e2e.testhost import free_port

USER = "runner-dock"
SSHD = "/usr/sbin/sshd"


def missing_requirement() -> str | None:
    """Why a loopback docker host cannot be started here, or None."""
    if os.geteuid() != 0:
        return "needs root: it starts this machine's sshd and creates a user"
    if not Path(SSHD).exists():
        return f"{SSHD} is missing (apt-get install openssh-server)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers (tests/testhost/start-dockerd)"
    return None


def ensure_user() -> Path:
    """The host's login user, in the docker group, with a home of its own; its home."""
    try:
        return Path(pwd.getpwnam(USER).pw_dir)
    except KeyError:
        # Password "*": none can log in with, yet not "locked" ("!"), which sshd without PAM refuses outright.
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "docker",
                        "--password", "*", USER],
                       check=True)  # fmt: skip
        return Path(pwd.getpwnam(USER).pw_dir)


@dataclass
class DockerHost:
    __test__ = False

    port: int
    key: Path
    home: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, key: Path, folder: Path) -> DockerHost:
        home = ensure_user()
        _authorize(home, key)
        host_key = folder / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        port = free_port()
        config = folder / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {folder / 'sshd.pid'}",
            f"AllowUsers {USER}", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            "AllowStreamLocalForwarding yes",  # the Docker SDK reaches the engine through a forwarded socket
            "AllowTcpForwarding yes", "X11Forwarding no", "PrintMotd no", "",
        ]))  # fmt: skip
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
        host = cls(port, key, home, process)
        wait_for(host._answers, 20, what="the loopback sshd")
        return host

    def _answers(self) -> bool:
        scan = subprocess.run(["ssh-keyscan", "-T", "2", "-p", str(self.port), "127.0.0.1"], capture_output=True)
        return b"ssh-" in scan.stdout

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def hosts_entry(self) -> dict[str, object]:
        return {"ssh": f"{USER}@127.0.0.1:{self.port}", "identity": str(self.key), "connect_timeout": 5,
                "retry_seconds": 6}  # fmt: skip


def _authorize(home: Path, key: Path) -> None:
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    authorized = ssh_dir / "authorized_keys"
    keys = set(authorized.read_text().splitlines()) if authorized.exists() else set()
    keys.add(key.with_suffix(".pub").read_text().strip())
    authorized.write_text("\n".join(sorted(keys)) + "\n")
    authorized.chmod(0o600)
    shutil.chown(ssh_dir, USER, USER)
    shutil.chown(authorized, USER, USER)
