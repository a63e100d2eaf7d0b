"""`runner prune` through the real agent on the local host and a real store: what it picks, what it
frees (against du), what it never touches (an unfinished job, live processes, a live instance, a host
that does not answer), and the host side's own checks (hostile ids, hard links, old parts)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.base import paths
from runner.hosts.local import LocalHost
from runner.hostside import agentdirs
from runner.jobs.state import ACTIVE, Job, JobState, Store
from runner.pipeline import prune as pruning
from tests.conftest import runner_executable
from tests.unit.localagent import host, isolated  # noqa: F401  (fixtures are found by name)

MIB = 1024 * 1024


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store(paths.state_db())  # the store the command opens too (RUNNER_HOME is the test's)
    yield opened
    opened.close()


def _job(store: Store, state: JobState, files: dict[str, bytes] | None = None, host_name: str = "local") -> Job:
    """A job in state, with a folder of these files under the local host's jobs folder (none: never placed)."""
    job = store.create_job("j", host_name, {}, "job.yaml")
    if files is not None:
        job_dir = paths.local_host_root() / "jobs" / job.id
        for rel, data in files.items():
            (job_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (job_dir / rel).write_bytes(data)
        store.set_placement(job.id, str(job_dir), f"runner-j-{job.id}")
    if state is not JobState.SUBMITTED:
        store.transition(job.id, state, ACTIVE, exit_code=0 if state is JobState.SUCCEEDED else None)
    return store.get(job.id)


def _du(folder: Path) -> int:
    return int(
        subprocess.run(["du", "-s", "-B1", str(folder)], capture_output=True, text=True, check=True).stdout.split()[0]
    )


def test_prune_removes_finished_jobs_and_frees_what_du_sees(host: LocalHost, store: Store) -> None:
    done = _job(store, JobState.SUCCEEDED, {"work/big.bin": os.urandom(3 * MIB), "train.log": b"ok\n"})
    failed = _job(store, JobState.FAILED, {"work/a.txt": b"a" * 5000})
    running = _job(store, JobState.RUNNING, {"work/b.bin": os.urandom(MIB)})
    never_placed = _job(store, JobState.FAILED)
    store.add_event(done.id, "alert", "gpu_idle")
    jobs = paths.local_host_root() / "jobs"
    before = _du(jobs)

    planned = pruning.plan(store, pruning.candidates(store))
    assert {removal.job.id for removal in planned.removals} == {done.id, failed.id, never_placed.id}
    assert (jobs / done.id).is_dir() and _du(jobs) == before  # the plan touched nothing
    result = pruning.prune(store, planned)

    freed = before - _du(jobs)
    assert result.bytes_by_host() == {"local": freed} and freed > 3 * MIB
    assert result.bytes_by_host() == planned.bytes_by_host()  # it freed what it said it would
    assert sorted(path.name for path in jobs.iterdir()) == [running.id]
    assert [job.id for job in store.list_jobs()] == [running.id]
    assert store.events(done.id) == [] and result.left == []


def test_failed_and_older_than_narrow_the_choice(store: Store) -> None:
    jobs = {
        state: _job(store, state) for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.LOST, JobState.STOPPED)
    }
    _job(store, JobState.RUNNING)
    _job(store, JobState.SUBMITTED)
    assert {job.id for job in pruning.candidates(store)} == {job.id for job in jobs.values()}
    failed = {job.id for job in pruning.candidates(store, failed_only=True)}
    assert failed == {jobs[state].id for state in (JobState.FAILED, JobState.LOST, JobState.STOPPED)}
    assert pruning.candidates(store, older_than_s=3600) == []  # all ended just now
    assert len(pruning.candidates(store, older_than_s=0)) == 4


def test_a_job_whose_processes_live_on_the_host_is_kept_whatever_the_store_says(host: LocalHost, store: Store) -> None:
    job = _job(store, JobState.LOST, {"work/x.bin": b"x" * 10000})
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             env={**os.environ, "RUNNER_JOB_ID": job.id})  # fmt: skip
    try:
        result = pruning.prune(store, pruning.plan(store, [job]))
    finally:
        alive.kill()
        alive.wait()
    assert result.removals == [] and [left.reason for left in result.left] == [
        "host 'local' kept it: its processes are running on the host"
    ]
    assert Path(str(job.job_dir)).is_dir() and store.get(job.id).state is JobState.LOST


def test_a_rented_job_goes_only_once_its_instance_is_confirmed_gone(store: Store) -> None:
    live, gone = _job(store, JobState.SUCCEEDED, host_name="vast-1"), _job(store, JobState.FAILED, host_name="vast-2")
    store.record_instance(1, live.id, 11, "RTX 5090", 0.5)
    store.record_instance(2, gone.id, 12, "RTX 5090", 0.5)
    store.instance_gone(2)
    result = pruning.prune(store, pruning.plan(store, [live, gone]))
    assert [(removal.job.id, removal.bytes) for removal in result.removals] == [(gone.id, 0)]  # no host to ask
    assert [(left.job.id, left.reason) for left in result.left] == [
        (live.id, f"its instance 1 is not confirmed gone: `runner down {live.id}` first")
    ]
    assert [job.id for job in store.list_jobs()] == [live.id] and store.instances(gone.id) == []


def test_a_host_that_does_not_answer_keeps_its_jobs_and_the_others_are_pruned(
    host: LocalHost, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    # A port nothing listens on: refused at once, and not retried.
    (config / "hosts.yaml").write_text("hosts:\n  away:\n    ssh: trainer@127.0.0.1:1\n    retry_seconds: 0\n")
    monkeypatch.setenv("RUNNER_CONFIG_DIR", str(config))
    away = store.create_job("j", "away", {}, "job.yaml")
    store.set_placement(away.id, f"/home/trainer/.runner/jobs/{away.id}", "s")
    store.transition(away.id, JobState.FAILED, ACTIVE)
    here = _job(store, JobState.FAILED, {"work/a.txt": b"a"})
    result = pruning.prune(store, pruning.plan(store, pruning.candidates(store)))
    assert [removal.job.id for removal in result.removals] == [here.id]
    assert [left.job.id for left in result.left] == [away.id] and "host 'away'" in result.left[0].reason
    assert result.left[0].unreachable  # the command exits 3 for it: try again
    assert {job.id for job in store.list_jobs()} == {away.id}


def test_the_store_deletes_only_a_finished_job_with_no_live_instance(store: Store) -> None:
    running, live, done = (store.create_job("j", "h", {}, "j.yaml") for _ in range(3))
    store.transition(running.id, JobState.RUNNING, ACTIVE)
    for job in (live, done):
        store.transition(job.id, JobState.SUCCEEDED, ACTIVE, exit_code=0)
    store.record_instance(7, live.id, 1, "", 1.0)
    assert not store.delete_finished_job(running.id) and not store.delete_finished_job(live.id)
    assert store.delete_finished_job(done.id) and not store.delete_finished_job(done.id)
    assert {job.id for job in store.list_jobs()} == {running.id, live.id} and store.events(done.id) == []


# The host side


def test_remove_jobs_refuses_what_is_not_a_job_folder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "jobs").mkdir(parents=True)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "keep.txt").write_text("keep")
    (root / "jobs" / "abcdef12").symlink_to(tmp_path / "precious", target_is_directory=True)
    hostile = ["../../precious", "..", "abcdef12", "ABCDEF12", "a/b", ""]
    answer = agentdirs.remove_jobs(str(root), hostile, set(), set())
    assert answer["removed"] == [] and len(answer["kept"]) == len(hostile)
    assert (tmp_path / "precious" / "keep.txt").read_text() == "keep"
    assert agentdirs.remove_jobs(str(root), ["abcdef12"], None, None)["kept"][0]["reason"] == "not a job folder"


def test_remove_jobs_counts_a_hard_linked_file_once_with_its_last_link(tmp_path: Path) -> None:
    jobs = tmp_path / "root" / "jobs"
    for job_id in ("00000001", "00000002"):
        (jobs / job_id).mkdir(parents=True)
    (jobs / "00000001" / "shared.bin").write_bytes(os.urandom(MIB))
    os.link(jobs / "00000001" / "shared.bin", jobs / "00000002" / "shared.bin")
    before = _du(jobs)
    alone = agentdirs.remove_jobs(str(tmp_path / "root"), ["00000001"], set(), set(), dry_run=True)
    assert alone["removed"][0]["bytes"] < MIB  # its other link stays: removing one job frees the folder only
    both = agentdirs.remove_jobs(str(tmp_path / "root"), ["00000001", "00000002"], set(), set())
    assert sum(item["bytes"] for item in both["removed"]) == before - _du(jobs)


def test_old_parts_are_removed_fresh_and_locked_ones_stay(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    names = {kind: f"{kind * 64}-10.runner-part" for kind in ("a", "b", "c")}
    for name in names.values():
        (folder / name).write_bytes(b"0123456789")
    (folder / "notes.txt").write_text("not a part")
    old = time.time() - 2 * 24 * 3600
    for kind in ("a", "c", "notes"):
        path = folder / (names.get(kind) or "notes.txt")
        os.utime(path, (old, old))
    with (folder / names["c"]).open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # an upload is writing it
        assert agentdirs.remove_old_parts(str(folder), 24 * 3600) == [names["a"]]
    assert sorted(path.name for path in folder.iterdir()) == sorted([names["b"], names["c"], "notes.txt"])


def test_the_image_a_container_job_ran_in_is_read_from_the_container_sh_runner_writes(tmp_path: Path) -> None:
    from runner.jobs.jobscript import render_container_sh

    def image_of(image: str) -> str | None:
        script = render_container_sh("abcd1234", "demo", "runner-demo-abcd1234", image, {"A": "b c"}, "nvidia",
                                     str(tmp_path), "/data")  # fmt: skip
        (tmp_path / "container.sh").write_text(script)
        return agentdirs.job_image(str(tmp_path))

    assert image_of("runner-cu128:0123abcd") == "runner-cu128:0123abcd"
    assert (
        image_of("registry.example:5000/team/img@sha256:" + "a" * 64)
        == "registry.example:5000/team/img@sha256:" + "a" * 64
    )
    assert image_of("--privileged") is None and image_of("/etc/passwd") is None  # never an option or a path
    (tmp_path / "container.sh").unlink()
    assert agentdirs.job_image(str(tmp_path)) is None  # a job on the host itself


# The command: it asks on a terminal, and refuses to guess without one


def _prune_on_a_terminal(answer: bytes) -> tuple[int, str]:
    """`runner prune` with a pseudo-terminal as stdin and stderr: the question read there, answer typed."""
    master, slave = pty.openpty()
    command = subprocess.Popen([runner_executable(), "prune"], stdin=slave, stderr=slave, stdout=subprocess.PIPE)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in seen:
        assert time.monotonic() < deadline, f"no question asked: {seen!r}"
        if select.select([master], [], [], 1)[0]:
            seen += os.read(master, 4096)
    os.write(master, answer)
    command.wait(timeout=60)
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal's other end closed with the command
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return command.returncode, seen.decode(errors="replace")


def test_prune_lists_what_it_would_remove_and_asks_and_no_means_nothing_changes(host: LocalHost, store: Store) -> None:
    job = _job(store, JobState.SUCCEEDED, {"work/w.bin": os.urandom(2 * MIB)})
    code, shown = _prune_on_a_terminal(b"n\n")
    assert code == 0 and job.id in shown and "MiB" in shown and "nothing removed" in shown
    assert Path(str(job.job_dir)).is_dir() and store.get(job.id).state is JobState.SUCCEEDED
    code, shown = _prune_on_a_terminal(b"y\n")
    assert code == 0 and "1 job removed; freed" in shown
    assert not Path(str(job.job_dir)).exists() and store.list_jobs() == []


def test_prune_without_a_terminal_and_without_yes_is_refused_and_changes_nothing(host: LocalHost, store: Store) -> None:
    job = _job(store, JobState.FAILED, {"work/a.txt": b"a"})
    refused = subprocess.run([runner_executable(), "prune"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "runner: prune asks before it removes anything: give --yes where no terminal can answer"
    ]
    assert Path(str(job.job_dir)).is_dir() and [kept.id for kept in store.list_jobs()] == [job.id]
