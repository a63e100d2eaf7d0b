"""Notifications: each event of a job with `notify:` is sent once to each of its URLs, by whichever runner
process sees it first (`runner status`, the keeper, any refresh).

The store's events table is the bus: state transitions, `alert` (detail: the kind, added once per kind
by observe), `max_cost`, `max_duration`, `instance-destroyed`, `api-unreachable`. Before a send, the
event is claimed in SQLite (Store.claim_notification), so two processes never both send it; a send
that fails waits and is tried again, at most MAX_ATTEMPTS times.

A job on an SSH host has its host's monitor send what it sees itself (runner/hostside/notify.py), to
the URLs it can send as apprise does (json://, jsons://): submit records which (a HOST_NOTIFY event)
and writes them into the job's private files. Here, such an event is marked sent, without sending,
once the host's records (in the probe's snapshot) say the host sent it; the controller sends it itself
when the host failed or abandoned it, or has no record of it HOST_GRACE_S after the event was seen
here. Events only the controller sees (lost, the rented ones) are never the host's.

A URL carries its service's token: it is a secret. apprise is given it in this process only (no
command line), its own logging is silenced (it may name the URL), and every failure text is scrubbed
before it is stored or written to RUNNER_HOME/notify.log.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.base import paths
from runner.base.errors import HostUnreachable, RunnerError
from runner.hostside.jsonpost import sendable
from runner.hostside.notify import HOST_EVENTS
from runner.jobs.agentanswers import HostRecord, host_records, notification_records
from runner.jobs.layout import job_host
from runner.jobs.notifyevents import ALERT_EVENTS
from runner.jobs.state import Event, Job, JobState, Store

if TYPE_CHECKING:  # pydantic: imported only for a job that has a notify: to read
    from runner.jobs.notifyspec import Notify

MAX_ATTEMPTS = 5
HOLD_S = 120.0  # a claim's lease: a sender that died mid-send frees the event after this (one attempt spent)
RETRY_S = 30.0  # the wait after a failed try, doubled after each
MAX_BODY_CHARS = 1500
REDACTED = "***"
ALERT = "alert"  # the store's event kind for a new alert kind; its detail is the kind
HOST_NOTIFY = "host-notify"  # the store's event: the job's host sends to these notify.urls (detail: "0,2")
# How long after the controller saw an event it waits for the host's record of it. The host claims an
# event within 60 s of its happening there or never (runner/hostside/notify.py FRESH_S), and nothing is
# seen here before it happens, so once this has passed, no claim the host makes is still to come: the
# other 60 s are for a slow monitor turn (a GPU tool's 10 s timeout) and the probe's own way. Each side
# measures on its own clock, so the hosts' clocks need not agree with this one.
HOST_GRACE_S = 120.0
# The store's event kinds -> the names a job file's notify.events uses.
STORE_KINDS = {
    "running": "started",
    "succeeded": "succeeded",
    "failed": "failed",
    "lost": "lost",
    "stopped": "stopped",
    "max_cost": "max_cost",
    "max_duration": "max_duration",
    "instance-destroyed": "instance_destroyed",
    "api-unreachable": "api_unreachable",
}
HEADLINES = {
    "started": "started",
    "succeeded": "succeeded",
    "failed": "failed",
    "lost": "is lost",
    "stopped": "was stopped",
    "max_cost": "reached its budget (max_cost) and is stopped",
    "max_duration": "reached its max_duration and is stopped",
    "instance_destroyed": "its instance was destroyed",
    "api_unreachable": "is waiting on the vast.ai API",
}

# A sender: (url, title, body) -> None when sent, else why not (may hold the URL: scrubbed by the caller).
Sender = Callable[[str, str, str], str | None]


@dataclass(frozen=True)
class Delivered:
    job_id: str
    event: str  # the notify.events name
    target: int  # the URL's index in notify.urls
    error: str | None  # None: sent; else why not, scrubbed
    by_host: bool = False  # the job's host sent it: marked sent here, not sent again


def deliver(store: Store, jobs: list[Job], send: Sender | None = None) -> list[Delivered]:
    """Send what is due for these jobs. A send that fails is recorded and retried later, never raised:
    a notification must not break `runner status`."""
    done: list[Delivered] = []
    for job in jobs:
        notify = _notify_of(job)
        if notify is not None:
            done += _deliver_job(store, job, notify, send or send_with_apprise)
    return done


def host_notify_file(job: Job, host_name: str) -> tuple[list[int], bytes] | None:
    """What the job's host needs to send its notifications itself: the indices of the notify.urls it can
    send, and its private file (runner/hostside/notify.py NOTIFY_FILE); None when it has none to send."""
    notify = _notify_of(job)
    if notify is None:
        return None
    events = [name for name in notify.events if name in HOST_EVENTS]
    targets = [index for index, url in enumerate(notify.urls) if sendable(url)]
    if not events or not targets:
        return None
    document = {"job_id": job.id, "job_name": job.name, "host": host_name, "events": events,
                "targets": [{"target": index, "url": notify.urls[index]} for index in targets]}  # fmt: skip
    return targets, json.dumps(document).encode()


def event_name(event: Event) -> str | None:
    """The notify.events name of a store event; None for events that are not news (syncs, retries)."""
    if event.kind == ALERT:
        return event.detail if event.detail in ALERT_EVENTS else None
    return STORE_KINDS.get(event.kind)


def message(job: Job, event: Event, name: str) -> tuple[str, str]:
    """The notification's title and body: what happened to which job, and where."""
    if event.kind == ALERT:
        title = f"runner: {job.name} ({job.id}): alert {name}"
        detail = _alert_message(job, name)
    else:
        title = f"runner: {job.name} ({job.id}) {HEADLINES[name]}"
        detail = event.detail
    lines = [detail, f"event: {name}", f"host: {job.host}"]  # the event's name: for filters on the receiving end
    if job.exit_code is not None and name in ("succeeded", "failed", "stopped"):
        lines.append(f"exit code: {job.exit_code}")
    if job.last_line:
        lines.append(f"last line: {job.last_line}")
    return title, "\n".join(line for line in lines if line)[:MAX_BODY_CHARS]


def scrub(text: str, secrets: list[str]) -> str:
    """text with every secret URL, and each long piece of one (token, password, path), replaced by ***."""
    pieces = set()
    for secret in secrets:
        pieces.add(secret)
        _, _, rest = secret.partition("://")
        pieces.update(part for part in re.split(r"[/:@?&=#,]+", rest) if len(part) >= 6)
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, REDACTED)
    return text


def send_with_apprise(url: str, title: str, body: str) -> str | None:
    """One notification through apprise (imported here: only a sending process pays for it)."""
    import apprise

    # apprise logs what it does, URLs included: nothing of it may reach a handler (stderr, a log file).
    logging.getLogger("apprise").disabled = True
    scheme = url.partition("://")[0]
    sender = apprise.Apprise()
    if not sender.add(url):
        return f"apprise knows no service for this {scheme}:// URL"
    if not sender.notify(title=title, body=body):
        return f"the {scheme}:// service did not take the notification"
    return None


def notify_log() -> str:
    return str(paths.runner_home() / "notify.log")


def _notify_of(job: Job) -> Notify | None:
    stored = job.document.get("spec") if "schema" in job.document else job.document
    if not (stored or {}).get("notify"):
        return None  # the cheap look first: most jobs notify nobody, and a spec costs a validation
    try:
        return job.spec.notify
    except ValueError:  # a spec this runner cannot read: nothing to send, and status goes on
        return None


def _deliver_job(store: Store, job: Job, notify: Notify, send: Sender) -> list[Delivered]:
    wanted = set(notify.events)
    kinds = frozenset(kind for kind, name in STORE_KINDS.items() if name in wanted)
    if wanted & set(ALERT_EVENTS):
        kinds |= {ALERT}
    done = []
    host = _HostSender(store, job)
    for target, url in enumerate(notify.urls):
        for event in store.unsent_events(job.id, kinds, target, MAX_ATTEMPTS):
            name = event_name(event)
            if name is None or name not in wanted:
                continue  # an alert kind not asked for
            verdict = host.verdict(name, target, event.at)
            if verdict == _HOST_SENT:
                store.notification_sent(event.seq, target)
                done.append(Delivered(job.id, name, target, None, by_host=True))
                continue
            if verdict == _HOST_MAY_SEND:
                continue  # the host's to send: asked again at the next look
            if not store.claim_notification(event.seq, target, HOLD_S, MAX_ATTEMPTS):
                continue  # another process has it, or sent it a moment ago
            error = _send_one(send, url, *message(job, event, name), notify.urls)
            if error is None:
                store.notification_sent(event.seq, target)
            else:
                _failed(store, job, event, target, name, error)
            done.append(Delivered(job.id, name, target, error))
    return done


_HOST_SENT, _HOST_MAY_SEND, _OURS = "host sent", "host may send", "ours"


class _HostSender:
    """What the job's host did with its notifications, for a job whose host sends some (HOST_NOTIFY):
    its records as the last probe saw them (the snapshot), and asked anew, once per delivery, only when
    they cannot decide an event that is past its grace."""

    def __init__(self, store: Store, job: Job) -> None:
        self.store, self.job = store, job
        given = store.last_event(job.id, (HOST_NOTIFY,))
        self.targets = {int(part) for part in given.detail.split(",") if part.isdigit()} if given else set()
        if self.targets and store.last_event(job.id, (JobState.RUNNING.value,)) is None:
            self.targets = set()  # its session never started (a refused or failed submit): no monitor saw a thing
        self.seen = host_records((job.snapshot or {}).get("notified")) if self.targets else {}
        self.asked: dict[str, HostRecord] | None = None
        self.asked_once = False

    def verdict(self, name: str, target: int, seen_at: float) -> str:
        if target not in self.targets or name not in HOST_EVENTS:
            return _OURS
        key = f"{name}.{target}"
        settled = _settled(self.seen.get(key))
        if settled is not None:  # a final record stays final: an older look at it is as good as a new one
            return settled
        if time.time() - seen_at < HOST_GRACE_S:
            return _HOST_MAY_SEND
        asked = self._ask()
        if asked is None:
            return _HOST_MAY_SEND  # no answer: whether it sent is unknown, so not sent twice
        return _settled(asked.get(key)) or (_OURS if key not in asked else _HOST_MAY_SEND)

    def _ask(self) -> dict[str, HostRecord] | None:
        if not self.asked_once:
            self.asked_once = True
            # A host known not to answer is not asked: each look would wait out its timeout. Its events
            # wait (it may have sent them) until a probe finds it answering again.
            if self.job.job_dir and self.store.unreachable_since(self.job.host) is None:
                try:
                    self.asked = notification_records(job_host(self.job.host, self.job.job_dir), self.job.job_dir)
                except HostUnreachable:
                    self.store.mark_unreachable(self.job.host)
                except (RunnerError, OSError):
                    self.asked = None
        return self.asked


def _settled(record: HostRecord | None) -> str | None:
    """A record's verdict when the host is done with it: sent, or left to the controller; else None."""
    if record is None:
        return None
    if record["state"] == "sent":
        return _HOST_SENT
    if record["state"] == "failed" or record["abandoned"]:
        return _OURS
    return None


def _send_one(send: Sender, url: str, title: str, body: str, secrets: list[str]) -> str | None:
    try:
        error = send(url, title, body)
    except Exception as exc:  # whatever the service's library raises: recorded and retried, never fatal
        error = f"{type(exc).__name__}: {exc}"
    return None if error is None else scrub(error, secrets)


def _failed(store: Store, job: Job, event: Event, target: int, name: str, error: str) -> None:
    row = store.notification(event.seq, target) or {}
    attempts = int(row.get("attempts") or 1)
    store.notification_failed(event.seq, target, error, RETRY_S * 2 ** (attempts - 1))
    last = " (the last try)" if attempts >= MAX_ATTEMPTS else ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    line = f"{stamp} job {job.id}: {name} to notify.urls[{target}]: attempt {attempts} of {MAX_ATTEMPTS}{last}: {error}"
    try:
        with open(notify_log(), "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError:
        pass  # the store keeps the error too; a log that cannot be written must not break status


def _alert_message(job: Job, kind: str) -> str:
    for alert in (job.snapshot or {}).get("alerts") or []:
        if isinstance(alert, dict) and alert.get("kind") == kind:
            return str(alert.get("message") or kind)
    return kind
