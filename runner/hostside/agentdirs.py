"""Old agent folders on a host. Standard library only, Python >= 3.7.

Each version of runner's agent lives in ROOT/hostside-<hash>/, and a job keeps running the one it
was started with until it ends: its monitor window runs that agent.py, the other windows its
window.sh, and run.sh takes the last snapshot with it. An install of a new version asks its own
agent to remove the folders no running job needs, so upgrades do not pile folders up.

A folder is in use while a live process names it on its command line (a job's monitor; another
controller's agent command under way) or while a job with live processes has a run.sh naming it
(the run.sh rule covers a job's whole life: its processes end before its session does). Where /proc
cannot tell, nothing is removed.
"""

import os
import re
import shutil
import time

FOLDER = re.compile(r"hostside-[0-9a-f]+")
LEFTOVER = re.compile(r"^hostside-[0-9a-f]+\.(?:tmp|old)\.[0-9]+$")  # an install that was cut short
LEFTOVER_AGE_S = 600  # an install under way now (its tar still arriving) is younger than this
SCRIPT_BYTES = 64 * 1024  # run.sh is a page of text; a bigger file is not runner's


def prune(root, current, running_ids):
    """Remove the agent folders under root other than current that no running job uses; running_ids
    are the job ids with live processes (None: unknown, then every job without an exit code counts)."""
    if not os.path.isdir("/proc"):
        return {"removed": [], "kept": []}
    used = named_by_processes() | named_by_running_jobs(root, running_ids)
    removed, kept = [], []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name == current or os.path.islink(path) or not os.path.isdir(path):
            continue
        if FOLDER.fullmatch(name):
            (kept if name in used else removed).append(name)
        elif LEFTOVER.match(name) and _age(path) > LEFTOVER_AGE_S:
            removed.append(name)
    for name in removed:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return {"removed": removed, "kept": kept}


def named_by_processes():
    names = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                names.update(FOLDER.findall(handle.read().decode("utf-8", "replace")))
        except OSError:
            continue  # ended meanwhile, or another user's
    return names


def named_by_running_jobs(root, running_ids):
    names = set()
    jobs = os.path.join(root, "jobs")
    try:
        ids = os.listdir(jobs)
    except OSError:
        return names
    for job_id in ids:
        job_dir = os.path.join(jobs, job_id)
        if running_ids is None:
            running = not os.path.exists(os.path.join(job_dir, "exit_code"))
        else:
            running = job_id in running_ids
        if not running:
            continue
        try:
            with open(os.path.join(job_dir, "run.sh"), "rb") as handle:
                names.update(FOLDER.findall(handle.read(SCRIPT_BYTES).decode("utf-8", "replace")))
        except OSError:
            continue
    return names


def _age(path):
    try:
        return time.time() - os.path.getmtime(path)
    except OSError:
        return 0.0
