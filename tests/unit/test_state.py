"""The local store: parallel writers lose nothing, transitions never move a finished job."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from runner.base.errors import NotFound, UsageError
from runner.jobs.state import ACTIVE, FINISHED, JobState, Store

WRITERS, JOBS_EACH, EVENTS_EACH = 6, 10, 20


def _writer(db_path: str, writer: int) -> None:
    store = Store(Path(db_path))
    for index in range(JOBS_EACH):
        job = store.create_job(f"w{writer}", "local", {"n": index}, "job.yaml")
        for step in range(EVENTS_EACH):
            store.add_event(job.id, "tick", str(step))
        store.transition(job.id, JobState.RUNNING, frozenset({JobState.SUBMITTED}))
    store.close()


def test_parallel_processes_lose_no_update(tmp_path: Path) -> None:
    db_path = tmp_path / "state.db"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(str(db_path), n)) for n in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    store = Store(db_path)
    jobs = store.list_jobs()
    assert len(jobs) == WRITERS * JOBS_EACH
    assert len({job.id for job in jobs}) == WRITERS * JOBS_EACH
    assert {job.state for job in jobs} == {JobState.RUNNING}
    for job in jobs:
        kinds = [event.kind for event in store.events(job.id)]
        assert kinds.count("tick") == EVENTS_EACH
        assert kinds[0] == "submitted" and kinds[-1] == "running"
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_finished_job_is_never_moved_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    job = store.create_job("a", "local", {}, "a.yaml")
    assert store.transition(job.id, JobState.RUNNING, frozenset({JobState.SUBMITTED}))
    assert store.transition(job.id, JobState.SUCCEEDED, ACTIVE, exit_code=0)
    assert not store.transition(job.id, JobState.LOST, ACTIVE)
    assert not store.transition(job.id, JobState.RUNNING, frozenset({JobState.SUBMITTED}))
    finished = store.get(job.id)
    assert finished.state is JobState.SUCCEEDED and finished.exit_code == 0
    assert finished.started_at is not None and finished.ended_at is not None
    assert JobState.SUCCEEDED in FINISHED


def test_jobs_are_found_by_id_prefix_and_newest_of_a_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    first = store.create_job("train", "local", {}, "t.yaml")
    second = store.create_job("train", "local", {}, "t.yaml")
    assert store.find(first.id).id == first.id
    assert store.find(first.id[:6]).id == first.id or first.id[:6] == second.id[:6]
    assert store.find("train").id == second.id
    assert store.find(None).id == second.id
    with pytest.raises(NotFound):
        store.find("nothing-like-this")


def test_an_ambiguous_prefix_is_an_error_naming_the_candidates(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    ids = {store.create_job("j", "local", {}, "j.yaml").id for _ in range(40)}
    shared = next(prefix for prefix in (i[:1] for i in ids) if sum(i.startswith(prefix) for i in ids) > 1)
    with pytest.raises(UsageError, match=f"job '{shared}' is ambiguous"):
        store.find(shared)


def test_like_wildcards_in_a_reference_are_literal(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.create_job("j", "local", {}, "j.yaml")
    with pytest.raises(NotFound):
        store.find("%")
