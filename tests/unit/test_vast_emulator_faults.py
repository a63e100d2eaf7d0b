"""The vast.ai emulator's injected faults and its command line, records only (no containers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.testing.vast_emulator import Emulator
from runner.testing.vast_instances import OCI_FAILURE
from tests.conftest import REPO, wait_for
from tests.unit.vastemulatorcase import (  # noqa: F401  (api and emulator are fixtures, found by name)
    KEY,
    Api,
    api,
    emulator,
    offers,
)

# Faults


def test_rate_limit_cycles_the_three_429_shapes(api: Api, emulator: Emulator) -> None:
    emulator.faults.rate_limit(4)
    answers = [api.call("GET", "/api/v1/instances/") for _ in range(4)]
    assert [status for status, _, _ in answers] == [429] * 4
    assert all("Retry-After" not in headers for _, _, headers in answers)
    assert answers[0][1] == "API requests too frequent" and answers[0][2]["Content-Type"].startswith("text/plain")
    assert answers[1][1] == {"detail": "API requests too frequent endpoint threshold=4.5"}
    assert answers[2][1]["error"] == "rate_limit_exceeded" and answers[2][1]["success"] is False
    assert answers[3][1] == answers[0][1]
    assert api.call("GET", "/api/v1/instances/")[0] == 200


def test_fail_destroy_answers_500_and_destroys_nothing(api: Api, emulator: Emulator) -> None:
    instance_id = api.create(20_114_301)
    emulator.faults.fail_destroy(2)
    for _ in range(2):
        status, answer, headers = api.call("DELETE", f"/api/v0/instances/{instance_id}/")
        assert status == 500 and headers["Content-Type"] == "application/json" and answer["success"] is False
    assert api.show(instance_id) is not None
    assert api.ok("DELETE", f"/api/v0/instances/{instance_id}/") == {"success": True}


def test_fail_next_start_leaves_the_instance_created_with_an_oci_error(api: Api, emulator: Emulator) -> None:
    emulator.faults.fail_next_start()
    failing, healthy = api.create(20_114_301), api.create(20_114_302)
    api.wait_status(healthy, "running")
    record = wait_for(lambda: (r := api.show(failing)) and r["status_msg"] and r, 5, what="the OCI failure")
    assert record["actual_status"] == "created" and record["status_msg"].startswith("OCI runtime create failed: ")
    assert record["status_msg"] == OCI_FAILURE and record["ports"] is None


def test_slow_loading_keeps_new_instances_loading(api: Api, emulator: Emulator) -> None:
    emulator.faults.slow_loading(1.0)
    instance_id = api.create(20_114_301)
    api.wait_status(instance_id, "loading")
    loading_since = time.monotonic()
    api.wait_status(instance_id, "running")
    assert time.monotonic() - loading_since >= 0.9


def test_kill_instance_makes_it_exited(api: Api, emulator: Emulator) -> None:
    instance_id = api.create(20_114_301)
    api.wait_status(instance_id, "running")
    emulator.faults.kill_instance(instance_id)
    assert api.show(instance_id)["actual_status"] == "exited"  # type: ignore[index]
    assert emulator.instances[instance_id]["intended_status"] == "running"
    with pytest.raises(KeyError):
        emulator.faults.kill_instance(424242)


def test_faults_through_the_control_api(api: Api) -> None:
    assert api.ok("POST", "/_emulator/fail_destroy", {"count": 1}) == {"success": True}
    instance_id = api.create(20_114_301)
    assert api.call("DELETE", f"/api/v0/instances/{instance_id}/")[0] == 500
    assert api.call("POST", "/_emulator/rate_limit", {"count": "many"})[0] == 400
    assert api.call("POST", "/_emulator/melt", {})[0] == 404
    assert [r["id"] for r in api.ok("GET", "/_emulator/instances")["instances"]] == [instance_id]


# The command line


def test_the_cli_serves_until_sigterm_and_never_prints_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    offers_file = tmp_path / "offers.json"
    offers_file.write_text(json.dumps(offers(2)))
    command = [sys.executable, "-m", "runner.testing.vast_emulator", "--port", "0", "--offers", str(offers_file),
               "--api-key-file", str(key_file), "--no-containers"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    try:
        first = process.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("listening on http://127.0.0.1:")
        api = Api(first.split()[-1])
        assert [o["id"] for o in api.ok("POST", "/api/v0/bundles/", {})["offers"]] == [1000, 1001]
        api.call("GET", "/api/v1/instances/", bearer=False)
        api.ok("POST", "/_emulator/rate_limit", {"count": 1})
        assert api.call("GET", "/api/v1/instances/")[0] == 429
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert KEY not in first + out + err
