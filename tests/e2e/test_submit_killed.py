"""`runner submit` SIGKILLed at each step, through the real CLI: the next `runner status` shows a true
final or running state in one call, and no rented instance is left live unless `--keep` was given.

Killing "at a step" is made deterministic without timing: on an SSH test host, the submit's `ssh`
(found on PATH) is a gate that passes every command through to the real OpenSSH, and holds the submit
at one chosen command (before it, or right after it ran) until the test kills it; on the vast.ai
emulator, a slow-loading instance holds the submit in its wait for the instance, which the test sees
in the emulator's own record and in the store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.testing.vast_emulator import Emulator
from tests.conftest import Runner, runner_executable, wait_for, write_job
from tests.e2e.registry import registry  # noqa: F401  (the `registry` fixture is found by name)
from tests.e2e.test_vast_jobs import live_instances, vast, vast_job  # noqa: F401  (`vast` is a fixture)
from tests.e2e.testhost import TestHost

MIB = 1024 * 1024
# The gate: counts the commands whose line holds GATE_WORD; the one after GATE_PASS of them is held,
# before it runs (GATE_RUN=0) or once it has run (GATE_RUN=1). Held: its pid is in GATE_DIR/held.
GATE = """\
#!/bin/bash
real=$(PATH=${PATH#*:} command -v ssh)
case " $* " in
  *"$GATE_WORD"*)
    exec 9>>"$GATE_DIR/lock"; flock 9
    count=$(( $(cat "$GATE_DIR/count" 2>/dev/null || echo 0) + 1 )); echo "$count" > "$GATE_DIR/count"
    flock -u 9
    if [ "$count" -gt "$GATE_PASS" ]; then
      [ "$GATE_RUN" = 1 ] && "$real" "$@"
      echo $$ > "$GATE_DIR/held.tmp" && mv "$GATE_DIR/held.tmp" "$GATE_DIR/held"
      exec sleep 3600
    fi;;
esac
exec "$real" "$@"
"""


class HeldSubmit:
    """`runner submit` started with the gate in front of its ssh."""

    def __init__(self, runner: Runner, folder: Path, job_file: Path, word: str, passing: int, run: bool) -> None:
        self.gate_dir = folder / "gate"
        (self.gate_dir / "bin").mkdir(parents=True)
        shim = self.gate_dir / "bin" / "ssh"
        shim.write_text(GATE)
        shim.chmod(0o755)
        env = {**runner.env, "PATH": f"{shim.parent}:{runner.env['PATH']}", "GATE_WORD": word,
               "GATE_PASS": str(passing), "GATE_RUN": "1" if run else "0", "GATE_DIR": str(self.gate_dir)}  # fmt: skip
        self.process = subprocess.Popen(
            [runner_executable(), "submit", str(job_file), "--host", "box"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip

    def wait_held(self) -> None:
        def held() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"submit ended (exit {self.process.returncode}) before the gate held it:"
                                     f" {self.process.communicate()}")  # fmt: skip
            return (self.gate_dir / "held").exists()

        wait_for(held, 120, what="the submit held at the gate")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def release(self) -> None:
        """End what is left of it: the held gate (a sleep) and any ssh it left in its session."""
        if self.process.poll() is None:
            self.kill()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        held = self.gate_dir / "held"
        if held.exists():
            try:
                os.kill(int(held.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def held(runner: Runner) -> Iterator[list[HeldSubmit]]:
    submits: list[HeldSubmit] = []
    yield submits
    for submit in submits:
        submit.release()


def job_in_store(runner: Runner, job_id: str | None = None) -> dict[str, Any]:
    """The job as `runner status --json` shows it (with the submit alive, status leaves it to it)."""
    if job_id:
        return runner.json("status", job_id)  # type: ignore[no-any-return]
    (job,) = runner.json("status")["jobs"]
    return job  # type: ignore[no-any-return]


def box_sessions(box: TestHost) -> list[str]:
    return box.sh("tmux list-sessions -F '#{session_name}' 2>/dev/null || true").split()


def test_submit_killed_during_the_push_fails_as_interrupted_and_nothing_runs(
    runner: Runner, trusted_box: TestHost, tmp_path: Path, held: list[HeldSubmit]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("a.bin", "b.bin"):  # above the small-file size: each is sent by a `receive` of its own
        (work / name).write_bytes(os.urandom(9 * MIB))
    job_file = write_job(tmp_path, "pushed", "name: pushed\nworkdir: work\nrun: echo trained\ntensorboard: null\n")
    submit = HeldSubmit(runner, tmp_path, job_file, word=" receive ", passing=1, run=False)
    held.append(submit)
    submit.wait_held()  # one big file is on the host, the other's upload is held before it starts
    job = job_in_store(runner)
    assert job["state"] == "syncing" and job["job_dir"]
    work_there = f"{job['job_dir']}/work"
    assert sum(trusted_box.exists(f"{work_there}/{name}") for name in ("a.bin", "b.bin")) == 1
    submit.kill()

    after = runner.json("status", job["id"])  # one call
    assert after["state"] == "failed", after
    assert "submit was interrupted while syncing" in after["message"]
    assert not trusted_box.exists(f"{job['job_dir']}/spec.json")  # nothing was started, nor will be
    assert box_sessions(trusted_box) == []


def test_submit_killed_right_after_the_tmux_start_is_running_then_succeeds(
    runner: Runner, trusted_box: TestHost, tmp_path: Path, held: list[HeldSubmit]
) -> None:
    (tmp_path / "work").mkdir()
    # The training waits for the test's word, so the first status finds it running, not yet ended.
    run = "while [ ! -e go ]; do sleep 0.2; done; echo trained"
    job_file = write_job(
        tmp_path, "started", f"name: started\nworkdir: work\nrun: {json.dumps(run)}\ntensorboard: null\n"
    )
    submit = HeldSubmit(runner, tmp_path, job_file, word="new-session", passing=0, run=True)
    held.append(submit)
    submit.wait_held()  # tmux started the session; the submit never heard back
    job = job_in_store(runner)
    assert job["state"] == "syncing"  # as the submit left it: it is held before it records running
    assert job["session"] in box_sessions(trusted_box)
    submit.kill()

    after = runner.json("status", job["id"])  # one call
    assert after["state"] == "running", after
    trusted_box.sh(f"touch {job['job_dir']}/work/go")
    done = runner.wait_state(job["id"], {"succeeded", "failed", "lost"}, timeout=120)
    assert done["state"] == "succeeded" and done["exit_code"] == 0, done
    assert "trained" in runner.run("logs", job["id"], check=True).stdout


# vast.ai: killed right after the rent, while the instance is slow to load


def start_rented_submit(runner: Runner, job_file: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [runner_executable(), "submit", str(job_file), *extra], env=runner.env, cwd=job_file.parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def kill_after_the_rent(runner: Runner, emulator: Emulator, submit: subprocess.Popen[str]) -> tuple[str, int]:
    """SIGKILL the submit once the emulator shows its instance loading and the store has recorded it."""

    def rented() -> tuple[str, int] | None:
        if submit.poll() is not None:
            raise AssertionError(f"submit ended (exit {submit.returncode}) before the rent: {submit.communicate()}")
        loading = [id_ for id_, record in emulator.instances.items() if record.get("actual_status") == "loading"]
        jobs = runner.json("status")["jobs"]
        recorded = jobs[0]["cost"]["instances"] if jobs and jobs[0].get("cost") else []
        return (jobs[0]["id"], loading[0]) if loading and loading == recorded else None

    job_id, instance_id = wait_for(rented, 120, interval=0.3, what="the instance rented and loading")
    assert runner.json("status", job_id)["state"] == "provisioning"
    submit.send_signal(signal.SIGKILL)
    submit.wait()
    return job_id, instance_id


@pytest.mark.parametrize("keep", [False, True])
def test_submit_killed_after_the_rent_fails_and_its_instance_goes_unless_kept(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path, keep: bool
) -> None:
    vast.faults.slow_loading(600)  # the submit waits for the instance far longer than this test lasts
    submit = start_rented_submit(runner, vast_job(tmp_path, registry.image), *(["--keep"] if keep else []))
    try:
        job_id, instance_id = kill_after_the_rent(runner, vast, submit)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait()

    shown = runner.run("status", job_id, "--json", timeout=600)  # one call
    assert shown.returncode == 0, shown.stderr
    after = json.loads(shown.stdout)
    assert after["state"] == "failed" and "submit was interrupted while provisioning" in after["message"], after
    if keep:
        assert [record["id"] for record in live_instances(vast)] == [instance_id]
        assert after["cost"]["live"] == [instance_id]
        assert f"runner down {job_id}" in shown.stderr
        runner.run("down", job_id, check=True, timeout=600)
    else:
        assert f"instance {instance_id} destroyed" in shown.stderr
        assert after["cost"]["live"] == []
    assert live_instances(vast) == []  # the emulator's own record
    assert not any(record.get("label") == f"runner:{job_id}" for record in vast.instances.values())
