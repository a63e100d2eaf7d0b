"""A real Docker registry on a loopback port, holding the test host image: what a vast.ai instance pulls.

Debian's `docker-registry` (the distribution registry) serves a temp folder on a free 127.0.0.1 port;
the engine trusts loopback registries, so push and pull need no TLS. Use the session fixture by
importing it into a test module (or a conftest):

    from tests.e2e.registry import registry  # noqa: F401  (a pytest fixture)

    def test_x(registry: Registry) -> None:
        registry.image   # "127.0.0.1:PORT/runner-testhost:bookworm", pushed and ready to pull

or, outside pytest, `Registry.start(folder)` ... `registry.stop()`.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.e2e.testhost import IMAGE, docker, ensure_image, free_port

BINARY = "docker-registry"


@dataclass
class Registry:
    __test__ = False

    address: str  # 127.0.0.1:PORT, the registry part of image references
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def image(self) -> str:
        """The test host image as this registry serves it."""
        return f"{self.address}/{IMAGE}"

    @classmethod
    def start(cls, folder: Path) -> Registry:
        address = f"127.0.0.1:{free_port()}"
        config = folder / "config.yml"
        config.write_text("\n".join([
            "version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
            f"    rootdirectory: {folder / 'storage'}", "  delete:", "    enabled: true",
            "http:", f"  addr: {address}", "",
        ]))  # fmt: skip
        log = folder / "registry.log"
        with log.open("wb") as output:
            process = subprocess.Popen([BINARY, "serve", str(config)], stdout=output, stderr=subprocess.STDOUT)
        registry = cls(address, process, log)
        try:
            wait_for(registry._answers, 20, what=f"the registry on {address} (log: {log})")
        except AssertionError:
            registry.stop()
            raise
        return registry

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{BINARY} exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def push(self, local: str, name: str) -> str:
        """Push a local image as ADDRESS/name; the engine keeps no tag of it, so a pull asks the registry."""
        remote = f"{self.address}/{name}"
        docker("tag", local, remote)
        docker("push", remote)
        docker("rmi", remote)  # the layers stay (under the local tag): a pull checks the manifest, then reuses them
        return remote

    def stop(self) -> None:
        """Stop serving, and untag what the engine pulled from here (the layers stay under their other tags)."""
        pulled = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={self.address}/*")
        if tags := pulled.stdout.decode().split():
            docker("rmi", *tags, check=False)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry for the whole session, with the test host image pushed to it as `registry.image`."""
    if shutil.which(BINARY) is None:
        pytest.skip(f"{BINARY} is missing (apt-get install docker-registry)")
    ensure_image()
    running = Registry.start(tmp_path_factory.mktemp("registry"))
    try:
        running.push(IMAGE, IMAGE)
        yield running
    finally:
        running.stop()
