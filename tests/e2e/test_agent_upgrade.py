"""An upgrade of runner while a job runs: the job's monitor still runs the older runner's agent, of
another protocol. The next `runner status` says so in one line and restarts the monitor with its own
agent; the training goes on untouched and succeeds, and an install then removes the old folder."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

from runner import hostside
from runner.hostside.hostfiles import PROTOCOL
from tests.conftest import Runner, wait_for, write_job
from tests.e2e.test_local_jobs import job_processes

OLD = "hostside-000000000000"  # an older runner's agent folder: other files, another name


def _snapshot_protocol(job_dir: Path) -> int | None:
    try:
        return int(json.loads((job_dir / "status.json").read_text()).get("protocol", 0))
    except (OSError, ValueError):
        return None  # not written yet, or being replaced right now


def _older_agent(root: Path) -> Path:
    """This runner's agent as protocol 0: what a job started before protocols runs."""
    old = root / OLD
    shutil.copytree(root / f"hostside-{hostside.version()}", old)
    hostfiles = old / "hostfiles.py"
    hostfiles.write_text(hostfiles.read_text().replace(f"PROTOCOL = {PROTOCOL}\n", "PROTOCOL = 0\n"))
    return old


def test_a_job_whose_monitor_runs_an_older_agent_keeps_training_and_gets_this_runners(
    runner: Runner, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    # One long-lived process waits for the go file (a shell loop would start a new sleep every turn).
    wait = f"import os, time; [time.sleep(0.1) for _ in iter(lambda: os.path.exists({str(go)!r}), True)]"
    body = f"name: upgraded\nrun: |\n  echo started\n  python3 -c {shlex.quote(wait)}\n  echo finished\n"
    job_id = runner.submit(write_job(tmp_path, "upgraded", body))
    job = wait_for(lambda: (seen := runner.json("status", job_id))["last_line"] == "started" and seen, 30,
                   what="the training to start")  # fmt: skip
    job_dir, session = Path(job["job_dir"]), job["session"]
    training = sorted(job_processes(job_id))

    # As if an older runner had started the job: its monitor window runs the older agent.
    old = _older_agent(job_dir.parent.parent)
    monitor = shlex.join([sys.executable, "-E", "-S", str(old / "agent.py"), "monitor", str(job_dir)])
    assert runner.tmux("respawn-window", "-k", "-t", f"={session}:monitor", monitor).returncode == 0
    wait_for(lambda: _snapshot_protocol(job_dir) == 0, 30, what="the older monitor's status.json")

    status = runner.run("status", job_id, "--json", check=True)
    assert json.loads(status.stdout)["state"] == "running"  # stdout: the document, and nothing else
    assert status.stderr.splitlines() == [
        f"runner: host 'local': job {job_id} ran runner's agent protocol 0; restarted its monitor with protocol "
        f"{PROTOCOL} (the training is untouched)"
    ]
    wait_for(lambda: _snapshot_protocol(job_dir) == PROTOCOL, 30, what="this runner's monitor's status.json")
    panes = runner.tmux("list-panes", "-t", f"={session}:monitor", "-F", "#{pane_start_command}").stdout
    assert f"hostside-{hostside.version()}/agent.py" in panes and OLD not in panes
    assert sorted(job_processes(job_id)) == training  # the training's processes are the same ones
    assert runner.run("status", job_id, "--json", check=True).stderr == ""  # said once

    go.touch()
    done = runner.wait_state(job_id, {"succeeded", "failed", "lost", "stopped"}, timeout=60)
    assert (done["state"], done["exit_code"], done["last_line"]) == ("succeeded", 0, "finished")

    # No running job uses the older folder now: the next install removes it.
    runner.run("hosts", "check", "local", check=True)
    assert not old.exists()
    assert (job_dir.parent.parent / f"hostside-{hostside.version()}").is_dir()
