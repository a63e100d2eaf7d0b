"""The agent's answers as the controller reads them, and what it does on meeting an agent of another
protocol (runner/hostside/hostfiles.py PROTOCOL; an answer without one is protocol 0, from before
protocols).

Two agents can answer: the one this runner runs (in the folder named by its files' hash, so another
protocol there means the folder's files are not what its name says) and a running job's monitor,
which runs the agent the job was started with and writes status.json. Both are checked in the probe
answer `runner status` already fetches, so the check costs no round trip until it finds a mismatch;
then one line on stderr says so, this runner's agent is put in place, and the command goes on. The
job's training is never touched: at most its monitor window is restarted with this agent.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import sys
from typing import Any, TypedDict, cast

from runner.base.errors import RunnerError
from runner.hosts.base import Host
from runner.hostside.hostfiles import PROTOCOL
from runner.jobs import session
from runner.jobs.layout import agent_argv, install_hostside, run_agent


class HostRecord(TypedDict):
    """One notification the job's host sent or is sending (runner/hostside/notify.py records)."""

    state: str  # sending | waiting (a retry) | sent | failed (after its tries)
    attempts: int
    error: str | None  # the last failure, without the URL
    abandoned: bool  # not sent, and no host process takes it up any more: the controller's to send


class Snapshot(TypedDict, total=False):
    """status.json, as runner/hostside/monitor.py writes it (older protocols may lack keys)."""

    protocol: int
    updated_at: float
    progress: dict[str, Any]  # runner/hostside/progress.py parse_log_tail
    results: dict[str, Any] | None
    gpus: dict[str, Any]  # {"tool", "gpus": [...], "error"}
    system: dict[str, Any]
    exit_code: int | None
    log_grew_at: float
    alerts: list[dict[str, Any]]
    notified: dict[str, HostRecord]  # added by the probe where the host sends notifications: by "EVENT.TARGET"


class ProbedStop(TypedDict, total=False):
    """What newer agents add to a probed job (runner/hostside/jobend.py); absent from older ones."""

    stop_delivered: bool  # a stop came before the training ended
    stop: dict[str, Any] | None  # that stop: {"by": "runner stop" | "max_duration", "message"}


class ProbedJob(ProbedStop):
    exists: bool
    session: str | None  # the job's tmux session, from its spec.json
    session_alive: bool | None  # None: tmux could not be asked
    processes_alive: bool | None  # None: /proc could not tell
    exit_code: int | None
    exit_age_s: float | None
    last_line: str | None
    snapshot: Snapshot | None


class ProbeAnswer(TypedDict):
    protocol: int
    jobs: dict[str, ProbedJob]  # by job directory


def protocol_of(document: object) -> int:
    found = document.get("protocol") if isinstance(document, dict) else None
    return found if isinstance(found, int) else 0


def probe_answer(host: Host, job_dirs: list[str]) -> ProbeAnswer:
    """The agent's probe of these jobs on the host: one round trip, and more only when an agent of
    another protocol answered (this runner's is put in place, and asked again)."""
    answer = _probe_once(host, job_dirs)
    if protocol_of(answer) != PROTOCOL:
        _say(f"host '{host.name}' had runner's agent protocol {protocol_of(answer)}; installed protocol {PROTOCOL}")
        install_hostside(host, replace=True)
        answer = _probe_once(host, job_dirs)
    _replace_old_monitors(host, answer)
    return answer


def host_records(found: object) -> dict[str, HostRecord]:
    """The host's notification records, as far as they are well formed: what a host sends is untrusted."""
    records: dict[str, HostRecord] = {}
    for key, record in (found if isinstance(found, dict) else {}).items():
        if not isinstance(key, str) or not isinstance(record, dict) or not isinstance(record.get("state"), str):
            continue
        error = record.get("error")
        attempts = record.get("attempts")
        records[key[:64]] = HostRecord(
            state=record["state"][:16],
            attempts=attempts if isinstance(attempts, int) else 1,
            error=error[:300] if isinstance(error, str) else None,
            abandoned=record.get("abandoned") is True,
        )
    return records


def notification_records(host: Host, job_dir: str) -> dict[str, HostRecord]:
    """The job's notification records as its host holds them now: one round trip (agent `notified`)."""
    result = run_agent(host, "notified", job_dir, timeout=host.patience).check()
    try:
        answer = json.loads(result.text)
    except ValueError as exc:
        raise RunnerError(f"host '{host.name}': the agent's notified answered unreadable output ({exc})") from None
    return host_records(answer.get("records") if isinstance(answer, dict) else None)


def _probe_once(host: Host, job_dirs: list[str]) -> ProbeAnswer:
    result = run_agent(host, "probe", *job_dirs, timeout=host.patience).check()
    try:
        answer = json.loads(result.text)
    except ValueError as exc:
        raise RunnerError(f"host '{host.name}': the agent's probe answered unreadable output ({exc})") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("jobs"), dict):  # every protocol's probe has it
        raise RunnerError(f"host '{host.name}': the agent's probe answered no jobs") from None
    return cast(ProbeAnswer, answer)


def _replace_old_monitors(host: Host, answer: ProbeAnswer) -> None:
    """Restart the monitor window of each running job whose status.json came from another protocol's
    agent (a job started by an older runner) with this one; the training and its session go on."""
    old = {job_dir: seen for job_dir, seen in answer["jobs"].items() if _runs_old_monitor(seen)}
    if not old:
        return
    commands = []
    for job_dir, seen in old.items():
        commands.append(shlex.join(_respawn_monitor_argv(seen["session"] or "", agent_argv(host, "monitor", job_dir))))
    # One round trip for all of them; a job that ended meanwhile has no window to restart.
    host.run(["sh", "-c", " ; ".join(f"{command} 2>/dev/null" for command in commands) + " ; true"]).check()
    jobs = ", ".join(posixpath.basename(job_dir) for job_dir in old)
    protocols = ", ".join(sorted({str(protocol_of(seen["snapshot"])) for seen in old.values()}))
    _say(f"host '{host.name}': job {jobs} ran runner's agent protocol {protocols}; restarted its monitor with "
         f"protocol {PROTOCOL} (the training is untouched)")  # fmt: skip


def _respawn_monitor_argv(session_name: str, command: list[str]) -> list[str]:
    # -k: the old monitor is ended first; the session and its other windows, the training among them,
    # go on as they were. No -c: tmux < 2.6 lacks it there, and the monitor's command names absolute paths.
    return ["tmux", "respawn-window", "-k", "-t", session.target(session_name, "monitor"), shlex.join(command)]


def _runs_old_monitor(seen: ProbedJob) -> bool:
    snapshot = seen.get("snapshot")
    alive = seen["session_alive"] is True and seen["exit_code"] is None and bool(seen.get("session"))
    return alive and bool(snapshot) and protocol_of(snapshot) != PROTOCOL


def _say(line: str) -> None:
    # Here, not through the CLI's console: whichever command met the agent says it, on stderr, so a
    # --json document on stdout stays the only thing there.
    sys.stderr.write(f"runner: {line}\n")
    sys.stderr.flush()
