"""Notifications: notify: in the job file and settings.yaml, the scrubbing of its secret URLs, and the
claim that makes every event go out once, through real apprise to a real HTTP receiver on loopback."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from runner.base.errors import SpecError
from runner.jobs.notifyevents import ALL_EVENTS
from runner.jobs.spec import JobSpec
from runner.jobs.specfile import load_job
from runner.jobs.state import Job, JobState, Resolved, Store, job_document
from runner.observe import notify
from runner.observe.observe import Observation, _apply
from tests.notifyreceiver import receiving

TOKEN = "tok3n-5ecret-9f8e7d6c"


def job_file(folder: Path, notify_yaml: str) -> Path:
    path = folder / "job.yaml"
    path.write_text(f"name: demo\nrun: python3 train.py\n{notify_yaml}")
    return path


def stored(store: Store, spec: JobSpec) -> Job:
    job = store.create_job(spec.name, "local", job_document(spec, Resolved("/w", "/s")), "job.yaml")
    store.transition(job.id, JobState.RUNNING, frozenset({JobState.SUBMITTED}))
    return store.get(job.id)


def spec_with(*urls: str, events: list[str] | None = None) -> JobSpec:
    notify_doc: dict[str, object] = {"urls": list(urls)}
    if events is not None:
        notify_doc["events"] = events
    return JobSpec.model_validate({"name": "demo", "run": "true", "notify": notify_doc})


# the job file


def test_notify_takes_one_url_or_many_and_every_event_by_default(tmp_path: Path) -> None:
    spec = load_job(job_file(tmp_path, f"notify: {{urls: json://127.0.0.1:9/{TOKEN}}}\n")).spec
    assert spec.notify is not None
    assert spec.notify.urls == [f"json://127.0.0.1:9/{TOKEN}"]
    assert tuple(spec.notify.events) == ALL_EVENTS
    assert TOKEN not in repr(spec)


@pytest.mark.parametrize(
    ("notify_yaml", "expected"),
    [
        (f"notify: {{urls: [not-a-url-{TOKEN}]}}\n", "job.yaml:3:17: notify.urls[0]: is not an apprise URL"),
        ("notify: {urls: [json://h/p], events: [succeeded, fialed]}\n", "job.yaml:3:50: notify.events[1]: Input"),
        ("notify: {urls: []}\n", "job.yaml:3:16: notify.urls: List should have at least 1 item"),
        ("notify: {events: [failed]}\n", "job.yaml:3:9: notify.urls: required field missing"),
        ("notify: {url: json://h/p}\n", "job.yaml:3:10: notify.url: unknown field 'url', did you mean 'urls'?"),
    ],
)
def test_a_bad_notify_is_one_line_naming_the_field_and_never_the_url(
    tmp_path: Path, notify_yaml: str, expected: str
) -> None:
    with pytest.raises(SpecError) as raised:
        load_job(job_file(tmp_path, notify_yaml))
    message = str(raised.value)
    assert message.startswith(str(tmp_path / expected.split(":", 1)[0]))
    assert expected.split(":", 1)[1] in message
    assert "\n" not in message and TOKEN not in message and raised.value.exit_code == 2


def test_the_urls_are_in_the_store_only_never_in_a_dump_of_the_spec() -> None:
    spec = spec_with(f"json://127.0.0.1:9/{TOKEN}")
    for dump in (spec.model_dump(mode="json"), spec.model_dump_json(), spec.model_dump()):
        assert TOKEN not in str(dump)  # spec.json on the host, --json documents, the container plan
    assert JobSpec.model_validate(spec.stored_document()) == spec  # the store keeps all of it


def test_settings_yaml_gives_the_default_copied_into_a_job_without_notify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.yaml").write_text(f"notify:\n  urls: ntfy://{TOKEN}\n  events: [failed]\n")
    defaulted = load_job(job_file(tmp_path, "")).spec
    assert defaulted.notify is not None and defaulted.notify.events == ["failed"]
    own = load_job(job_file(tmp_path, "notify: {urls: json://h/p}\n")).spec
    assert own.notify is not None and own.notify.urls == ["json://h/p"]  # the job file's own wins


def test_a_bad_settings_yaml_is_refused_naming_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.yaml").write_text("notify:\n  urls: json://h/p\n  events: [nope]\n")
    with pytest.raises(SpecError, match=r"settings\.yaml:3:12: notify\.events\[0\]: Input should be"):
        load_job(job_file(tmp_path, ""))


# scrubbing


def test_scrub_removes_the_url_and_each_of_its_secret_pieces() -> None:
    url = f"tgram://{TOKEN}/chat-12345678/?format=markdown&key=hunter22-pass"
    text = f"failed at {url}; token {TOKEN}; chat-12345678 said no; key hunter22-pass"
    scrubbed = notify.scrub(text, [url])
    for piece in (url, TOKEN, "chat-12345678", "hunter22-pass"):
        assert piece not in scrubbed
    assert scrubbed.startswith("failed at ***") and "said no" in scrubbed


# the claim


def _claimer(db_path: str, seq: int, queue: multiprocessing.Queue[bool]) -> None:
    store = Store(Path(db_path))
    queue.put(store.claim_notification(seq, 0, notify.HOLD_S, notify.MAX_ATTEMPTS))
    store.close()


def test_one_claim_of_many_processes_asking_at_once_wins(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    assert store.add_event_once("j1", "alert", "oom") and not store.add_event_once("j1", "alert", "oom")
    seq = store.events("j1")[0].seq
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[bool] = context.Queue()
    processes = [context.Process(target=_claimer, args=(str(tmp_path / "state.db"), seq, queue)) for _ in range(6)]
    for process in processes:
        process.start()
    answers = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(120)
    assert sorted(answers) == [False] * 5 + [True]
    assert not store.claim_notification(seq, 0, notify.HOLD_S, notify.MAX_ATTEMPTS)  # held: not again
    assert store.claim_notification(seq, 1, notify.HOLD_S, notify.MAX_ATTEMPTS)  # another URL is its own


def test_a_failed_send_waits_then_is_retried_a_bounded_number_of_times(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.add_event("j1", "failed", "")
    seq = store.events("j1")[0].seq
    for attempt in range(1, 4):
        assert store.claim_notification(seq, 0, notify.HOLD_S, max_attempts=3)
        store.notification_failed(seq, 0, "refused", retry_in_s=3600 if attempt == 1 else 0)
        if attempt == 1:  # waiting: neither claimable nor listed as due
            assert not store.claim_notification(seq, 0, notify.HOLD_S, max_attempts=3)
            assert store.unsent_events("j1", frozenset({"failed"}), 0, 3) == []
            store.notification_failed(seq, 0, "refused", retry_in_s=0)
    assert not store.claim_notification(seq, 0, notify.HOLD_S, max_attempts=3)  # out of attempts
    row = store.notification(seq, 0)
    assert row is not None and (row["attempts"], row["sent_at"], row["error"]) == (3, None, "refused")


def test_an_alert_kind_is_an_event_the_first_time_it_shows_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    job = stored(store, spec_with("json://127.0.0.1:9/x"))
    shown = [["oom"], ["oom", "nan_loss"], ["nan_loss"], ["oom", "made_up_by_the_host"], ["oom"]]
    for number, kinds in enumerate(shown):
        snapshot = {"updated_at": float(number), "alerts": [{"kind": kind, "message": kind} for kind in kinds]}
        _apply(store, store.get(job.id), Observation(True, None, "line", True, snapshot))  # type: ignore[arg-type]
    assert [event.detail for event in store.events(job.id) if event.kind == "alert"] == ["oom", "nan_loss"]


# delivery, through apprise to a real receiver


def test_deliver_sends_each_wanted_event_once_however_often_it_is_called(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    with receiving() as receiver:
        job = stored(store, spec_with(receiver.url("a"), receiver.url("b"), events=["started", "oom", "succeeded"]))
        store.add_event_once(job.id, "alert", "oom")
        store.add_event_once(job.id, "alert", "stalled")  # not asked for
        store.add_event(job.id, "sync", "weights every 10m")  # not news
        store.record_end(job.id, 0)
        for _ in range(3):
            notify.deliver(store, [store.get(job.id)])
        assert receiver.events("a") == ["started", "oom", "succeeded"]
        assert receiver.events("b") == ["started", "oom", "succeeded"]
        titles = [body["title"] for body in receiver.received]
    assert f"runner: demo ({job.id}) succeeded" in titles and f"runner: demo ({job.id}): alert oom" in titles


def _deliverer(db_path: str, job_id: str) -> None:
    store = Store(Path(db_path))
    notify.deliver(store, [store.get(job_id)])
    store.close()


def test_two_processes_delivering_at_once_send_each_event_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    with receiving() as receiver:
        job = stored(store, spec_with(receiver.url()))
        for kind in ("oom", "nan_loss", "traceback", "exited"):
            store.add_event_once(job.id, "alert", kind)
        store.record_end(job.id, 1)
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_deliverer, args=(str(tmp_path / "state.db"), job.id)) for _ in range(4)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(120)
            assert process.exitcode == 0
        assert sorted(receiver.events()) == sorted(["started", "oom", "nan_loss", "traceback", "exited", "failed"])


def test_a_refused_notification_is_logged_scrubbed_and_sent_on_a_later_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(notify, "RETRY_S", 0.0)
    store = Store(tmp_path / "home" / "state.db")
    with receiving(status=500) as receiver:
        url = f"{receiver.url(TOKEN)}?secret-param=hunter22-pass"
        job = stored(store, spec_with(url, events=["started"]))
        first = notify.deliver(store, [job])
        assert [(done.event, done.error is not None) for done in first] == [("started", True)]
        receiver.status = 200
        second = notify.deliver(store, [job])
        assert [(done.event, done.error) for done in second] == [("started", None)]
        assert notify.deliver(store, [job]) == []
        assert receiver.events() == ["started", "started"]  # the refused try reached it, then the good one
    logged = (tmp_path / "home" / "notify.log").read_text()
    assert f"job {job.id}: started to notify.urls[0]: attempt 1 of 5" in logged
    assert TOKEN not in logged and "hunter22-pass" not in logged and str(receiver.port) not in logged


def test_an_unknown_scheme_fails_without_naming_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    store = Store(tmp_path / "home" / "state.db")
    job = stored(store, spec_with(f"nosuchservice://{TOKEN}", events=["started"]))
    [done] = notify.deliver(store, [job])
    assert done.error == "apprise knows no service for this nosuchservice:// URL"
    assert TOKEN not in (tmp_path / "home" / "notify.log").read_text()


def test_apprise_is_imported_only_where_a_notification_is_sent() -> None:
    probe = "import sys, runner.observe.observe, runner.cli.app; print('apprise' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "False"
