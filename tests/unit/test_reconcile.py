"""The reconciler's decision table (runner/pipeline/reconcile.py), against a real store, real processes
as submit owners (a child killed for a dead one), the real agent probing the local host with a tmux
server of the test's own, and the vast.ai emulator's API for a dead submitter's instances."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.base import processes
from runner.hosts.local import LocalHost
from runner.hostside.hostfiles import PROTOCOL
from runner.jobs.layout import JobLayout
from runner.jobs.state import Job, JobState, Store
from runner.pipeline.reconcile import INTERRUPTED, reconcile
from runner.testing.vast_emulator import Emulator
from tests.unit.vastemulatorcase import FAST, KEY, Api, offers


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNNER_CONFIG_DIR", str(tmp_path / "config"))
    # A tmux server of this test's own (short path: sun_path is 108 bytes).
    tmux_dir = Path(f"/tmp/rr-{os.getpid()}-{tmp_path.name[-12:]}")
    tmux_dir.mkdir(exist_ok=True)
    monkeypatch.setenv("TMUX_TMPDIR", str(tmux_dir))
    monkeypatch.delenv("TMUX", raising=False)
    yield
    subprocess.run(["tmux", "kill-server"], capture_output=True, check=False)
    subprocess.run(["rm", "-rf", str(tmux_dir)], check=False)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "store.db")
    yield opened
    opened.close()


@pytest.fixture
def dead_owner() -> processes.ProcessIdentity:
    """The identity of a process that ran and was SIGKILLed, as a killed `runner submit`."""
    child = subprocess.Popen(["sleep", "300"])
    owner = processes.identity(child.pid)
    child.kill()
    child.wait()
    assert owner is not None and not processes.alive(owner.pid, owner.start)
    return owner


@pytest.fixture
def live_owner() -> Iterator[processes.ProcessIdentity]:
    child = subprocess.Popen(["sleep", "300"])
    owner = processes.identity(child.pid)
    assert owner is not None
    yield owner
    child.kill()
    child.wait()


def new_job(
    store: Store, owner: processes.ProcessIdentity | None, state: JobState, placed: bool = True, keep: bool = False
) -> Job:
    job = store.create_job("t", "local", {}, "/nowhere/t.yaml", owner=owner, keep=keep)
    if state is not JobState.SUBMITTED:
        assert store.transition(job.id, state, frozenset({JobState.SUBMITTED}))
    if placed:
        layout = JobLayout.on(LocalHost(), job.id)
        store.set_placement(job.id, layout.job_dir, f"runner-t-{job.id}")
    return store.get(job.id)


def place_on_host(job: Job, exit_code: int | None = None) -> Path:
    """What place_job leaves in the job's directory before the session starts (spec.json names the
    session and the job id the probe looks for), and the exit code run.sh writes at the end."""
    assert job.job_dir
    folder = Path(job.job_dir)
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps({"protocol": PROTOCOL, "id": job.id, "session": job.session}))
    if exit_code is not None:
        (folder / "exit_code").write_text(f"{exit_code}\n")
    return folder


def start_session(job: Job) -> None:
    assert job.session
    subprocess.run(["tmux", "new-session", "-d", "-s", job.session, "sleep 300"], check=True)


def test_a_dead_submitters_job_never_placed_fails_as_interrupted(store: Store, dead_owner: Any) -> None:
    job = new_job(store, dead_owner, JobState.PROVISIONING, placed=False)
    refreshed = reconcile(store, [job])
    (after,) = refreshed.jobs
    assert after.state is JobState.FAILED
    assert after.message == f"{INTERRUPTED} while provisioning"
    assert refreshed.notes == [f"job {job.id}: {INTERRUPTED} while provisioning: failed"]


@pytest.mark.parametrize("state", [JobState.SUBMITTED, JobState.SYNCING, JobState.BUILDING, JobState.PREFLIGHT])
def test_a_live_submitters_job_is_left_to_it(store: Store, live_owner: Any, state: JobState) -> None:
    job = new_job(store, live_owner, state, placed=state is not JobState.SUBMITTED)
    if job.job_dir:
        place_on_host(job)  # nothing runs there yet: the submit is still pushing
    refreshed = reconcile(store, [job])
    assert refreshed.jobs[0].state is state
    assert refreshed.notes == []
    assert {event.kind for event in store.events(job.id)} <= {"submitted", state.value}


def test_killed_during_the_push_nothing_runs_failed(store: Store, dead_owner: Any) -> None:
    job = new_job(store, dead_owner, JobState.SYNCING)
    assert job.job_dir
    Path(job.job_dir).mkdir(parents=True)  # made, then the workdir was being pushed: no spec.json yet
    (after,) = reconcile(store, [job]).jobs
    assert after.state is JobState.FAILED
    assert after.message == f"{INTERRUPTED} while syncing"


def test_killed_after_the_tmux_start_the_job_is_running(store: Store, dead_owner: Any) -> None:
    job = new_job(store, dead_owner, JobState.SYNCING)
    place_on_host(job)
    start_session(job)
    refreshed = reconcile(store, [job])
    assert refreshed.jobs[0].state is JobState.RUNNING
    assert refreshed.jobs[0].started_at is not None
    assert "the training had started" in refreshed.notes[0]
    assert "submit-interrupted" in [event.kind for event in store.events(job.id)]
    # From now on it is a running job: its end is found as any running job's.
    assert job.job_dir
    (Path(job.job_dir) / "exit_code").write_text("0\n")
    subprocess.run(["tmux", "kill-session", "-t", job.session or ""], check=True)
    assert reconcile(store, [store.get(job.id)]).jobs[0].state is JobState.SUCCEEDED


@pytest.mark.parametrize(("code", "state"), [(0, JobState.SUCCEEDED), (3, JobState.FAILED)])
def test_the_training_ran_to_its_end_meanwhile(store: Store, dead_owner: Any, code: int, state: JobState) -> None:
    job = new_job(store, dead_owner, JobState.PREFLIGHT)
    place_on_host(job, exit_code=code)  # its session ended already, with the exit code written
    (after,) = reconcile(store, [job]).jobs
    assert after.state is state
    assert after.exit_code == code
    assert after.started_at is not None and after.ended_at is not None


def test_processes_of_the_job_count_without_a_session(store: Store, dead_owner: Any) -> None:
    job = new_job(store, dead_owner, JobState.BUILDING)
    place_on_host(job)
    training = subprocess.Popen(["sleep", "300"], env={**os.environ, "RUNNER_JOB_ID": job.id})
    try:
        assert reconcile(store, [job]).jobs[0].state is JobState.RUNNING
    finally:
        training.kill()
        training.wait()


def test_a_job_stored_without_an_owner_is_judged_as_one_whose_submit_is_gone(store: Store) -> None:
    job = new_job(store, None, JobState.SYNCING)  # a store from before owners were recorded
    place_on_host(job)
    assert reconcile(store, [job]).jobs[0].state is JobState.FAILED


def test_a_reused_pid_is_not_the_owner(store: Store, live_owner: processes.ProcessIdentity) -> None:
    # The pid runs, but it started at another moment than the recorded owner did: another process.
    stranger = processes.ProcessIdentity(live_owner.pid, live_owner.start + "0")
    job = new_job(store, stranger, JobState.PROVISIONING, placed=False)
    assert not job.owner_alive()
    assert reconcile(store, [job]).jobs[0].state is JobState.FAILED


def test_an_unreachable_host_changes_no_job(store: Store, dead_owner: Any, tmp_path: Path) -> None:
    # A host whose sshd is gone: a port on loopback that nothing listens on, tried once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "config"
    config.mkdir()
    entry = f"ssh: me@127.0.0.1:{port}\n    connect_timeout: 2\n    retry_seconds: 0"
    (config / "hosts.yaml").write_text(f"hosts:\n  gone:\n    {entry}\n")
    job = store.create_job("t", "gone", {}, "/nowhere/t.yaml", owner=dead_owner)
    store.transition(job.id, JobState.SYNCING, frozenset({JobState.SUBMITTED}))
    store.set_placement(job.id, "/home/me/.runner/jobs/" + job.id, f"runner-t-{job.id}")
    refreshed = reconcile(store, [store.get(job.id)])
    assert refreshed.jobs[0].state is JobState.SYNCING
    assert refreshed.problems["gone"].unreachable_since is not None
    assert refreshed.notes == []


def test_tmux_that_cannot_be_asked_changes_no_job(
    store: Store, dead_owner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = new_job(store, dead_owner, JobState.SYNCING)
    place_on_host(job)
    # tmux cannot be asked (its socket folder is a file): nothing is concluded about the session.
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    monkeypatch.setenv("TMUX_TMPDIR", str(blocked))
    refreshed = reconcile(store, [job])
    assert refreshed.jobs[0].state is JobState.SYNCING
    assert refreshed.notes == []


def test_finished_and_running_jobs_are_not_touched_by_the_owner_rule(store: Store, dead_owner: Any) -> None:
    stopped = new_job(store, dead_owner, JobState.STOPPED, placed=False)
    running = new_job(store, dead_owner, JobState.RUNNING)
    place_on_host(running)
    start_session(running)
    refreshed = reconcile(store, [stopped, running])
    assert [job.state for job in refreshed.jobs] == [JobState.STOPPED, JobState.RUNNING]
    assert refreshed.notes == []


@pytest.fixture
def vast(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Emulator, Api]]:
    emulator = Emulator(offers(2), KEY, containers=False, delays=FAST)
    monkeypatch.setenv("VAST_URL", emulator.start())
    monkeypatch.setenv("VAST_API_KEY", KEY)
    yield emulator, Api(emulator.url)
    emulator.stop()


def rented_job(store: Store, api: Api, owner: processes.ProcessIdentity, keep: bool) -> tuple[Job, int]:
    job = store.create_job("t", "vast", {}, "/nowhere/t.yaml", owner=owner, keep=keep)
    store.transition(job.id, JobState.PROVISIONING, frozenset({JobState.SUBMITTED}))
    instance_id = api.create(1000, label=f"runner:{job.id}")
    store.record_instance(instance_id, job.id, 1000, "RTX 5090", 0.30)
    return store.get(job.id), instance_id


def test_a_dead_submitters_instance_is_destroyed(store: Store, dead_owner: Any, vast: Any) -> None:
    emulator, api = vast
    job, instance_id = rented_job(store, api, dead_owner, keep=False)
    refreshed = reconcile(store, [job])
    assert refreshed.jobs[0].state is JobState.FAILED
    assert instance_id not in emulator.instances  # the emulator's own record: destroyed
    assert store.instances(job.id, live_only=True) == []
    assert any(f"instance {instance_id} destroyed" in note for note in refreshed.notes)
    # A second look destroys nothing again: the job is finished.
    destroys = [request for request in emulator.requests if request.method == "DELETE"]
    reconcile(store, [store.get(job.id)])
    assert [request for request in emulator.requests if request.method == "DELETE"] == destroys


def test_keep_leaves_a_dead_submitters_instance(store: Store, dead_owner: Any, vast: Any) -> None:
    emulator, api = vast
    job, instance_id = rented_job(store, api, dead_owner, keep=True)
    refreshed = reconcile(store, [job])
    assert refreshed.jobs[0].state is JobState.FAILED
    assert instance_id in emulator.instances
    assert [instance.id for instance in store.instances(job.id, live_only=True)] == [instance_id]
    assert any("--keep" in note and f"runner down {job.id}" in note for note in refreshed.notes)


def test_a_failed_destroy_is_reported_not_raised(
    store: Store, dead_owner: Any, vast: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator, api = vast
    job, instance_id = rented_job(store, api, dead_owner, keep=False)
    monkeypatch.setenv("VAST_API_KEY", "not-the-key")  # the API refuses every call
    refreshed = reconcile(store, [job])
    assert refreshed.jobs[0].state is JobState.FAILED
    assert instance_id in emulator.instances
    assert any("could not be destroyed" in note and f"runner down {job.id}" in note for note in refreshed.notes)
    assert "not-the-key" not in " ".join(refreshed.notes)
