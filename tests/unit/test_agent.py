"""The host-side agent, against real files, real symlinks, real processes and a real tmux server."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.hostside import agent, transfer
from tests.conftest import SAMPLES


@pytest.fixture(autouse=True)
def hash_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process calls would otherwise cache beside the package's agent.py, inside the repo.
    monkeypatch.setattr(transfer.HashCache, "folder", str(tmp_path / "hashcache"))


LEARN_MORE = "\N{ELECTRIC LIGHT BULB} Learn more at https://docs.ultralytics.com/modes/train"


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        # The tty log ends with util-linux's `Script done on ...` line: the recorder's, not the trainer's.
        ("ultralytics/train_tty.log", LEARN_MORE),
        ("ultralytics/train_pipe.log", LEARN_MORE),
        ("yolov7/train_tty.log", "Optimizer stripped from /home/user/exp/runs7/y7/weights/best.pt, 12.2MB"),
    ],
    ids=["ultralytics-tty", "ultralytics-pipe", "yolov7-tty"],
)
def test_last_line_of_recorded_trainings(sample: str, expected: str) -> None:
    assert agent.last_line(str(SAMPLES / sample)) == expected


def test_last_line_takes_the_latest_progress_update_without_ansi(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_bytes(
        b"\x1b[34mepoch 1\x1b[0m done\r\n"
        b"\r\x1b[K  2/3  10% \x1b[32m\xe2\x94\x81\x1b[0m 1/10"
        b"\r\x1b[K  2/3  50% \x1b[32m\xe2\x94\x81\x1b[0m 5/10"
        b"\r\x1b[K"  # ultralytics erases the line before its next update
    )
    assert agent.last_line(str(log)) == "2/3  50% \N{BOX DRAWINGS HEAVY HORIZONTAL} 5/10"


def test_last_line_reads_only_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    with log.open("w") as out:
        for index in range(20_000):  # about 1.2 MiB of earlier lines
            out.write(f"line {index:06d} {'.' * 50}\n")
        out.write("the end\n")
    assert log.stat().st_size > 1024 * 1024
    assert agent.last_line(str(log)) == "the end"
    # One line longer than the tail window: only the window is read, so only its end comes back.
    huge = tmp_path / "huge.log"
    huge.write_text("y" * (2 * 1024 * 1024))
    line = agent.last_line(str(huge))
    assert line is not None and set(line) == {"y"}
    assert len(line) <= min(agent.TAIL_BYTES, 1024 * 1024)


def test_last_line_of_a_missing_or_blank_log_is_none(tmp_path: Path) -> None:
    assert agent.last_line(str(tmp_path / "absent.log")) is None
    blank = tmp_path / "blank.log"
    blank.write_bytes(b"\r\n  \r\x1b[K\n")
    assert agent.last_line(str(blank)) is None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_lists_matching_files_with_size_and_sha256(tmp_path: Path) -> None:
    root = tmp_path / "work"
    contents = {
        "runs/b/weights/last.pt": b"last" * 1000,
        "runs/a/weights/best.pt": b"best",
        "runs/a/weights/deep/epoch_001.pt": os.urandom(3000),
        "runs/a/results.csv": b"epoch,loss\n1,0.5\n",
        "train.py": b"print('hi')\n",
    }
    for rel, data in contents.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    answer = transfer.manifest(str(root), ["runs/**/*.pt", "runs/*/results.csv", "runs/**/*.pt"])
    expected = sorted(rel for rel in contents if rel.endswith((".pt", ".csv")))
    assert [entry["path"] for entry in answer["files"]] == expected
    for entry in answer["files"]:
        path = root / entry["path"]
        assert entry["size"] == len(contents[entry["path"]])
        assert entry["sha256"] == _sha256(path)
        assert entry["mtime"] == path.stat().st_mtime
    assert answer["refused"] == []
    assert answer["root"] == str(root)


def test_manifest_refuses_symlinks_leading_outside_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "work", Path(tempfile.mkdtemp(prefix="outside-"))
    try:
        (outside / "secret.txt").write_text("not yours")
        (outside / "keys").mkdir()
        (outside / "keys" / "id.txt").write_text("private")
        (root / "runs").mkdir(parents=True)
        (root / "runs" / "ok.txt").write_text("mine")
        (root / "runs" / "inner.txt").symlink_to(root / "runs" / "ok.txt")  # inside: fine
        (root / "runs" / "leak.txt").symlink_to(outside / "secret.txt")
        (root / "runs" / "linked").symlink_to(outside / "keys", target_is_directory=True)
        answer = transfer.manifest(str(root), ["runs/**/*.txt", "runs/*"])
        listed = [entry["path"] for entry in answer["files"]]
        assert listed == ["runs/inner.txt", "runs/ok.txt"]
        assert answer["refused"] == ["runs/leak.txt", "runs/linked", "runs/linked/id.txt"]
    finally:
        shutil.rmtree(outside)


@pytest.fixture
def no_tmux_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # tmux's socket path must stay short (sun_path is 108 bytes), and $TMUX would point at the user's server.
    folder = Path(tempfile.mkdtemp(prefix="rt-"))
    monkeypatch.setenv("TMUX_TMPDIR", str(folder))
    monkeypatch.delenv("TMUX", raising=False)
    yield folder
    subprocess.run(["tmux", "kill-server"], capture_output=True, check=False)
    shutil.rmtree(folder, ignore_errors=True)


def _job_dir(parent: Path, session: str, exit_code: str | None, log: bytes) -> Path:
    job_dir = parent / session
    job_dir.mkdir()
    (job_dir / "spec.json").write_text(json.dumps({"session": session, "id": f"id-{session}"}))
    if exit_code is not None:
        (job_dir / "exit_code").write_text(exit_code)
    (job_dir / "train.log").write_bytes(log)
    return job_dir


def test_probe_reports_exit_code_session_and_last_line(tmp_path: Path, no_tmux_server: Path) -> None:
    finished = _job_dir(tmp_path, "x", "3\n", b"epoch 1\r\nTraceback ...\r\nValueError: bad label\r\n")
    garbled = _job_dir(tmp_path, "y", "not a number\n", b"")
    missing = str(tmp_path / "gone")
    jobs = agent.probe([str(finished), str(garbled), missing])["jobs"]
    assert 0 <= jobs[str(finished)].pop("exit_age_s") < 60  # written just now, by this clock
    assert jobs[missing].pop("exit_age_s") is None
    assert jobs[str(finished)] == {
        "exists": True,
        "session": "x",  # spec.json's: the controller restarts an old protocol's monitor by it
        "session_alive": False,
        "processes_alive": False,
        "exit_code": 3,
        "last_line": "ValueError: bad label",
        "snapshot": None,  # no monitor ran here
        "stop_delivered": False,  # no stop came before the training ended
        "stop": None,
    }
    assert jobs[str(garbled)]["exit_code"] is None
    assert jobs[missing] == {
        "exists": False, "session": None, "session_alive": False, "processes_alive": False, "exit_code": None,
        "last_line": None, "snapshot": None, "stop_delivered": False, "stop": None,
    }  # fmt: skip


def test_probe_sees_job_processes_when_tmux_has_lost_track(tmp_path: Path, no_tmux_server: Path) -> None:
    job_dir = _job_dir(tmp_path, "orphaned", None, b"epoch 5\r\n")
    worker = subprocess.Popen(["sleep", "60"], env={**os.environ, "RUNNER_JOB_ID": "id-orphaned"})
    try:
        seen = agent.probe([str(job_dir)])["jobs"][str(job_dir)]
        assert (seen["session_alive"], seen["processes_alive"]) == (False, True)
    finally:
        worker.kill()
        worker.wait()


def test_probe_sees_a_live_tmux_session(tmp_path: Path, no_tmux_server: Path) -> None:
    job_dir = _job_dir(tmp_path, "rj-live", None, b"1/3 running\r")
    subprocess.run(["tmux", "new-session", "-d", "-s", "rj-live", "sleep 60"], check=True)
    seen = agent.probe([str(job_dir)])["jobs"][str(job_dir)]
    assert seen["session_alive"] is True
    assert seen["exit_code"] is None
    assert seen["last_line"] == "1/3 running"


def _sleeper(job_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], env={**os.environ, "RUNNER_JOB_ID": job_id})


def test_kill_job_processes_kills_only_the_jobs_processes() -> None:
    job_id, other_id = secrets.token_hex(8), secrets.token_hex(8)
    target, bystander = _sleeper(job_id), _sleeper(other_id)
    try:
        killed = agent.kill_job_processes(job_id)["killed"]
        assert killed == [target.pid]
        assert target.wait(timeout=10) == -9
        assert bystander.poll() is None
        # The prefix of an id is another id: it must not match.
        assert agent.kill_job_processes(other_id[:-1])["killed"] == []
        assert bystander.poll() is None
    finally:
        for process in (target, bystander):
            process.kill()
            process.wait(timeout=10)


def test_main_rejects_an_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent.main(["agent.py", "explode"]) == 2
    assert "unknown command 'explode'" in capsys.readouterr().err
    assert agent.main(["agent.py"]) == 2


def test_main_prints_one_json_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.pt").write_bytes(b"weights")
    assert agent.main(["agent.py", "manifest", str(tmp_path), "*.pt"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert [entry["path"] for entry in answer["files"]] == ["a.pt"]
