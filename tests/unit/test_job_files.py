"""Job files: every malformed one is refused with one line naming file, place and field, exit 2, nothing started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.base.errors import SpecError
from runner.jobs.specfile import MAX_SPEC_BYTES, load_job
from tests.conftest import REPO, Runner

MALFORMED = {
    "unknown_key": (
        "name: x\nrun: python train.py\nresources:\n  gpuu: 1\n",
        ":4:3: resources.gpuu: unknown field 'gpuu', did you mean 'gpu'?",
    ),
    "wrong_type": (
        "name: x\nrun: python train.py\ntensorboard:\n  port: lots\n",
        ":4:9: tensorboard.port: Input should be a valid integer",
    ),
    "missing_run": ("name: x\nsetup: [pip install -r requirements.txt]\n", ":1:1: run: required field missing"),
    "bad_yaml": ("name: x\nrun: [python train.py\n", ": invalid YAML: "),
    "empty_file": ("", ": empty job file"),
    "duplicate_key": ("name: x\nrun: a\nname: y\n", ":3:1: invalid YAML: duplicate key 'name'"),
    "huge_file": ("# padding\n" * (MAX_SPEC_BYTES // 10 + 1), f"is too large for a job file (limit {MAX_SPEC_BYTES})"),
    "bad_sync_every": (
        "name: x\nrun: a\nartifacts:\n  weights:\n    sync_every: 10 minutes\n",
        ":5:17: artifacts.weights.sync_every: '10 minutes' is not a duration like 30s, 10m or 1h",
    ),
    "sync_too_often": (
        "name: x\nrun: a\nartifacts:\n  weights: {paths: a.pt, sync_every: 2s}\n",
        ":4:38: artifacts.weights.sync_every: '2s' is too often: each sync lists the set on the host; at least 10s",
    ),
    "unknown_sync_key": (
        "name: x\nrun: a\nartifacts:\n  weights:\n    paths: [a.pt]\n    sync_evrey: 10m\n",
        ":6:5: artifacts.weights.sync_evrey: unknown field 'sync_evrey', did you mean 'sync_every'?",
    ),
}


def make_malformed(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary_file":
        path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    elif kind != "missing_file":
        path.write_text(MALFORMED[kind][0])
    return path


EXPECTED = {kind: expected for kind, (_, expected) in MALFORMED.items()} | {
    "directory": ": is a directory, not a job file",
    "binary_file": ": binary data (NUL byte at offset 7), not a job file",
    "missing_file": ": no such file",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_malformed_job_file_gives_one_line_and_exit_2(kind: str, runner: Runner, tmp_path: Path) -> None:
    path = make_malformed(kind, tmp_path)
    result = runner.run("submit", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(str(path)), lines[0]
    assert EXPECTED[kind] in lines[0]
    assert result.stdout == ""
    # Nothing started: no job recorded, no tmux server.
    assert not (runner.home / "state.db").exists()
    assert runner.tmux("list-sessions").returncode != 0


def test_error_points_at_the_line_of_a_nested_wrong_value(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\nrun: a\nenv:\n  LR: 0.01\n  AMP: true\n")
    with pytest.raises(SpecError) as caught:
        load_job(path)
    assert str(caught.value) == f"{path}:5:8: env.AMP: Input should be a valid string"


def test_typo_is_reported_before_the_missing_field_it_causes(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\nrnu: python train.py\n")
    with pytest.raises(SpecError) as caught:
        load_job(path)
    assert str(caught.value) == f"{path}:2:1: rnu: unknown field 'rnu', did you mean 'run'? (and 1 more)"


def test_retry_reads_its_grace_as_a_duration_and_refuses_one_too_short(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\nrun: a\nretry: {on: [lost], lost_after: 2m}\n")
    assert load_job(path).spec.retry.lost_after == 120.0  # type: ignore[union-attr]
    path.write_text("name: x\nrun: a\nretry:\n  on: [lost]\n  lost_after: 3s\n")
    with pytest.raises(SpecError) as caught:
        load_job(path)
    assert str(caught.value).startswith(f"{path}:5:15: retry.lost_after: Input should be greater than or equal to 10")


def test_artifact_globs_may_not_leave_the_workdir(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\nrun: a\nartifacts:\n  weights: ../../etc/*\n")
    with pytest.raises(SpecError) as caught:
        load_job(path)
    assert (
        str(caught.value)
        == f"{path}:4:12: artifacts.weights[0]: '../../etc/*' must stay inside the workdir (relative, no '..')"
    )


def test_missing_workdir_is_refused_at_its_line(runner: Runner, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\nworkdir: nowhere\nrun: a\n")
    result = runner.run("submit", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{path}:2:10: workdir: '{tmp_path / 'nowhere'}' is not a directory"
    assert runner.json("status") == {"jobs": []}


def test_unknown_host_is_refused_before_anything_starts(runner: Runner, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\nhost: gpubox\nrun: a\n")
    result = runner.run("submit", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{path}:2:7: host: unknown host 'gpubox' (known hosts: local)"
    assert runner.json("status") == {"jobs": []}


@pytest.mark.parametrize("name", ["demo", "noota_100ep", "ota_100ep"])
def test_example_jobs_are_valid(name: str) -> None:
    loaded = load_job(REPO / "jobs" / f"{name}.yaml")
    assert loaded.spec.name
    assert loaded.spec.run


def test_example_runs_differ_only_in_the_ota_loss() -> None:
    noota = load_job(REPO / "jobs" / "noota_100ep.yaml").spec
    ota = load_job(REPO / "jobs" / "ota_100ep.yaml").spec
    assert noota.resources.gpu == ota.resources.gpu == "RTX 5090"
    assert noota.host == ota.host == "vast"
    assert "hyp.scratch.tiny.noota.yaml" in " ".join(noota.run)
    assert "hyp.scratch.tiny.yaml" in " ".join(ota.run)


def test_schema_is_json_schema_that_forbids_unknown_keys(runner: Runner) -> None:
    result = runner.run("schema", check=True)
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["name", "run"]
    assert {"name", "host", "workdir", "setup", "run", "env", "artifacts", "tensorboard", "progress"} <= set(
        schema["properties"]
    )
