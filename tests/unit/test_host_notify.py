"""Notifications sent by the job's host (runner/hostside/notify.py) and the controller's deference to
them (runner/observe/notify.py): the host's json:// request is apprise's, byte for byte, to a real
HTTP receiver on loopback; each (event, URL) is claimed once among concurrent senders; a refused send
is tried a bounded number of times; the controller marks what the host sent and sends what it did not."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from runner.hosts.local import LocalHost
from runner.hostside import jsonpost
from runner.hostside import notify as hostnotify
from runner.jobs.layout import JobLayout
from runner.jobs.notifyevents import ALERT_EVENTS
from runner.jobs.spec import JobSpec
from runner.jobs.state import Job, JobState, Resolved, Store, job_document
from runner.observe import notify
from tests.notifyreceiver import Receiver, receiving

TOKEN = "s3cret-hook-4b5c6d7e"


def test_the_hosts_alert_kinds_are_the_controllers() -> None:
    assert hostnotify.ALERT_KINDS == ALERT_EVENTS
    assert {name: notify.HEADLINES[name] for name in hostnotify.HEADLINES} == hostnotify.HEADLINES


# the request, as apprise makes it


@pytest.mark.parametrize(
    "path",
    [f"{TOKEN}/x", f"hook?method=put&+X-Token={TOKEN}&-q=1&:extra=v&:type=kind", "p?:attachments=&method=PATCH"],
)
def test_the_hosts_request_is_apprises_byte_for_byte(path: str) -> None:
    with receiving() as receiver:
        url = receiver.url(path).replace("json://", f"json://user:{TOKEN}@")
        assert jsonpost.sendable(url)
        title, body = "runner: demo (abc) succeeded", 'line\nevent: succeeded\nhost: box\nüñí "quoted"'
        assert notify.send_with_apprise(url, title, body) is None  # the controller's sender
        assert jsonpost.send(url, title, body) is None
        by_apprise, by_host = receiver.requests
    assert by_host == by_apprise  # method, path and query, every header in its order, the body's bytes


@pytest.mark.parametrize(
    "url",
    [
        "ntfy://topic",
        "json://h/p?format=markdown",  # an apprise option this module does not apply
        "json://user@h/p",  # a user without a password: apprise's quirk there stays apprise's
        "json://h/a%20b",  # an escaped path
        "json://h:99999/p",
        "jsons://h/p?method=delete",
    ],
)
def test_what_the_host_cannot_send_as_apprise_does_stays_the_controllers(url: str) -> None:
    assert not jsonpost.sendable(url)


def test_a_failed_send_says_why_without_the_url() -> None:
    error = jsonpost.send(f"json://127.0.0.1:9/{TOKEN}", "t", "b", timeout=5)  # port 9: nothing listens
    assert error is not None and "ConnectionRefusedError" in error and TOKEN not in error


# the host's sender


def job_dir_with(folder: Path, receiver: Receiver, events: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"job_id": "abc123", "job_name": "demo", "host": "box", "events": events or list(hostnotify.HOST_EVENTS),
              "targets": [{"target": 0, "url": receiver.url(TOKEN)}]}  # fmt: skip
    (folder / hostnotify.NOTIFY_FILE).write_text(json.dumps(config))
    return folder


def snapshot(started_at: float, exit_code: int | None = None, alerts: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"started_at": started_at, "exit_code": exit_code, "progress": {"last_line": "epoch 3/3"},
            "alerts": [{"kind": kind, "message": f"{kind} seen"} for kind in alerts]}  # fmt: skip


def ended(job_dir: Path, code: int) -> None:
    (job_dir / "exit_code").write_text(f"{code}\n")


def test_the_monitor_sends_each_event_once_however_many_turns_see_it(tmp_path: Path) -> None:
    with receiving() as receiver:
        job_dir = job_dir_with(tmp_path / "job", receiver)
        notifier = hostnotify.Notifier(str(job_dir))
        notifier.turn(snapshot(time.time()))
        notifier.turn(snapshot(time.time(), alerts=("oom",)))
        ended(job_dir, 1)
        for _ in range(3):
            notifier.turn(snapshot(time.time(), 1, ("oom", "exited")))
        hostnotify.Notifier(str(job_dir)).turn(snapshot(time.time(), 1, ("oom", "exited")))  # the final snapshot's
        assert receiver.events() == ["started", "oom", "exited", "failed"]
        failed = receiver.received[-1]
    assert failed["title"] == "runner: demo (abc123) failed"
    assert failed["message"] == "event: failed\nhost: box\nexit code: 1\nlast line: epoch 3/3"
    records = hostnotify.records(str(job_dir))
    assert set(records) == {"started.0", "oom.0", "exited.0", "failed.0"}
    assert all(record["state"] == "sent" and record["attempts"] == 1 for record in records.values())


def _claimer(path: str, queue: multiprocessing.Queue[bool]) -> None:
    queue.put(hostnotify.claim(path, "started", 0, time.time()))


def test_one_of_many_processes_claiming_at_once_wins(tmp_path: Path) -> None:
    path = str(tmp_path / "started.0")
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[bool] = context.Queue()
    processes = [context.Process(target=_claimer, args=(path, queue)) for _ in range(6)]
    for process in processes:
        process.start()
    answers = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(120)
    assert sorted(answers) == [False] * 5 + [True]
    assert hostnotify.read_record(path)["state"] == "sending"


def _monitor_turn(job_dir: str, started_at: float) -> None:
    hostnotify.Notifier(job_dir).turn(snapshot(started_at, 0, ("traceback",)))


def test_two_senders_at_once_the_monitor_and_the_final_snapshot_send_each_event_once(tmp_path: Path) -> None:
    with receiving() as receiver:
        job_dir = job_dir_with(tmp_path / "job", receiver)
        ended(job_dir, 0)
        context = multiprocessing.get_context("spawn")
        started_at = time.time()
        senders = [context.Process(target=_monitor_turn, args=(str(job_dir), started_at)) for _ in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(120)
            assert sender.exitcode == 0
        assert sorted(receiver.events()) == ["started", "succeeded", "traceback"]


def test_a_refused_send_is_tried_a_bounded_number_of_times_then_recorded_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostnotify, "RETRY_S", 0.05)
    with receiving(status=500) as receiver:
        job_dir = job_dir_with(tmp_path / "job", receiver, events=["succeeded"])
        ended(job_dir, 0)
        notifier = hostnotify.Notifier(str(job_dir))
        notifier.turn(snapshot(time.time(), 0), patience_s=30)  # the final snapshot waits for its retries
        assert receiver.events() == ["succeeded"] * hostnotify.MAX_TRIES
        notifier.turn(snapshot(time.time(), 0), patience_s=30)
        assert len(receiver.events()) == hostnotify.MAX_TRIES  # failed is final: never again from the host
    [(name, record)] = hostnotify.records(str(job_dir)).items()
    assert name == "succeeded.0" and record["state"] == "failed" and record["attempts"] == hostnotify.MAX_TRIES
    assert record["error"] == "the receiver answered HTTP 500" and not record["abandoned"]


def test_a_retry_is_taken_up_only_in_time_and_then_left_to_the_controller(tmp_path: Path) -> None:
    with receiving(status=500) as receiver:
        job_dir = job_dir_with(tmp_path / "job", receiver, events=["started"])
        now = time.time()
        hostnotify.Notifier(str(job_dir), clock=lambda: now).turn(snapshot(now))
        [record] = hostnotify.records(str(job_dir), now).values()
        assert (record["state"], record["attempts"], record["abandoned"]) == ("waiting", 1, False)
        late = now + hostnotify.RETRY_S + hostnotify.RESUME_S + 1  # a monitor that slept through its turn
        hostnotify.Notifier(str(job_dir), clock=lambda: late).turn(snapshot(now))
        assert receiver.events() == ["started"]  # not taken up: it may be the controller's by now
    assert hostnotify.records(str(job_dir), late + hostnotify.TAKEOVER_S)["started.0"]["abandoned"]


def test_old_news_is_left_to_the_controller(tmp_path: Path) -> None:
    with receiving() as receiver:
        job_dir = job_dir_with(tmp_path / "job", receiver)
        # A monitor started long after the job (restarted): its start and end are not its to send.
        ended(job_dir, 0)
        old = time.time() - hostnotify.FRESH_S - 5
        os.utime(job_dir / "exit_code", (old, old))
        hostnotify.Notifier(str(job_dir)).turn(snapshot(old, 0))
        assert receiver.events() == []
    assert hostnotify.records(str(job_dir)) == {}


def test_an_empty_record_a_full_disk_left_is_a_claim() -> None:
    assert hostnotify.read_record("/nonexistent/record")["state"] == "sending"


# the controller's deference


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def local_job(store: Store, receiver: Receiver) -> tuple[Job, Path]:
    """A running job on the local host (its real agent answers), with notify: a URL its host sends
    (0) and one it cannot (1: an apprise option), and the host told to send to 0 (as submit does)."""
    urls = [receiver.url(f"{TOKEN}/host"), receiver.url("here") + "?format=text"]
    spec = JobSpec.model_validate({"name": "demo", "run": "true", "notify": {"urls": urls}})
    job = store.create_job("demo", "local", job_document(spec, Resolved("/w", "/s")), "job.yaml")
    job_dir = Path(JobLayout.on(LocalHost(), job.id).job_dir)
    job_dir.mkdir(parents=True)
    store.set_placement(job.id, str(job_dir), "runner-demo")
    handed = notify.host_notify_file(store.get(job.id), "local")
    assert handed is not None and handed[0] == [0]
    store.add_event(job.id, notify.HOST_NOTIFY, "0")
    (job_dir / hostnotify.NOTIFY_FILE).write_bytes(handed[1])
    store.transition(job.id, JobState.RUNNING, frozenset({JobState.SUBMITTED}))
    return store.get(job.id), job_dir


def probed(store: Store, job: Job, job_dir: Path) -> Job:
    """The job as a probe leaves it: the host's records in its snapshot."""
    store.set_snapshot(job.id, {"updated_at": time.time(), "notified": hostnotify.records(str(job_dir))})
    return store.get(job.id)


def test_what_the_host_sent_is_marked_sent_and_the_rest_sent_here(home: Path) -> None:
    store = Store(home / "state.db")
    with receiving() as receiver:
        job, job_dir = local_job(store, receiver)
        hostnotify.Notifier(str(job_dir)).turn(snapshot(time.time()))  # the host's monitor sends started
        delivered = notify.deliver(store, [probed(store, job, job_dir)])
        assert sorted((done.target, done.by_host, done.error) for done in delivered) == [
            (0, True, None),
            (1, False, None),
        ]
        assert notify.deliver(store, [store.get(job.id)]) == []
        assert sorted(body["path"] for body in receiver.received) == ["/here", f"/{TOKEN}/host"]  # once each


def test_the_host_gets_its_grace_then_the_controller_asks_it_and_sends(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(home / "state.db")
    with receiving() as receiver:
        job, _ = local_job(store, receiver)
        notify.deliver(store, [job])
        assert receiver.events("here") == ["started"] and receiver.events(f"{TOKEN}/host") == []  # the host's grace
        monkeypatch.setattr(notify, "HOST_GRACE_S", 0.0)
        # The grace is over and the last probe showed no record: the host is asked (its real agent), has none.
        [done] = notify.deliver(store, [store.get(job.id)])
        assert (done.event, done.target, done.by_host, done.error) == ("started", 0, False, None)
        assert receiver.events(f"{TOKEN}/host") == ["started"]


def test_a_send_the_host_failed_or_still_holds_past_the_grace(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "HOST_GRACE_S", 0.0)
    store = Store(home / "state.db")
    with receiving() as receiver:
        job, job_dir = local_job(store, receiver)
        (job_dir / hostnotify.RECORDS).mkdir()
        # A claim the host's sender holds now (sending): asked, still the host's, so not sent here.
        assert hostnotify.claim(hostnotify.record_path(str(job_dir), "started", 0), "started", 0, time.time())
        notify.deliver(store, [probed(store, job, job_dir)])
        assert receiver.events(f"{TOKEN}/host") == []
        # The host gave up after its tries: the controller sends it.
        record = {"event": "started", "target": 0, "state": "failed", "attempts": 4, "due_at": time.time(),
                  "error": "the receiver answered HTTP 500"}  # fmt: skip
        Path(hostnotify.record_path(str(job_dir), "started", 0)).write_text(json.dumps(record))
        [done] = notify.deliver(store, [probed(store, job, job_dir)])
        assert (done.event, done.target, done.by_host) == ("started", 0, False)
        assert receiver.events(f"{TOKEN}/host") == ["started"]


def test_an_event_only_the_controller_sees_is_never_waited_for(home: Path) -> None:
    store = Store(home / "state.db")
    with receiving() as receiver:
        job, _ = local_job(store, receiver)
        store.record_end(job.id, None)  # lost: no host process saw that
        notify.deliver(store, [store.get(job.id)])
        assert receiver.events(f"{TOKEN}/host") == ["lost"]  # started waits for the host; lost does not


def test_a_job_whose_session_never_started_is_the_controllers_at_once(home: Path) -> None:
    store = Store(home / "state.db")
    with receiving() as receiver:
        urls = [receiver.url(f"{TOKEN}/host")]
        spec = JobSpec.model_validate({"name": "demo", "run": "true", "notify": {"urls": urls, "events": ["failed"]}})
        job = store.create_job("demo", "local", job_document(spec, Resolved("/w", "/s")), "job.yaml")
        store.add_event(job.id, notify.HOST_NOTIFY, "0")  # handed to the host, then the preflight refused it
        store.transition(job.id, JobState.FAILED, frozenset({JobState.SUBMITTED}), message="submit failed: ...")
        [done] = notify.deliver(store, [store.get(job.id)])
        assert (done.event, done.by_host, done.error) == ("failed", False, None)
        assert receiver.events(f"{TOKEN}/host") == ["failed"]


def test_a_host_that_does_not_answer_is_marked_so_and_its_events_wait(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "HOST_GRACE_S", 0.0)
    monkeypatch.setenv("RUNNER_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    with socket.socket() as probe:  # a port nothing listens on: the SSH host refuses every connection
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hosts = {"hosts": {"gone": {"ssh": f"trainer@127.0.0.1:{port}", "connect_timeout": 1, "retry_seconds": 0}}}
    (tmp_path / "config" / "hosts.yaml").write_text(json.dumps(hosts))
    store = Store(home / "state.db")
    with receiving() as receiver:
        spec = JobSpec.model_validate({"name": "demo", "run": "true", "notify": {"urls": [receiver.url()]}})
        job = store.create_job("demo", "gone", job_document(spec, Resolved("/w", "/s")), "job.yaml")
        store.set_placement(job.id, f"/home/trainer/.runner/jobs/{job.id}", "runner-demo")
        store.add_event(job.id, notify.HOST_NOTIFY, "0")
        store.transition(job.id, JobState.RUNNING, frozenset({JobState.SUBMITTED}))
        assert notify.deliver(store, [store.get(job.id)]) == []  # asked, no answer: it may have sent it
        assert store.unreachable_since("gone") is not None  # so the next look does not wait on it again
        assert notify.deliver(store, [store.get(job.id)]) == [] and receiver.events() == []
