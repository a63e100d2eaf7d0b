"""The pieces of renting that need no API: how an instance is reached, what a create asks for, what
a rented job costs, and which names are instances."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from runner.jobs.spec import Resources
from runner.jobs.state import Instance, Job, JobState, Store
from runner.provision.vast import provisioner as vast

RUNNING = {"actual_status": "running", "public_ipaddr": "203.0.113.7 ", "ssh_host": "ssh5.vast.ai", "ssh_port": 41022,
           "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "40122"}]}}  # fmt: skip


def test_direct_ports_come_before_the_proxy_and_the_address_is_stripped() -> None:
    assert vast._ssh_address(RUNNING) == ("203.0.113.7", 40122)
    assert vast._ssh_address({**RUNNING, "ports": {"6006/tcp": []}}) == ("ssh5.vast.ai", 41022)
    assert vast._ssh_address({**RUNNING, "ports": None, "ssh_host": None}) is None


def test_a_create_asks_for_the_image_the_label_and_no_auto_tmux() -> None:
    body = vast.create_body("a1b2c3d4", "ghcr.io/acme/train:cu128", Resources(disk_gb=40))
    assert body["label"] == "runner:a1b2c3d4" and body["image"] == "ghcr.io/acme/train:cu128" and body["disk"] == 40
    assert body["onstart"].startswith("touch ~/.no_auto_tmux;") and "/etc/runner-image-env.sh" in body["onstart"]
    assert body["env"] == {} and body["cancel_unavail"] is True
    assert "ssh_direc" in body["runtype"].split() and "ssh_proxy" in body["runtype"].split()


def test_instance_names() -> None:
    assert vast.host_name(123) == "vast-123" and vast.instance_id_of("vast-123") == 123
    assert (
        vast.instance_id_of("vast") is None
        and vast.instance_id_of("gpubox") is None
        and vast.instance_id_of("vast-x") is None
    )


def test_cost_is_by_the_second_until_gone() -> None:
    rented = time.time() - 1800
    assert Instance(1, "j", 2, "RTX 5090", 0.5, rented, None, rented + 3600).cost() == pytest.approx(0.5)
    assert Instance(1, "j", 2, "RTX 5090", 0.5, rented, None, None).cost() == pytest.approx(0.25, abs=0.001)


def test_the_store_keeps_instances_and_which_are_gone(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.record_instance(7, "job1", 101, "RTX 5090", 0.42)
    store.record_instance(8, "job2", 102, "RTX 5090", 0.47)
    store.set_instance_ssh(7, "root@127.0.0.1:40122")
    store.instance_gone(8)
    assert [instance.id for instance in store.instances(live_only=True)] == [7]
    assert store.instance(7).ssh == "root@127.0.0.1:40122" and store.instance(8).gone_at is not None
    assert [instance.offer_id for instance in store.instances("job2")] == [102]
    store.close()


def test_the_instance_key_is_made_once_when_submits_ask_for_it_together(tmp_path: Path, monkeypatch) -> None:
    from concurrent.futures import ProcessPoolExecutor

    monkeypatch.setenv("RUNNER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    with ProcessPoolExecutor(4) as pool:
        keys = list(pool.map(_key_text, range(8)))
    assert len(set(keys)) == 1 and keys[0].startswith("ssh-ed25519 ")
    (tmp_path / "config" / "vast_ed25519.pub").unlink()  # as if a crash came between the two files
    assert _key_text(0) == keys[0]


def _key_text(_: int) -> str:
    return vast.ssh_key().with_suffix(".pub").read_text().strip()


def test_a_private_registry_login_comes_from_a_private_file_and_goes_to_vast_only(tmp_path: Path, monkeypatch) -> None:
    from runner.base.errors import SpecError
    from runner.hosts.hostsmodel import RegistrySettings
    from runner.images.publish import image_login

    monkeypatch.delenv("RUNNER_REGISTRY_PASSWORD", raising=False)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    registry = RegistrySettings(address="ghcr.io/acme", username="me", password_file=str(token))
    assert image_login(registry) == "-u me -p s3cret ghcr.io"
    body = vast.create_body("j1", "ghcr.io/acme/runner-cu128:abc", Resources(), image_login(registry))
    assert body["image_login"] == "-u me -p s3cret ghcr.io"
    token.chmod(0o644)
    with pytest.raises(SpecError, match="can be read by others: chmod 600"):
        image_login(registry)
    assert image_login(RegistrySettings(address="127.0.0.1:5000/team")) is None  # no login: none sent
    assert "image_login" not in vast.create_body("j1", "127.0.0.1:5000/team/x:1", Resources())


def test_a_silent_instance_is_lost_after_its_jobs_grace_and_not_before(tmp_path: Path) -> None:
    from runner.jobs.spec import LOST_AFTER_S
    from runner.pipeline.recovery import interruption
    from runner.provision.vast.api import VastClient
    from runner.testing.vast_emulator import Emulator, default_offers
    from tests.conftest import wait_for

    key = "vk-unit-lost-after"
    body = {"image": "ghcr.io/acme/train:cu128", "disk": 40, "label": "runner:job1", "runtype": "ssh_direc ssh_proxy"}
    with Emulator(default_offers(), api_key=key, containers=False) as emulator, VastClient(key, emulator.url) as client:
        instance_id = client.create_instance(default_offers()[0]["id"], body)
        wait_for(lambda: (client.instance(instance_id) or {}).get("actual_status") == "running", 10, what="running")
        on_it = Job(id="job1", name="t", host=vast.host_name(instance_id), state=JobState.RUNNING,
                    document={"name": "t", "run": ["train"]}, job_file="t.yaml", job_dir=None, session=None,
                    created_at=1.0, started_at=2.0, ended_at=None,
                    exit_code=None, stop_requested_at=None, last_line=None, message=None)  # fmt: skip
        stored_before_the_grace_existed = dataclasses.replace(
            on_it, document={**on_it.document, "retry": {"on": ["lost"], "max": 1}}
        )
        with_a_grace = dataclasses.replace(
            on_it, document={**on_it.document, "retry": {"on": ["lost"], "max": 1, "lost_after": 20.0}}
        )
        assert interruption(client, stored_before_the_grace_existed, None) is None  # SSH answers
        assert interruption(client, stored_before_the_grace_existed, LOST_AFTER_S - 1) is None
        assert interruption(client, stored_before_the_grace_existed, LOST_AFTER_S) == "lost"
        assert interruption(client, with_a_grace, 19.0) is None
        assert interruption(client, with_a_grace, 20.0) == "lost"
        emulator.faults.kill_instance(instance_id)
        assert interruption(client, with_a_grace, None) == "interrupted"  # the API's word comes first
