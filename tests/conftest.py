"""Shared test helpers: an isolated runner home and tmux server per test, and the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
# Real recorded outputs (from shared/samples), kept in the repo so the suite runs from a plain clone.
SAMPLES = REPO / "tests" / "fixtures" / "samples"
T = TypeVar("T")


def runner_executable() -> str:
    """The console script installed beside the interpreter running the tests."""
    candidate = Path(sys.executable).parent / "runner"
    return str(candidate) if candidate.exists() else shutil.which("runner") or "runner"


def wait_for(probe: Callable[[], T], timeout: float, interval: float = 0.2, what: str = "condition") -> T:
    """Poll probe until it returns something truthy, against a monotonic deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Runner:
    """The runner CLI with its own RUNNER_HOME, config dir and tmux server."""

    env: dict[str, str]
    home: Path
    config: Path

    def run(
        self, *args: str, check: bool = False, timeout: float = 120, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [runner_executable(), *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=cwd
        )
        if check and result.returncode != 0:
            raise AssertionError(f"runner {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json", check=True)
        return json.loads(result.stdout)  # the whole stdout must be one JSON document

    def submit(self, job_file: Path, *extra: str) -> str:
        return self.run("submit", str(job_file), *extra, check=True).stdout.strip()

    def state(self, job_id: str) -> str:
        return self.json("status", job_id)["state"]

    def wait_state(self, job_id: str, states: set[str], timeout: float = 90) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.json("status", job_id)
            return job if job["state"] in states else None

        return wait_for(reached, timeout, interval=0.5, what=f"job {job_id} to reach {states}")

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", *args], env=self.env, capture_output=True, text=True, check=False)


@pytest.fixture
def runner() -> Iterator[Runner]:
    # tmux's socket path must stay short (sun_path is 108 bytes): a dedicated short temp dir.
    base = Path(tempfile.mkdtemp(prefix="rt-"))
    env = {key: value for key, value in os.environ.items() if key not in ("TMUX", "TMUX_PANE")}
    env.update(
        RUNNER_HOME=str(base / "home"),
        RUNNER_CONFIG_DIR=str(base / "config"),
        TMUX_TMPDIR=str(base / "tmux"),
        HOME=str(base / "user"),  # no ~/.ssh/config or known_hosts of the machine's user leaks in
    )
    (base / "tmux").mkdir()
    (base / "user").mkdir()
    harness = Runner(env=env, home=base / "home", config=base / "config")
    yield harness
    harness.tmux("kill-server")
    shutil.rmtree(base, ignore_errors=True)


def write_job(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(body)
    return path
