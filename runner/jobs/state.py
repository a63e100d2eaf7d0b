"""The controller's local store: jobs, hosts and events in SQLite (WAL).

The only module that speaks SQL. Every write runs in a `BEGIN IMMEDIATE` transaction, so parallel
`runner` processes serialise on SQLite's lock instead of overwriting each other, and state changes
are compare-and-set: a transition names the states it may leave, so a late writer cannot drag a
finished job back to `running`.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.base import processes
from runner.base.errors import NotFound, UsageError

if TYPE_CHECKING:  # pydantic is imported only where a job's spec is read, not by every command
    from runner.jobs.spec import JobSpec


class JobState(str, Enum):
    SUBMITTED = "submitted"
    PROVISIONING = "provisioning"
    SYNCING = "syncing"
    BUILDING = "building"
    PREFLIGHT = "preflight"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    LOST = "lost"


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED, JobState.LOST})
ACTIVE = frozenset(JobState) - FINISHED


def ended_state(stop_requested: bool, exit_code: int | None, stop_delivered: bool | None = None) -> JobState:
    """How a job that is over ended. stop_delivered is the host's word (runner/hostside/jobend.py): a
    stop is recorded there only while the training had not ended, so a delivered stop means the stop
    ended it, and an exit code without one means the training ended by itself, whatever was requested.
    Hosts that do not say (None) keep the older rule: a requested stop wins. No exit code: it died unrecorded."""
    if stop_delivered:
        return JobState.STOPPED
    ended_by_itself = stop_delivered is False and exit_code is not None
    if stop_requested and not ended_by_itself:
        return JobState.STOPPED
    if exit_code is None:
        return JobState.LOST
    return JobState.SUCCEEDED if exit_code == 0 else JobState.FAILED


SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,   -- submission order: "newest job" of a name
    id           TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    host         TEXT NOT NULL,
    state        TEXT NOT NULL,
    spec         TEXT NOT NULL,                       -- the job's document, as JSON: see job_document
    job_file     TEXT NOT NULL,
    job_dir      TEXT,                                -- the job's directory on its host
    session      TEXT,                                -- its tmux session name
    created_at   REAL NOT NULL,
    started_at   REAL,
    ended_at     REAL,
    exit_code    INTEGER,
    stop_requested_at REAL,
    last_line    TEXT,
    message      TEXT,
    snapshot     TEXT,                                -- the host monitor's latest snapshot, as JSON
    owner_pid    INTEGER,                             -- the `runner submit` that owns the job until it runs
    owner_start  TEXT,                                -- its start (boot id:start time), see base/processes.py
    keep         INTEGER NOT NULL DEFAULT 0           -- submit --keep: its instances outlive a failed submit
);
CREATE INDEX IF NOT EXISTS jobs_name ON jobs(name);
CREATE TABLE IF NOT EXISTS hosts (
    name              TEXT PRIMARY KEY,
    kind              TEXT NOT NULL,
    unreachable_since REAL,
    updated_at        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL,
    at      REAL NOT NULL,
    kind    TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE TABLE IF NOT EXISTS instances (                -- rented vast.ai instances: written before they run
    id          INTEGER PRIMARY KEY,                  -- vast.ai's instance id
    job_id      TEXT NOT NULL,
    offer_id    INTEGER NOT NULL,
    gpu         TEXT NOT NULL DEFAULT '',
    dph         REAL NOT NULL,                        -- $ per hour
    rented_at   REAL NOT NULL,
    ssh         TEXT,                                 -- root@address:port, once it answers
    gone_at     REAL                                  -- destroyed, and confirmed gone by the API
);
CREATE INDEX IF NOT EXISTS instances_job ON instances(job_id);
CREATE TABLE IF NOT EXISTS notifications (            -- an event's notification to one target, one sender at a time
    event_seq    INTEGER NOT NULL,                    -- events.seq
    target       INTEGER NOT NULL,                    -- which of the job's notify.urls (its index)
    attempts     INTEGER NOT NULL,                    -- sends tried (a claim counts: its sender may have died)
    next_try_at  REAL NOT NULL,                       -- a claim holds it until then, a failed try waits until then
    sent_at      REAL,                                -- sent (by this controller or by the job's host)
    error        TEXT,                                -- the last failure, scrubbed of the URLs
    PRIMARY KEY (event_seq, target)
);
"""
# Columns added since the first release, for stores made before them: (table, column, declaration).
ADDED_COLUMNS = [
    ("jobs", "snapshot", "TEXT"),
    ("jobs", "owner_pid", "INTEGER"),
    ("jobs", "owner_start", "TEXT"),
    ("jobs", "keep", "INTEGER NOT NULL DEFAULT 0"),
]


# The stored document of a job: {"schema": SPEC_SCHEMA, "spec": JobSpec.stored_document(), "resolved": Resolved}.
# A document without "schema" is a job stored before it (the spec's plain dump, perhaps with pushed_image).
SPEC_SCHEMA = 2
LEGACY_KEYS = ("artifact_sync", "pushed_image")  # what a schema-1 document holds beside the spec's fields


@dataclass(frozen=True)
class Resolved:
    """What submit fixed for good, as absolute paths and names, so that whatever comes later (a retry on
    a new instance, the keeper, a background sync) never reads the job file again, and never depends
    on the directory a command runs in: the file may have moved or changed since."""

    workdir: str
    submit_dir: str  # where `runner submit` ran: default artifact destinations (artifacts/JOB_ID) are under it
    pushed_image: str | None = None  # the image runner built and pushed for a rented host

    def artifacts_dir(self, job_id: str) -> Path:
        return Path(self.submit_dir) / "artifacts" / job_id


def job_document(spec: JobSpec, resolved: Resolved) -> dict[str, Any]:
    return {"schema": SPEC_SCHEMA, "spec": spec.stored_document(), "resolved": asdict(resolved)}


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    host: str
    state: JobState
    document: dict[str, Any]  # see job_document: read it through .spec and .resolved
    job_file: str
    job_dir: str | None
    session: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    stop_requested_at: float | None
    last_line: str | None
    message: str | None
    snapshot: dict[str, Any] | None = None  # the host monitor's latest: progress, results, GPUs, alerts
    owner_pid: int | None = None  # the submit that owns the job's steps (None: a job stored before owners were)
    owner_start: str | None = None
    keep: bool = False  # submitted with --keep

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def owner_alive(self) -> bool:
        """Whether the process that submitted the job still runs (the same process, not a reused pid)."""
        return processes.alive(self.owner_pid, self.owner_start)

    @cached_property
    def spec(self) -> JobSpec:
        """The validated spec, as submit stored it (pydantic is imported here, not by every command)."""
        from runner.jobs.spec import JobSpec

        stored = self.document.get("spec") if "schema" in self.document else self.document
        return JobSpec.model_validate({key: value for key, value in (stored or {}).items() if key not in LEGACY_KEYS})

    @property
    def resolved(self) -> Resolved:
        if "schema" in self.document:
            return Resolved(**self.document["resolved"])
        # Stored before the paths were: as that runner resolved them, from the job file and the current directory.
        workdir = Path(self.job_file).parent / (self.document.get("workdir") or "")
        return Resolved(str(workdir.resolve()), os.getcwd(), self.document.get("pushed_image"))


@dataclass(frozen=True)
class Instance:
    id: int
    job_id: str
    offer_id: int
    gpu: str
    dph: float
    rented_at: float
    ssh: str | None
    gone_at: float | None

    def cost(self, until: float | None = None) -> float:
        """What it has cost so far (or until gone), in $: vast.ai bills by the second."""
        end = self.gone_at or until or time.time()
        return max(0.0, end - self.rented_at) / 3600.0 * self.dph


@dataclass(frozen=True)
class Event:
    job_id: str
    at: float
    kind: str
    detail: str
    seq: int = 0  # events.seq: where it stands in the store's order of events


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are ours to open (BEGIN IMMEDIATE), not sqlite3's.
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout = 60000")
        self._db.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL survives process crashes; only an OS crash may lose the latest commit.
        self._db.execute("PRAGMA synchronous = NORMAL")
        # executescript commits before it runs, so the schema carries its own transaction.
        self._db.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nCOMMIT;")
        self._add_missing_columns()

    def close(self) -> None:
        self._db.close()

    def _add_missing_columns(self) -> None:
        for table, column, declaration in ADDED_COLUMNS:
            with self._write() as db:  # checked inside the write lock: two processes may both be here
                present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # jobs

    def create_job(
        self,
        name: str,
        host: str,
        document: dict[str, Any],
        job_file: str,
        owner: processes.ProcessIdentity | None = None,
        keep: bool = False,
    ) -> Job:
        """owner: the process that carries the job to running (its submit), recorded so that any
        later runner can tell a submit still at work from one that died."""
        now = time.time()
        owner_pid, owner_start = (owner.pid, owner.start) if owner else (None, None)
        with self._write() as db:
            while True:
                job_id = secrets.token_hex(4)
                if not db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone():
                    break
            db.execute(
                "INSERT INTO jobs (id, name, host, state, spec, job_file, created_at, owner_pid, owner_start, keep)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, name, host, JobState.SUBMITTED.value, json.dumps(document), job_file, now,
                 owner_pid, owner_start, int(keep)),
            )  # fmt: skip
            self._event(db, job_id, "submitted", f"{job_file} on {host}")
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job with id '{job_id}'")
        return _job(row)

    def find(self, ref: str | None) -> Job:
        """A job by id, unique id prefix, or name (the newest of that name); None means the newest job."""
        if ref is None:
            row = self._db.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT 1").fetchone()
            if row is None:
                raise NotFound("no jobs yet: `runner submit JOBFILE` starts one")
            return _job(row)
        # An exact id, then an exact name (a name like "cafe" must not hit an id starting cafe...), then a prefix.
        exact = self._db.execute("SELECT * FROM jobs WHERE id = ?", (ref,)).fetchone()
        if exact:
            return _job(exact)
        named = self._db.execute("SELECT * FROM jobs WHERE name = ? ORDER BY seq DESC LIMIT 1", (ref,)).fetchone()
        if named:
            return _job(named)
        prefixed = self._db.execute(
            "SELECT * FROM jobs WHERE substr(id, 1, ?) = ? ORDER BY seq DESC", (len(ref), ref)
        ).fetchall()
        if len(prefixed) > 1:
            ids = ", ".join(row["id"] for row in prefixed[:5])
            raise UsageError(f"job '{ref}' is ambiguous: it starts {len(prefixed)} job ids ({ids})")
        if prefixed:
            return _job(prefixed[0])
        raise NotFound(f"no job with id, id prefix or name '{ref}'")

    def list_jobs(self) -> list[Job]:
        return [_job(row) for row in self._db.execute("SELECT * FROM jobs ORDER BY seq")]

    def delete_finished_job(self, job_id: str) -> bool:
        """`runner prune`: the job's row, its events (with their notifications) and its instances, in one
        transaction; nothing when the job is not finished or an instance of it is not confirmed gone (it
        may still bill, and the row is how runner finds it). True if deleted."""
        finished = {state.value for state in FINISHED}
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            live = db.execute("SELECT 1 FROM instances WHERE job_id = ? AND gone_at IS NULL", (job_id,)).fetchone()
            if row is None or row["state"] not in finished or live is not None:
                return False
            db.execute(
                "DELETE FROM notifications WHERE event_seq IN (SELECT seq FROM events WHERE job_id = ?)", (job_id,)
            )
            for table, column in (("events", "job_id"), ("instances", "job_id"), ("jobs", "id")):
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (job_id,))
        return True

    def set_placement(self, job_id: str, job_dir: str, session: str) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET job_dir = ?, session = ? WHERE id = ?", (job_dir, session, job_id))

    def set_last_line(self, job_id: str, last_line: str | None) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET last_line = ? WHERE id = ?", (last_line, job_id))

    def set_snapshot(self, job_id: str, snapshot: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET snapshot = ? WHERE id = ?", (json.dumps(snapshot), job_id))

    def request_stop(self, job_id: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET stop_requested_at = COALESCE(stop_requested_at, ?) WHERE id = ?", (time.time(), job_id)
            )
            self._event(db, job_id, "stop-requested", "")

    def transition(
        self,
        job_id: str,
        to: JobState,
        leaving: frozenset[JobState],
        exit_code: int | None = None,
        message: str | None = None,
    ) -> bool:
        """Move a job to `to` if it is in one of `leaving`; False (and nothing written) otherwise."""
        with self._write() as db:
            return self._set_state(db, job_id, to, leaving, exit_code, message)

    def record_end(
        self,
        job_id: str,
        exit_code: int | None,
        message: str | None = None,
        ended_at: float | None = None,
        stop_delivered: bool | None = None,
    ) -> JobState | None:
        """The job is over on its host: finish it as `ended_state` says, judged on the row as it is now
        (a stop requested a moment ago by another process counts). None if it was already finished.
        ended_at: when it ended, if known (else now, when it was noticed); stop_delivered: the host's
        record of a stop, where it keeps one."""
        with self._write() as db:
            row = db.execute("SELECT stop_requested_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
            state = ended_state(row["stop_requested_at"] is not None, exit_code, stop_delivered)
            return state if self._set_state(db, job_id, state, ACTIVE, exit_code, message, ended_at) else None

    def _set_state(
        self,
        db: sqlite3.Connection,
        job_id: str,
        to: JobState,
        leaving: frozenset[JobState],
        exit_code: int | None,
        message: str | None,
        ended_at: float | None = None,
    ) -> bool:
        now = time.time()
        started = now if to is JobState.RUNNING else None
        ended = (ended_at or now) if to in FINISHED else None
        placeholders = ",".join("?" for _ in leaving)
        cursor = db.execute(
            f"UPDATE jobs SET state = ?, started_at = COALESCE(started_at, ?), ended_at = COALESCE(?, ended_at),"
            f" exit_code = COALESCE(?, exit_code), message = COALESCE(?, message)"
            f" WHERE id = ? AND state IN ({placeholders})",
            (to.value, started, ended, exit_code, message, job_id, *(state.value for state in leaving)),
        )
        if cursor.rowcount:
            self._event(db, job_id, to.value, message or "")
        return bool(cursor.rowcount)

    # hosts

    def remember_host(self, name: str, kind: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO hosts (name, kind, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, updated_at = excluded.updated_at",
                (name, kind, time.time()),
            )

    def mark_unreachable(self, name: str, since: float | None = None) -> float:
        """Record that the host did not answer; returns since when it has not (the first failure's time).
        since: when the failing attempt began, if earlier than now (a call retried a while before failing)."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO hosts (name, kind, unreachable_since, updated_at) VALUES (?, 'unknown', ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET"
                " unreachable_since = COALESCE(unreachable_since, excluded.unreachable_since),"
                " updated_at = excluded.updated_at",
                (name, since or now, now),
            )
            row = db.execute("SELECT unreachable_since FROM hosts WHERE name = ?", (name,)).fetchone()
        return float(row["unreachable_since"])

    def unreachable_since(self, name: str) -> float | None:
        row = self._db.execute("SELECT unreachable_since FROM hosts WHERE name = ?", (name,)).fetchone()
        return row["unreachable_since"] if row else None

    def mark_reachable(self, name: str) -> None:
        with self._write() as db:
            db.execute("UPDATE hosts SET unreachable_since = NULL, updated_at = ? WHERE name = ?", (time.time(), name))

    def set_host(self, job_id: str, host: str) -> None:
        """The job's host, once known: a rented instance is named after its id."""
        with self._write() as db:
            db.execute("UPDATE jobs SET host = ? WHERE id = ?", (host, job_id))

    # rented instances

    def record_instance(self, instance_id: int, job_id: str, offer_id: int, gpu: str, dph: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO instances (id, job_id, offer_id, gpu, dph, rented_at) VALUES (?, ?, ?, ?, ?, ?)",
                (instance_id, job_id, offer_id, gpu, dph, time.time()),
            )

    def set_instance_ssh(self, instance_id: int, ssh: str) -> None:
        with self._write() as db:
            db.execute("UPDATE instances SET ssh = ? WHERE id = ?", (ssh, instance_id))

    def instance_gone(self, instance_id: int) -> None:
        with self._write() as db:
            db.execute("UPDATE instances SET gone_at = COALESCE(gone_at, ?) WHERE id = ?", (time.time(), instance_id))

    def instance(self, instance_id: int) -> Instance | None:
        row = self._db.execute("SELECT * FROM instances WHERE id = ?", (instance_id,)).fetchone()
        return Instance(**dict(row)) if row else None

    def instances(self, job_id: str | None = None, live_only: bool = False) -> list[Instance]:
        """Instances of one job (or all), oldest first; live_only: not yet confirmed gone."""
        query = "SELECT * FROM instances WHERE (? IS NULL OR job_id = ?)" + (
            " AND gone_at IS NULL" if live_only else ""
        )
        return [Instance(**dict(row)) for row in self._db.execute(query + " ORDER BY rented_at", (job_id, job_id))]

    # events

    def add_event(self, job_id: str, kind: str, detail: str = "") -> None:
        with self._write() as db:
            self._event(db, job_id, kind, detail)

    def events(self, job_id: str) -> list[Event]:
        rows = self._db.execute("SELECT * FROM events WHERE job_id = ? ORDER BY seq", (job_id,))
        return [Event(row["job_id"], row["at"], row["kind"], row["detail"], row["seq"]) for row in rows]

    def last_event(self, job_id: str, kinds: tuple[str, ...]) -> Event | None:
        """The job's latest event of one of these kinds (whether an outage it announced has ended, say)."""
        marks = ",".join("?" for _ in kinds)
        row = self._db.execute(
            f"SELECT * FROM events WHERE job_id = ? AND kind IN ({marks}) ORDER BY seq DESC LIMIT 1", (job_id, *kinds)
        ).fetchone()
        return Event(row["job_id"], row["at"], row["kind"], row["detail"], row["seq"]) if row else None

    def add_event_once(self, job_id: str, kind: str, detail: str) -> bool:
        """Add the event unless the job has one of this kind and detail already (a first alert of its kind):
        checked in the write lock, so two processes seeing the same news add it once. True if added."""
        with self._write() as db:
            seen = db.execute(
                "SELECT 1 FROM events WHERE job_id = ? AND kind = ? AND detail = ?", (job_id, kind, detail)
            ).fetchone()
            if seen is None:
                self._event(db, job_id, kind, detail)
            return seen is None

    # notifications: each event is sent once to each target, by whichever process claims it first

    def unsent_events(self, job_id: str, kinds: frozenset[str], target: int, max_attempts: int) -> list[Event]:
        """The job's events of these kinds not sent to target yet that may be tried now (unclaimed, or a
        failed try's wait is over, attempts left), oldest first. A read: claim each before sending it."""
        marks = ",".join("?" for _ in kinds)
        rows = self._db.execute(
            f"SELECT e.* FROM events e LEFT JOIN notifications n ON n.event_seq = e.seq AND n.target = ?"
            f" WHERE e.job_id = ? AND e.kind IN ({marks}) AND (n.event_seq IS NULL"
            f" OR (n.sent_at IS NULL AND n.attempts < ? AND n.next_try_at <= ?)) ORDER BY e.seq",
            (target, job_id, *sorted(kinds), max_attempts, time.time()),
        )
        return [Event(row["job_id"], row["at"], row["kind"], row["detail"], row["seq"]) for row in rows]

    def claim_notification(self, event_seq: int, target: int, hold_s: float, max_attempts: int) -> bool:
        """Take the event's notification to target for hold_s seconds, atomically: True for exactly one of
        the processes asking at once; False when it is sent, held by another, waiting or out of attempts."""
        now = time.time()
        key = (event_seq, target)
        with self._write() as db:
            row = db.execute("SELECT * FROM notifications WHERE event_seq = ? AND target = ?", key).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO notifications (event_seq, target, attempts, next_try_at) VALUES (?, ?, 1, ?)",
                    (*key, now + hold_s),
                )
                return True
            if row["sent_at"] is not None or row["attempts"] >= max_attempts or row["next_try_at"] > now:
                return False
            db.execute(
                "UPDATE notifications SET attempts = attempts + 1, next_try_at = ? WHERE event_seq = ? AND target = ?",
                (now + hold_s, *key),
            )
            return True

    def notification_sent(self, event_seq: int, target: int) -> None:
        """Sent: never again, whoever asks. Also for a notification the job's host sent itself."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO notifications (event_seq, target, attempts, next_try_at, sent_at) VALUES (?, ?, 1, ?, ?)"
                " ON CONFLICT(event_seq, target) DO UPDATE SET sent_at = COALESCE(sent_at, excluded.sent_at),"
                " error = NULL",
                (event_seq, target, now, now),
            )

    def notification_failed(self, event_seq: int, target: int, error: str, retry_in_s: float) -> None:
        """A try failed (error: scrubbed of the URLs): the next may come after retry_in_s."""
        with self._write() as db:
            db.execute(
                "UPDATE notifications SET error = ?, next_try_at = ?"
                " WHERE event_seq = ? AND target = ? AND sent_at IS NULL",
                (error, time.time() + retry_in_s, event_seq, target),
            )

    def notification(self, event_seq: int, target: int) -> dict[str, Any] | None:
        """The notification's row (attempts, next_try_at, sent_at, error); None if never claimed."""
        row = self._db.execute(
            "SELECT * FROM notifications WHERE event_seq = ? AND target = ?", (event_seq, target)
        ).fetchone()
        return dict(row) if row else None

    @staticmethod
    def _event(db: sqlite3.Connection, job_id: str, kind: str, detail: str) -> None:
        db.execute(
            "INSERT INTO events (job_id, at, kind, detail) VALUES (?, ?, ?, ?)", (job_id, time.time(), kind, detail)
        )


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values.pop("seq")
    values["state"] = JobState(values["state"])
    values["document"] = json.loads(values.pop("spec"))
    values["snapshot"] = json.loads(values["snapshot"]) if values.get("snapshot") else None
    values["keep"] = bool(values.get("keep"))
    return Job(**values)
