"""next_state: what one probe of a running job proves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from runner.jobs.state import Job, JobState
from runner.observe.observe import Observation, next_state

RUNNING = Job(
    id="0123abcd",
    name="t",
    host="local",
    state=JobState.RUNNING,
    document={},
    job_file="t.yaml",
    job_dir="/tmp/jobs/0123abcd",
    session="rj-0123abcd",
    created_at=1.0,
    started_at=2.0,
    ended_at=None,
    exit_code=None,
    stop_requested_at=None,
    last_line=None,
    message=None,
)
STOPPING = dataclasses.replace(RUNNING, stop_requested_at=3.0)


@pytest.mark.parametrize(
    ("job", "alive", "exit_code", "expected"),
    [
        (RUNNING, False, 0, JobState.SUCCEEDED),
        (RUNNING, True, 0, JobState.SUCCEEDED),  # exit_code is written before the session ends
        (RUNNING, False, 1, JobState.FAILED),
        (RUNNING, False, 137, JobState.FAILED),
        (RUNNING, False, -1, JobState.FAILED),
        (STOPPING, False, 0, JobState.STOPPED),
        (STOPPING, False, 130, JobState.STOPPED),
        (RUNNING, True, None, None),
        (RUNNING, False, None, JobState.LOST),
        (STOPPING, False, None, JobState.STOPPED),
        (STOPPING, True, None, None),  # stop asked, not yet done: still where the store says
    ],
)
def test_next_state(job: Job, alive: bool, exit_code: int | None, expected: JobState | None) -> None:
    seen = Observation(session_alive=alive, exit_code=exit_code, last_line="  1/3 10%")
    assert next_state(job, seen) is expected


@pytest.mark.parametrize(
    ("alive", "processes", "expected"),
    [
        (None, None, None),  # tmux could not be asked: nothing is concluded
        (False, True, None),  # the session is gone but the training runs on
        (False, False, JobState.LOST),
        (False, None, JobState.LOST),
    ],
)
def test_no_job_is_called_lost_on_a_missing_witness(
    alive: bool | None, processes: bool | None, expected: JobState | None
) -> None:
    seen = Observation(session_alive=alive, exit_code=None, last_line=None, processes_alive=processes)
    assert next_state(RUNNING, seen) is expected


@pytest.mark.parametrize(
    ("job", "exit_code", "stop_delivered", "expected"),
    [
        (STOPPING, 0, False, JobState.SUCCEEDED),  # the training had ended by itself when the stop came
        (STOPPING, 1, False, JobState.FAILED),
        (STOPPING, 0, True, JobState.STOPPED),  # the stop came first: ended by it, whatever the code
        (STOPPING, 130, True, JobState.STOPPED),
        (RUNNING, 130, True, JobState.STOPPED),  # delivered by the host itself (max_duration)
        (RUNNING, None, True, JobState.STOPPED),  # killed after the grace
        (STOPPING, None, False, JobState.STOPPED),  # no end recorded: the stop asked for stands
        (RUNNING, 0, False, JobState.SUCCEEDED),
        (STOPPING, 0, None, JobState.STOPPED),  # an older agent that keeps no record: the older rule
    ],
)
def test_the_hosts_record_of_a_stop_decides_a_race_with_the_end(
    job: Job, exit_code: int | None, stop_delivered: bool | None, expected: JobState
) -> None:
    seen = Observation(session_alive=False, exit_code=exit_code, last_line=None, stop_delivered=stop_delivered)
    assert next_state(job, seen) is expected


def test_a_max_duration_stop_ends_the_job_with_its_message_and_one_event(tmp_path: Path) -> None:
    from runner.jobs.state import Store
    from runner.observe.observe import _apply

    store = Store(tmp_path / "state.db")
    job = store.create_job("t", "local", {}, "t.yaml")
    store.transition(job.id, JobState.RUNNING, frozenset(JobState) - {JobState.RUNNING})
    stop = {"by": "max_duration", "message": "max_duration 2h\nreached" + "!" * 500}  # a host's text: untrusted
    seen = Observation(session_alive=False, exit_code=130, last_line=None, stop_delivered=True, stop=stop)
    for _ in range(2):  # a second look changes nothing
        _apply(store, store.get(job.id), seen)
    ended = store.get(job.id)
    assert (ended.state, ended.exit_code) == (JobState.STOPPED, 130)
    assert ended.message is not None and ended.message.startswith("max_duration 2h reached!")
    assert len(ended.message) == 200
    assert [event.kind for event in store.events(job.id)].count("max_duration") == 1


def test_status_table_shows_bracketed_training_output_as_it_is() -> None:
    from rich.console import Console

    from runner.cli.render import jobs_table

    line = "loading [/data/coco/images] [rank0]: [bold]x[/bold]"
    job = dataclasses.replace(RUNNING, last_line=line)
    console = Console(width=300, record=True)
    console.print(jobs_table([job], {}))
    assert line in console.export_text()
