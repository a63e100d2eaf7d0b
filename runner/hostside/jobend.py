"""How a job's end is recorded on its host, so that a full disk cannot lose it and a stop racing the
training's own end is decided exactly. Standard library only, Python >= 3.7.

- Reserved space: run.sh takes room for the end's records while the disk still has it
  (`exit_code.reserved`, `stop_delivered.reserved`: RESERVE_BYTES of spaces each); a record is
  written over its reserve in place and renamed to its name, which needs no new blocks on the usual
  filesystems (ext4, xfs, tmpfs; a copy-on-write one such as btrfs or ZFS may still need some).
  The monitor's status.json works the same way with two slots (see write_status).
- One lock, the job directory itself (flock, so no file has to be made for it): job.sh marks the
  training's end under it (TRAINING_ENDED), run.sh records the exit code under it, `agent stop` and
  the monitor's max_duration deliver a stop under it, and every status.json write takes it. A stop is
  delivered (recorded, then Ctrl-C sent) only while the training has not ended; so a stop record
  means the stop came first, and an exit code without one means the training had ended by itself
  when any stop arrived. No clock is compared.
"""

import contextlib
import fcntl
import json
import os
import re
import subprocess

EXIT_CODE = "exit_code"
TRAINING_ENDED = "training_ended"  # job.sh's mark, made the moment its last command exits
STOP = "stop_delivered"
STATUS = "status.json"
RESERVED = ".reserved"  # a record's reserve is its name plus this
STATUS_SPARE = STATUS + ".spare"  # the status slot being written next
STATUS_PREVIOUS = STATUS + ".prev"  # the slot just replaced, for a moment, on its way to being the spare
RESERVE_BYTES = 4096  # one block: the exit code and a stop record are a few bytes
STATUS_SLOT_BYTES = 64 * 1024  # a snapshot is a few KiB; a traceback's lines and many GPUs stay under this
LEFTOVER = re.compile(r"^(?:%s|%s)\.tmp$|^%s\.(\d+)\.tmp$" % (EXIT_CODE, STOP, re.escape(STATUS)))


@contextlib.contextmanager
def job_lock(job_dir):
    """The job directory's flock, which run.sh takes too (`flock 9` on `exec 9<.`)."""
    fd = os.open(job_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def reserve(path, size=RESERVE_BYTES):
    """Take size bytes for a record at path + RESERVED, while the disk has them. False if it has not."""
    spare = path + RESERVED
    try:
        if os.path.getsize(spare) >= size:
            return True
    except OSError:
        pass
    try:
        _fill(spare, b"", size)
        return True
    except OSError:
        _remove(spare)  # a short reserve would need new blocks when used: none is better than a false one
        return False


def write_record(path, text):
    """path holds text (and only once whole): written over its reserve when there is one, else through
    a temporary file that is removed again when the write fails. Raises OSError when it cannot be done."""
    data = text.encode("utf-8")
    spare = path + RESERVED
    if os.path.exists(spare):
        try:
            _fill(spare, data, 0)
            _truncate(spare, len(data))
            os.replace(spare, path)
            return
        except OSError:
            pass  # the plain way below may still find room
    temporary = path + ".tmp"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except OSError:
        _remove(temporary)
        raise


def read_stop(job_dir):
    """The delivered stop: {"by", "message"}, or None when no stop was delivered."""
    try:
        with open(os.path.join(job_dir, STOP)) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):  # a record cut short still says a stop was delivered
        record = {"by": "runner stop", "message": None}
    return {"by": str(record.get("by") or "runner stop"), "message": record.get("message")}


def read_exit_code(job_dir):
    try:
        with open(os.path.join(job_dir, EXIT_CODE)) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def deliver_stop(job_dir, session, by="runner stop", message=None):
    """Stop the training, unless it has ended already: under the job lock, record the stop and send
    Ctrl-C to the train window. {"delivered": False, "exit_code": N} when the training had ended first."""
    with job_lock(job_dir):
        exit_code = read_exit_code(job_dir)
        if exit_code is not None or os.path.exists(os.path.join(job_dir, TRAINING_ENDED)):
            return {"delivered": False, "exit_code": exit_code}  # None: ended, its exit code on its way
        earlier = read_stop(job_dir)
        if earlier is None:
            _record_stop(os.path.join(job_dir, STOP), json.dumps({"by": by, "message": message}) + "\n")
        interrupted = interrupt(session) if session else "no session recorded"
    return {"delivered": True, "exit_code": None, "stop": earlier or {"by": by, "message": message},
            "interrupt_error": interrupted}  # fmt: skip


def _record_stop(path, text):
    try:
        write_record(path, text)
    except OSError:
        # No reserve and no room (a job started by an older runner on a full disk): an empty record
        # needs no block, and still says a stop was delivered (read_stop: by "runner stop").
        with open(path, "w"):
            pass


def interrupt(session):
    """Ctrl-C in the train window; None when tmux took it, else what it said."""
    target = "=%s:train" % session  # '=': an exact session name, never a prefix of another job's
    try:
        done = subprocess.run(
            ["tmux", "send-keys", "-t", target, "C-c"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            universal_newlines=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return str(error)
    return None if done.returncode == 0 else (done.stdout.strip() or "tmux exited %d" % done.returncode)


def prepare_status(job_dir):
    """The status slots' room, taken at the monitor's start: a spare slot, and the slot a half-done
    write left under STATUS_PREVIOUS put back."""
    spare, previous = os.path.join(job_dir, STATUS_SPARE), os.path.join(job_dir, STATUS_PREVIOUS)
    if os.path.exists(previous):
        if os.path.exists(spare):
            _remove(previous)
        else:
            _rename_quietly(previous, spare)
    if not os.path.exists(spare):
        try:
            _fill(spare, b"", STATUS_SLOT_BYTES)
        except OSError:
            _remove(spare)


def write_status(job_dir, document):
    """status.json made document, atomically for its readers, without new blocks once both slots
    exist: the JSON is written over the spare slot (padded with spaces, which JSON readers skip),
    the spare replaces status.json, and the replaced slot, kept by a hard link, becomes the spare.
    A failed write changes nothing a reader sees, and leaves no temporary file."""
    data = json.dumps(document).encode("utf-8")
    path = os.path.join(job_dir, STATUS)
    spare, previous = os.path.join(job_dir, STATUS_SPARE), os.path.join(job_dir, STATUS_PREVIOUS)
    with job_lock(job_dir):
        _fill(spare, data, STATUS_SLOT_BYTES)  # OSError (a full disk, a first write): the last snapshot stands
        kept = False
        if os.path.exists(path):
            _remove(previous)
            try:
                os.link(path, previous)
                kept = True
            except OSError:
                pass  # no hard links here: the slot is made anew next time
        os.replace(spare, path)
        if kept:
            _rename_quietly(previous, spare)
        else:
            prepare_status(job_dir)  # the first write (or no hard links): a new spare while there is room


def clean_leftovers(job_dir):
    """Remove temporary files of the job's records that a failed write or an older agent left: the
    exit code's and stop's, and status.json's of processes that are gone. Returns their names."""
    removed = []
    try:
        names = os.listdir(job_dir)
    except OSError:
        return removed
    for name in names:
        match = LEFTOVER.match(name)
        if not match:
            continue
        pid = match.group(1)
        if pid and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # an older monitor writing now: its file becomes status.json in a moment
        if _remove(os.path.join(job_dir, name)):
            removed.append(name)
    return removed


def _fill(path, data, size):
    """Write data at the start of path, padded with spaces to size (or to the file's length, if longer,
    so no byte of an older, longer content is left), without truncating: existing blocks are reused."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        length = max(size, os.fstat(fd).st_size) if size else 0
        payload = data + b" " * max(0, length - len(data))
        written = 0
        while written < len(payload):
            written += os.write(fd, payload[written:])
    finally:
        os.close(fd)


def _truncate(path, size):
    try:
        os.truncate(path, size)  # frees blocks, never needs one
    except OSError:
        pass  # the padding stays: readers strip it


def _rename_quietly(source, destination):
    try:
        os.replace(source, destination)
    except OSError:
        pass


def _remove(path):
    try:
        os.remove(path)
        return True
    except OSError:
        return False


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True
