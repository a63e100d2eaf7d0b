"""The vast.ai emulator with containers: an instance is a real container of an image pulled from a real
registry, reached with OpenSSH as root on its published port, killed and destroyed for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.testing.vast_emulator import Emulator
from runner.testing.vast_instances import Delays
from tests.conftest import REPO, wait_for
from tests.e2e.registry import Registry, registry  # noqa: F401  (the session fixture)
from tests.e2e.testhost import docker, make_client_key

KEY = "emulator-e2e-key-9d41"
OFFER = 20_114_301  # the first default offer, with direct ports


def call(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {KEY}",
                                              "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def fetch(url: str) -> str | None:
    """A log's result_url, which answers 404 until the log is uploaded (and needs no key)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.read().decode()
    except urllib.error.HTTPError:
        return None


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    running = Emulator(None, KEY, containers=True, delays=Delays(scheduling=0.1, created=0.1, loading=0.1))
    running.start()
    yield running
    running.stop()
    assert running.container_ids() == []  # stop() removes every container it made


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return make_client_key(tmp_path)


def create(emulator: Emulator, image: str, **body: Any) -> int:
    status, answer = call(emulator.url, "PUT", f"/api/v0/asks/{OFFER}/",
                          {"client_id": "me", "image": image, "disk": 16,
                           "runtype": "ssh_direc ssh_proxy", **body})  # fmt: skip
    assert status == 200, answer
    return answer["new_contract"]


def show(emulator: Emulator, instance_id: int) -> dict[str, Any] | None:
    return call(emulator.url, "GET", f"/api/v0/instances/{instance_id}/?owner=me")[1]["instances"]


def wait_running(emulator: Emulator, instance_id: int) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        record = show(emulator, instance_id)
        assert record is not None and record["actual_status"] not in ("exited", "unknown", "offline"), record
        return record if record["actual_status"] == "running" and record["ports"] else None

    return wait_for(running, 120, interval=0.2, what=f"instance {instance_id} running with ports")


def ssh_argv(port: int, key: Path, *options: str) -> list[str]:
    return ["ssh", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",  # every instance has new host keys; nothing to pin in a test
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
            "-i", str(key), *options, "-p", str(port), "root@127.0.0.1"]  # fmt: skip


def ssh(port: int, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ssh_argv(port, key), command], capture_output=True, text=True, timeout=30)


def attach(emulator: Emulator, instance_id: int, key: Path) -> None:
    body = {"ssh_key": key.with_suffix(".pub").read_text().strip()}
    assert call(emulator.url, "POST", f"/api/v0/instances/{instance_id}/ssh/", body) == (200, {"success": True})


def direct_port(record: dict[str, Any]) -> int:
    assert record["public_ipaddr"].strip() == "127.0.0.1"
    return int(record["ports"]["22/tcp"][0]["HostPort"])


def running_with_key(emulator: Emulator, image: str, key: Path) -> tuple[int, int]:
    """A new instance, running, with key attached: its id and its direct SSH port."""
    instance_id = create(emulator, image)
    port = direct_port(wait_running(emulator, instance_id))
    attach(emulator, instance_id, key)
    return instance_id, port


def destroy_until_no_container(emulator: Emulator, instance_id: int, container: str) -> None:
    assert call(emulator.url, "DELETE", f"/api/v0/instances/{instance_id}/") == (200, {"success": True})
    wait_for(lambda: not docker("ps", "-a", "-q", "--filter", f"id={container}").stdout.strip(), 30,
             what="the destroyed instance's container to go")  # fmt: skip


def test_an_instance_from_the_registry_runs_ssh_onstart_and_dies_for_real(
    emulator: Emulator, registry: Registry, key: Path
) -> None:
    onstart = 'echo "onstart saw $RUNNER_JOB" > /root/onstart-ran; echo onstart-says-hello'
    instance_id = create(emulator, registry.image, onstart=onstart, env={"-p 6006:6006": "1", "RUNNER_JOB": "e2e"})
    record = wait_running(emulator, instance_id)
    assert record["image_uuid"] == registry.image and set(record["ports"]) == {"22/tcp", "6006/tcp"}
    docker(
        "image", "inspect", registry.image
    )  # the fixture keeps no such tag: it is here because an instance pulled it
    attach(emulator, instance_id, key)

    port = direct_port(record)
    wait_for(lambda: ssh(port, key, "true").returncode == 0, 20, what="ssh as root on the direct port")
    assert record["ssh_port"] == port and ssh(record["ssh_port"], key, "true").returncode == 0  # the "proxy"
    mode = ssh(port, key, "stat -c %a /root/.ssh/authorized_keys").stdout.strip()
    assert mode == "600"
    onstart_ran = wait_for(lambda: ssh(port, key, "cat /root/onstart-ran").stdout.strip(), 20, what="onstart's file")
    assert onstart_ran == "onstart saw e2e"  # onstart sees the create body's env...
    assert ssh(port, key, 'echo "${RUNNER_JOB:-unset}"').stdout.strip() == "unset"  # ...SSH sessions do not, as on vast

    status, answer = call(emulator.url, "PUT", f"/api/v0/instances/request_logs/{instance_id}/", {"tail": "1000"})
    assert status == 200
    log = wait_for(lambda: fetch(answer["result_url"]), 20, what="the log at result_url")
    assert "onstart-says-hello" in log and "Server listening" in log  # onstart and sshd both write the container's log

    [container] = emulator.container_ids(instance_id)
    emulator.faults.kill_instance(instance_id)
    assert show(emulator, instance_id)["actual_status"] == "exited"  # type: ignore[index]
    assert docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip() == b"false"

    destroy_until_no_container(emulator, instance_id, container)
    assert show(emulator, instance_id) is None


def test_an_instance_cut_off_stops_answering_while_the_api_says_running(
    emulator: Emulator, registry: Registry, key: Path
) -> None:
    instance_id, port = running_with_key(emulator, registry.image, key)
    wait_for(lambda: ssh(port, key, "true").returncode == 0, 20, what="ssh on the direct port")
    emulator.faults.cut_off_instance(instance_id)
    assert ssh(port, key, "true").returncode == 255  # ssh's own failure: the host is gone from the network
    assert show(emulator, instance_id)["actual_status"] == "running"  # type: ignore[index]
    [container] = emulator.container_ids(instance_id)
    destroy_until_no_container(emulator, instance_id, container)


def test_interactive_logins_start_tmux_unless_no_auto_tmux(emulator: Emulator, registry: Registry, key: Path) -> None:
    _instance_id, port = running_with_key(emulator, registry.image, key)
    assert ssh(port, key, "echo plain").stdout == "plain\n"  # a command over ssh is never caught in tmux

    login = subprocess.Popen([*ssh_argv(port, key, "-tt")], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: "ssh_tmux" in ssh(port, key, "tmux ls 2>/dev/null").stdout, 20, what="tmux on login")
    finally:
        login.kill()
        login.wait()

    assert ssh(port, key, "touch ~/.no_auto_tmux && tmux kill-server").returncode == 0
    login = subprocess.Popen([*ssh_argv(port, key, "-tt")], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert login.stdin is not None
        login.stdin.write(b"touch /tmp/login-shell-up\n")
        login.stdin.flush()
        wait_for(lambda: ssh(port, key, "test -e /tmp/login-shell-up").returncode == 0, 20, what="the login shell")
        assert ssh(port, key, "tmux ls").returncode != 0  # no tmux server: the login shell stayed a plain shell
    finally:
        login.kill()
        login.wait()


def test_stop_then_start_brings_sshd_back_with_the_key(emulator: Emulator, registry: Registry, key: Path) -> None:
    instance_id = create(emulator, registry.image)
    wait_running(emulator, instance_id)
    attach(emulator, instance_id, key)
    call(emulator.url, "PUT", f"/api/v0/instances/{instance_id}/", {"state": "stopped"})
    wait_for(lambda: (show(emulator, instance_id) or {}).get("actual_status") == "stopped", 30, what="stopped")
    [container] = emulator.container_ids(instance_id)
    assert docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip() == b"false"
    call(emulator.url, "PUT", f"/api/v0/instances/{instance_id}/", {"state": "running"})
    port = direct_port(wait_running(emulator, instance_id))
    assert ssh(port, key, "true").returncode == 0


def test_fail_next_start_runs_no_container(emulator: Emulator, registry: Registry) -> None:
    emulator.faults.fail_next_start()
    instance_id = create(emulator, registry.image)
    record = wait_for(lambda: (r := show(emulator, instance_id)) and r["status_msg"] and r, 20, what="the failure")
    assert record["actual_status"] == "created" and "OCI runtime create failed" in record["status_msg"]
    assert emulator.container_ids(instance_id) == []


def test_an_image_the_registry_lacks_stays_loading_with_the_pull_error(emulator: Emulator, registry: Registry) -> None:
    instance_id = create(emulator, f"{registry.address}/no-such-image:1")

    def pull_failed() -> dict[str, Any] | None:
        record = show(emulator, instance_id)
        return record if record and record["status_msg"] and "Pulling" not in record["status_msg"] else None

    record = wait_for(pull_failed, 60, what="the failed pull")
    assert record["actual_status"] == "loading" and record["ports"] is None
    assert emulator.container_ids(instance_id) == []


def test_the_cli_removes_its_containers_on_sigint(registry: Registry, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    command = [sys.executable, "-m", "runner.testing.vast_emulator", "--port", "0", "--api-key-file", str(key_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    try:
        url = process.stdout.readline().split()[-1]  # type: ignore[union-attr]
        status, answer = call(url, "PUT", f"/api/v0/asks/{OFFER}/", {"image": registry.image, "disk": 16})
        assert status == 200, answer
        instance_id = answer["new_contract"]

        def running() -> bool:
            record = call(url, "GET", f"/api/v0/instances/{instance_id}/")[1]["instances"]
            return record["actual_status"] == "running"

        wait_for(running, 120, interval=0.2, what="the instance running")
        [container] = call(url, "GET", f"/_emulator/containers?instance={instance_id}")[1]["containers"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, err
    assert docker("ps", "-aq", "--filter", f"id={container}").stdout.strip() == b""
