"""Notifications sent by the job's host: its monitor (every turn) and the final snapshot (run.sh, after
the exit code) send the events they see, so a job on an SSH host is heard of while no runner process
looks. Standard library only, Python >= 3.7.

- What to send comes in the job's private NOTIFY_FILE (mode 600, written by `runner submit`, never on
  a command line): the URLs this module can send exactly as apprise's json:// plugin would (same
  method, headers, body), the wanted events, and the names the controller's messages use.
- Each (event, URL) is claimed by an exclusive create of its record file, RECORDS/EVENT.TARGET, before
  it is sent, so two senders (the monitor and the final snapshot, a restarted monitor) never both send
  it. The record then holds the outcome: sent, or failed after MAX_TRIES with a doubling wait between.
- The controller hands over by time, each side on its own clock (clocks may differ): the host claims
  an event only within FRESH_S of its happening, retries a record only within RESUME_S of its due
  time, and the probe calls a record abandoned TAKEOVER_S past due; the controller sends what the
  host failed, abandoned, or never claimed within its grace (runner/observe/notify.py HOST_GRACE_S).
- A URL carries its service's token: no error text recorded here (the probe reports it) keeps it.
"""

import contextlib
import fcntl
import json
import os
import re
import time

from . import jobend
from .hostfiles import read_json
from .jsonpost import send, sendable

NOTIFY_FILE = "notify.json"
RECORDS = "notified"
ALERT_KINDS = (  # runner/jobs/notifyevents.py ALERT_EVENTS: the kinds the monitor raises
    "oom",
    "nan_loss",
    "traceback",
    "exited",
    "stalled",
    "gpu_hot",
    "disk_full",
    "gpu_unsupported",
    "corrupt_labels",
)
HOST_EVENTS = ("started", *ALERT_KINDS, "max_duration", "stopped", "succeeded", "failed")  # in sending order
HEADLINES = {  # runner/observe/notify.py HEADLINES: the same words, whoever sends
    "started": "started",
    "succeeded": "succeeded",
    "failed": "failed",
    "stopped": "was stopped",
    "max_duration": "reached its max_duration and is stopped",
}
MAX_BODY_CHARS = 1500
MAX_TRIES = 4
RETRY_S = 5.0  # the wait after a failed try, doubled after each: 5, 10, 20 s
HOLD_S = 60.0  # a claim's lease: a sender that died mid-send leaves the record due again after this
RESUME_S = 30.0  # the host takes up a due record only this long after it became due...
TAKEOVER_S = 60.0  # ...and the probe calls it abandoned (the controller's to send) this long after
FRESH_S = 60.0  # an event older than this when first seen here is left to the controller
FINAL_PATIENCE_S = 60.0  # the final snapshot waits this long for due retries: MAX_TRIES fit in it
RECORD_BYTES = 512  # records are written over in place: no new block once made (a full disk)
MAX_RECORDS_REPORTED = 200
FINAL = ("sent", "failed")
RECORD_NAME = re.compile(r"^([a-z_]+)\.(\d+)$")


def message(config, name, detail, last_line, exit_code):
    """Title and body as the controller words them (runner/observe/notify.py message)."""
    job = "%s (%s)" % (config.get("job_name"), config.get("job_id"))
    title = "runner: %s: alert %s" % (job, name) if name in ALERT_KINDS else "runner: %s %s" % (job, HEADLINES[name])
    lines = [detail, "event: %s" % name, "host: %s" % config.get("host")]
    if exit_code is not None and name in ("succeeded", "failed", "stopped"):
        lines.append("exit code: %d" % exit_code)
    if last_line:
        lines.append("last line: %s" % last_line)
    return title, "\n".join(line for line in lines if line)[:MAX_BODY_CHARS]


def load_config(job_dir):
    """The job's NOTIFY_FILE: {"job_id", "job_name", "host", "events", "targets": [{"target", "url"}]}, or
    None when the host sends nothing for this job."""
    config = read_json(os.path.join(job_dir, NOTIFY_FILE))
    if not isinstance(config, dict) or not isinstance(config.get("targets"), list):
        return None
    targets = [t for t in config["targets"] if isinstance(t, dict) and isinstance(t.get("target"), int)
               and isinstance(t.get("url"), str) and sendable(t["url"])]  # fmt: skip
    events = [name for name in config.get("events") or [] if name in HOST_EVENTS]
    if not targets or not events:
        return None
    return dict(config, targets=targets, events=events)


class Notifier(object):
    """The events one host process sees, sent once each (see the module's docstring)."""

    def __init__(self, job_dir, earlier=None, clock=time.time):
        self.job_dir, self.clock = job_dir, clock
        self.config = load_config(job_dir)
        self.first_seen = {}  # alert kind -> when first seen; a restarted monitor's from the last snapshot
        earlier = earlier or {}
        for alert in earlier.get("alerts") or []:
            if isinstance(alert, dict) and isinstance(earlier.get("updated_at"), (int, float)):
                self.first_seen.setdefault(alert.get("kind"), earlier["updated_at"])

    def turn(self, snapshot, patience_s=0.0):
        """Send what snapshot shows that no sender has claimed, and retry what is due; with patience_s,
        wait for due retries that long (the final snapshot: no later turn follows it). Never raises
        for a send or a full disk: a notification must not end the monitor."""
        if self.config is None:
            return []
        try:
            os.mkdir(os.path.join(self.job_dir, RECORDS), 0o700)
        except OSError:
            pass  # made already, or no room: the claims below fail and the controller sends
        done = self._send_due(self.events(snapshot))
        deadline = self.clock() + patience_s
        while patience_s:
            now = self.clock()
            # Only retries this process may still take up: one past RESUME_S is the controller's.
            waits = [record["due_at"] - now for record in self._own_pending() if now <= record["due_at"] + RESUME_S]
            wait = min(waits) if waits else None
            if wait is None or now + max(wait, 0.0) > deadline:
                break
            time.sleep(max(0.0, wait) + 0.05)
            done += self._send_due(self.events(snapshot))
        return done

    def events(self, snapshot):
        """(name, when it happened by this host's clock, detail, last line, exit code) of what snapshot shows."""
        now = self.clock()
        last = (snapshot.get("progress") or {}).get("last_line")
        exit_code = snapshot.get("exit_code")
        started = snapshot.get("started_at")
        found = [("started", started if isinstance(started, (int, float)) else now, "")]
        for alert in snapshot.get("alerts") or []:
            kind = alert.get("kind") if isinstance(alert, dict) else None
            if kind in ALERT_KINDS:
                found.append((kind, self.first_seen.setdefault(kind, now), str(alert.get("message") or kind)))
        stop = jobend.read_stop(self.job_dir)
        if stop is not None:
            stopped_at = _mtime(os.path.join(self.job_dir, jobend.STOP), now)
            limit = stop["by"] == "max_duration"
            reason = " ".join(str(stop.get("message") or "max_duration reached").split())[:200] if limit else ""
            if limit:
                found.append(("max_duration", stopped_at, reason))
            found.append(("stopped", stopped_at, reason))
        elif exit_code is not None:
            ended_at = _mtime(os.path.join(self.job_dir, jobend.EXIT_CODE), now)
            found.append(("succeeded" if exit_code == 0 else "failed", ended_at, ""))
        found.sort(key=lambda event: HOST_EVENTS.index(event[0]))
        return [(name, at, detail, last, exit_code) for name, at, detail in found]

    def _send_due(self, events):
        done = []
        for name, at, detail, last, exit_code in events:
            if name not in self.config["events"]:
                continue
            title, body = message(self.config, name, detail, last, exit_code)
            for target in self.config["targets"]:
                outcome = self._one(name, at, target, title, body)
                if outcome is not None:
                    done.append((name, target["target"], outcome))
        return done

    def _one(self, name, at, target, title, body):
        """Claim (or take up a due retry of) the event's notification to target and send it; the record's
        new state, or None when this process had nothing to do for it."""
        path = record_path(self.job_dir, name, target["target"])
        now = self.clock()
        if not os.path.exists(path):
            if now - at > FRESH_S or not claim(path, name, target["target"], now):
                return None  # old news (the controller's) or another sender's
            attempts = 1
        else:
            attempts = self._resume(path, now)
            if attempts is None:
                return None
        error = send(target["url"], title, body)
        return self._record_outcome(path, name, target["target"], attempts, error)

    def _resume(self, path, now):
        with _records_lock(self.job_dir):
            record = read_record(path)
            due = record["due_at"]
            if record["state"] in FINAL or not due <= now <= due + RESUME_S:
                return None
            attempts = record["attempts"] + 1
            _write_record(path, dict(record, state="sending", attempts=attempts, due_at=now + HOLD_S))
        return attempts

    def _record_outcome(self, path, name, target, attempts, error):
        now = self.clock()
        if error is None:
            record = {"state": "sent", "due_at": now, "error": None}
        elif attempts >= MAX_TRIES:
            record = {"state": "failed", "due_at": now, "error": error}
        else:
            record = {"state": "waiting", "due_at": now + RETRY_S * 2 ** (attempts - 1), "error": error}
        record.update(event=name, target=target, attempts=attempts)
        try:
            with _records_lock(self.job_dir):
                _write_record(path, record)
        except OSError:
            pass  # the claim stands: the record reads as a lapsed claim, taken up or handed over in time
        return record["state"]

    def _own_pending(self):
        pending = []
        for name in self.config["events"]:
            for target in self.config["targets"]:
                path = record_path(self.job_dir, name, target["target"])
                if os.path.exists(path):
                    record = read_record(path)
                    if record["state"] == "waiting":
                        pending.append(record)
        return pending


def record_path(job_dir, name, target):
    return os.path.join(job_dir, RECORDS, "%s.%d" % (name, target))


def claim(path, name, target, now):
    """Create the record, exclusively: True for exactly one of the processes asking at once."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return False  # claimed by another, or no room for even its name: not sent from here
    try:
        _write_into(fd, {"event": name, "target": target, "state": "sending", "attempts": 1,
                         "due_at": now + HOLD_S, "error": None})  # fmt: skip
    except OSError:
        pass  # no room for its content: an empty record still claims it (read_record)
    finally:
        os.close(fd)
    return True


def read_record(path):
    """A record, whatever it holds: an unreadable one (its content never written: a full disk) is a
    claim whose lease runs from the file's time."""
    document = read_json(path)
    if isinstance(document, dict) and isinstance(document.get("due_at"), (int, float)):
        state = document.get("state") if document.get("state") in ("sending", "waiting", *FINAL) else "sending"
        attempts = document.get("attempts") if isinstance(document.get("attempts"), int) else 1
        error = document.get("error") if isinstance(document.get("error"), str) else None
        return {"state": state, "attempts": attempts, "due_at": float(document["due_at"]), "error": error}
    return {"state": "sending", "attempts": 1, "due_at": _mtime(path, time.time()) + HOLD_S, "error": None}


def records(job_dir, now=None):
    """The host's records, for the controller (the agent's probe): {"EVENT.TARGET": {"state",
    "attempts", "error", "abandoned"}}; abandoned: no host process takes it up any more."""
    now = time.time() if now is None else now
    folder = os.path.join(job_dir, RECORDS)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {}
    found = {}
    for name in names[:MAX_RECORDS_REPORTED]:
        if not RECORD_NAME.match(name):
            continue
        record = read_record(os.path.join(folder, name))
        abandoned = record["state"] not in FINAL and now > record["due_at"] + TAKEOVER_S
        found[name] = {"state": record["state"], "attempts": record["attempts"], "error": record["error"],
                       "abandoned": abandoned}  # fmt: skip
    return found


@contextlib.contextmanager
def _records_lock(job_dir):
    fd = os.open(os.path.join(job_dir, RECORDS), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_record(path, record):
    fd = os.open(path, os.O_WRONLY)
    try:
        _write_into(fd, record)
    finally:
        os.close(fd)


def _write_into(fd, record):
    """The record over the file's first RECORD_BYTES, padded with spaces (JSON readers skip them)."""
    data = json.dumps(record).encode("utf-8")[: RECORD_BYTES - 1]
    data += b" " * (RECORD_BYTES - len(data))
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], written)


def _mtime(path, default):
    try:
        return os.path.getmtime(path)
    except OSError:
        return default
