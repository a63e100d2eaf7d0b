"""The end's records on the host (runner/hostside/jobend.py) and the monitor's use of them: status.json
in reserved slots, a stop delivered once and only before the end, max_duration, leftovers cleaned."""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
import subprocess
import time
from pathlib import Path

import pytest

from runner.hostside import jobend, monitor


def _fake_tmux(folder: Path) -> Path:
    """A tmux that records its arguments, one call per line: the stop's Ctrl-C is seen without a server."""
    record = folder / "tmux-calls"
    tmux = folder / "bin" / "tmux"
    tmux.parent.mkdir()
    tmux.write_text(f"#!/bin/sh\necho \"$*\" >> '{record}'\n")
    tmux.chmod(tmux.stat().st_mode | stat.S_IXUSR)
    return record


@pytest.fixture
def tmux_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    record = _fake_tmux(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return record


def _job_dir(tmp_path: Path, **spec: object) -> Path:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    # A fresh id: the kill after max_duration's grace ends every process carrying it.
    document = {"id": secrets.token_hex(4), "session": "rj-0123abcd", "spec": spec}
    (job_dir / "spec.json").write_text(json.dumps(document))
    return job_dir


def test_a_stop_is_delivered_once_recorded_and_sent_as_ctrl_c(tmp_path: Path, tmux_calls: Path) -> None:
    job_dir = _job_dir(tmp_path)
    assert jobend.reserve(str(job_dir / jobend.STOP))
    first = jobend.deliver_stop(str(job_dir), "rj-0123abcd")
    assert first["delivered"] is True
    assert jobend.read_stop(str(job_dir)) == {"by": "runner stop", "message": None}
    assert not (job_dir / "stop_delivered.reserved").exists()  # written over its reserve
    again = jobend.deliver_stop(str(job_dir), "rj-0123abcd", by="max_duration", message="later")
    assert again["stop"] == {"by": "runner stop", "message": None}  # the first stop's record stands
    assert tmux_calls.read_text().splitlines() == ["send-keys -t =rj-0123abcd:train C-c"] * 2


@pytest.mark.parametrize("record", ["exit_code", "training_ended"])
def test_no_stop_is_delivered_after_the_training_ended(tmp_path: Path, tmux_calls: Path, record: str) -> None:
    job_dir = _job_dir(tmp_path)
    (job_dir / record).write_text("0\n")
    answer = jobend.deliver_stop(str(job_dir), "rj-0123abcd")
    assert answer["delivered"] is False
    assert jobend.read_stop(str(job_dir)) is None
    assert not tmux_calls.exists()  # no Ctrl-C reached a session that may be running the next thing


def test_status_slots_replace_status_json_whole_and_reuse_their_space(tmp_path: Path) -> None:
    job_dir = _job_dir(tmp_path)
    jobend.prepare_status(str(job_dir))
    for number in range(3):
        jobend.write_status(str(job_dir), {"n": number})
        assert json.loads((job_dir / "status.json").read_text()) == {"n": number}  # padding is whitespace
    inodes = {(job_dir / name).stat().st_ino for name in ("status.json", "status.json.spare")}
    jobend.write_status(str(job_dir), {"n": 3})
    assert {(job_dir / name).stat().st_ino for name in ("status.json", "status.json.spare")} == inodes
    assert (job_dir / "status.json").stat().st_size == jobend.STATUS_SLOT_BYTES
    assert sorted(path.name for path in job_dir.iterdir()) == ["spec.json", "status.json", "status.json.spare"]


def test_a_failed_status_write_keeps_the_last_snapshot_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_dir = _job_dir(tmp_path)
    jobend.prepare_status(str(job_dir))
    jobend.write_status(str(job_dir), {"n": 1})
    real_write = os.write

    def disk_full(fd: int, data: bytes) -> int:
        # A real full disk needs a mount of its own (tests/e2e/test_end_faults.py has one).
        real_write(fd, data[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    monitor.write_snapshot(str(job_dir), _snapshot())  # the monitor's write: it must not raise
    monkeypatch.undo()
    assert json.loads((job_dir / "status.json").read_text()) == {"n": 1}
    assert (job_dir / "telemetry.jsonl").read_text() == ""  # the half line was cut off again
    assert not list(job_dir.glob("*.tmp"))
    jobend.write_status(str(job_dir), {"n": 2})  # and the next turn works
    assert json.loads((job_dir / "status.json").read_text()) == {"n": 2}


def test_a_record_without_its_reserve_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    job_dir = _job_dir(tmp_path)
    jobend.write_record(str(job_dir / "exit_code"), "3\n")
    assert jobend.read_exit_code(str(job_dir)) == 3
    (job_dir / "sub").mkdir()
    with pytest.raises(OSError):
        jobend.write_record(str(job_dir / "sub" / "missing" / "x"), "1\n")
    assert not list(job_dir.rglob("*.tmp"))


def test_leftover_temporary_files_are_removed_but_a_live_writers_is_kept(tmp_path: Path) -> None:
    job_dir = _job_dir(tmp_path)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        names = ["exit_code.tmp", "status.json.999999999.tmp", f"status.json.{sleeper.pid}.tmp", "other.tmp"]
        for name in names:
            (job_dir / name).write_text("")
        assert sorted(jobend.clean_leftovers(str(job_dir))) == ["exit_code.tmp", "status.json.999999999.tmp"]
        assert (job_dir / f"status.json.{sleeper.pid}.tmp").exists()  # an older monitor writing right now
        assert (job_dir / "other.tmp").exists()  # not the job's records: not runner's to remove
    finally:
        sleeper.kill()
        sleeper.wait()


def test_max_duration_stops_the_training_with_its_message_then_kills_after_the_grace(
    tmp_path: Path, tmux_calls: Path
) -> None:
    job_dir = _job_dir(tmp_path, resources={"max_duration": 7200.0})
    job_id = json.loads((job_dir / "spec.json").read_text())["id"]
    training = subprocess.Popen(["sleep", "600"], env={**os.environ, "RUNNER_JOB_ID": job_id})  # ignores tmux
    try:
        limit = monitor.Deadline(str(job_dir), "rj-0123abcd", 7200.0, grace_s=0.0)
        started = time.time()
        limit.enforce(started, exit_code=None)
        assert jobend.read_stop(str(job_dir)) is None  # not yet
        assert 0 < limit.sleep_before_next(started, 10.0) <= 10.0
        limit.enforce(started - 7200, exit_code=None)
        assert jobend.read_stop(str(job_dir)) == {"by": "max_duration", "message": "max_duration 2h reached"}
        assert training.poll() is None  # Ctrl-C first, and the grace
        limit.enforce(started - 7200, exit_code=None)  # the grace (0 s here) is over: the kill
        assert training.wait(timeout=60) == -9  # the agent's kill: SIGKILL to what carries the job's id
        assert tmux_calls.read_text().splitlines() == [
            "send-keys -t =rj-0123abcd:train C-c",
            "kill-session -t =rj-0123abcd",
        ]
    finally:
        training.kill()
        training.wait()


def test_max_duration_does_nothing_to_a_training_that_ended(tmp_path: Path, tmux_calls: Path) -> None:
    job_dir = _job_dir(tmp_path)
    limit = monitor.Deadline(str(job_dir), "rj-0123abcd", 60.0)
    limit.enforce(time.time() - 3600, exit_code=0)
    assert jobend.read_stop(str(job_dir)) is None
    assert not tmux_calls.exists()


@pytest.mark.parametrize(("seconds", "text"), [(7200, "2h"), (5400, "90m"), (45, "45s"), (90.5, "90.5s")])
def test_max_duration_is_named_as_the_job_file_says_it(seconds: float, text: str) -> None:
    assert monitor.format_duration(seconds) == text


def _snapshot() -> dict[str, object]:
    return {
        "updated_at": 1.0,
        "progress": {},
        "system": {"load1": 0.1, "mem_used_mib": 1},
        "gpus": {"gpus": []},
    }
