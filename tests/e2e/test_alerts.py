"""Alerts end to end on the local host: the monitor window reads the job's log, and status shows
what went wrong. The trainings print real recorded output (tests/fixtures/samples/telemetry)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.conftest import REPO, Runner, wait_for, write_job

SAMPLES = REPO / "tests" / "fixtures" / "samples" / "telemetry"
FAST_MONITOR = "monitor: {interval: 1s, stalled_after: 4s}\n"


def alerts(runner: Runner, job_id: str) -> dict[str, dict[str, Any]]:
    return {alert["kind"]: alert for alert in runner.json("status", job_id)["alerts"]}


def test_an_out_of_memory_crash_shows_as_oom_with_its_traceback(runner: Runner, tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "err_torch_cuda-oom_torch2x_rtx5080.txt", tmp_path / "oom.txt")
    body = (
        "name: oom\n" + FAST_MONITOR + "run: |\n"
        "  printf 'Traceback (most recent call last):\\n  File \"train.py\", line 9, in <module>\\n'\n"
        "  cat oom.txt\n"
        "  exit 1\n"
    )
    job_id = runner.submit(write_job(tmp_path, "oom", body))
    done = runner.wait_state(job_id, {"failed", "succeeded"}, timeout=60)
    assert done["state"] == "failed"
    found = {alert["kind"]: alert for alert in done["alerts"]}
    assert found["oom"]["backend"] == "cuda"
    assert "CUDA out of memory. Tried to allocate 20.00 MiB" in found["oom"]["message"]
    assert found["traceback"]["exception"].startswith("torch.OutOfMemoryError")
    assert found["exited"]["exit_code"] == 1
    assert "oom" in runner.run("status").stdout  # the table's ALERTS column and the line under it


def test_a_nan_loss_shows_while_the_job_runs(runner: Runner, tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "log_yolo_nan-loss_gtx1660ti.txt", tmp_path / "nan.log")
    job_id = runner.submit(write_job(tmp_path, "nan", "name: nan\n" + FAST_MONITOR + "run: cat nan.log; sleep 600\n"))
    try:
        seen = wait_for(lambda: alerts(runner, job_id).get("nan_loss"), 30, what="a nan_loss alert")
        assert set(seen["losses"]) >= {"box", "cls"}
        assert runner.state(job_id) == "running"  # an alert is news, not a verdict
    finally:
        runner.run("stop", job_id, "--grace", "1")


def test_a_job_that_stops_printing_is_stalled(runner: Runner, tmp_path: Path) -> None:
    job_id = runner.submit(
        write_job(tmp_path, "quiet", "name: quiet\n" + FAST_MONITOR + "run: echo started; sleep 600\n")
    )
    try:
        stalled = wait_for(lambda: alerts(runner, job_id).get("stalled"), 30, what="a stalled alert")
        assert stalled["quiet_s"] >= 4
        assert "no output for" in stalled["message"]
    finally:
        runner.run("stop", job_id, "--grace", "1")
