"""`runner plot` end to end: the demo job on the local host, its telemetry and results.csv fetched by the
agent's plotdata, drawn into a PNG by the installed `runner` command."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, Runner, runner_executable

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PANELS = [
    "Losses per epoch",
    "Validation metrics per epoch",
    "GPU utilization (%)",
    "GPU temperature (°C)",
    "GPU power (W)",
    "GPU VRAM used (GiB)",
]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="pip install '.[plot]'")


def test_plot_of_the_finished_demo_job(runner: Runner, tmp_path: Path) -> None:
    job_id = runner.submit(REPO / "jobs" / "demo.yaml")
    done = runner.wait_state(job_id, {"succeeded", "failed", "lost", "stopped"}, timeout=120)
    assert done["state"] == "succeeded", runner.run("logs", job_id, "-n", "20").stdout

    out = tmp_path / "demo.png"
    drawn = runner.json("plot", job_id, "--out", str(out))
    assert drawn["path"] == str(out)
    assert drawn["panels"] == PANELS
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) == drawn["bytes"] > 20_000
    assert drawn["epochs"] == 30 and drawn["results_file"] == "runs/demo/results.csv"
    # No GPU here: the GPU panels stay, with their note. The monitor took at least its last snapshot.
    assert set(PANELS[2:]) <= set(drawn["no_data"])  # no GPU on the demo's host
    assert "Losses per epoch" not in drawn["no_data"]
    assert "Validation metrics per epoch" not in drawn["no_data"]  # the demo's metrics/accuracy column
    assert drawn["points"] >= 1

    # Without --out: JOBNAME-JOBID.png in the current folder, its path on stdout.
    plain = subprocess.run(
        [runner_executable(), "plot", job_id[:6]],
        env=runner.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert plain.stdout == f"demo-{job_id}.png\n"
    assert (tmp_path / f"demo-{job_id}.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "30 epochs" in plain.stderr


def test_plot_of_an_unknown_job_exits_4(runner: Runner) -> None:
    missing = runner.run("plot", "nosuchjob", "--json")
    assert missing.returncode == 4
    assert missing.stdout == ""
    assert "nosuchjob" in missing.stderr and len(missing.stderr.splitlines()) == 1
