"""The safety net on a rented instance, through the real CLI against the vast.ai emulator (its instances
are real containers): with the controller gone (its keeper killed, no runner process at all) while the
job ends, the instance's own watchdog ends the container within a minute; the next `runner status`
finds the job's true end in the instance's log, and the keeper it starts again fetches the weights and
destroys the instance."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from runner.base.heldlock import holder_pid
from runner.jobs.state import Store
from runner.provision.vast import safetynet
from runner.provision.vast.api import VastClient
from runner.provision.vast.provisioner import instance_log
from runner.testing.vast_emulator import Emulator
from tests.conftest import Runner, wait_for
from tests.e2e.registry import (
    Registry,  # noqa: F401  (the `registry` fixture is found by name)
    registry,  # noqa: F401
)
from tests.e2e.test_vast_jobs import (
    API_KEY,
    live_instances,
    vast,  # noqa: F401  (the `vast` fixture is found by name)
    vast_job,
)

# Writes its weights, then waits for the test's word (a file the test makes in the container) and ends:
# the end comes when the test says, after the controller is gone.
WAIT_THEN_END = """\
import os, time
os.makedirs("runs/demo/weights", exist_ok=True)
with open("runs/demo/weights/best.pt", "w") as handle:
    handle.write("trained")
print("weights written; waiting for the word", flush=True)
while not os.path.exists("end-now"):
    time.sleep(0.2)
print("training done", flush=True)
"""
# The watchdog's contract: LEASE_S without a look, its check interval, then SIGTERM to the main process.
# The slack is for a loaded machine (a late check, docker noticing the end): generous, never tight.
CONTRACT_S = safetynet.LEASE_S + safetynet.CHECK_S
SLACK_S = 30
QUIET_S = 3  # the lease's age before the job's end: a look the controller began is over by then


def test_with_the_controller_gone_the_instance_ends_itself_and_the_next_status_finishes_the_job(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    job_file = vast_job(tmp_path, registry.image, "python3 wait_then_end.py")
    (tmp_path / "demo" / "wait_then_end.py").write_text(WAIT_THEN_END)
    job_id = runner.run("submit", str(job_file), cwd=tmp_path, check=True, timeout=600).stdout.strip()
    (instance,) = live_instances(vast)
    instance_id = instance["id"]
    lock = runner.home / "locks" / f"keep-{job_id}.lock"
    keeper = wait_for(lambda: holder_pid(lock), 60, what="the keeper's lock")
    job_dir = f"/root/.runner/jobs/{job_id}"
    (container,) = vast.container_ids(instance_id)
    wait_for(lambda: "waiting for the word" in in_container(container, "cat", f"{job_dir}/train.log"), 120,
             what="the training waiting")  # fmt: skip

    # The controller goes: the keeper is killed, and no runner command runs from here until the end.
    os.kill(keeper, signal.SIGKILL)
    wait_for(lambda: holder_pid(lock) is None, 30, what="the keeper gone")
    # Gone with its last command: a probe it had under way finishes on the instance all the same (its
    # SSH master outlives it) and would count as a look after the end. No probe runs, the lease is quiet.
    lease = f"{job_dir}/{safetynet.LEASE_FILE}"
    wait_for(lambda: lease_quiet(container, lease), 60, interval=0.5, what="the lease going quiet")
    in_container(container, "touch", f"{job_dir}/work/end-now")

    wait_for(lambda: vast.instances[instance_id]["actual_status"] == "exited", CONTRACT_S + 120, interval=1,
             what="the instance's container ending by itself")  # fmt: skip
    exited_at = vast.exited_at(instance_id)
    assert exited_at is not None and vast.instances[instance_id]["status_msg"].startswith("Exited (")
    ended_at = exit_code_mtime(container, job_dir)  # the training's end, by the instance's (this machine's) clock
    assert 0 <= exited_at - ended_at < CONTRACT_S + SLACK_S, (ended_at, exited_at)
    with VastClient(API_KEY, vast.url) as client:  # the outcome line, through the API's logs endpoint
        assert f"runner: job {job_id} ended with exit code 0" in instance_log(client, instance_id).splitlines()
    assert live_instances(vast) and holder_pid(lock) is None  # only storage bills now, and nobody came back yet

    # Back: `runner status` starts the keeper again; it records the end from the outcome line, starts the
    # instance for the final fetch, fetches the weights and destroys the instance.
    assert status(runner, job_id)["state"] == "running"  # this status found the host silent: exit code 3
    done = wait_for(lambda: (job := status(runner, job_id))["finished"] and job, 240, interval=1,
                    what="the job's end recorded")  # fmt: skip
    assert done["state"] == "succeeded" and done["exit_code"] == 0, done
    weights = tmp_path / "artifacts" / job_id / "runs" / "demo" / "weights"
    wait_for(lambda: not live_instances(vast), 300, interval=1, what="the keeper's fetch and teardown")
    assert (weights / "best.pt").read_text() == "trained"
    started_again = [request for request in vast.requests
                     if request.method == "PUT" and request.path == f"/api/v0/instances/{instance_id}/"]  # fmt: skip
    assert started_again, "the instance was not started again for the final fetch"
    assert "training done" in runner.run("logs", job_id, check=True).stdout  # saved before it went
    store = Store(runner.home / "state.db")
    try:
        kinds = [(event.kind, event.detail) for event in store.events(job_id)]
    finally:
        store.close()
    assert ("safety-net", "ended while no controller looked (the instance's safety net)") in kinds
    assert ("instance-destroyed", str(instance_id)) in kinds
    assert "retry" not in [kind for kind, _ in kinds]  # an end, not an interruption


def status(runner: Runner, job_id: str) -> dict[str, Any]:
    """`runner status JOB --json`, which exits 3 while the job's host does not answer SSH."""
    shown = runner.run("status", job_id, "--json")
    assert shown.returncode in (0, 3), shown.stderr
    document: dict[str, Any] = json.loads(shown.stdout)
    return document


# Prints the lease's age (instance clock), then "probing" while an agent probe (or its wrapper) runs
# ([.]: this script's own command line must not match).
LOOK = """echo $(( $(date +%s) - $(stat -c %Y "$1") ))
for p in /proc/[0-9]*; do
  tr '\\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q 'agent[.]py.* probe' && echo probing
done"""


def lease_quiet(container: str, lease: str) -> bool:
    """No controller's look is under way on the instance, and none came for QUIET_S seconds."""
    age, *probing = in_container(container, "sh", "-c", LOOK, "sh", lease).split()
    return int(age) >= QUIET_S and not probing


def in_container(container: str, *argv: str) -> str:
    return subprocess.run(["docker", "exec", container, *argv], capture_output=True, text=True, timeout=60).stdout


def exit_code_mtime(container: str, job_dir: str) -> float:
    """The exit code file's mtime, copied out of the (stopped) container as a tar entry."""
    copied = subprocess.run(["docker", "cp", f"{container}:{job_dir}/exit_code", "-"], capture_output=True,
                            timeout=60, check=True)  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(copied.stdout)) as archive:
        (member,) = archive.getmembers()
        return float(member.mtime)
