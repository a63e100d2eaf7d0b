"""A rented job's keeper: one per job under a lock that dies with its holder, which jobs need one, and
its patience with a vast.ai API that does not answer (the emulator paused: connection refused)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.base.heldlock import HeldLock, holder_pid, is_held
from runner.jobs.spec import JobSpec
from runner.jobs.state import ACTIVE, Job, JobState, Resolved, Store, job_document
from runner.pipeline import keepers
from runner.pipeline.apioutage import ApiOutage
from runner.provision.vast.api import VastClient, VastUnavailable
from runner.testing.vast_emulator import Emulator, default_offers
from tests.conftest import wait_for

HOLD = "import sys, time; from pathlib import Path; from runner.base.heldlock import HeldLock\n" \
       "lock = HeldLock(Path(sys.argv[1])); print(lock.acquire(), flush=True); time.sleep(600)"  # fmt: skip


def test_the_lock_is_one_holders_and_is_freed_when_its_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "keep-cafe.lock"
    assert not is_held(path) and holder_pid(path) is None
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        assert is_held(path) and holder_pid(path) == holder.pid
        assert not HeldLock(path).acquire()  # a second keeper of the same job gives up at once
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    finally:
        holder.kill()
    assert not is_held(path)  # the kernel dropped it with its holder: no stale file blocks the next
    with HeldLock(path) as mine:
        assert mine.acquire() and holder_pid(path) is not None
    assert not is_held(path)


def rented_job(store: Store, teardown: str = "on_exit", state: JobState = JobState.RUNNING) -> Job:
    spec = JobSpec.model_validate({"name": "demo", "host": "vast", "image": "x:1", "run": ["true"],
                                   "teardown": teardown})  # fmt: skip
    job = store.create_job("demo", "vast", job_document(spec, Resolved("/w", "/s")), "demo.yaml")
    store.record_instance(31_500_001, job.id, 101, "RTX 5090", 0.42)
    store.set_host(job.id, "vast-31500001")
    store.transition(job.id, JobState.RUNNING, frozenset({JobState.SUBMITTED}))
    if state is not JobState.RUNNING:
        store.transition(job.id, state, ACTIVE, exit_code=0 if state is JobState.SUCCEEDED else 1)
    return store.get(job.id)


@pytest.mark.parametrize(
    "teardown, state, needed",
    [("on_exit", JobState.RUNNING, True), ("never", JobState.RUNNING, True),
     ("on_exit", JobState.FAILED, True), ("on_success", JobState.FAILED, False),
     ("on_success", JobState.SUCCEEDED, True), ("never", JobState.SUCCEEDED, False)],
)  # fmt: skip
def test_a_keeper_is_needed_while_the_job_runs_or_its_teardown_is_still_due(
    tmp_path: Path, teardown: str, state: JobState, needed: bool
) -> None:
    store = Store(tmp_path / "state.db")
    job = rented_job(store, teardown, state)
    assert keepers.needs_keeper(store, job) is needed
    store.instance_gone(31_500_001)
    assert keepers.needs_keeper(store, job) is (state is JobState.RUNNING)  # nothing left to destroy


def test_a_spent_budget_makes_the_teardown_due_whatever_the_job_file_says(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    job = rented_job(store, "never", JobState.STOPPED)
    assert not keepers.needs_keeper(store, job)
    store.add_event(job.id, "max_cost", "$0.01 of $0.01")
    assert keepers.needs_keeper(store, job)


def test_a_job_that_never_ran_gets_no_keeper_its_submit_kept_the_instance(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    spec = JobSpec.model_validate({"name": "demo", "host": "vast", "image": "x:1", "run": ["true"]})
    job = store.create_job("demo", "vast", job_document(spec, Resolved("/w", "/s")), "demo.yaml", keep=True)
    store.record_instance(31_500_002, job.id, 101, "RTX 5090", 0.42)
    store.transition(job.id, JobState.FAILED, ACTIVE, message="did not start")
    assert not keepers.needs_keeper(store, store.get(job.id))
    assert not keepers.needs_keeper(store, store.create_job("local", "local", {}, "x.yaml"))  # not rented


class Log(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)


def test_an_outage_is_announced_once_waited_out_with_growing_waits_and_its_end_recorded(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    job = rented_job(store)
    log = Log()
    outage = ApiOutage(store, job.id, log, first_wait_s=0.05, longest_wait_s=0.2)
    tries: list[float] = []

    def down() -> str:
        tries.append(time.monotonic())
        raise VastUnavailable("vast.ai: cannot connect")

    began = time.time()
    assert outage.try_now(down, "asking") is None
    assert outage.try_now(down, "asking") is None and len(tries) == 1  # not due yet: not even tried
    assert keepers.api_waits(store, [job]) == {job.id: pytest.approx(began, abs=1)}
    wait_for(lambda: outage.try_now(down, "asking") is None and len(tries) == 2, 10, interval=0.01, what="a retry")
    kinds = [event.kind for event in store.events(job.id)]
    assert kinds.count(keepers.API_UNREACHABLE) == 1
    announced = store.last_event(job.id, (keepers.API_UNREACHABLE,))
    assert announced is not None and announced.detail == f"since {time.strftime('%H:%M', time.localtime(began))}"
    assert "vast.ai unreachable since" in log[0]

    # A keeper started again meanwhile goes on with the outage already announced.
    successor = ApiOutage(store, job.id, log, first_wait_s=0.05)
    answers = iter([VastUnavailable("no"), VastUnavailable("still no"), "answer"])

    def flaky() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert successor.until_done(flaky, "destroying", abandoned=lambda: False) == "answer"
    kinds = [event.kind for event in store.events(job.id)]
    assert kinds.count(keepers.API_UNREACHABLE) == 1 and kinds[-1] == keepers.API_REACHABLE
    assert store.unreachable_since(keepers.API_HOST) is None and keepers.api_waits(store, [job]) == {}
    assert log[-1].startswith("vast.ai answers again after")


def test_a_step_that_asks_vast_ai_nothing_does_not_end_the_outage(tmp_path: Path) -> None:
    """The keeper's final steps may need no call (the instance answers SSH: nothing to start again):
    only an answer from vast.ai ends an outage, else status would flicker to "reachable" mid-outage."""
    store = Store(tmp_path / "state.db")
    job = rented_job(store)
    answered = [0]  # the client's count of answers
    outage = ApiOutage(store, job.id, Log(), first_wait_s=0.01, answers=lambda: answered[0])

    def down() -> None:
        raise VastUnavailable("vast.ai: cannot connect")

    assert outage.try_now(down, "asking") is None
    assert outage.until_done(lambda: "no call made", "starting again", abandoned=lambda: False) == "no call made"
    assert keepers.api_waits(store, [job]) != {} and store.unreachable_since(keepers.API_HOST) is not None

    def answers() -> str:
        answered[0] += 1
        return "answer"

    assert outage.until_done(answers, "destroying", abandoned=lambda: False) == "answer"
    assert keepers.api_waits(store, [job]) == {} and store.unreachable_since(keepers.API_HOST) is None
    kinds = [event.kind for event in store.events(job.id)]
    assert kinds.count(keepers.API_UNREACHABLE) == 1 and kinds.count(keepers.API_REACHABLE) == 1


def test_until_done_gives_up_only_when_abandoned(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    job = rented_job(store)
    outage = ApiOutage(store, job.id, Log(), first_wait_s=0.01)
    looks = iter([False, False, True])

    def never() -> str:
        raise VastUnavailable("down")

    assert outage.until_done(never, "destroying", abandoned=lambda: next(looks)) is None


def test_a_paused_emulator_refuses_connections_and_resumes_with_its_instances() -> None:
    emulator = Emulator(offers=None, api_key="k", containers=False)
    url = emulator.start()
    try:
        with VastClient(api_key="k", base_url=url, retry_seconds=0.5) as client:
            body = {"client_id": "me", "image": "x:1", "disk": 10, "label": "runner:cafe", "env": {}}
            instance = client.create_instance(default_offers()[0]["id"], body)
            emulator.pause()
            with pytest.raises(VastUnavailable, match="cannot connect"):
                client.instances()
            assert emulator.resume() == url
            assert [record["id"] for record in client.instances()] == [instance]
    finally:
        emulator.stop()


def test_a_429_storm_is_waited_out_through_the_real_client_and_announced_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    job = rented_job(store)
    emulator = Emulator(offers=None, api_key="k", containers=False)
    url = emulator.start()
    try:
        emulator.faults.rate_limit(12)
        outage = ApiOutage(store, job.id, Log(), first_wait_s=0.01, longest_wait_s=0.05)
        with VastClient(api_key="k", base_url=url, retry_seconds=0.2) as client:
            assert outage.until_done(client.instances, "listing", abandoned=lambda: False) == []
    finally:
        emulator.stop()
    assert sum(1 for request in emulator.requests if request.status == 429) == 12
    kinds = [event.kind for event in store.events(job.id)]
    assert kinds.count(keepers.API_UNREACHABLE) == 1 and kinds[-1] == keepers.API_REACHABLE
