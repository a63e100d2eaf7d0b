#!/usr/bin/env python3
"""runner's host-side agent. Standard library only, Python >= 3.7: job images can be old.

Subcommands (each prints one JSON document on stdout, except `monitor`):
  probe JOB_DIR...           per job: tmux session alive?, exit code, last line, the monitor's snapshot
  manifest [--defer-hash-over=N] ROOT GLOB...
                             files under ROOT matching the globs: path, size, mtime, sha256
  send ROOT PATH OFFSET      PATH's bytes from OFFSET on stdout; its sha256 and stability on stderr
  tree ROOT                  every file under ROOT with its sha256, and the host's parts of
                             interrupted uploads (ROOT is made when missing: a push's destination)
  part-size SHA256 SIZE      bytes already received of the file of that content
  receive ROOT PATH SIZE MTIME_NS MODE OFFSET SHA256
                             PATH's bytes from OFFSET on stdin, then its sha256: placed only when
                             whole and verified; collected in the part of SHA256 (the content)
  receive-batch ROOT         a JSON line of files, then a tar stream of them, each verified
  remove-parts ROOT PART...  delete part files an older agent left in ROOT (they are in ~/.runner/parts now)
  kill JOB_ID                SIGKILL every process of this user whose environment carries the job's id
  stop JOB_DIR               Ctrl-C the training, recorded under the job's lock, unless it has ended already
  notified JOB_DIR           the records of the notifications the job's host sent or is sending (notify.py)
  facts ROOT                 OS, Python, tmux, docker, free disk under ROOT, GPUs
  monitor JOB_DIR            the monitor window: status.json and telemetry.jsonl every interval
  snapshot JOB_DIR           one such snapshot (run.sh takes a last one when the training ends)
  plotdata JOB_DIR           what `runner plot` draws: telemetry.jsonl (at most PLOT_MAX_POINTS samples,
                             evenly spaced) and the results file's rows
  prune                      remove the other agent folders beside this one that no running job uses,
                             and part files untouched for a day
  remove-jobs [--dry-run] ID...
                             remove these finished jobs' folders (none whose processes live), with the bytes freed
  datacheck WORKDIR          the dataset check (preflight): the data YAML's description, as JSON on stdin,
                             checked against the files under WORKDIR; the report
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HOST_PACKAGE = "hostside"


def _as_package(name):
    """Run as a script on a host (`python agent.py`), the agent makes its folder the package `name`
    and takes the folder off sys.path: its siblings are then imported by the same relative imports as
    on the controller (runner.hostside.*), each under one name, so no module (and no class such as
    HashCache) can exist twice in one process."""
    import types

    folder = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != folder]
    package = types.ModuleType(name)
    package.__path__ = [folder]
    sys.modules[name] = package
    return name


if not __package__:
    __package__ = _as_package(HOST_PACKAGE)

# Each command imports the sibling modules it needs, when it runs: a probe (every `runner status`)
# should not pay for the transfer code or the monitor's parsers.
from .hostfiles import PROTOCOL, TAIL_BYTES, read_int, read_json, read_tail  # noqa: E402, F401  (TAIL_BYTES: the tests' bound)

TRANSFER_COMMANDS = ("manifest", "tree", "part-size", "receive", "receive-batch", "send", "remove-parts")

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
RECORDER_LINE = re.compile(r"^Script (started|done) on ")
PLOT_MAX_POINTS = 5000  # weeks of 10 s samples would be megabytes of JSON; a plot needs a few thousand points


def last_line(log_path):
    """The last visible line of a log: after the last \\r or \\n, without ANSI codes."""
    tail = read_tail(log_path)
    if tail is None:
        return None
    for segment in reversed(re.split(r"[\r\n]", ANSI.sub("", tail))):
        text = segment.strip()
        if text and not RECORDER_LINE.match(text):
            return text
    return None


def read_exit_code(job_dir):
    return read_int(os.path.join(job_dir, "exit_code"))


def tmux_sessions():
    """The names of tmux's sessions; None when tmux could not be asked (then no job is declared lost)."""
    try:
        done = subprocess.run(
            ["tmux", "list-sessions", "-F", "#{session_name}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode == 0:
        return set(done.stdout.split())
    no_server = "no server running" in done.stderr or (
        "error connecting" in done.stderr and "No such file" in done.stderr
    )
    return set() if no_server else None


def probe(job_dirs):
    # Sessions first, exit codes second: run.sh writes exit_code before it ends the session,
    # so a session seen gone with no exit code afterwards really died without finishing.
    sessions = tmux_sessions()
    running_ids = job_ids_with_processes()
    jobs = {}
    for job_dir in job_dirs:
        spec = read_json(os.path.join(job_dir, "spec.json")) or {}
        jobs[job_dir] = {
            "exists": os.path.isdir(job_dir),
            "session": spec.get("session"),
            "session_alive": None if sessions is None else spec.get("session") in sessions,
            # A second witness: tmux's socket can vanish (tmp cleaners) while the training runs on.
            "processes_alive": None if running_ids is None else spec.get("id") in running_ids,
            "exit_code": read_exit_code(job_dir),
            "exit_age_s": _age(os.path.join(job_dir, "exit_code")),
            "last_line": last_line(os.path.join(job_dir, "train.log")),
            "snapshot": _fresh_snapshot(job_dir),
        }
        # Read after the exit code: once the training has ended no stop can be delivered, so the two agree.
        stop = _stop(job_dir)
        jobs[job_dir].update(stop_delivered=stop is not None, stop=stop)
        _touch_lease(job_dir)
    return {"jobs": jobs}


def _touch_lease(job_dir):
    """A controller has looked at the job: a rented instance's safety net (runner.provision.vast.safetynet)
    ends the instance only once none has for a while. Best effort: a full disk or a gone job is no error."""
    if os.path.isdir(job_dir):
        try:
            with open(os.path.join(job_dir, "lease"), "a"):
                pass
            os.utime(os.path.join(job_dir, "lease"), None)
        except OSError:
            pass


def _age(path):
    """Seconds since path was written, by this host's clock (the controller's may differ)."""
    try:
        return max(0.0, time.time() - os.path.getmtime(path))
    except OSError:
        return None


def _fresh_snapshot(job_dir):
    """The monitor's latest snapshot, with the progress read now: the monitor writes every 10 s or
    so, and the progress line moves faster than that."""
    snapshot = read_json(os.path.join(job_dir, "status.json"))
    if snapshot:
        from . import progress

        snapshot["progress"] = progress.parse_log_tail(read_tail(os.path.join(job_dir, "train.log")) or "")
        if os.path.isdir(os.path.join(job_dir, "notified")):  # the host sends this job's notifications
            from . import notify

            snapshot["notified"] = notify.records(job_dir)
    return snapshot


def _stop(job_dir):
    from . import jobend  # a few lines of reading: no parsers come with it

    return jobend.read_stop(job_dir)


def stop_training(job_dir):
    """`runner stop`: the stop delivered (recorded, then Ctrl-C) only if the training has not ended."""
    from . import jobend

    spec = read_json(os.path.join(job_dir, "spec.json")) or {}
    return jobend.deliver_stop(job_dir, spec.get("session"), by="runner stop")


def job_ids_with_processes():
    """The RUNNER_JOB_ID values of this user's live processes; None where /proc cannot tell."""
    if not os.path.isdir("/proc"):
        return None
    found = set()
    for pid in _pids():
        try:
            with open("/proc/%d/environ" % pid, "rb") as handle:
                for entry in handle.read().split(b"\0"):
                    if entry.startswith(b"RUNNER_JOB_ID="):
                        found.add(entry.split(b"=", 1)[1].decode("ascii", "replace"))
        except OSError:
            continue
    return found


def kill_job_processes(job_id):
    marker = ("RUNNER_JOB_ID=" + job_id).encode()
    killed = []
    for pid in _pids():
        try:
            with open("/proc/%d/environ" % pid, "rb") as handle:
                if marker not in handle.read().split(b"\0"):
                    continue
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (OSError, ProcessLookupError):
            continue
    return {"killed": killed}


def facts(root):
    folder = root
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder) or "/"
    gpus, gpu_pick = _gpus_and_pick()
    return {
        "os": _os_name(),
        "python": "%d.%d.%d" % sys.version_info[:3],
        "tmux": _first_line(["tmux", "-V"]),
        "docker": _first_line(["docker", "--version"]),
        "disk_free_bytes": shutil.disk_usage(folder).free,
        "gpus": gpus,
        "gpu_pick": gpu_pick,
    }


def _os_name():
    try:
        with open("/etc/os-release") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return sys.platform


def _first_line(argv):
    lines = _output(argv).strip().splitlines()
    return lines[0].strip() if lines else None


def _gpus_and_pick():
    from . import gpuident  # lazily, as for `monitor`: probes and transfers need none of its readers

    argvs = gpuident.tool_argvs()
    outputs = {tool: _output(argv) or None for tool, argv in argvs.items() if tool != "nvidia-smi"}
    outputs["nvidia-smi"] = None
    # The plain table is for drivers too old for compute_cap, which fail the whole query.
    if outputs["nvidia-smi-query"] is None and shutil.which("nvidia-smi"):
        outputs["nvidia-smi"] = _output(argvs["nvidia-smi"]) or None
    found = gpuident.identify(outputs)
    chosen, reason = gpuident.pick(found)
    pick = None
    if chosen is not None:
        pick = {"index": chosen["index"], "vendor": chosen["vendor"], "name": chosen["name"], "reason": reason}
    return found, pick


def _output(argv):
    """What argv printed, or "" when it is missing or failed (a broken driver is "no GPU" here)."""
    try:
        # Replaced, not refused: a stray byte in a tool's output (a `°C`, a locale of ASCII) must not end the agent.
        done = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            encoding="utf-8",
            errors="replace",
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def _pids():
    own = os.getpid()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != own:
            yield int(name)


def plot_data(job_dir, max_points=PLOT_MAX_POINTS):
    """telemetry.jsonl, thinned to at most max_points samples, and the results file's rows, in one answer."""
    telemetry, lines = sample_jsonl(os.path.join(job_dir, "telemetry.jsonl"), max_points)
    return {"telemetry": telemetry, "telemetry_lines": lines, "results": _results_rows(os.path.join(job_dir, "work"))}


def sample_jsonl(path, max_points):
    """Every stride-th line from the first, and the last line, in one pass and bounded memory: the
    stride doubles whenever more than max_points lines are kept, so a file of any length gives between
    max_points / 2 and max_points + 1 evenly spaced samples. Lines that are not JSON (the one the
    monitor is writing now) are left out. Returns (samples, lines in the file)."""
    kept, stride, count, last = [], 1, 0, None
    try:
        with open(path, "rb") as handle:
            for count, line in enumerate(handle, 1):
                last = line
                if (count - 1) % stride == 0:
                    kept.append(line)
                    if len(kept) > max_points:
                        kept, stride = kept[::2], stride * 2
    except OSError:
        return [], 0
    if last is not None and (count - 1) % stride:
        kept.append(last)
    samples = []
    for line in kept:
        try:
            samples.append(json.loads(line.decode("utf-8", "replace")))
        except ValueError:
            continue
    return samples, count


def _results_rows(work_dir):
    # Lazily, as for the `monitor` command: probes and transfers need none of their parsers.
    from . import monitor, progress

    path = monitor.find_results(work_dir)
    if path is None:
        return {"file": None, "rows": []}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return {"file": None, "rows": []}
    parse = progress.parse_results_csv if path.endswith(".csv") else progress.parse_results_txt
    return {"file": os.path.relpath(path, work_dir), "rows": parse(text)["rows"]}


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    command, args = argv[1], argv[2:]
    needed = {
        "monitor": 1,
        "snapshot": 1,
        "manifest": 1,
        "send": 3,
        "kill": 1,
        "stop": 1,
        "notified": 1,
        "facts": 1,
        "tree": 1,
        "part-size": 2,
        "receive": 7,
        "receive-batch": 1,
        "remove-parts": 1,
        "plotdata": 1,
        "datacheck": 1,
    }
    if len(args) < needed.get(command, 0):
        sys.stderr.write("agent: %s needs %d arguments\n" % (command, needed[command]))
        return 2
    if command in ("monitor", "snapshot"):
        from . import monitor  # here, not at the top: probes and transfers need none of its parsers

        monitor.run(args[0], once=command == "snapshot")
        return 0
    if command == "send":
        return _send(*args[:3])
    if command in TRANSFER_COMMANDS:
        result = _transfer_command(command, args)
    elif command == "probe":
        result = probe(args)
    elif command == "kill":
        result = kill_job_processes(args[0])
    elif command == "stop":
        result = stop_training(args[0])
    elif command == "notified":
        from . import notify  # here, not at the top: only a job whose host sends notifications needs it

        result = {"records": notify.records(args[0])}
    elif command == "facts":
        result = facts(args[0])
    elif command == "plotdata":
        result = plot_data(args[0])
    elif command == "prune":
        from . import agentdirs  # here, not at the top: only an install of a new version needs it

        folder = os.path.dirname(os.path.abspath(__file__))
        result = agentdirs.prune(os.path.dirname(folder), os.path.basename(folder), job_ids_with_processes())
    elif command == "remove-jobs":
        result = _remove_jobs(args)
    elif command == "datacheck":
        from . import datacheck  # here, not at the top: only a submit's preflight needs the checker

        result = datacheck.check(json.load(sys.stdin), args[0])
    else:
        sys.stderr.write("agent: unknown command %r\n" % command)
        return 2
    answer = {"protocol": PROTOCOL}  # first: a reader of another protocol sees it before anything else
    answer.update(result)
    json.dump(answer, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _transfer_command(command, args):
    from . import transfer

    if command == "manifest":
        defer_over = None
        if args[0].startswith("--defer-hash-over="):
            defer_over, args = int(args[0].split("=", 1)[1]), args[1:]
        return transfer.manifest(args[0], args[1:], defer_over)
    if command == "tree":
        return transfer.tree(args[0])
    if command == "part-size":
        return transfer.part_size(args[0], int(args[1]))
    if command == "remove-parts":
        return transfer.remove_parts(args[0], args[1:])
    if command == "receive":
        root, rel, size, mtime_ns, mode, offset, sha256 = args[:7]
        return transfer.receive(
            root, rel, int(size), int(mtime_ns), int(mode, 8), int(offset), sha256, sys.stdin.buffer
        )
    return transfer.receive_batch(args[0], sys.stdin.buffer)


def _remove_jobs(args):
    from . import agentdirs  # here, not at the top: only `runner prune` needs it

    dry_run = args[:1] == ["--dry-run"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ids = args[1:] if dry_run else args
    return agentdirs.remove_jobs(root, ids, job_ids_with_processes(), tmux_sessions(), dry_run)


def _send(root, rel, offset):
    """The data on stdout; the report, as the last line of stderr."""
    from . import transfer

    try:
        report = transfer.send(root, rel, int(offset), sys.stdout.buffer)
    except OSError as error:
        failure = {"protocol": PROTOCOL, "error": "%s: %s" % (rel, error.strerror or error)}
        sys.stderr.write("%s\n" % json.dumps(failure))
        return 1
    report["protocol"] = PROTOCOL
    sys.stderr.write("%s\n" % json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
