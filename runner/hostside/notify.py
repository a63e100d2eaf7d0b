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

import base64
import contextlib
import fcntl
import json
import os
import re
import time
from urllib.parse import unquote, urlencode, urlsplit

from . import jobend
from .hostfiles import read_json

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
SEND_TIMEOUT_S = 10.0  # per connect, write and read
MAX_TRIES = 4
RETRY_S = 5.0  # the wait after a failed try, doubled after each: 5, 10, 20 s
HOLD_S = 60.0  # a claim's lease: a sender that died mid-send leaves the record due again after this
RESUME_S = 30.0  # the host takes up a due record only this long after it became due...
TAKEOVER_S = 60.0  # ...and the probe calls it abandoned (the controller's to send) this long after
FRESH_S = 60.0  # an event older than this when first seen here is left to the controller
FINAL_PATIENCE_S = 60.0  # the final snapshot waits this long for due retries: MAX_TRIES fit in it
RECORD_BYTES = 512  # records are written over in place: no new block once made (a full disk)
MAX_RECORDS_REPORTED = 200
METHODS = ("POST", "PUT", "PATCH")
FINAL = ("sent", "failed")
RECORD_NAME = re.compile(r"^([a-z_]+)\.(\d+)$")
OPTION_KEY = re.compile(r"^[+:-]?[A-Za-z0-9_-]+$")
OPTION_VALUE = re.compile(r"^[A-Za-z0-9_.,/@!*~-]*$")
# What requests (under apprise) sends before the plugin's own headers, in its order.
REQUESTS_HEADERS = (("User-Agent", "Apprise"), ("Accept-Encoding", "gzip, deflate"), ("Accept", "*/*"),
                    ("Connection", "keep-alive"))  # fmt: skip


def request_of(url):
    """The HTTP request apprise's json:// (jsons://) plugin makes for url, as a dict; None for a URL
    this module does not make exactly as apprise does (the controller's apprise sends those)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("json", "jsons") or not rest:
        return None
    parts = urlsplit("http://" + rest)
    try:
        port = parts.port
    except ValueError:
        return None
    user, password = parts.username, parts.password
    if not parts.hostname or parts.fragment or (user is not None and password is None) or "%" in parts.path:
        return None  # a user without a password, or an escaped path: apprise's quirks there stay apprise's
    request = {"secure": scheme.lower() == "jsons", "host": parts.hostname, "port": port, "path": parts.path or "/",
               "method": "POST", "headers": [], "params": [], "extras": [], "verify": True,
               "auth": (unquote(user), unquote(password)) if user is not None else None}  # fmt: skip
    options = _query_options(parts.query)
    if options is None:
        return None
    for key, value in options:
        if not _take_option(request, key, value):
            return None
    return request


def _query_options(query):
    """The URL's ?key=value pairs where reading them is plain (no escapes, no '+' for a space, no ';',
    no key twice), so that apprise reads them alike; None otherwise."""
    if not query:
        return []
    pairs = [pair.partition("=")[::2] for pair in query.split("&")]
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys) or not all(
        OPTION_KEY.match(key) and OPTION_VALUE.match(value) for key, value in pairs
    ):
        return None
    return pairs


def _take_option(request, key, value):
    """One ?key=value of the URL into request; False for an option this module does not serve."""
    if key[:1] in ("+", "-", ":") and len(key) > 1:
        request[{"+": "headers", "-": "params", ":": "extras"}[key[0]]].append((key[1:], value))
    elif key == "method" and value.upper() in METHODS:
        request["method"] = value.upper()
    elif key == "verify" and value.lower() in ("yes", "no", "true", "false", "1", "0"):
        request["verify"] = value.lower() in ("yes", "true", "1")
    else:
        return False
    return True


def sendable(url):
    return request_of(url) is not None


def payload(title, body, extras=()):
    """The JSON body apprise's plugin posts, byte for byte: its fields, its order, its json.dumps."""
    document = {"version": "1.0", "title": title, "message": body, "attachments": [], "type": "info"}
    for key, value in extras:
        if key in document:
            moved = document.pop(key)
            if value:
                document[value] = moved  # renamed; an empty value drops the field
        else:
            document[key] = value
    return json.dumps(document).encode("utf-8")


def send(url, title, body, timeout=SEND_TIMEOUT_S):
    """One POST as apprise makes it. None when the receiver took it (2xx), else why not, without the URL."""
    request = request_of(url)
    if request is None:
        return "not a json:// URL this host can send"
    import http.client  # here: the controller reads this module's names on every `runner status`

    data = payload(title, body, request["extras"])
    path = request["path"] + ("?" + urlencode(request["params"]) if request["params"] else "")
    try:
        status = _post(request, path, data, timeout)
    except (OSError, http.client.HTTPException, ValueError) as error:
        return _scrub("%s: %s" % (type(error).__name__, getattr(error, "strerror", None) or error), url)
    return None if 200 <= status < 300 else "the receiver answered HTTP %d" % status


def _post(request, path, data, timeout):
    import http.client
    import ssl

    if request["secure"]:
        context = ssl.create_default_context()
        if not request["verify"]:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection(request["host"], request["port"], timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(request["host"], request["port"], timeout=timeout)
    try:
        connection.putrequest(request["method"], path, skip_accept_encoding=True)
        headers = dict(REQUESTS_HEADERS)
        headers.update([("Content-Type", "application/json")] + request["headers"])
        headers["Content-Length"] = str(len(data))
        if request["auth"]:
            headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % request["auth"]).encode()).decode()
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(data)
        answer = connection.getresponse()
        answer.read(64 * 1024)
        return answer.status
    finally:
        connection.close()


def _scrub(text, url):
    """text without url and without any long piece of it (a token, a password, a path)."""
    _, _, rest = url.partition("://")
    pieces = [url] + [piece for piece in re.split(r"[/:@?&=#,+]+", rest) if len(piece) >= 6]
    for piece in sorted(set(pieces), key=len, reverse=True):
        text = text.replace(piece, "***")
    return text[:300]


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
