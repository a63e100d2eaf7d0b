"""The core, end to end through the installed `runner` command on the local host with a real tmux."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import REPO, Runner, runner_executable, wait_for, write_job

SIX_WINDOWS = ["train", "monitor", "gpu", "cpu", "tensorboard", "shell"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def job_processes(job_id: str) -> list[int]:
    marker = f"RUNNER_JOB_ID={job_id}".encode()
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                found.append(int(name))
        except OSError:
            continue
    return found


def test_demo_runs_to_success_and_its_weights_come_back_verified(runner: Runner, tmp_path: Path) -> None:
    job_id = runner.submit(REPO / "jobs" / "demo.yaml")
    job = runner.json("status", job_id)
    session = job["session"]
    windows = runner.tmux("list-windows", "-t", f"={session}", "-F", "#{window_name}").stdout.split()
    assert windows == SIX_WINDOWS

    # Kill a runner process watching the job, and hang up another, as a closed terminal would:
    # the job goes on without either.
    watchers = [
        subprocess.Popen([runner_executable(), "logs", "-f", job_id], env=runner.env, stdout=subprocess.DEVNULL)
        for _ in range(2)
    ]
    wait_for(lambda: "Epoch" in (runner.json("status", job_id)["last_line"] or ""), 60, what="first progress line")
    watchers[0].send_signal(signal.SIGKILL)
    watchers[1].send_signal(signal.SIGHUP)
    for watcher in watchers:
        watcher.wait(10)
    assert runner.state(job_id) == "running"

    done = runner.wait_state(job_id, {"succeeded", "failed", "lost", "stopped"}, timeout=120)
    assert done["state"] == "succeeded", runner.run("logs", job_id, "-n", "20").stdout
    assert done["exit_code"] == 0
    assert done["elapsed_seconds"] > 0
    assert done["last_line"].startswith("30 epochs completed")
    assert runner.tmux("has-session", "-t", f"={session}").returncode != 0  # the session ends with the job

    dest = tmp_path / "fetched"
    fetched = runner.json("fetch", "weights", job_id, "--dest", str(dest))
    written = Path(done["job_dir"]) / "work"
    assert sorted(item["path"] for item in fetched["files"]) == [
        "runs/demo/weights/best.pt",
        "runs/demo/weights/last.pt",
    ]
    for item in fetched["files"]:
        assert item["sha256"] == sha256(written / item["path"]) == sha256(dest / item["path"])
        assert item["size"] == (dest / item["path"]).stat().st_size
        assert item["copied"] is True
    assert not list(dest.rglob("*.part"))

    again = runner.json("fetch", "weights", job_id, "--dest", str(dest))
    assert again["bytes_copied"] == 0 and all(not item["copied"] for item in again["files"])

    results = runner.json("fetch", "results", job_id, "--dest", str(dest))
    with (dest / results["files"][0]["path"]).open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30
    losses = [float(row["train/loss"]) for row in rows]
    assert losses[-1] < losses[0] / 2


def test_stop_interrupts_the_training_and_keeps_its_log(runner: Runner, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        "sleeper",
        "name: sleeper\nrun: |\n  echo started-training\n  python3 -c 'import time\n  while True: time.sleep(0.1)'\n",
    )
    job_id = runner.submit(job_file)
    wait_for(lambda: runner.json("status", job_id)["last_line"] == "started-training", 30, what="job output")
    stopped = runner.json("stop", job_id)
    assert stopped["state"] == "stopped"
    assert stopped["exit_code"] == 130  # Ctrl-C reached the training, and run.sh recorded how it ended
    assert "started-training" in runner.run("logs", job_id, check=True).stdout
    assert "KeyboardInterrupt" in runner.run("logs", job_id, check=True).stdout
    assert job_processes(job_id) == []


def test_stop_kills_a_job_that_ignores_ctrl_c_after_the_grace_period(runner: Runner, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path, "stubborn", "name: stubborn\nrun: |\n  trap '' INT\n  echo ignoring-interrupts\n  sleep 600\n"
    )
    job_id = runner.submit(job_file)
    wait_for(lambda: runner.json("status", job_id)["last_line"] == "ignoring-interrupts", 30, what="job output")
    assert job_processes(job_id)
    stopped = runner.json("stop", job_id, "--grace", "1")
    assert stopped["state"] == "stopped"
    assert job_processes(job_id) == []
    assert "ignoring-interrupts" in runner.run("logs", job_id, check=True).stdout


def test_a_failing_command_fails_the_job_with_its_exit_code(runner: Runner, tmp_path: Path) -> None:
    job_file = write_job(tmp_path, "broken", "name: broken\nsetup: echo preparing\nrun: [sh -c 'exit 3', echo never]\n")
    job_id = runner.submit(job_file)
    done = runner.wait_state(job_id, {"succeeded", "failed"}, timeout=30)
    assert (done["state"], done["exit_code"]) == ("failed", 3)
    log = runner.run("logs", job_id, check=True).stdout
    assert "preparing" in log and "never" not in log
    assert "runner: \"sh -c 'exit 3'\" failed with exit status 3" in log
    follow = runner.run("logs", job_id, "-f")
    assert follow.returncode == 1 and "preparing" in follow.stdout


def test_a_session_killed_behind_runners_back_is_lost_not_failed(runner: Runner, tmp_path: Path) -> None:
    job_id = runner.submit(write_job(tmp_path, "victim", "name: victim\nrun: sleep 600\n"))
    session = runner.json("status", job_id)["session"]
    runner.tmux("kill-session", "-t", f"={session}")
    # The training outlives its tmux session (util-linux script keeps it going): still running, truly.
    assert job_processes(job_id)
    assert runner.state(job_id) == "running"
    for pid in job_processes(job_id):  # now it dies without a word, as under the OOM killer
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not job_processes(job_id), 10, what="the job's processes to die")
    job = runner.json("status", job_id)
    assert (job["state"], job["exit_code"]) == ("lost", None)


def test_eight_parallel_submits_get_eight_distinct_jobs(runner: Runner, tmp_path: Path) -> None:
    job_file = write_job(tmp_path, "quick", "name: quick\nrun: echo done\n")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: runner.run("submit", str(job_file), "--json"), range(8)))
    assert [result.returncode for result in results] == [0] * 8, [result.stderr for result in results]
    ids = {json.loads(result.stdout)["id"] for result in results}
    assert len(ids) == 8
    listed = {job["id"] for job in runner.json("status")["jobs"]}
    assert ids <= listed
    for job_id in ids:
        assert runner.wait_state(job_id, {"succeeded", "failed", "lost"}, timeout=60)["state"] == "succeeded"


def test_jobs_are_found_by_name_and_prefix_and_logs_tail(runner: Runner, tmp_path: Path) -> None:
    job_file = write_job(tmp_path, "counter", "name: counter\nrun: seq 1 50\n")
    job_id = runner.submit(job_file)
    runner.wait_state(job_id, {"succeeded"}, timeout=30)
    assert runner.json("status", "counter")["id"] == job_id
    assert runner.json("status", job_id[:5])["id"] == job_id
    tail = runner.run("logs", "counter", "-n", "3", check=True).stdout
    assert [line.strip() for line in tail.strip().splitlines()] == ["48", "49", "50"]
    missing = runner.run("status", "no-such-job")
    assert (
        missing.returncode == 4 and missing.stderr.strip() == "runner: no job with id, id prefix or name 'no-such-job'"
    )


def test_unknown_artifact_set_names_the_sets_there_are(runner: Runner, tmp_path: Path) -> None:
    job_id = runner.submit(write_job(tmp_path, "plain", "name: plain\nrun: 'true'\n"))
    runner.wait_state(job_id, {"succeeded"}, timeout=30)
    result = runner.run("fetch", "checkpoints", job_id)
    assert result.returncode == 4
    assert (
        result.stderr.strip()
        == f"runner: job {job_id} has no artifact set 'checkpoints' (it has: logs, results, weights)"
    )


def test_fetch_every_keeps_pulling_until_the_job_ends(runner: Runner, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        "epochs",
        "name: epochs\n"
        "run: mkdir -p runs/e/weights && for i in 1 2 3 4; do echo $i > runs/e/weights/epoch$i.pt; sleep 1; done\n",
    )
    job_id = runner.submit(job_file)
    result = runner.run(
        "fetch", "weights", job_id, "--dest", str(tmp_path / "d"), "--every", "1s", "--json", timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "next in 1s" in result.stderr  # it did pull while the job ran
    assert runner.state(job_id) == "succeeded"
    paths = sorted(item["path"] for item in json.loads(result.stdout)["files"])
    assert paths == [f"runs/e/weights/epoch{i}.pt" for i in range(1, 5)]
    assert (tmp_path / "d" / "runs/e/weights/epoch4.pt").read_text() == "4\n"


def running(pid: int) -> bool:
    """Alive, not a zombie waiting for a parent that is gone to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_sync_every_fetches_in_the_background_until_the_job_ends(runner: Runner, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        "synced",
        "name: synced\n"
        "run: |\n"
        "  mkdir -p runs/s/weights\n"
        "  for i in $(seq 1 12); do head -c 65536 /dev/urandom > runs/s/weights/last.pt; echo epoch $i; sleep 1; done\n"
        "artifacts:\n"
        "  weights:\n"
        "    paths: ['runs/**/weights/*.pt']\n"
        "    sync_every: 10s\n"
        "    dest: synced-weights\n"
        "  results: ['runs/**/results.csv']\n",
    )
    dest = tmp_path / "synced-weights"
    submitted = runner.run("submit", str(job_file), check=True)  # returns at once: the fetcher holds no pipe of it
    job_id = submitted.stdout.strip()
    assert f"syncing weights every 10s to {dest}" in submitted.stderr
    pid_file, log = runner.home / "syncs" / f"{job_id}-weights.pid", runner.home / "syncs" / f"{job_id}-weights.log"
    pid = int(pid_file.read_text())
    assert running(pid)
    assert runner.state(job_id) == "running"

    done = runner.wait_state(job_id, {"succeeded", "failed", "lost", "stopped"}, timeout=60)
    assert done["state"] == "succeeded"
    assert "next in 10s" in log.read_text()  # it fetched while the job ran
    # The loop notices the end within an interval, fetches once more and is gone, its pid file with it.
    wait_for(lambda: not running(pid), 40, interval=0.5, what="the background fetcher to exit")
    assert not pid_file.exists()
    written = Path(done["job_dir"]) / "work" / "runs/s/weights/last.pt"
    assert sha256(dest / "runs/s/weights/last.pt") == sha256(written)
    assert "1 files in" in log.read_text()
    assert not (tmp_path / "artifacts").exists() and not list(dest.rglob("*.part"))


def test_the_sync_of_a_stopped_job_makes_its_last_fetch_and_ends(runner: Runner, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        "stopsync",
        "name: stopsync\n"
        "run: |\n"
        "  mkdir -p runs/s/weights && echo one > runs/s/weights/a.pt\n"
        "  echo ready\n"
        "  sleep 600\n"
        "artifacts:\n  weights: {sync_every: 10s, dest: out}\n",
    )
    job_id = runner.submit(job_file)
    pid = int((runner.home / "syncs" / f"{job_id}-weights.pid").read_text())
    wait_for(lambda: runner.json("status", job_id)["last_line"] == "ready", 30, what="job output")
    assert runner.json("stop", job_id)["state"] == "stopped"  # runner stop leaves the fetcher be, and waits for nothing
    wait_for(lambda: not running(pid), 40, interval=0.5, what="the background fetcher to exit")
    log = (runner.home / "syncs" / f"{job_id}-weights.log").read_text()
    assert log.rstrip().splitlines()[-1].startswith(f"1 files in {tmp_path / 'out'}")  # its last fetch, after the stop
    assert (tmp_path / "out" / "runs/s/weights/a.pt").read_text() == "one\n"
