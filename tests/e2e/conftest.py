from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Runner
from tests.e2e.testhost import TestHost, ensure_image, make_client_key, write_hosts_file


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_image()
    return make_client_key(tmp_path_factory.mktemp("client-key"))


@pytest.fixture
def box(client_key: Path, runner: Runner) -> Iterator[TestHost]:
    """A fresh test host container, named `box` in the runner's hosts.yaml; its key not yet trusted."""
    host = TestHost.start(client_key)
    write_hosts_file(runner.config, {"box": host.hosts_entry()})
    yield host
    host.remove()


@pytest.fixture
def trusted_box(box: TestHost, runner: Runner) -> TestHost:
    runner.run("hosts", "check", "box", "--trust-new-host", check=True)
    return box
