"""A rented job's keeper under faults, through the real CLI against the vast.ai emulator (its instances
are real containers): an API outage of five minutes is waited out, a killed keeper is started again
by the next `runner status`, and `runner down --orphans` destroys what a dead submit left billing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from runner.base.heldlock import holder_pid
from runner.testing.vast_emulator import Emulator
from tests.conftest import Runner, wait_for
from tests.e2e.registry import (
    Registry,  # noqa: F401  (the `registry` fixture is found by name)
    registry,  # noqa: F401
)
from tests.e2e.test_vast_jobs import (
    _keeper_log,
    live_instances,
    runner_cli,
    steps_job,
    vast,  # noqa: F401  (the `vast` fixture is found by name)
    vast_job,
)

OUTAGE_S = 300  # what the issue asks: five minutes without vast.ai


def keeper_of(runner: Runner, job_id: str) -> int | None:
    """The pid holding the job's keeper lock, or None: asked of the kernel (flock), not of a pid file."""
    return holder_pid(runner.home / "locks" / f"keep-{job_id}.lock")


def status(runner: Runner, job_id: str) -> dict[str, Any]:
    result = runner.run("status", job_id, "--json")
    assert result.returncode in (0, 3), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_a_five_minute_api_outage_is_waited_out_then_the_weights_arrive_and_the_instance_goes(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    job_id = runner.run("submit", str(steps_job(tmp_path, registry.image)), cwd=tmp_path, check=True, timeout=600)
    job_id = job_id.stdout.strip()
    keeper = wait_for(lambda: keeper_of(runner, job_id), 60, what="the keeper's lock")
    (instance,) = live_instances(vast)
    vast.pause()  # connection refused, while the instance and its training run on
    paused_at = time.monotonic()

    waiting = wait_for(lambda: (job := status(runner, job_id))["api_unreachable_since"] and job,
                       120, interval=1, what="status showing the keeper waiting for vast.ai")  # fmt: skip
    assert not waiting["finished"] or waiting["cost"]["live"] == [instance["id"]]
    table = runner.run("status", job_id).stdout
    assert "vast.ai unreachable since" in table and "its keeper waits it out" in table
    # The training ends during the outage (SSH still answers): the teardown now needs the API.
    done = wait_for(lambda: (job := status(runner, job_id))["finished"] and job, 180, interval=1, what="the job's end")
    assert done["state"] == "succeeded" and done["cost"]["live"] == [instance["id"]]
    while time.monotonic() - paused_at < OUTAGE_S:  # the outage's length is the fault, not a condition
        assert keeper_of(runner, job_id) == keeper, _keeper_log(runner, job_id)  # the same keeper, all through
        assert status(runner, job_id)["api_unreachable_since"] is not None
        time.sleep(5)
    assert set(vast.instances) == {instance["id"]}  # nothing could destroy it: it is still billing

    vast.resume()
    weights = tmp_path / "artifacts" / job_id / "runs" / "demo" / "weights"
    wait_for(lambda: not live_instances(vast), 240, interval=1, what="the instance destroyed after the outage")
    assert (weights / "last.pt").read_text() == "200"
    assert any(request.method == "DELETE" and request.path == f"/api/v0/instances/{instance['id']}/"
               for request in vast.requests)  # fmt: skip
    log = _keeper_log(runner, job_id)
    assert "vast.ai unreachable since" in log and "vast.ai answers again after" in log, log
    assert log.count("the keeper waits it out") == 1  # said once per outage
    after = wait_for(lambda: (job := status(runner, job_id))["cost"]["live"] == [] and job, 60, what="the store")
    assert after["api_unreachable_since"] is None and after["state"] == "succeeded"
    wait_for(lambda: keeper_of(runner, job_id) is None, 60, what="the keeper's end")


def test_a_killed_keeper_is_started_again_by_status_and_the_teardown_still_happens(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    job_file = steps_job(tmp_path, registry.image)
    job_id = runner.run("submit", str(job_file), cwd=tmp_path, check=True, timeout=600).stdout.strip()
    first = wait_for(lambda: keeper_of(runner, job_id), 60, what="the keeper's lock")
    second = runner.run("keep", job_id, timeout=60)  # one keeper per job: another exits at once
    assert second.returncode == 0 and f"job {job_id} has a keeper already (pid {first})" in second.stderr
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: keeper_of(runner, job_id) is None, 30, what="the killed keeper's lock freed")

    seen = runner.run("status", job_id, "--json")
    assert seen.returncode == 0, seen.stderr
    assert f"job {job_id}: its keeper was gone; started again" in seen.stderr
    restarted = wait_for(lambda: keeper_of(runner, job_id), 60, what="the new keeper's lock")
    assert restarted != first
    again = runner.run("status", job_id, "--json", check=True)
    assert "started again" not in again.stderr  # a live keeper is left alone
    # Any runner command that looks at the job brings it back, not only status.
    os.kill(restarted, signal.SIGKILL)
    wait_for(lambda: keeper_of(runner, job_id) is None, 30, what="the second keeper's lock freed")
    looked = runner.run("logs", job_id, "-n", "1")
    assert f"job {job_id}: its keeper was gone; started again" in looked.stderr, looked.stderr
    third = wait_for(lambda: keeper_of(runner, job_id), 60, what="the third keeper's lock")
    assert third not in (first, restarted)

    done = wait_for(lambda: (job := status(runner, job_id))["finished"] and job, 180, interval=1, what="the job's end")
    assert done["state"] == "succeeded"
    weights = tmp_path / "artifacts" / job_id / "runs" / "demo" / "weights"
    wait_for(lambda: not live_instances(vast) and (weights / "last.pt").exists(), 120, what="the teardown")
    assert (weights / "last.pt").read_text() == "200"
    assert "keeping job" in _keeper_log(runner, job_id) and "its keeper was gone" in _keeper_log(runner, job_id)


def test_down_orphans_destroys_what_a_dead_submit_left_and_says_why_it_leaves_a_running_job(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    running = runner.run("submit", str(vast_job(tmp_path, registry.image, "sleep 600")), cwd=tmp_path, check=True,
                         timeout=600).stdout.strip()  # fmt: skip
    (kept,) = live_instances(vast)
    vast.faults.slow_loading(600)  # the next instance loads for ten minutes: its submit waits, and is killed
    submit = subprocess.Popen([*runner_cli(), "submit", str(vast_job(tmp_path / "other", registry.image))],
                              env=runner.env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(lambda: len(vast.instances) == 2, 120, what="the second instance rented")
        jobs = wait_for(lambda: [job for job in runner.json("status")["jobs"]
                                 if job["id"] != running and job["cost"] and job["cost"]["live"]],
                        60, what="the instance in the store")  # fmt: skip
    finally:
        submit.kill()
        submit.communicate(timeout=60)
    (abandoned,) = jobs
    (billing,) = set(vast.instances) - {kept["id"]}

    down = runner.run("down", "--orphans", "--json", check=True)
    verdicts = {row["id"]: row for row in json.loads(down.stdout)["instances"]}
    assert json.loads(down.stdout)["destroyed"] == [billing]
    assert verdicts[billing]["action"] == "destroyed" and verdicts[billing]["job"] == abandoned["id"]
    assert "its submit (pid" in verdicts[billing]["reason"] and "is gone" in verdicts[billing]["reason"]
    assert verdicts[kept["id"]]["action"] == "left" and "kept by its keeper" in verdicts[kept["id"]]["reason"]
    assert set(vast.instances) == {kept["id"]}  # the API confirms: only the running job's instance is left

    shown = runner.run("down", "--orphans", check=True)
    assert f"left      instance {kept['id']}  job {running}: its job is running, kept by its keeper" in shown.stdout
    assert "nothing to destroy" in shown.stderr
    runner.run("stop", running, "--grace", "1", check=True)
    wait_for(lambda: not live_instances(vast), 120, what="the running job's teardown")
