"""The rented instance's safety net (runner.provision.vast.safetynet): the watchdog script run with sh
against a temporary job directory, a `sleep` standing for the container's main process (its stdout
the container's log), a real tmux server for the budget's Ctrl-C; and what the controller reads back."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.hostside import agent
from runner.jobs.spec import Resources
from runner.provision.vast import provisioner, safetynet
from runner.provision.vast.safetynet import Outcome, budget_watch, read_outcome
from tests.conftest import wait_for


@dataclass
class Watched:
    """A watchdog at work, and the process standing for the container's main process."""

    job_dir: Path
    main: subprocess.Popen[bytes]
    watchdog: subprocess.Popen[bytes]
    log: Path

    def main_ended(self) -> bool:
        return self.main.poll() is not None


@pytest.fixture
def tmux_env() -> Iterator[dict[str, str]]:
    base = Path(tempfile.mkdtemp(prefix="sn-"))  # short: tmux's socket path
    env = {key: value for key, value in os.environ.items() if key not in ("TMUX", "TMUX_PANE")}
    env["TMUX_TMPDIR"] = str(base)
    yield env
    subprocess.run(["tmux", "kill-server"], env=env, capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def watch(tmp_path: Path, tmux_env: dict[str, str]) -> Iterator[object]:
    script = tmp_path / "safetynet.sh"
    script.write_text(safetynet.compact(safetynet.WATCHDOG))
    started: list[Watched] = []

    def start(job: str, *, stop_at: str = "", lease_s: int = 2, seen_s: int = 3600, kill_s: int = 2) -> Watched:
        job_dir = tmp_path / job
        job_dir.mkdir(exist_ok=True)
        log = tmp_path / f"{job}.container.log"
        with open(log, "wb") as out:
            main = subprocess.Popen(["sleep", "600"], stdout=out)
        args = [job, f"runner-t-{job}", str(job_dir), stop_at, "resources.max_cost $0.10 reached", str(main.pid),
                str(lease_s), str(seen_s), "1", str(kill_s)]  # fmt: skip
        watchdog = subprocess.Popen(["sh", str(script), *args], env=tmux_env)
        started.append(Watched(job_dir, main, watchdog, log))
        return started[-1]

    yield start
    for watched in started:
        for process in (watched.watchdog, watched.main):
            process.kill()
            process.wait()


def ended_at(job_dir: Path, code: int, age_s: float) -> None:
    (job_dir / "exit_code").write_text(f"{code}\n")
    past = time.time() - age_s
    os.utime(job_dir / "exit_code", (past, past))


def test_a_job_that_ended_while_nobody_looks_ends_the_main_process_with_its_outcome_line(watch) -> None:
    watched = watch("a1")
    ended_at(watched.job_dir, 0, age_s=5)
    wait_for(watched.main_ended, 60, what="the watchdog ending the main process")
    line = "runner: job a1 ended with exit code 0"
    assert watched.log.read_text().splitlines() == [line]  # the container's log
    assert (watched.job_dir / safetynet.ENDED_FILE).read_text() == line + "\n"
    assert read_outcome(watched.log.read_text(), "a1") == Outcome(0, None)
    assert watched.watchdog.wait(timeout=60) == 0


def test_a_controller_that_looked_after_the_end_gets_the_long_grace_and_one_that_did_not_does_not(watch) -> None:
    # Two jobs ended alike, watched alike from the same moment; only the second's controller looked
    # after its end (it is fetching the weights): when the first's container ends, the second's stays.
    unseen, seen = watch("u1"), watch("s1")
    for watched in (unseen, seen):
        ended_at(watched.job_dir, 3, age_s=20)
    (seen.job_dir / safetynet.LEASE_FILE).touch()
    looked = time.time() - 10
    os.utime(seen.job_dir / safetynet.LEASE_FILE, (looked, looked))
    wait_for(unseen.main_ended, 60, what="the unwatched job's main process ending")
    assert read_outcome(unseen.log.read_text(), "u1") == Outcome(3, None)
    assert not seen.main_ended() and seen.log.read_text() == ""
    # The controller that looked went away before its last look reached past the end: now it ends.
    long_ago = time.time() - 30
    os.utime(seen.job_dir / safetynet.LEASE_FILE, (long_ago, long_ago))
    wait_for(seen.main_ended, 60, what="the second job's main process ending")
    assert read_outcome(seen.log.read_text(), "s1") == Outcome(3, None)


def test_a_restarted_instance_waits_for_the_controller_that_started_it(watch, tmp_path: Path) -> None:
    # The end was reported once (ENDED_FILE); the instance was started again for the final fetch:
    # with no look for the seen grace it ends again with the same line, but not at the short lease.
    first = watch("r1", seen_s=3600)
    ended_at(first.job_dir, 0, age_s=60)
    (first.job_dir / safetynet.ENDED_FILE).write_text("runner: job r1 ended with exit code 0\n")
    control = watch("c1")  # the short lease, started after the first: ends after the first could have
    ended_at(control.job_dir, 0, age_s=60)
    wait_for(control.main_ended, 60, what="the control's main process ending")
    assert not first.main_ended()
    again = watch("r1", seen_s=2)
    wait_for(again.main_ended, 60, what="the restarted watchdog ending the main process")
    assert again.log.read_text().splitlines() == ["runner: job r1 ended with exit code 0"]


def test_the_budget_stops_the_training_with_ctrl_c_then_ends_the_container(watch, tmux_env) -> None:
    watched = watch("b1", stop_at=str(int(time.time()) + 2), kill_s=60)
    code_file = watched.job_dir / "exit_code"
    # The training as run.sh runs it in the train window: Ctrl-C ends it, and its exit code is recorded.
    trainer = f"trap 'echo 130 > {code_file}; exit 130' INT; echo training; while :; do sleep 1; done"
    new_session(tmux_env, "runner-t-b1", trainer, job_id="b1")
    wait_for(watched.main_ended, 60, what="the budget's stop")
    assert watched.log.read_text().splitlines() == [
        "runner: job b1 stopped: resources.max_cost $0.10 reached (exit code 130)"
    ]
    assert read_outcome(watched.log.read_text(), "b1") == Outcome(130, "resources.max_cost $0.10 reached")
    assert code_file.read_text() == "130\n"


def test_a_training_deaf_to_ctrl_c_is_killed_after_the_grace(watch, tmux_env) -> None:
    watched = watch("k1", stop_at=str(int(time.time())), kill_s=2)
    # INT ignored, inherited by its children: only the kill ends it. Its processes carry the job's id.
    pane = new_session(tmux_env, "runner-t-k1", "trap '' INT; while :; do sleep 1; done", job_id="k1")
    wait_for(watched.main_ended, 60, what="the budget's stop")
    assert read_outcome(watched.log.read_text(), "k1") == Outcome(None, "resources.max_cost $0.10 reached")
    wait_for(lambda: not Path(f"/proc/{pane}").exists(), 30, what="the training's processes gone")
    sessions = subprocess.run(["tmux", "has-session", "-t", "=runner-t-k1"], env=tmux_env, capture_output=True)
    assert sessions.returncode != 0


def new_session(env: dict[str, str], session: str, command: str, job_id: str) -> int:
    """A tmux session whose train window runs command with RUNNER_JOB_ID set; returns the pane's pid."""
    argv = ["tmux", "new-session", "-d", "-s", session, "-n", "train", "-P", "-F", "#{pane_pid}",
            "env", f"RUNNER_JOB_ID={job_id}", "sh", "-c", command]  # fmt: skip
    return int(subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.strip())


def test_the_outcome_is_read_strictly_and_only_for_its_job() -> None:
    log = "\n".join([
        "sshd: Server listening on 0.0.0.0 port 22.",
        "runner: job other1 ended with exit code 0",
        "runner: job abc123 ended with exit code 1",
        "runner: job abc123 ended with exit code 0",
        "runner: job abc123 ended with exit code 0; rm -rf /",  # not the watchdog's line: ignored
        "runner: job abc123 ended with exit code 99999",
    ])  # fmt: skip
    assert read_outcome(log, "abc123") == Outcome(0, None)
    assert read_outcome(log, "missing") is None
    assert read_outcome("runner: job abc123 ended with exit code none", "abc123") == Outcome(None, None)
    stopped = read_outcome("runner: job j stopped: resources.max_cost $2.00 reached (exit code none)", "j")
    assert stopped == Outcome(None, "resources.max_cost $2.00 reached")
    assert stopped.message == "stopped on the instance: resources.max_cost $2.00 reached"


def test_the_budget_deadline_comes_from_the_price_at_rent_and_what_was_spent_before() -> None:
    watch = budget_watch("j1", "runner-t-j1", max_cost=1.0, spent=0.5, dph=0.5, now=1000.0)
    assert watch.stop_at == 1000 + 3600 + safetynet.BUDGET_SLACK_S  # $0.50 left at $0.50/h: one hour
    assert watch.reason == "resources.max_cost $1.00 reached"
    assert budget_watch("j1", "s", max_cost=None, spent=0, dph=0.5).stop_at is None
    assert budget_watch("j1", "s", max_cost=1.0, spent=3.0, dph=0.5, now=10.0).stop_at == 10 + safetynet.BUDGET_SLACK_S


def test_the_onstart_fits_vasts_limit_and_starts_the_watchdog_detached() -> None:
    watch = budget_watch("a1b2c3d4", "runner-a_long_job_name-a1b2c3d4", 20.0, 0.0, 0.42)
    body = provisioner.create_body("a1b2c3d4", "ghcr.io/acme/train:cu128", Resources(disk_gb=40), watch=watch)
    onstart = body["onstart"]
    assert onstart.startswith(provisioner.ONSTART) and len(onstart) <= safetynet.ONSTART_LIMIT
    started = "nohup sh ~root/.runner/safetynet.sh a1b2c3d4 runner-a_long_job_name-a1b2c3d4 ~root/.runner/jobs/a1b2c3d4"
    assert started in onstart
    assert f" {watch.stop_at} 'resources.max_cost $20.00 reached' 1 " in onstart
    script = onstart.split("<<'RUNNER_SAFETYNET'\n", 1)[1].split("\nRUNNER_SAFETYNET\n", 1)[0]
    assert script == safetynet.compact(safetynet.WATCHDOG)
    assert subprocess.run(["sh", "-n", "-c", onstart]).returncode == 0  # it parses


def test_the_agents_probe_renews_the_lease(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    agent.probe([str(job_dir), str(tmp_path / "gone")])
    lease = job_dir / safetynet.LEASE_FILE
    assert lease.exists() and not (tmp_path / "gone").exists()
    os.utime(lease, (1000, 1000))
    agent.probe([str(job_dir)])
    assert lease.stat().st_mtime > 1000


def test_an_instance_that_exited_with_an_outcome_line_ended_its_job_and_one_without_was_interrupted(
    tmp_path: Path,
) -> None:
    """The controller's side, against the emulator's records (no containers): the line the watchdog
    prints is put in the instance's log as the container's log would hold it."""
    from runner.jobs.state import JobState, Store
    from runner.pipeline.recovery import ENDED, interruption, record_outcome
    from runner.provision.vast.api import VastClient
    from runner.testing.vast_emulator import Emulator, default_offers

    key = "vk-unit-safety-net"
    body = {"image": "ghcr.io/acme/train:cu128", "disk": 40, "runtype": "ssh_direc ssh_proxy"}
    store = Store(tmp_path / "state.db")
    said: list[str] = []
    with Emulator(default_offers(), api_key=key, containers=False) as emulator, VastClient(key, emulator.url) as client:
        ended, stopped, silent = (store.create_job(name, "vast", {"name": name, "run": ["train"]}, "t.yaml")
                                  for name in ("ended", "stopped", "silent"))  # fmt: skip
        lines = {
            ended.id: f"runner: job {ended.id} ended with exit code 0",
            stopped.id: f"runner: job {stopped.id} stopped: resources.max_cost $1.00 reached (exit code 130)",
            silent.id: f"runner: job {ended.id} ended with exit code 0",
        }  # another job's line: not this one's
        for job, offer in zip((ended, stopped, silent), default_offers(), strict=True):
            instance_id = client.create_instance(offer["id"], {**body, "label": f"runner:{job.id}"})
            wait_for(lambda i=instance_id: (client.instance(i) or {}).get("actual_status") == "running", 10,
                     what="running")  # fmt: skip
            store.set_host(job.id, provisioner.host_name(instance_id))
            store.transition(job.id, JobState.RUNNING, frozenset({JobState.SUBMITTED}))
            emulator._instances[instance_id].events.append(lines[job.id])  # as the watchdog prints it
            emulator.faults.kill_instance(instance_id)  # its container ends: "exited"
        assert interruption(client, store.get(ended.id), None) == ENDED
        assert interruption(client, store.get(silent.id), None) == "interrupted"  # retried or lost, as before
        assert record_outcome(client, store, store.get(ended.id), said.append).state is JobState.SUCCEEDED
        after = record_outcome(client, store, store.get(stopped.id), said.append)
        assert (after.state, after.exit_code) == (JobState.STOPPED, 130)
        assert after.message == "stopped on the instance: resources.max_cost $1.00 reached"
    assert [event.kind for event in store.events(ended.id)][-2:] == ["safety-net", "succeeded"]
    assert len(said) == 2
    store.close()
