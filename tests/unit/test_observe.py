"""next_state: what one probe of a running job proves."""

from __future__ import annotations

import dataclasses

import pytest

from runner.observe import Observation, next_state
from runner.state import Job, JobState

RUNNING = Job(
    id="0123abcd", name="t", host="local", state=JobState.RUNNING, spec={}, job_file="t.yaml",
    job_dir="/tmp/jobs/0123abcd", session="rj-0123abcd", created_at=1.0, started_at=2.0, ended_at=None,
    exit_code=None, stop_requested_at=None, last_line=None, message=None,
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
