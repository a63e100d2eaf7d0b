"""Notifications end to end, through the real CLI and apprise's json:// URL to a real HTTP receiver on
loopback: exactly one message per event (a succeeded job, a failed one with its OOM alert, a budget
stop on a rented instance of the vast.ai emulator), however many `runner status` calls look, two of
them at once; the URL, a secret, in no log, output or `ps` listing. A job on an SSH test host is
heard of with no runner process looking: its host's monitor sends, and the controller sends nothing
again."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from runner.jobs.state import Store
from runner.observe.notify import event_name
from runner.testing.vast_emulator import Emulator
from tests.conftest import REPO, Runner, runner_executable, wait_for, write_job
from tests.e2e.registry import registry  # noqa: F401  (a pytest fixture, found by name)
from tests.e2e.test_vast_jobs import live_instances, steps_job, vast  # noqa: F401  (vast: a fixture)
from tests.e2e.testhost import TestHost
from tests.notifyreceiver import Receiver, receiving

TOKEN = "hook-7c1d0e2f9a8b3c4d5e6f"  # in the URL's path, as a webhook's token is: it must show nowhere
SAMPLES = REPO / "tests" / "fixtures" / "samples" / "telemetry"
FAST_MONITOR = "monitor: {interval: 1s}\n"


def notify_yaml(receiver: Receiver, events: str = "") -> str:
    chosen = f", events: [{events}]" if events else ""
    return f"notify: {{urls: ['{receiver.url(TOKEN)}']{chosen}}}\n"


class Watch:
    """The runner CLI, keeping every output it gave, and `ps` listings, to look for the secret in."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.seen: list[str] = []

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = self.runner.run(*args, cwd=cwd, timeout=timeout)
        self.seen += [result.stdout, result.stderr]
        return result

    def statuses(self, job_id: str, times: int = 3) -> None:
        """status, `times` in a row, then two at once: a duplicate notification would show."""
        for _ in range(times):
            assert self.run("status", job_id).returncode in (0, 3)
        both = [subprocess.Popen([runner_executable(), "status", job_id, "--json"], env=self.runner.env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]  # fmt: skip
        for process in both:
            out, err = process.communicate(timeout=120)
            assert process.returncode in (0, 3), err
            self.seen += [out, err]

    def ps(self) -> None:
        self.seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout)

    def assert_secret_nowhere(self, logs_here: bool = True) -> None:
        """logs_here: the job's logs are under RUNNER_HOME (a local job's folder, a keeper's log)."""
        for text in self.seen:
            assert TOKEN not in text
        # Every file under RUNNER_HOME but the store (which keeps the job's spec): logs, the job's
        # directory with its spec.json, the keeper's and the notifications' logs.
        files = [path for path in self.runner.home.rglob("*") if path.is_file() and "state.db" not in path.name]
        assert any(path.suffix == ".log" for path in files) or not logs_here
        for path in files:
            assert TOKEN.encode() not in path.read_bytes(), path


def store_events(runner: Runner, job_id: str, wanted: set[str] | None = None) -> Counter[str]:
    """What the store says happened to the job, as notify.events names (those wanted, default all):
    what must arrive, once each."""
    store = Store(runner.home / "state.db")
    try:
        names = (event_name(event) for event in store.events(job_id))
        return Counter(name for name in names if name and (wanted is None or name in wanted))
    finally:
        store.close()


def state(watch: Watch, job_id: str) -> str:
    import json

    result = watch.run("status", job_id, "--json")
    assert result.returncode in (0, 3), result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return str(found["state"])


def test_a_succeeded_job_notifies_started_and_succeeded_once_each(runner: Runner, tmp_path: Path) -> None:
    go = tmp_path / "go"
    watch = Watch(runner)
    with receiving() as receiver:
        # The default in the config dir's settings.yaml: the job file, copied with its workdir, holds no URL.
        runner.config.mkdir(parents=True, exist_ok=True)
        (runner.config / "settings.yaml").write_text(notify_yaml(receiver))
        body = (
            f"name: fine\n{FAST_MONITOR}env: {{GO: '{go}'}}\n"
            'run: while [ ! -e "$GO" ]; do sleep 0.2; done; echo all done\n'
        )
        submitted = watch.run("submit", str(write_job(tmp_path, "fine", body)))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        watch.ps()  # while the job runs: its windows, the monitor
        wait_for(lambda: state(watch, job_id) and receiver.events() == ["started"], 60, what="started, notified")
        go.touch()
        wait_for(lambda: state(watch, job_id) == "succeeded", 90, what="the job to succeed")
        watch.statuses(job_id)
        assert receiver.events() == ["started", "succeeded"]
        assert Counter(receiver.events()) == store_events(runner, job_id)
        title = next(body["title"] for body in receiver.received if "succeeded" in body["title"])
        assert title == f"runner: fine ({job_id}) succeeded"
    watch.assert_secret_nowhere()


def test_an_oom_crash_notifies_its_alerts_and_the_failure_once_each(runner: Runner, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()  # the job file outside its workdir: it is not copied to the host
    shutil.copy(SAMPLES / "err_torch_cuda-oom_torch2x_rtx5080.txt", tmp_path / "work" / "oom.txt")
    watch = Watch(runner)
    with receiving() as receiver:
        body = (
            f"name: oom\nworkdir: work\n{FAST_MONITOR}{notify_yaml(receiver)}run: |\n"
            "  printf 'Traceback (most recent call last):\\n  File \"train.py\", line 9, in <module>\\n'\n"
            "  cat oom.txt\n"
            "  exit 1\n"
        )
        submitted = watch.run("submit", str(write_job(tmp_path, "oom", body)))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        wait_for(lambda: state(watch, job_id) == "failed", 90, what="the job to fail")
        watch.statuses(job_id)
        received = Counter(receiver.events())
        assert received == Counter(["started", "oom", "traceback", "exited", "failed"])
        assert received == store_events(runner, job_id)
        oom = next(body for body in receiver.received if body["title"].endswith("alert oom"))
        assert "CUDA out of memory" in oom["message"]
    watch.assert_secret_nowhere()


def test_a_budget_stop_of_a_rented_job_notifies_once_each(
    runner: Runner,
    vast: Emulator,  # the fixtures imported above
    registry: Any,
    tmp_path: Path,
) -> None:
    watch = Watch(runner)
    with receiving() as receiver:
        wanted = {"started", "max_cost", "stopped", "instance_destroyed"}
        extra = "teardown: never\n" + notify_yaml(receiver, ", ".join(sorted(wanted)))
        job_file = steps_job(tmp_path, registry.image, extra=extra)
        # $0.42/h: $0.001 is spent in under 9 s, while the job counts its 200 steps (60 s).
        job_file.write_text(job_file.read_text().replace("disk_gb: 20}", "disk_gb: 20, max_cost: 0.001}"))
        submitted = watch.run("submit", str(job_file), cwd=tmp_path, timeout=600)
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        watch.ps()  # the keeper runs now
        wait_for(lambda: state(watch, job_id) == "stopped", 120, what="the budget stop")
        wait_for(lambda: not live_instances(vast), 120, what="the instance destroyed")
        watch.statuses(job_id)
        expected = store_events(runner, job_id, wanted)
        assert set(expected) == wanted
        assert Counter(receiver.events()) == expected  # each once: the keeper's sends and the statuses'
        budget = next(body for body in receiver.received if "budget" in body["title"])
        assert "of $0.00" in budget["message"]  # "$0.00 of $0.00": spent of max_cost
    watch.assert_secret_nowhere()


def bridge_address(box: TestHost) -> str:
    """This machine's address as the test host's container reaches it: its default route's gateway
    (the docker bridge), from /proc/net/route (hexadecimal, little-endian)."""
    gateway = box.sh("awk '$2 == \"00000000\" {print $3; exit}' /proc/net/route").strip()
    return socket.inet_ntoa(bytes.fromhex(gateway)[::-1])


def test_an_ssh_hosts_monitor_notifies_while_no_runner_process_looks(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    (tmp_path / "work").mkdir()  # the job file outside its workdir: it is not copied to the host
    watch = Watch(runner)
    with receiving(address=bridge_address(trusted_box)) as receiver:
        body = (
            f"name: far\nhost: box\nworkdir: work\n{FAST_MONITOR}{notify_yaml(receiver)}"
            "run: while [ ! -e go ]; do sleep 0.2; done; echo all done\n"
        )
        submitted = watch.run("submit", str(write_job(tmp_path, "far", body)))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        job_dir = f"/home/trainer/.runner/jobs/{job_id}"
        # No runner command runs from here on until the job has ended: whatever arrives, the host sent.
        wait_for(lambda: receiver.events() == ["started"], 90, what="started, sent by the host")
        watch.ps()
        watch.seen.append(trusted_box.sh("ps -eo args"))  # the monitor and the training, on the host
        trusted_box.sh(f"touch {job_dir}/work/go")
        wait_for(lambda: receiver.events() == ["started", "succeeded"], 90, what="succeeded, sent by the host")
        assert state(watch, job_id) == "succeeded"
        watch.statuses(job_id)
        assert receiver.events() == ["started", "succeeded"]  # the controller marked them sent, sent nothing
        assert Counter(receiver.events()) == store_events(runner, job_id)
        titles = [body["title"] for body in receiver.received]
        assert titles == [f"runner: far ({job_id}) started", f"runner: far ({job_id}) succeeded"]
        assert "host: box" in receiver.received[1]["message"] and "exit code: 0" in receiver.received[1]["message"]
        assert all(request[2][1] == ("User-Agent", "Apprise") for request in receiver.requests)
    store = Store(runner.home / "state.db")
    try:
        rows = [store.notification(event.seq, 0) for event in store.events(job_id) if event_name(event)]
    finally:
        store.close()
    assert len(rows) == 2 and all(row and row["sent_at"] for row in rows)
    # On the host, the URL is in the private notify.json (mode 600) only: not spec.json, a log or a record.
    holding = trusted_box.sh(f"grep -rl -- {TOKEN} {job_dir} || true").split()
    assert holding == [f"{job_dir}/notify.json"]
    assert trusted_box.sh(f"stat -c %a {job_dir}/notify.json").strip() == "600"
    watch.assert_secret_nowhere(logs_here=False)  # its logs are on the host, searched above


def test_an_ssh_hosts_max_duration_stop_is_heard_of_from_the_host_once_each(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    (tmp_path / "work").mkdir()
    watch = Watch(runner)
    with receiving(address=bridge_address(trusted_box)) as receiver:
        body = (
            f"name: capped\nhost: box\nworkdir: work\n{FAST_MONITOR}resources: {{max_duration: 3s}}\n"
            f"{notify_yaml(receiver)}run: echo started; sleep 600\n"
        )
        submitted = watch.run("submit", str(write_job(tmp_path, "capped", body)))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        # No runner command until all of it arrived: the monitor stops the job at the limit and says so,
        # the final snapshot sees the Ctrl-C's exit code (130: the `exited` alert).
        expected = ["started", "max_duration", "stopped", "exited"]
        wait_for(lambda: sorted(receiver.events()) == sorted(expected), 90, what="the host's notifications")
        wait_for(lambda: state(watch, job_id) == "stopped", 90, what="the job stopped")
        watch.statuses(job_id)
        assert sorted(receiver.events()) == sorted(expected)
        assert Counter(receiver.events()) == store_events(runner, job_id)  # the store's news, each sent once
        limit = next(body for body in receiver.received if body["title"].endswith("max_duration and is stopped"))
        assert limit["title"] == f"runner: capped ({job_id}) reached its max_duration and is stopped"
        assert limit["message"].startswith("max_duration 3s reached\nevent: max_duration\nhost: box")
    watch.assert_secret_nowhere(logs_here=False)
