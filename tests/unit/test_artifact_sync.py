"""artifacts.NAME.sync_every: the job file's forms, the shared duration parser, the stored spec's shape,
and the --every loop riding out a host that does not answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runner.base.durations import format_duration, parse_duration
from runner.base.errors import CommandFailed, HostUnreachable, NotFound, SpecError
from runner.jobs.spec import DEFAULT_ARTIFACTS, ArtifactSync
from runner.jobs.specfile import load_job
from runner.jobs.state import Job, JobState, Store
from runner.transfer import artifactsync
from runner.transfer.artifactsync import fetch_every, sync_dest
from runner.transfer.fetch import FetchResult
from tests.conftest import Runner


def load(tmp_path: Path, artifacts: str):
    path = tmp_path / "job.yaml"
    path.write_text("name: x\nrun: a\nartifacts:\n" + artifacts)
    return load_job(path)


def error_of(tmp_path: Path, artifacts: str) -> str:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, artifacts)
    return str(caught.value).removeprefix(str(tmp_path / "job.yaml"))


def test_long_form_and_short_form_side_by_side(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        "  weights:\n    paths: ['runs/**/weights/*.pt']\n    sync_every: 10m\n    dest: ./weights-out\n"
        "  results: ['runs/**/results.csv']\n",
    ).spec
    stored = spec.model_dump(mode="json")
    # What `runner fetch` reads stays a name -> list of globs mapping; the syncs sit beside it.
    assert stored["artifacts"] == {
        "weights": ["runs/**/weights/*.pt"],
        "results": ["runs/**/results.csv"],
        "logs": DEFAULT_ARTIFACTS["logs"],
    }
    assert stored["artifact_sync"] == {"weights": {"every_s": 600.0, "dest": "./weights-out"}}
    assert json.loads(json.dumps(stored)) == stored


def test_sync_every_alone_keeps_a_default_sets_globs(tmp_path: Path) -> None:
    spec = load(tmp_path, "  weights: {sync_every: 30s}\n  logs: {sync_every: 1h}\n").spec
    stored = spec.model_dump(mode="json")
    assert stored["artifacts"] == DEFAULT_ARTIFACTS
    assert spec.artifact_sync == {
        "weights": ArtifactSync(every_s=30, dest=None),
        "logs": ArtifactSync(every_s=3600, dest=None),
    }


def test_plain_seconds_are_a_duration_too(tmp_path: Path) -> None:
    assert load(tmp_path, "  weights: {sync_every: 90}\n").spec.artifact_sync["weights"].every_s == 90


def test_no_sync_unless_asked(tmp_path: Path) -> None:
    spec = load(tmp_path, "  weights: runs/w/*.pt\n  extra: {paths: [out/*.bin]}\n").spec
    stored = spec.model_dump(mode="json")
    assert stored["artifact_sync"] == {}
    assert stored["artifacts"]["weights"] == ["runs/w/*.pt"] and stored["artifacts"]["extra"] == ["out/*.bin"]


@pytest.mark.parametrize(
    ("artifacts", "expected"),
    [
        (
            "  weights:\n    sync_every: soon\n",
            ":5:17: artifacts.weights.sync_every: 'soon' is not a duration like 30s, 10m or 1h",
        ),
        ("  weights:\n    sync_every: 0s\n", ":5:17: artifacts.weights.sync_every: '0s' must be more than zero"),
        (
            "  weights:\n    sync_every: 9s\n",
            ":5:17: artifacts.weights.sync_every: '9s' is too often: each sync lists the set on the host; at least 10s",
        ),
        (
            "  weights:\n    sync_every: yes\n",
            ":5:17: artifacts.weights.sync_every: 'True' is not a duration like 30s, 10m or 1h",
        ),
        (
            "  weights:\n    every: 10m\n",
            ":5:5: artifacts.weights.every: unknown field 'every', did you mean 'sync_every'?",
        ),
        (
            "  weights:\n    paths: [ok.pt, ../up.pt]\n",
            ":5:20: artifacts.weights.paths[1]: '../up.pt' must stay inside the workdir (relative, no '..')",
        ),
        (
            "  weights: [ok.pt, ../up.pt]\n",
            ":4:20: artifacts.weights[1]: '../up.pt' must stay inside the workdir (relative, no '..')",
        ),
        (
            "  weights: a.pt\n  ckpt:\n    sync_every: 10m\n",
            ":6:5: artifacts.ckpt: needs paths: only weights/results/logs have default globs",
        ),
        (
            "  weights:\n    dest: out\n",
            ":5:5: artifacts.weights: dest is only used with sync_every (`runner fetch --dest` sets it for one fetch)",
        ),
        (
            "  set:\n    paths: a\n    sync_evry: 1m\n",
            ":6:5: artifacts.set.sync_evry: unknown field 'sync_evry', did you mean 'sync_every'?",
        ),
    ],
)
def test_a_wrong_sync_setting_is_one_line_at_its_place(tmp_path: Path, artifacts: str, expected: str) -> None:
    assert error_of(tmp_path, artifacts) == expected


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), ("1h", 3600), ("90", 90), (" 1.5M ", 90), (45, 45)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "ten", "10x", "inf", "nan", "-1m", "0", True])
def test_not_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(600, "10m"), (3600, "1h"), (45, "45s"), (90, "90s"), (7200, "2h"), (0.5, "0.5s")]
)
def test_formatted_durations_read_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_cli_and_job_file_share_the_duration_parser(runner: Runner) -> None:
    result = runner.run("fetch", "weights", "--every", "soon")
    assert result.returncode == 2
    assert "'soon' is not a duration like 30s, 10m or 1h" in result.stderr


def test_sync_destination_is_relative_to_the_job_file_or_fetchs_default(tmp_path: Path) -> None:
    job_file = tmp_path / "jobs" / "x.yaml"
    assert (
        sync_dest(ArtifactSync(every_s=60, dest="out"), job_file, "abc", cwd=tmp_path / "cwd")
        == tmp_path / "jobs" / "out"
    )
    assert sync_dest(ArtifactSync(every_s=60, dest="/abs/d"), job_file, "abc") == Path("/abs/d")
    assert (
        sync_dest(ArtifactSync(every_s=60, dest=None), job_file, "abc", cwd=tmp_path) == tmp_path / "artifacts" / "abc"
    )


def test_submit_that_fails_starts_no_sync(runner: Runner, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\nworkdir: nowhere\nrun: a\nartifacts:\n  weights: {sync_every: 10s}\n")
    result = runner.run("submit", str(path))
    assert result.returncode == 2
    assert not (runner.home / "syncs").exists()


@dataclass
class Script:
    """What fetch and the job's refresh answer, in turn (an exception is raised), and what the loop said."""

    job: Job
    fetches: list
    refreshes: list
    notes: list[str] = field(default_factory=list)
    fetched: list[FetchResult] = field(default_factory=list)


def _next(answers: list):
    answer = answers.pop(0)
    if isinstance(answer, Exception):
        raise answer
    return answer


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    store = Store(tmp_path / "home" / "state.db")
    yield store
    store.close()


def scripted(monkeypatch: pytest.MonkeyPatch, store: Store, fetches: list, refreshes: list) -> Script:
    """A running job whose fetches and refreshes answer as listed (None: a fetch that found nothing new;
    a state: what the refresh finds the job in)."""
    created = store.create_job("x", "box", {"artifacts": {"weights": ["*.pt"]}}, "/x.yaml")
    store.transition(created.id, JobState.RUNNING, frozenset(JobState))
    script = Script(store.get(created.id), fetches, refreshes)

    def fetch(job: Job, artifact: str, dest: Path) -> FetchResult:
        _next(script.fetches)
        return FetchResult(job.id, artifact, dest, [], [], [], 0.0)

    def refresh_one(_store: Store, job: Job) -> Job:
        if job.finished:  # as the real one: a finished job is not looked at again
            return job
        if _next(script.refreshes) is JobState.SUCCEEDED:
            store.transition(job.id, JobState.SUCCEEDED, frozenset({JobState.RUNNING}))
        return store.get(job.id)

    # The two calls the loop makes to the outside; everything else in it runs as it does for users.
    monkeypatch.setattr(artifactsync, "fetch", fetch)
    monkeypatch.setattr(artifactsync, "refresh_one", refresh_one)
    return script


def run_loop(store: Store, script: Script, tmp_path: Path) -> FetchResult:
    return fetch_every(store, script.job, "weights", tmp_path / "d", 0.001, script.fetched.append, script.notes.append)


def test_the_every_loop_rides_out_an_unreachable_host(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    down = HostUnreachable("host 'box' did not answer")
    # Far more drops in a row than any other failure may have: a link drop never ends the sync.
    fetches = [None, down, None, None]
    refreshes = [JobState.RUNNING, *[down] * (artifactsync.MAX_FAILURES * 2), JobState.RUNNING, JobState.SUCCEEDED]
    script = scripted(monkeypatch, store, fetches, refreshes)
    result = run_loop(store, script, tmp_path)
    assert result.job_id == script.job.id
    assert script.fetches == [] and script.refreshes == []  # it went on to the final fetch after the job ended
    assert len(script.fetched) == 2  # the two fetches while the job ran (the final one is returned)
    assert (
        sum("did not answer; trying again in 0.001s" in note for note in script.notes)
        == 1 + artifactsync.MAX_FAILURES * 2
    )


def test_other_failures_in_a_row_end_the_loop(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = CommandFailed(["python3"], 1, "agent: no such file")
    script = scripted(monkeypatch, store, [broken] * artifactsync.MAX_FAILURES, [JobState.RUNNING] * 10)
    with pytest.raises(CommandFailed):
        run_loop(store, script, tmp_path)
    assert len(script.notes) == artifactsync.MAX_FAILURES - 1


def test_a_set_the_job_lacks_fails_at_once(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = scripted(monkeypatch, store, [NotFound("job has no artifact set 'x'")], [])
    with pytest.raises(NotFound):
        run_loop(store, script, tmp_path)
    assert script.notes == []


def test_after_the_job_ended_an_unreachable_host_is_tried_a_few_times(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    down = HostUnreachable("host 'box' did not answer")
    script = scripted(monkeypatch, store, [None, *[down] * artifactsync.MAX_FAILURES], [JobState.SUCCEEDED])
    with pytest.raises(HostUnreachable):
        run_loop(store, script, tmp_path)
    assert script.fetches == []
