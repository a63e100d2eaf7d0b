"""Fetching through real faults: the sshd serving the copy killed halfway."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path

from tests.conftest import Runner, runner_executable, wait_for, write_job
from tests.e2e.testhost import TestHost

SIZE_MIB = 300


def test_a_fetch_survives_its_sshd_being_killed_halfway(runner: Runner, trusted_box: TestHost, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        "big",
        f"name: big\nrun: mkdir -p runs/w/weights && head -c {SIZE_MIB}M /dev/urandom > runs/w/weights/last.pt\n",
    )
    job_id = runner.submit(job_file, "--host", "box")
    job = runner.wait_state(job_id, {"succeeded", "failed"}, timeout=60)
    on_host = trusted_box.sha256(f"{job['job_dir']}/work/runs/w/weights/last.pt")
    dest = tmp_path / "dest"
    final, part = dest / "runs/w/weights/last.pt", dest / "runs/w/weights/last.pt.part"
    torn_sightings: list[int] = []
    stop_watching = threading.Event()

    def watch_final_name() -> None:  # the final name must never hold anything but the whole file
        while not stop_watching.is_set():
            if final.exists() and final.stat().st_size != SIZE_MIB * 1024 * 1024:
                torn_sightings.append(final.stat().st_size)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch_final_name, daemon=True)
    watcher.start()
    fetch = subprocess.Popen(
        [runner_executable(), "fetch", "weights", job_id, "--dest", str(dest), "--json"],
        env=runner.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: part.exists() and part.stat().st_size > SIZE_MIB * 1024 * 1024 // 2, 60, interval=0.02,
             what="the copy to pass half way")  # fmt: skip
    killed = trusted_box.kill_ssh_connections()
    out, err = fetch.communicate(timeout=180)
    stop_watching.set()
    watcher.join()
    assert killed >= 1
    assert fetch.returncode == 0, err
    result = json.loads(out)
    assert [item["sha256"] for item in result["files"]] == [on_host]
    assert hashlib.sha256(final.read_bytes()).hexdigest() == on_host
    assert torn_sightings == [] and not part.exists()


def test_a_paused_host_does_not_end_fetch_every(runner: Runner, trusted_box: TestHost, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        "epochs",
        "name: epochs\n"
        "run: mkdir -p runs/e/weights && for i in $(seq 1 15); do echo $i > runs/e/weights/epoch$i.pt; sleep 1; done\n",
    )
    job_id = runner.submit(job_file, "--host", "box")
    notes = tmp_path / "fetch.stderr"
    with notes.open("w") as err:
        fetch = subprocess.Popen(
            [runner_executable(), "fetch", "weights", job_id, "--dest", str(tmp_path / "d"), "--every", "1s", "--json"],
            env=runner.env, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    try:
        wait_for(lambda: "next in 1s" in notes.read_text(), 60, what="a fetch while the job runs")
        trusted_box.pause()
        try:
            wait_for(
                lambda: "trying again in 1s" in notes.read_text(), 150, what="the fetch loop to meet the paused host"
            )
            time.sleep(3)  # a few more intervals against a host that does not answer
            assert fetch.poll() is None, notes.read_text()
        finally:
            trusted_box.unpause()
        out, _ = fetch.communicate(timeout=180)
    finally:
        if fetch.poll() is None:
            fetch.kill()
    assert fetch.returncode == 0, notes.read_text()
    assert "unreachable" in notes.read_text() or "did not answer" in notes.read_text()
    assert runner.state(job_id) == "succeeded"
    paths = sorted(item["path"] for item in json.loads(out)["files"])
    assert paths == sorted(f"runs/e/weights/epoch{i}.pt" for i in range(1, 16))
