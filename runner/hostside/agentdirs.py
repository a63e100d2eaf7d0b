"""Old agent folders on a host. Standard library only, Python >= 3.7.

Each version of runner's agent lives in ROOT/hostside-<hash>/, and a job keeps running the one it
was started with until it ends: its monitor window runs that agent.py, the other windows its
window.sh, and run.sh takes the last snapshot with it. An install of a new version asks its own
agent to remove the folders no running job needs, so upgrades do not pile folders up.

A folder is in use while a live process names it on its command line (a job's monitor; another
controller's agent command under way) or while a job with live processes has a run.sh naming it
(the run.sh rule covers a job's whole life: its processes end before its session does). Where /proc
cannot tell, nothing is removed.

The same prune removes the push's part files (ROOT/parts, see transfer.Parts) untouched for a day:
an upload that was cut and never resumed should not keep a host's disk full.
"""

import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import time

FOLDER = re.compile(r"hostside-[0-9a-f]+")
LEFTOVER = re.compile(r"^hostside-[0-9a-f]+\.(?:tmp|old)\.[0-9]+$")  # an install that was cut short
LEFTOVER_AGE_S = 600  # an install under way now (its tar still arriving) is younger than this
SCRIPT_BYTES = 64 * 1024  # run.sh is a page of text; a bigger file is not runner's
JOB_ID = re.compile(r"^[0-9a-f]{8,64}$")  # the store's ids are 8 hex digits
CONTAINER_RUN = 'docker run "${flags[@]}" '  # container.sh's run line: the image is its next word
IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")  # never an option, never a path
PARTS_FOLDER = "parts"
PART_SUFFIX = ".runner-part"
PART_MAX_AGE_S = 24 * 3600


def prune(root, current, running_ids):
    """Remove the agent folders under root other than current that no running job uses; running_ids
    are the job ids with live processes (None: unknown, then every job without an exit code counts)."""
    remove_old_parts(os.path.join(root, PARTS_FOLDER), PART_MAX_AGE_S)
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


def remove_jobs(root, job_ids, running_ids, sessions, dry_run=False):
    """Remove the folders ROOT/jobs/ID of finished jobs (`runner prune`), reporting the bytes each
    freed (as du counts them: blocks, a hard-linked file only with its last link). A job whose
    processes or tmux session live here is kept whatever the controller thinks of it, and so is every
    job where /proc cannot tell; running_ids and sessions are the agent's probes (sessions None: tmux
    could not be asked). With dry_run, what would be removed and its size, and nothing is touched."""
    jobs = os.path.join(root, "jobs")
    removed, kept, links = [], [], {}
    for job_id in job_ids:
        path = os.path.join(jobs, job_id)
        reason = _why_kept(path, job_id, running_ids, sessions)
        if reason:
            kept.append({"id": job_id, "reason": reason})
            continue
        size = _disk_bytes(path, links)
        if dry_run or not os.path.exists(path):
            removed.append({"id": job_id, "bytes": size})
            continue
        image = job_image(path)  # read first: container.sh goes with the rest
        failures = _remove_tree(path)
        if image and any(_denied(error) for _, error in failures):  # then its folders are not empty either
            _remove_as_the_container_wrote(path, image)
            failures = _remove_tree(path)
        if failures:  # what went is freed all the same; the rest stays, and the job's records with it
            left = _disk_bytes(path, {})
            reason = "not all removed: %s: %s" % failures[0]
            kept.append({"id": job_id, "reason": reason, "bytes": max(0, size - left)})
        else:
            removed.append({"id": job_id, "bytes": size})
    return {"removed": removed, "kept": kept}


def _remove_tree(path):
    """rmtree, going on past what cannot be removed; the failures, as (path, error)."""
    failures = []
    shutil.rmtree(path, onerror=lambda _call, name, info: failures.append((name, info[1])))
    return failures


def _denied(error):
    return isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM)


def job_image(job_dir):
    """The image a container job ran in, from its container.sh (runner.jobs.jobscript.CONTAINER_SH);
    None for a job on the host itself, or anything that does not look like an image reference."""
    try:
        with open(os.path.join(job_dir, "container.sh"), "rb") as handle:
            lines = handle.read(SCRIPT_BYTES).decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(CONTAINER_RUN):
            words = shlex.split(line[len(CONTAINER_RUN) :])
            return words[0] if words and IMAGE_REF.match(words[0]) else None
    return None


def _remove_as_the_container_wrote(path, image):
    """A container job's files are written by the container's user (root, in most images), which the
    host's user may not remove; a container of the job's own image (it is on the host: the job ran
    in it) removes them as they were written, with nothing but the folder mounted."""
    argv = ["docker", "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", "find",
            "-v", "%s:/prune" % path, image, "/prune", "-mindepth", "1", "-delete"]  # fmt: skip
    try:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False)
    except (OSError, subprocess.SubprocessError):
        pass  # no docker here, or it hung: the second rmtree reports what stays


def _why_kept(path, job_id, running_ids, sessions):
    if not JOB_ID.match(job_id):
        return "not a job id"
    if not os.path.lexists(path):
        return None  # gone already: nothing to free, nothing to keep
    if os.path.islink(path) or not os.path.isdir(path):
        return "not a job folder"
    if running_ids is None:
        return "this host cannot tell whether its processes run"
    if job_id in running_ids:
        return "its processes are running on the host"
    spec = _read_json(os.path.join(path, "spec.json"))
    if sessions and isinstance(spec, dict) and spec.get("session") in sessions:
        return "its tmux session is alive on the host"
    return None


def _disk_bytes(path, links):
    """Blocks under path, as du counts them; links counts the hard links of inodes met so far
    (across a whole prune: a file linked into two removed jobs counts once, with its last link)."""
    total = 0
    for entry in _entries(path):
        try:
            info = os.lstat(entry)
        except OSError:
            continue  # gone meanwhile
        if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
            key = (info.st_dev, info.st_ino)
            links[key] = links.get(key, 0) + 1
            if links[key] != info.st_nlink:
                continue  # another link stays (or comes later): its blocks are not freed here
        total += info.st_blocks * 512
    return total


def _entries(path):
    """path and everything under it, symlinks not followed."""
    if not os.path.lexists(path):
        return
    yield path
    for folder, subfolders, names in os.walk(path):
        for name in subfolders + names:
            yield os.path.join(folder, name)


def _read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def remove_old_parts(folder, max_age_s):
    """Delete the part files in folder last written more than max_age_s ago; one an upload holds
    (locked: it is being written or placed) is left. Returns the names removed."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    removed = []
    for name in names:
        path = os.path.join(folder, name)
        if not name.endswith(PART_SUFFIX) or os.path.islink(path) or not os.path.isfile(path):
            continue
        if _age(path) <= max_age_s:
            continue
        try:
            with open(path, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
        except OSError:
            continue  # locked by an upload, or gone meanwhile
        removed.append(name)
    return removed


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
