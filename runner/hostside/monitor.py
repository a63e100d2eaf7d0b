"""The monitor window: every interval, one snapshot of the job (progress, results, GPUs, the machine,
alerts) written atomically to status.json, and one line appended to telemetry.jsonl.

Standard library only, Python >= 3.7. Every read is bounded: the log's last 64 KiB, the results
file (one row per epoch), one call of the GPU tool; a snapshot costs the same for a 1 GB log as for
a 1 MB one. `runner status` reads status.json in the one probe per host.

A full disk must not blind it: status.json is written into space reserved at the start
(jobend.write_status), so a disk_full alert still reaches `runner status` while the disk is full; a
failed write of either file leaves the last good snapshot and no temporary file. The monitor also
enforces the job's `resources.max_duration` on the host, whatever runs the controller: at the limit
it stops the training as `runner stop` does (Ctrl-C, then a kill after STOP_GRACE_S).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

from . import alerts, gpus, jobend, notify, progress
from .hostfiles import PROTOCOL, read_int, read_json, read_tail

RESULTS_RESCAN_S = 60  # finding the results file walks runs/: not at every snapshot
PREHASH_EVERY_S = 60  # new checkpoints are hashed ahead of a fetch this often...
PREHASH_BUDGET_BYTES = 4 * 1024**3  # ...and at most this much per turn (a few seconds of one core)
GPU_TOOL_TIMEOUT_S = 10
STOP_GRACE_S = 10.0  # max_duration's Ctrl-C, then the kill: `runner stop`'s default grace
DEFAULT_SETTINGS = {
    "interval": 10.0,
    "stalled_after": 900.0,
    "gpu_temp_limits": {},
    "min_free_disk": 0.05,
}  # the job file's `monitor`
GPU_TOOLS = (  # (program, argv, parser): the first one present is used
    ("nvidia-smi", gpus.nvidia_smi_argv, gpus.parse_nvidia_smi_csv),
    ("amd-smi", gpus.amd_smi_argv, gpus.parse_amd_smi_json),
    ("rocm-smi", gpus.rocm_smi_argv, gpus.parse_rocm_smi_json),
)


class Monitor(object):
    def __init__(self, job_dir, settings=None, artifact_globs=()):
        self.job_dir = job_dir
        self.settings = dict(DEFAULT_SETTINGS, **(settings or {}))
        self.artifact_globs, self.prehashed_at = list(artifact_globs), 0.0
        self.results_path, self.results_scanned_at = None, 0.0
        self.log_size, self.log_grew_at = None, time.time()
        self.gpu_tool = _first_gpu_tool()
        # A monitor restarted (another agent's protocol) counts from the job's start, not its own.
        earlier = read_json(os.path.join(job_dir, "status.json")) or {}
        started = earlier.get("started_at")
        self.started_at = started if isinstance(started, (int, float)) else time.time()
        self.notifier = notify.Notifier(job_dir, earlier)  # sends only for a job with the host's notify file

    def snapshot(self):
        now = time.time()
        tail = read_tail(os.path.join(self.job_dir, "train.log")) or ""
        parsed = progress.parse_log_tail(tail)
        exit_code = read_int(os.path.join(self.job_dir, "exit_code"))
        snapshot = {
            "protocol": PROTOCOL,
            "updated_at": now,
            "progress": parsed,
            "results": self._results(now),
            "gpus": self._gpus(),
            "system": system_sample(self.job_dir),
            "exit_code": exit_code,
            "log_grew_at": self._log_grew_at(now),
            "started_at": self.started_at,
        }
        snapshot["alerts"] = self._alerts(snapshot, tail, now)
        return snapshot

    def prehash_artifacts(self):
        """Hash new checkpoints between snapshots, so `runner fetch` finds their hashes ready."""
        now = time.time()
        if not self.artifact_globs or now - self.prehashed_at < PREHASH_EVERY_S:
            return
        self.prehashed_at = now
        from .transfer import prehash  # here: only a job with artifacts needs the transfer code

        prehash(os.path.join(self.job_dir, "work"), self.artifact_globs, PREHASH_BUDGET_BYTES)

    def _results(self, now):
        if self.results_path is None or now - self.results_scanned_at > RESULTS_RESCAN_S:
            self.results_path, self.results_scanned_at = find_results(os.path.join(self.job_dir, "work")), now
        if self.results_path is None:
            return None
        try:
            with open(self.results_path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            return None
        parse = progress.parse_results_csv if self.results_path.endswith(".csv") else progress.parse_results_txt
        summary = parse(text)
        return {
            "file": os.path.relpath(self.results_path, os.path.join(self.job_dir, "work")),
            "epochs_done": len(summary["rows"]),
            "latest": summary["latest"],
            "best": summary["best"],
        }

    def _gpus(self):
        if self.gpu_tool is None:
            return {"tool": None, "gpus": [], "error": None}
        program, argv, parse = self.gpu_tool
        try:
            done = subprocess.run(
                argv(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                universal_newlines=True,
                timeout=GPU_TOOL_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as error:
            return {"tool": program, "gpus": [], "error": "tool present but failed: %s" % error}
        return parse(done.stdout)

    def _log_grew_at(self, now):
        try:
            size = os.path.getsize(os.path.join(self.job_dir, "train.log"))
        except OSError:
            size = None
        if size != self.log_size:
            self.log_size, self.log_grew_at = size, now
        return self.log_grew_at

    def _alerts(self, snapshot, tail, now):
        found = alerts.log_alerts(tail, snapshot["progress"].get("losses"))
        found += alerts.gpu_too_hot(snapshot["gpus"]["gpus"], _limits(self.settings["gpu_temp_limits"]))
        system = snapshot["system"]
        found += alerts.disk_almost_full(
            system["disk_free_bytes"], system["disk_total_bytes"], self.settings["min_free_disk"]
        )
        quiet_s = now - snapshot["log_grew_at"]
        if snapshot["exit_code"] is None and quiet_s >= self.settings["stalled_after"]:
            found.append(
                {
                    "kind": "stalled",
                    "quiet_s": round(quiet_s),
                    "message": "no output for %s (limit %s)"
                    % (_duration(quiet_s), _duration(self.settings["stalled_after"])),
                }
            )
        if snapshot["exit_code"] not in (None, 0):
            found.append(
                {
                    "kind": "exited",
                    "exit_code": snapshot["exit_code"],
                    "message": "the training exited with code %d" % snapshot["exit_code"],
                }
            )
        return found


def run(job_dir, once=False):
    """The monitor window's loop: a snapshot every interval, until the session ends."""
    document = read_json(os.path.join(job_dir, "spec.json")) or {}
    spec = document.get("spec") or {}
    globs = [pattern for patterns in (spec.get("artifacts") or {}).values() for pattern in patterns]
    monitor = Monitor(job_dir, spec.get("monitor"), globs)
    limit = Deadline(job_dir, document.get("session"), (spec.get("resources") or {}).get("max_duration"))
    if not once:
        jobend.prepare_status(job_dir)
    while True:
        snapshot = monitor.snapshot()
        write_snapshot(job_dir, snapshot)
        jobend.clean_leftovers(job_dir)
        if not once:
            limit.enforce(monitor.started_at, snapshot["exit_code"])
            _quietly(monitor.prehash_artifacts)  # a full disk fails its hash cache: the next turn tries again
        # After the stop max_duration may have delivered: its news goes out this turn. The final snapshot
        # (once) is the last host process to look, so it waits for due retries.
        _notify(monitor.notifier, snapshot, notify.FINAL_PATIENCE_S if once else 0.0)
        sys.stdout.write("\r\x1b[K%s  %s" % (time.strftime("%H:%M:%S"), summary_line(snapshot)[:200]))
        sys.stdout.flush()
        if once:
            return snapshot
        time.sleep(limit.sleep_before_next(monitor.started_at, monitor.settings["interval"]))


class Deadline(object):
    """`resources.max_duration` on the host: at the limit the stop is delivered as `runner stop` does
    (jobend.deliver_stop: recorded under the job lock, then Ctrl-C), and STOP_GRACE_S later whatever
    is left of the job is killed, its session last (the monitor's own window is in it)."""

    def __init__(self, job_dir, session, max_duration_s, grace_s=STOP_GRACE_S):
        self.job_dir, self.session, self.grace_s = job_dir, session, grace_s
        self.max_duration_s = float(max_duration_s) if max_duration_s else None
        self.delivered_at = None

    def enforce(self, started_at, exit_code):
        if self.max_duration_s is None or exit_code is not None or not self.session:
            return
        now = time.time()
        if self.delivered_at is None:
            if now - started_at >= self.max_duration_s:
                message = "max_duration %s reached" % format_duration(self.max_duration_s)
                try:
                    answer = jobend.deliver_stop(self.job_dir, self.session, by="max_duration", message=message)
                except OSError:
                    return  # not even an empty record fits: the next turn tries again, the monitor lives on
                self.delivered_at = now if answer["delivered"] else None
        elif now - self.delivered_at >= self.grace_s:
            kill_job(self.job_dir, self.session)

    def sleep_before_next(self, started_at, interval):
        """The interval, or less when the limit (or the grace's end) comes sooner."""
        if self.max_duration_s is None:
            return interval
        due = self.delivered_at + self.grace_s if self.delivered_at else started_at + self.max_duration_s
        return max(0.2, min(interval, due - time.time()))


def kill_job(job_dir, session):
    """What `runner stop` does after its grace: the job's container (if it has one), every process
    carrying its RUNNER_JOB_ID, then its tmux session, this monitor with it."""
    spec = read_json(os.path.join(job_dir, "spec.json")) or {}
    if (spec.get("spec") or {}).get("image"):
        _quiet_command(["docker", "rm", "-f", session])  # named as its session; no docker where the host is the image
    if spec.get("id"):
        # The agent's own `kill`, beside this file: one way to find a job's processes (the agent imports
        # this module, so it is run, not imported). This monitor carries no RUNNER_JOB_ID: it lives on.
        agent = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent.py")
        _quiet_command([sys.executable, "-E", "-S", agent, "kill", spec["id"]])
    _quiet_command(["tmux", "kill-session", "-t", "=" + session])


def _quiet_command(argv):
    try:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        pass


def write_snapshot(job_dir, snapshot):
    """status.json (reserved slots, see jobend.write_status) and a line of telemetry.jsonl; a write
    that fails (a full disk) leaves the previous snapshot and the file as they were."""
    try:
        jobend.write_status(job_dir, snapshot)
    except OSError:
        pass  # the last good snapshot stands; the next turn tries again
    append_line(os.path.join(job_dir, "telemetry.jsonl"), json.dumps(telemetry_line(snapshot)) + "\n")


def append_line(path, line):
    """Append line whole or not at all: a half-written one is cut off again (truncating needs no space)."""
    data = line.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        size = os.fstat(fd).st_size
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
    except OSError:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
    finally:
        os.close(fd)


def format_duration(seconds):
    """As the job file says it: 7200 -> 2h, 5400 -> 90m, 45 -> 45s (runner.base.durations')."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return "%g%s" % (seconds / size, unit)
    return "%gs" % seconds


def _notify(notifier, snapshot, patience_s):
    try:
        notifier.turn(snapshot, patience_s)
    except Exception:  # whatever a notification meets, the monitor goes on (the controller sends then)
        pass


def _quietly(action):
    try:
        action()
    except OSError:
        pass


def telemetry_line(snapshot):
    """The time series `runner plot` draws: small, one line per snapshot."""
    got = snapshot["progress"]
    return {
        "protocol": PROTOCOL,
        "t": round(snapshot["updated_at"], 1),
        "epoch": got.get("epoch"),
        "epochs": got.get("epochs"),
        "batch": got.get("batch"),
        "rate_its": got.get("rate_its"),
        "losses": got.get("losses"),
        "load1": snapshot["system"]["load1"],
        "mem_used_mib": snapshot["system"]["mem_used_mib"],
        "gpus": [
            {
                key: gpu.get(key)
                for key in (
                    "index",
                    "util_pct",
                    "vram_used_mib",
                    "vram_total_mib",
                    "temp_edge_c",
                    "temp_junction_c",
                    "temp_mem_c",
                    "power_w",
                )
            }
            for gpu in snapshot["gpus"]["gpus"]
        ],
    }


def summary_line(snapshot):
    got = snapshot["progress"]
    parts = []
    if got.get("epoch"):
        parts.append("epoch %s/%s" % (got["epoch"], got.get("epochs") or "?"))
    if got.get("rate_its"):
        parts.append("%.2f it/s" % got["rate_its"])
    for gpu in snapshot["gpus"]["gpus"]:
        parts.append(
            "gpu%s %s%% %s°C" % (gpu.get("index"), _short(gpu.get("util_pct")), _short(gpu.get("temp_edge_c")))
        )
    parts += ["!" + alert["kind"] for alert in snapshot["alerts"]]
    return "  ".join(parts) or (got.get("last_line") or "(nothing printed yet)")


def find_results(work_dir):
    """The newest results file a trainer writes: ultralytics results.csv or YOLOv7 results.txt."""
    found = []
    for pattern in ("runs/**/results.csv", "runs/**/results.txt", "results.csv", "results.txt"):
        found += glob.glob(os.path.join(glob.escape(work_dir), pattern), recursive=True)
    dated = []
    for path in found:
        try:
            dated.append((os.path.getmtime(path), path))
        except OSError:
            continue
    return max(dated)[1] if dated else None


def system_sample(folder):
    disk = shutil.disk_usage(folder)
    memory = _meminfo()
    total, available = memory.get("MemTotal"), memory.get("MemAvailable")
    return {
        "load1": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "mem_total_mib": total // 1024 if total else None,
        "mem_used_mib": (total - available) // 1024 if total and available is not None else None,
        "disk_free_bytes": disk.free,
        "disk_total_bytes": disk.total,
    }


def _meminfo():
    values = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                number = rest.split()
                if number and number[0].isdigit():
                    values[name] = int(number[0])  # kB
    except OSError:
        pass
    return values


def _first_gpu_tool():
    for tool in GPU_TOOLS:
        if shutil.which(tool[0]):
            return tool
    return None


def _limits(configured):
    """Job-file sensor names (edge, junction, mem) to the GPU readings' keys."""
    return {"temp_%s_c" % sensor: float(limit) for sensor, limit in (configured or {}).items()}


def _duration(seconds):
    seconds = int(seconds)
    if seconds < 120:
        return "%ds" % seconds
    if seconds < 7200:
        return "%dm" % (seconds // 60)
    return "%.1fh" % (seconds / 3600.0)


def _short(value):
    return "?" if value is None else "%.0f" % value
