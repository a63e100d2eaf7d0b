"""The dataset check end to end: `runner check` here, and submit's preflight on the local host and on an
SSH host, which refuses a job whose labels would crash its training before the training starts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Runner, wait_for, write_job
from tests.datasets import write_split
from tests.e2e.testhost import TestHost

BOX = "0.5 0.5 0.1 0.1"
BAD_LINE = "labels/train/img3.txt:2"  # class 2 with 2 classes, on line 2 of one file
# The training leaves a mark as its very first act: no mark, no training.
RUN = "touch started; echo training; sleep 1"


def toy_dataset(root: Path, class_on_bad_line: int = 2) -> None:
    """An ultralytics dataset of 2 classes: 4 training images (one a background), 1 validation image."""
    write_split(root, "train", {
        "img1": f"0 {BOX}\n1 0.3 0.3 0.2 0.2\n",
        "img2": f"1 {BOX}\n",
        "img3": f"0 {BOX}\n{class_on_bad_line} 0.4 0.4 0.2 0.2\n",
        "img4": None,
    })  # fmt: skip
    write_split(root, "val", {"img5": f"1 {BOX}\n"}, suffix="png")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [cat, dog]\n")


def job_with_dataset(tmp_path: Path, class_on_bad_line: int = 2) -> Path:
    """A job whose dataset lies outside its workdir, linked in by `datasets:` (pushed to SSH hosts)."""
    toy_dataset(tmp_path / "data" / "toy", class_on_bad_line)
    work = tmp_path / "work"
    work.mkdir()
    return write_job(
        work, "toy", f"name: toy\ndatasets:\n  toy: ../data/toy\ndataset: datasets/toy/data.yaml\nrun: {RUN}\n"
    )


def only_job(runner: Runner) -> dict:
    jobs = runner.json("status")["jobs"]
    assert len(jobs) == 1
    return jobs[0]


def test_check_names_the_file_and_line_of_a_class_id_equal_to_nc_and_exits_2(runner: Runner, tmp_path: Path) -> None:
    job_file = job_with_dataset(tmp_path)
    checked = runner.run("check", str(job_file))
    assert checked.returncode == 2
    assert f"datasets/toy/{BAD_LINE}: class 2 not in [0, 2)" in checked.stdout
    assert len(checked.stderr.strip().splitlines()) == 1 and f"datasets/toy/{BAD_LINE}" in checked.stderr

    as_json = runner.run("check", str(job_file), "--json")
    assert as_json.returncode == 2
    report = json.loads(as_json.stdout)
    assert (report["ok"], report["errors"], report["nc"]) == (False, 1, 2)
    offender = report["splits"]["train"]["problems"]["class_out_of_range"]["first"][0]
    assert (offender["file"], offender["line"]) == ("datasets/toy/labels/train/img3.txt", 2)


def test_check_passes_a_clean_dataset_with_its_counts(runner: Runner, tmp_path: Path) -> None:
    job_file = job_with_dataset(tmp_path, class_on_bad_line=1)
    report = runner.json("check", str(job_file))
    train, val = report["splits"]["train"], report["splits"]["val"]
    assert (report["ok"], report["errors"], report["warnings"]) == (True, 0, 0)
    assert (train["images"], train["labels"], train["backgrounds"], train["instances"]) == (4, 3, 1, 5)
    assert train["instances_per_class"] == [2, 3] and val["instances_per_class"] == [0, 1]
    assert "ok: no errors" in runner.run("check", str(job_file), check=True).stdout


def test_submit_refuses_a_bad_dataset_before_training_on_the_local_host(runner: Runner, tmp_path: Path) -> None:
    refused = runner.run("submit", str(job_with_dataset(tmp_path)))
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("runner: preflight: 1 error") and f"datasets/toy/{BAD_LINE}" in refused.stderr
    job = only_job(runner)
    assert job["state"] == "failed" and f"datasets/toy/{BAD_LINE}" in job["message"]
    assert "runner-" not in runner.tmux("list-sessions").stdout  # no session was ever started
    job_dir = Path(job["job_dir"])
    assert not (job_dir / "train.log").exists() and not (job_dir / "work" / "started").exists()


def test_skip_preflight_starts_the_job_anyway(runner: Runner, tmp_path: Path) -> None:
    job_id = runner.submit(job_with_dataset(tmp_path), "--skip-preflight")
    done = runner.wait_state(job_id, {"succeeded", "failed", "lost"}, timeout=30)
    assert done["state"] == "succeeded"
    assert (Path(done["job_dir"]) / "work" / "started").exists()


def test_submit_checks_a_clean_dataset_and_starts(runner: Runner, tmp_path: Path) -> None:
    submitted = runner.json("submit", str(job_with_dataset(tmp_path, class_on_bad_line=1)))
    report = submitted["preflight"]
    assert report["ok"] and report["splits"]["train"]["instances"] == 5
    assert runner.wait_state(submitted["id"], {"succeeded", "failed", "lost"}, timeout=30)["state"] == "succeeded"


def test_submit_refuses_a_bad_dataset_before_training_on_an_ssh_host(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    refused = runner.run("submit", str(job_with_dataset(tmp_path)), "--host", "box")
    assert refused.returncode == 2, refused.stderr
    assert f"datasets/toy/{BAD_LINE}: class 2 not in [0, 2)" in refused.stderr
    job = only_job(runner)
    assert job["state"] == "failed" and f"datasets/toy/{BAD_LINE}" in job["message"]
    # The data went over (the check ran where it lies), the training never started.
    assert trusted_box.exists(f"{job['job_dir']}/work/datasets/toy/labels/train/img3.txt")
    assert not trusted_box.exists(f"{job['job_dir']}/train.log")
    assert not trusted_box.exists(f"{job['job_dir']}/work/started")
    assert "runner-" not in trusted_box.sh("tmux list-sessions 2>/dev/null || true")

    fixed = job_with_dataset(tmp_path / "fixed", class_on_bad_line=1)
    job_id = runner.submit(fixed, "--host", "box")
    done = runner.wait_state(job_id, {"succeeded", "failed", "lost"}, timeout=60)
    assert done["state"] == "succeeded"
    wait_for(lambda: trusted_box.exists(f"{done['job_dir']}/work/started"), 10, what="the training's mark")
