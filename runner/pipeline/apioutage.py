"""The keeper's patience with the vast.ai API: an outage, a 429 storm or timeouts are waited out with
capped exponential backoff for as long as the instance may be billing, never fatal.

The client gives up on one call after its own retries (VastUnavailable); this is what comes above it:
the outage is said once in the keeper's log ("vast.ai unreachable since HH:MM"), recorded for
`runner status` (the pseudo-host API_HOST, the job's event `api-unreachable`), and its end too
(`api-reachable`). A keeper started again during an outage goes on with the one its predecessor
announced, not a new one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from runner.base.durations import format_duration
from runner.jobs.state import Store
from runner.pipeline.keepers import API_HOST, API_REACHABLE, API_UNREACHABLE
from runner.provision.vast.api import VastUnavailable

T = TypeVar("T")
Log = Callable[[str], None]
FIRST_WAIT_S = 5.0
LONGEST_WAIT_S = 60.0  # the cap: once vast.ai answers again, the keeper knows within a minute


def clock_time(timestamp: float) -> str:
    return time.strftime("%H:%M", time.localtime(timestamp))


class ApiOutage:
    def __init__(
        self, store: Store, job_id: str, log: Log, first_wait_s: float = FIRST_WAIT_S,
        longest_wait_s: float = LONGEST_WAIT_S, answers: Callable[[], int] | None = None,
    ) -> None:  # fmt: skip
        """answers: the client's count of answers from vast.ai. A step that made no call (nothing to ask)
        then ends no outage: only an answer does."""
        self._store, self._job_id, self._log = store, job_id, log
        self._answers = answers
        self._first_wait_s, self._longest_wait_s = first_wait_s, longest_wait_s
        last = store.last_event(job_id, (API_UNREACHABLE, API_REACHABLE))
        self._announced = last is not None and last.kind == API_UNREACHABLE
        self._since: float | None = None
        self._wait_s = first_wait_s
        self._next_try = 0.0  # time.monotonic() from which the API may be tried again

    @property
    def waiting(self) -> bool:
        return self._since is not None

    def try_now(self, step: Callable[[], T], what: str) -> T | None:
        """One try of step, unless the backoff says not yet; None when it did not run or vast.ai did not
        answer (the caller goes on with what else it has to do, and tries again later)."""
        if time.monotonic() < self._next_try:
            return None
        began, answers = time.time(), self._answer_count()
        try:
            result = step()
        except VastUnavailable as error:
            self._failed(began, error, what)
            return None
        self._answered(answers)
        return result

    def until_done(self, step: Callable[[], T], what: str, abandoned: Callable[[], bool]) -> T | None:
        """step, tried again after each wait until vast.ai answers it; None once abandoned() says there
        is no one left to keep for (the store is gone)."""
        while True:
            began, answers = time.time(), self._answer_count()
            try:
                result = step()
            except VastUnavailable as error:
                wait_s = self._failed(began, error, what)
                if abandoned():
                    return None
                time.sleep(wait_s)
                continue
            self._answered(answers)
            return result

    def _failed(self, began: float, error: VastUnavailable, what: str) -> float:
        if self._since is None:
            self._since = self._store.mark_unreachable(API_HOST, since=began)
            if not self._announced:
                self._store.add_event(self._job_id, API_UNREACHABLE, f"since {clock_time(self._since)}")
                self._announced = True
            self._log(f"vast.ai unreachable since {clock_time(self._since)}: the keeper waits it out, as long as"
                      f" it takes (the instance may be billing)")  # fmt: skip
        wait_s = self._wait_s * random.uniform(0.5, 1.0)  # jittered: keepers of many jobs do not knock at once
        self._wait_s = min(self._longest_wait_s, self._wait_s * 2)
        self._next_try = time.monotonic() + wait_s
        self._log(f"vast.ai unreachable since {clock_time(self._since)} ({what}): {error}; next try in {wait_s:.0f}s")
        return wait_s

    def _answer_count(self) -> int:
        return self._answers() if self._answers else 0

    def _answered(self, answers_before: int) -> None:
        if self._answers and self._answers() == answers_before:
            return  # the step asked vast.ai nothing: no news of the outage either way
        if self._since is None and not self._announced:
            return
        since = self._since or self._store.unreachable_since(API_HOST)
        self._store.mark_reachable(API_HOST)
        lasted = f" after {format_duration(time.time() - since)}" if since else ""
        self._store.add_event(self._job_id, API_REACHABLE, lasted.strip())
        self._log(f"vast.ai answers again{lasted}")
        self._since, self._announced = None, False
        self._wait_s, self._next_try = self._first_wait_s, 0.0
