"""Test hosts: containers of a locally built Debian image running sshd on a 127.0.0.1 port.

A faithful stand-in for a home workstation or a rented instance: real OpenSSH, real tmux, real
rsync, its own host keys. Faults are real too: connections killed inside it, the container paused,
its host keys replaced.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.conftest import REPO, Runner, wait_for

IMAGE = "runner-testhost:bookworm"
USER = "trainer"


def docker(*args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(["docker", *args], capture_output=True, input=input, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result


def ensure_image() -> None:
    subprocess.run([str(REPO / "tests" / "testhost" / "start-dockerd")], check=True)
    subprocess.run([str(REPO / "tests" / "testhost" / "build-image"), IMAGE], check=True)


def make_client_key(folder: Path) -> Path:
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class TestHost:
    __test__ = False  # a helper, not a test class

    name: str  # the container's name
    port: int
    key: Path

    @classmethod
    def start(cls, key: Path, small_disk: tuple[str, int] | None = None) -> TestHost:
        """small_disk: (a folder, MiB): that folder is a tmpfs of that size, the user's: a disk to fill."""
        host = cls(f"runner-test-{secrets.token_hex(4)}", free_port(), key)
        tmpfs = []
        if small_disk:
            folder, mib = small_disk
            tmpfs = ["--tmpfs", f"{folder}:rw,size={mib}m,mode=0755,uid=1000,gid=1000"]
        docker("run", "-d", "--name", host.name, "-p", f"127.0.0.1:{host.port}:22", *tmpfs, IMAGE)
        try:
            login = f"cat > /home/{USER}/.ssh/authorized_keys && chown {USER}: /home/{USER}/.ssh/authorized_keys"
            if small_disk:  # docker made the folders above the tmpfs as root: the user's, as at a real host
                login += f" && [ $(id -u {USER}) = 1000 ] && chown {USER}: /home/{USER}/.runner"
            host.sh(login, stdin=key.with_suffix(".pub").read_bytes(), user="root")
            host.wait_for_sshd()
        except BaseException:
            host.remove()
            raise
        return host

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)

    def sh(self, script: str, user: str = USER, stdin: bytes | None = None, check: bool = True) -> str:
        args = ["exec", "-i", "-u", user, self.name, "sh", "-c", script]
        return docker(*args, input=stdin, check=check).stdout.decode()

    def wait_for_sshd(self) -> None:
        def answers() -> bool:
            scan = subprocess.run(["ssh-keyscan", "-T", "2", "-p", str(self.port), "127.0.0.1"], capture_output=True)
            return b"ssh-" in scan.stdout

        wait_for(answers, 30, what=f"sshd in {self.name}")

    def host_key_fingerprints(self) -> set[str]:
        listing = self.sh("for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf $k; done", user="root")
        return {line.split()[1] for line in listing.splitlines()}

    def replace_host_keys(self) -> None:
        self.sh("rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null", user="root")
        docker("kill", "-s", "HUP", self.name)  # sshd (pid 1) re-executes and loads the new keys
        self.wait_for_sshd()

    def kill_ssh_connections(self) -> int:
        """Kill the sshd processes serving the user's connections (not the listener, pid 1): every link drops."""
        out = self.sh("pkill -c -f '^sshd: trainer' || true", user="root")
        return int(out.strip() or 0)

    def pause(self) -> None:
        docker("pause", self.name)

    def unpause(self) -> None:
        docker("unpause", self.name)

    def exists(self, path: str) -> bool:
        return docker("exec", self.name, "test", "-e", path, check=False).returncode == 0

    def sha256(self, path: str) -> str:
        return self.sh(f"sha256sum {path}").split()[0]

    def hosts_entry(self, **options: object) -> dict[str, object]:
        entry: dict[str, object] = {"ssh": f"{USER}@127.0.0.1:{self.port}", "identity": str(self.key)}
        entry.update(connect_timeout=3, retry_seconds=6)
        entry.update(options)
        return entry


def write_hosts_file(
    config_dir: Path, hosts: dict[str, dict[str, object]], registry: dict[str, str] | None = None
) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    document: dict[str, object] = {"hosts": hosts}
    if registry:
        document["registry"] = registry
    (config_dir / "hosts.yaml").write_text(yaml.safe_dump(document))


@contextmanager
def trusted_host(runner: Runner, host: TestHost, name: str = "box") -> Iterator[TestHost]:
    """host, named `name` in the runner's hosts.yaml with its key trusted; removed afterwards."""
    try:
        write_hosts_file(runner.config, {name: host.hosts_entry()})
        runner.run("hosts", "check", name, "--trust-new-host", check=True)
        yield host
    finally:
        host.remove()
