"""A submit SIGKILLed while its workdir's large file is on the way, then the same job file submitted
again: the second push, into a new job folder, sends only the bytes the host's part lacked. Then
`runner prune --yes` frees what it says it frees, as du on the host sees it. And a push that fills
the host's disk: it says so, `runner prune` makes room, and the next submit sends only the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Runner, runner_executable, wait_for, write_job
from tests.e2e.dockerhost import DockerHost
from tests.e2e.test_container_jobs import dock  # noqa: F401  (a fixture, found by name)
from tests.e2e.test_push_faults import MIB, BoxFiles, _random_file
from tests.e2e.testhost import IMAGE, USER, TestHost, trusted_host

ROOT = f"/home/{USER}/.runner"
SIZE = 200 * MIB


def _host_du(box: TestHost, folder: str) -> int:
    return int(box.sh(f"du -s -B1 '{folder}'").split()[0])


def _receiving(box: TestHost) -> bool:
    """Whether an agent on the host is still taking an upload ([a]: the pattern never matches this sh)."""
    return bool(box.sh("pgrep -f '[a]gent.py receive' || true").strip())


def _kill_when_part_passes(submit: subprocess.Popen[str], files: BoxFiles, part: str, size: int) -> None:
    def passed() -> bool:
        if submit.poll() is not None:
            raise AssertionError(f"submit ended (exit {submit.returncode}) first: {submit.communicate()}")
        return (files.size(part) or 0) > size

    wait_for(passed, 120, interval=0.005, what=f"the part to pass {size} bytes")
    os.kill(submit.pid, signal.SIGKILL)  # the submit alone, as a crash or `kill -9` does: no cleanup runs
    submit.wait(timeout=30)


def test_a_push_killed_halfway_resumes_from_its_part_in_the_next_submit_and_prune_frees_it(
    runner: Runner, trusted_box: TestHost, tmp_path: Path, record_property: Any
) -> None:
    work = tmp_path / "work"
    big_sha = _random_file(work / "model.bin", SIZE)
    job_file = write_job(work, "resumer", "name: resumer\nrun: sha256sum model.bin | cut -c1-64\n")
    small_bytes = job_file.stat().st_size  # the workdir's only other file, sent again into the new job folder
    files, part = BoxFiles(trusted_box), f"{ROOT}/parts/{big_sha}-{SIZE}.runner-part"

    killed = subprocess.Popen(
        [runner_executable(), "submit", str(job_file), "--host", "box", "--json"],
        env=runner.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _kill_when_part_passes(killed, files, part, SIZE // 3)
    wait_for(lambda: not _receiving(trusted_box), 60, what="the host's receive to end with its link")
    part_at_kill = files.size(part) or 0
    assert SIZE // 3 < part_at_kill < SIZE, part_at_kill
    assert not trusted_box.sh(f"find {ROOT}/jobs -name model.bin").strip()  # nothing under a final name

    rx_before = files.received_bytes()
    started = time.monotonic()
    second = runner.json("submit", str(job_file), "--host", "box")
    seconds = time.monotonic() - started
    on_the_wire = files.received_bytes() - rx_before
    sync = second["sync"]["workdir"]
    remaining = SIZE - part_at_kill

    # The push's own count: the rest of the large file and the small one, nothing more ...
    assert (sync["files_sent"], sync["bytes_sent"]) == (2, remaining + small_bytes)
    # ... and what crossed the link says the same (give or take SSH's framing and the commands around).
    assert remaining <= on_the_wire < remaining + 8 * MIB, on_the_wire
    assert not trusted_box.exists(part)  # the completed file took its part
    assert trusted_box.sh(f"ls -A {ROOT}/parts").strip() == ""
    done = runner.wait_state(second["id"], {"succeeded", "failed"}, timeout=90)
    assert (done["state"], done["last_line"]) == ("succeeded", big_sha)  # the job read the whole, verified file
    record_property("part_bytes_at_kill", part_at_kill)
    record_property("bytes_sent_after", sync["bytes_sent"])
    record_property("bytes_received_by_host_after", on_the_wire)
    print(
        f"\npush resume: {SIZE} B file; submit SIGKILLed with {part_at_kill} B in the host's part;"
        f" next submit sent {sync['bytes_sent']} B ({remaining} B of the file + {small_bytes} B job file),"
        f" host received {on_the_wire} B on eth0 (a whole push: {SIZE + small_bytes} B); submit took {seconds:.1f}s"
    )

    _prune_frees_what_it_says(runner, trusted_box, second["id"])


def _prune_frees_what_it_says(runner: Runner, box: TestHost, finished_id: str) -> None:
    runner.run("status")  # brings every job's state up to date (the killed submit's job, say)
    jobs_before = set(box.sh(f"ls {ROOT}/jobs").split())
    du_before = _host_du(box, f"{ROOT}/jobs")
    result = runner.run("prune", "--yes", "--json", check=True)
    pruned = json.loads(result.stdout)
    du_after = _host_du(box, f"{ROOT}/jobs")
    removed = {item["id"] for item in pruned["removed"]}
    assert finished_id in removed
    assert pruned["freed_bytes"]["box"] == du_before - du_after > SIZE
    assert set(box.sh(f"ls {ROOT}/jobs").split()) == jobs_before - removed
    assert runner.run("status", finished_id).returncode == 4  # its record is gone too
    assert "removed; freed" in result.stderr
    print(f"prune: {sorted(removed)} removed; reported {pruned['freed_bytes']}; du {du_before} -> {du_after} B")


DISK_MIB = 64  # the small filesystem the whole runner directory of the host lives on


@pytest.fixture
def small_disk_box(client_key: Path, runner: Runner) -> Iterator[TestHost]:
    """A test host whose ~/.runner (jobs, parts, agent) is a tmpfs of DISK_MIB: a disk a push can fill."""
    with trusted_host(runner, TestHost.start(client_key, small_disk=(ROOT, DISK_MIB))) as host:
        yield host


def test_a_push_that_fills_the_disk_says_so_and_resumes_once_prune_made_room(
    runner: Runner, small_disk_box: TestHost, tmp_path: Path
) -> None:
    old_work, new_work = tmp_path / "old", tmp_path / "new"
    _random_file(old_work / "old.bin", 30 * MIB)
    old_file = write_job(old_work, "old", "name: old\nrun: ls -l old.bin\n")
    old_id = runner.submit(old_file, "--host", "box")
    assert runner.wait_state(old_id, {"succeeded", "failed"})["state"] == "succeeded"

    size = 48 * MIB  # more than the disk has left beside the old job
    new_sha = _random_file(new_work / "model.bin", size)
    new_file = write_job(new_work, "new", "name: new\nrun: sha256sum model.bin | cut -c1-64\n")
    part = f"{ROOT}/parts/{new_sha}-{size}.runner-part"
    full = runner.run("submit", str(new_file), "--host", "box")
    assert full.returncode == 1, full.stderr
    assert "ran out of disk space receiving model.bin" in full.stderr and "runner prune" in full.stderr
    held = int(small_disk_box.sh(f"stat -c %s {part}"))  # in the container: its tmpfs is not in the overlay
    assert 0 < held < size
    assert not small_disk_box.sh(f"find {ROOT} -name '*.tmp'").strip()  # no torn cache file on the full disk

    pruned = runner.json("prune", "--yes")
    assert old_id in {item["id"] for item in pruned["removed"]} and pruned["freed_bytes"]["box"] > 30 * MIB
    again = runner.json("submit", str(new_file), "--host", "box")
    sync = again["sync"]["workdir"]
    assert (sync["files_sent"], sync["bytes_sent"]) == (2, size - held + new_file.stat().st_size)
    assert not small_disk_box.exists(part)
    done = runner.wait_state(again["id"], {"succeeded", "failed"})
    assert (done["state"], done["last_line"]) == ("succeeded", new_sha)
    print(
        f"\nfull disk: {size} B file, {held} B arrived before the {DISK_MIB} MiB disk filled;"
        f" prune freed {pruned['freed_bytes']}; the next submit sent {sync['bytes_sent']} B"
    )


def test_prune_removes_a_container_jobs_files_that_its_root_user_wrote(
    runner: Runner, dock: DockerHost, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    job_file = write_job(work, "rootfiles", (
        f"name: rootfiles\nhost: dock\nimage: {IMAGE}\n"
        "run: mkdir -p runs && head -c 3145728 /dev/urandom > runs/w.bin && id -u\n"
    ))  # fmt: skip
    job_id = runner.submit(job_file)
    job = runner.wait_state(job_id, {"succeeded", "failed", "lost"}, timeout=120)
    assert (job["state"], job["last_line"]) == ("succeeded", "0")  # root in the container
    job_dir = Path(job["job_dir"])  # the dock host is this machine: its folder, looked at directly
    assert (job_dir / "work" / "runs" / "w.bin").stat().st_uid == 0  # not the host user's to remove
    du_before = _local_du(job_dir.parent)
    pruned = runner.json("prune", "--yes")
    assert [item["id"] for item in pruned["removed"]] == [job_id] and pruned["left"] == [], pruned
    assert not job_dir.exists()
    assert pruned["freed_bytes"]["dock"] == du_before - _local_du(job_dir.parent) > 3 * MIB
    print(f"\nprune of a container job: freed {pruned['freed_bytes']} (root-owned files in it)")


def _local_du(folder: Path) -> int:
    done = subprocess.run(["du", "-s", "-B1", str(folder)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0])
