"""job.sh and run.sh, rendered and then run by a real bash."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import runner.hostside
from runner.hostside import jobend
from runner.jobs.jobscript import render_job_sh, render_run_sh
from runner.jobs.spec import JobSpec

AGENT = Path(runner.hostside.__file__).parent / "agent.py"

NASTY = {
    "SINGLE": "it's 'quoted'",
    "DOUBLE": 'say "hi" \\"there\\"',
    "SUBST": "$(touch PWNED)",
    "BACKTICK": "`touch PWNED_BT` and ${HOME} and $HOME",
    "NEWLINES": "line one\nline two\n\nend\n",
    "SPACES": "  leading and trailing  ",
    "MIXED": "a'b\"c$(touch PWNED_MIX)`d`\\e;f|g&h*",
}


def _run_job(tmp_path: Path, spec: JobSpec) -> subprocess.CompletedProcess[bytes]:
    work = tmp_path / "work dir"
    work.mkdir(exist_ok=True)
    script = tmp_path / "job.sh"
    script.write_text(render_job_sh("0123abcd", spec, str(tmp_path / "job.yaml"), str(work)))
    return subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, timeout=60, check=False)


def test_env_values_reach_the_job_byte_for_byte(tmp_path: Path) -> None:
    names = list(NASTY)
    spec = JobSpec(name="t", env=NASTY, run=["printf '%s\\0' " + " ".join(f'"${name}"' for name in names)])
    result = _run_job(tmp_path, spec)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"".join(NASTY[name].encode() + b"\0" for name in names)
    # The job ran with cwd inside tmp_path: a command substitution that ran would have left a file here.
    assert not list(tmp_path.rglob("PWNED*"))


def test_a_failing_setup_line_ends_the_job_with_its_status(tmp_path: Path) -> None:
    spec = JobSpec(name="t", setup=["echo preparing", "sh -c 'exit 3'", "echo setup-after"], run=["echo training"])
    result = _run_job(tmp_path, spec)
    assert result.returncode == 3
    assert result.stdout == b"preparing\n"
    assert b"runner: \"sh -c 'exit 3'\" failed with exit status 3" in result.stderr


def test_run_lines_after_a_failing_one_do_not_run(tmp_path: Path) -> None:
    spec = JobSpec(name="t", run=["echo first", "sh -c 'exit 5'", "echo second"])
    result = _run_job(tmp_path, spec)
    assert result.returncode == 5
    assert result.stdout == b"first\n"


def test_a_failing_pipeline_fails_the_job(tmp_path: Path) -> None:
    spec = JobSpec(name="t", run=["false | cat", "echo after"])
    result = _run_job(tmp_path, spec)
    assert result.returncode == 1
    assert b"after" not in result.stdout
    assert b"failed with exit status 1" in result.stderr


def test_the_job_runs_in_its_work_dir(tmp_path: Path) -> None:
    result = _run_job(tmp_path, JobSpec(name="t", run=["pwd"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == str(tmp_path / "work dir")


def test_run_sh_quotes_a_job_dir_with_a_space_and_a_quote(tmp_path: Path) -> None:
    job_dir = tmp_path / "it's a job dir"
    script = render_run_sh(
        "0123abcd", "t", str(job_dir), "rj-0123abcd:train", ["python3", "agent.py", "snapshot", str(job_dir)]
    )
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
    cd_line = next(line for line in script.splitlines() if line.startswith("cd "))
    assert shlex.split(cd_line) == ["cd", str(job_dir), "||", "exit", "1"]


def _fake_tmux(folder: Path, record: Path) -> None:
    folder.mkdir()
    tmux = folder / "tmux"
    tmux.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{record}'\n")
    tmux.chmod(tmux.stat().st_mode | stat.S_IXUSR)


def test_run_sh_records_the_exit_code_and_the_log(tmp_path: Path) -> None:
    job_dir = tmp_path / "it's a job dir"
    job_dir.mkdir()
    (job_dir / "job.sh").write_text('echo hi\necho "id=$RUNNER_JOB_ID"\nexit 7\n')
    snapshot = [sys.executable, str(AGENT), "snapshot", str(job_dir)]
    (job_dir / "run.sh").write_text(render_run_sh("0123abcd", "t", str(job_dir), "rj-0123abcd:train", snapshot))
    record = tmp_path / "tmux-args"
    _fake_tmux(tmp_path / "bin", record)
    env = {key: value for key, value in os.environ.items() if key not in ("TMUX", "TMUX_PANE")}
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    # Run from elsewhere, with no terminal: run.sh must cd to its job dir by itself.
    result = subprocess.run(
        ["bash", str(job_dir / "run.sh")],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (job_dir / "exit_code").read_text() == "7\n"
    assert not (job_dir / "exit_code.tmp").exists()
    log = (job_dir / "train.log").read_text()
    assert "hi" in log.splitlines()  # splitlines also ends lines at the pty's \r\n
    assert "id=0123abcd" in log
    assert record.read_text().splitlines() == ["kill-session", "-t", "rj-0123abcd:train"]
    final = json.loads((job_dir / "status.json").read_text())  # the monitor's last word, before the session ends
    assert final["exit_code"] == 7
    assert [alert["kind"] for alert in final["alerts"]] == ["exited"]
    # The exit code went over its reserve; the stop's reserve is given back; the training's end is marked.
    assert not (job_dir / "exit_code.reserved").exists()
    assert not (job_dir / "stop_delivered.reserved").exists()
    assert (job_dir / "training_ended").exists()
    assert not list(job_dir.glob("*.tmp"))


def test_job_sh_marks_the_trainings_end_and_keeps_its_exit_status(tmp_path: Path) -> None:
    # _run_job's work dir is tmp_path/"work dir": its job directory is tmp_path.
    (tmp_path / "training_ended.reserved").touch()
    result = _run_job(tmp_path, JobSpec(name="t", run=["echo training", "exit 4"]))
    assert result.returncode == 4
    assert (tmp_path / "training_ended").exists()
    assert not (tmp_path / "training_ended.reserved").exists()


def test_a_stop_waits_for_the_lock_and_finds_the_exit_code_recorded_under_it(tmp_path: Path) -> None:
    """The order run.sh and the agent's stop take the job directory's flock decides; no clock does."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    go, locked = tmp_path / "go", tmp_path / "locked"
    # As run.sh does at the training's end: the lock taken, then the exit code recorded under it.
    holder = subprocess.Popen(
        ["flock", str(job_dir), "sh", "-c", 'touch "$1"; while [ ! -e "$2" ]; do sleep 0.05; done; echo 0 > "$3"',
         "sh", str(locked), str(go), str(job_dir / "exit_code")]
    )  # fmt: skip
    try:
        _wait(locked.exists)
        answers: list[dict[str, object]] = []
        stopper = threading.Thread(target=lambda: answers.append(jobend.deliver_stop(str(job_dir), "rj-x")))
        stopper.start()  # blocks on the lock the holder has
        go.touch()
        stopper.join(timeout=60)
        assert answers == [{"delivered": False, "exit_code": 0}]
        assert jobend.read_stop(str(job_dir)) is None  # nothing recorded: the training had ended first
    finally:
        holder.wait(timeout=60)


def _wait(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
