"""Jobs with an image, through the real CLI: the image built on the host through the Docker SDK (over
SSH for an SSH host), the job run in a container named after it, its exit code recorded, its weights
fetched, and an unchanged image never rebuilt. The host is this machine's own sshd with the Docker
engine beside it (tests/e2e/dockerhost.py); the image is Dockerfile.cu128 built on the local Debian
base without the framework, as a machine with no registry can build it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Runner, write_job
from tests.e2e.dockerhost import DockerHost, missing_requirement
from tests.e2e.testhost import docker, write_hosts_file

BASE = "runner-testhost-base:bookworm"
IMAGE = f"{{build: cu128, args: {{BASE_IMAGE: '{BASE}', INSTALL_FRAMEWORK: '0'}}}}"
# Shows, in the job's log, where it ran and what the image set up.
WHERE = 'echo "in container: $(test -f /.dockerenv && echo yes || echo no); PYTHONPATH=$PYTHONPATH"'


@pytest.fixture(scope="module")
def built_tags() -> Iterator[set[str]]:
    """The tag the jobs' image gets, removed before the tests (so the first submit really builds it,
    whatever this machine's engine holds) and after them, with any other tag the tests saw built."""
    from runner.images.build import context_root, context_tar, image_tag

    expected = image_tag("cu128", context_tar(context_root(), "cu128"), {"BASE_IMAGE": BASE, "INSTALL_FRAMEWORK": "0"})
    docker("image", "rm", "-f", expected, check=False)
    tags: set[str] = {expected}
    yield tags
    for tag in tags:
        docker("image", "rm", "-f", tag, check=False)


@pytest.fixture
def dock(client_key: Path, runner: Runner, tmp_path: Path) -> Iterator[DockerHost]:
    reason = missing_requirement()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"a loopback docker host is needed in CI: {reason}")
        pytest.skip(reason)
    folder = tmp_path / "sshd"
    folder.mkdir()
    host = DockerHost.start(client_key, folder)
    write_hosts_file(runner.config, {"dock": host.hosts_entry()})
    runner.run("hosts", "check", "dock", "--trust-new-host", check=True)
    yield host
    host.stop()


def demo_job(folder: Path, *run: str, host: str = "dock", image: str = IMAGE, epochs: int = 4) -> Path:
    work = folder / "demo"
    if not work.exists():
        shutil.copytree(REPO / "demo", work)
    lines = "\n".join(f"  - {line!r}" if "'" not in line else f'  - "{line}"' for line in run)
    return write_job(
        folder,
        "demo",
        f"""\
name: demo
host: {host}
workdir: demo
image: {image}
run:
{lines}
  - python3 train.py --epochs {epochs} --samples 1500 --hidden 8 --out runs/demo
artifacts:
  weights: runs/demo/weights/*.pt
tensorboard: null
""",
    )


def test_a_job_with_an_image_runs_in_a_container_on_an_ssh_docker_host(
    runner: Runner, dock: DockerHost, tmp_path: Path, built_tags: set[str]
) -> None:
    job_file = demo_job(tmp_path, WHERE)
    first = runner.run("submit", str(job_file), timeout=900)
    assert first.returncode == 0, first.stderr
    job_id = first.stdout.strip()
    assert "image cu128 for no GPU: on the CPU" in first.stderr
    tag = next(line.split()[1] for line in first.stderr.splitlines() if line.startswith("building runner-cu128:"))
    built_tags.add(tag)
    assert "Successfully tagged" in first.stderr  # the build's log streamed to the user

    job = runner.wait_state(job_id, {"succeeded", "failed", "lost"}, timeout=180)
    log = runner.run("logs", job_id, check=True).stdout
    assert job["state"] == "succeeded", log
    assert job["exit_code"] == 0
    assert "in container: yes; PYTHONPATH=/opt/runner/runner_torch" in log
    assert docker("ps", "-a", "-q", "--filter", f"name=^{job['session']}$").stdout.strip() == b""  # removed

    fetched = runner.json("fetch", "weights", job_id, "--dest", str(tmp_path / "out"))
    names = sorted(entry["path"] for entry in fetched["files"])
    assert names == ["runs/demo/weights/best.pt", "runs/demo/weights/last.pt"]
    for name in names:
        on_host = Path(job["job_dir"]) / "work" / name  # this machine is the host: its file, read directly
        assert _sha256(tmp_path / "out" / name) == _sha256(on_host)

    second = runner.run("submit", str(job_file), timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"image {tag} is on dock already: not rebuilt" in second.stderr
    assert "Successfully tagged" not in second.stderr
    again = runner.wait_state(second.stdout.strip(), {"succeeded", "failed", "lost"}, timeout=180)
    assert again["state"] == "succeeded"


def test_the_containers_exit_code_is_the_jobs(
    runner: Runner, dock: DockerHost, tmp_path: Path, built_tags: set[str]
) -> None:
    job_id = runner.run("submit", str(demo_job(tmp_path, "exit 3")), check=True, timeout=900).stdout.strip()
    job = runner.wait_state(job_id, {"succeeded", "failed", "lost"}, timeout=180)
    assert (job["state"], job["exit_code"]) == ("failed", 3)


def test_stop_ends_the_container(runner: Runner, dock: DockerHost, tmp_path: Path, built_tags: set[str]) -> None:
    job_id = runner.run(
        "submit", str(demo_job(tmp_path, "echo started; sleep 600")), check=True, timeout=900
    ).stdout.strip()
    session = runner.wait_state(job_id, {"running"})["session"]
    _wait_for_container(session)
    runner.run("stop", job_id, "--grace", "5", check=True)
    assert runner.state(job_id) == "stopped"
    assert docker("ps", "-a", "-q", "--filter", f"name=^{session}$").stdout.strip() == b""


@pytest.mark.parametrize("image, transport, refusal", [
    ("rocm52", "openssh", "image: host 'dock': rocm52 needs an AMD GPU; the host has no GPU"),
    (IMAGE, "paramiko", "image: host 'dock': image builds need OpenSSH's ssh, and hosts.yaml sets this host's"
                        " transport: paramiko"),
])  # fmt: skip
def test_an_image_the_host_cannot_have_is_refused_before_anything_is_written(
    runner: Runner, dock: DockerHost, tmp_path: Path, image: str, transport: str, refusal: str
) -> None:
    write_hosts_file(runner.config, {"dock": {**dock.hosts_entry(), "transport": transport}})
    jobs_there = dock.home / ".runner" / "jobs"
    before = set(jobs_there.iterdir()) if jobs_there.exists() else set()
    result = runner.run("submit", str(demo_job(tmp_path, image=image)))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(refusal), result.stderr
    assert runner.json("status")["jobs"] == []
    assert (set(jobs_there.iterdir()) if jobs_there.exists() else set()) == before


def _wait_for_container(name: str) -> None:
    from tests.conftest import wait_for

    wait_for(lambda: docker("ps", "-q", "--filter", f"name=^{name}$").stdout.strip(), 60, what=f"container {name}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_helper_user_can_reach_the_engine(dock: DockerHost) -> None:
    """The stand-in is what it claims: the login user talks to this machine's engine."""
    result = subprocess.run(["su", "-", "runner-dock", "-c", "docker version --format '{{.Server.Version}}'"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
