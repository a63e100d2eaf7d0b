"""The host's side of moving files: manifests with cached hashes, and verified, resumable receiving.

Standard library only, Python >= 3.7. A file pushed one by one is written to a part file in the
host's parts folder (ROOT/parts), named by its content (sha256 and size of the sender's whole file),
so the next push of the same bytes, from any job and to any folder, resumes from what arrived; it is
hashed as it arrives and renamed to its final name only when size and sha256 match: the final name
never holds a partial or unverified file. A completed file takes its part with it; parts untouched for
a day are removed (agentdirs.remove_old_parts). Names come from the controller and are checked:
nothing is written outside the root.
"""

import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import tarfile
import threading
import time

from .agentdirs import PART_MAX_AGE_S, PART_SUFFIX, PARTS_FOLDER, remove_old_parts
from .hostfiles import PROTOCOL, read_json

CHUNK_BYTES = 1024 * 1024
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
SETTLE_SECONDS = 1.0  # a file written this recently may still be being written (torch.save is not atomic)
HASH_ATTEMPTS = 3
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
RUNNER_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this agent is ROOT/hostside-*/


class HashCache(object):
    """sha256 by (relative path, size, mtime_ns), one JSON file per root, in the runner directory.
    The file is named by the protocol too: agents of two protocols on one host (a job started by an
    older runner still running) never read each other's caches."""

    folder = os.path.join(RUNNER_ROOT, "hashcache")

    def __init__(self, real_root):
        name = "%s.p%d.json" % (hashlib.sha1(real_root.encode()).hexdigest(), PROTOCOL)
        self.path = os.path.join(self.folder, name)
        document = read_json(self.path)
        valid = isinstance(document, dict) and document.get("protocol") == PROTOCOL
        self.entries = document["entries"] if valid else {}
        self.changed = False

    def get(self, rel, stat):
        entry = self.entries.get(rel)
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            return entry[2]
        return None

    def put(self, rel, stat, digest):
        self.entries[rel] = [stat.st_size, stat.st_mtime_ns, digest]
        self.changed = True

    def save(self):
        if not self.changed:
            return
        temporary = "%s.%d.tmp" % (self.path, os.getpid())
        try:
            os.makedirs(self.folder, exist_ok=True)
            with open(temporary, "w") as handle:
                json.dump({"protocol": PROTOCOL, "entries": self.entries}, handle)
            os.replace(temporary, self.path)  # concurrent agents: the last one wins, the other's hashes are redone
        except OSError:
            _unlink_if_there(temporary)  # a full disk: the cache only saves time, and no torn .tmp stays


# Listing


def manifest(root, patterns, defer_over=None):
    """Regular files under root matching the globs; anything resolving outside root is refused.
    Files still changing are reported "stable": false, to be fetched in a later round. Files larger
    than defer_over with no cached hash are listed with "sha256": null: `send` hashes them as it
    sends them, so a new 2 GB checkpoint is read once, not twice."""
    real_root = os.path.realpath(root)
    cache = HashCache(real_root)
    files, refused = {}, []
    for pattern in patterns:
        for path in glob.glob(os.path.join(glob.escape(root), pattern), recursive=True):
            rel = os.path.relpath(path, root)
            real = os.path.realpath(path)
            if os.path.commonpath([real_root, real]) != real_root:
                refused.append(rel)
                continue
            if os.path.isfile(path) and rel not in files and not rel.endswith(PART_SUFFIX):
                files[rel] = _describe_settled(path, rel, cache, defer_over)
    cache.save()
    return {"root": root, "files": [files[rel] for rel in sorted(files)], "refused": sorted(set(refused))}


def prehash(root, patterns, budget_bytes):
    """Hash files matching the globs that are settled and not in the cache yet, up to budget_bytes
    per call: the monitor calls it now and then, so a fetch of a new checkpoint finds its hash ready
    and the host reads the file once, to send it. Returns the bytes hashed."""
    real_root = os.path.realpath(root)
    cache = HashCache(real_root)
    spent = 0
    for pattern in patterns:
        for path in glob.glob(os.path.join(glob.escape(root), pattern), recursive=True):
            rel = os.path.relpath(path, root)
            if spent >= budget_bytes or rel.endswith(PART_SUFFIX) or not os.path.isfile(path):
                continue
            if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
                continue
            before = os.stat(path)
            if cache.get(rel, before) or time.time() - before.st_mtime < SETTLE_SECONDS:
                continue
            digest = _sha256(path)
            after = os.stat(path)
            if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
                cache.put(rel, after, digest)  # changed meanwhile: left for the next call
            spent += before.st_size
    cache.save()
    return spent


def tree(root):
    """Every regular file under root (symlinks not followed) with its sha256; part files left in it
    by older agents (never resumed now: the push removes them); and the host's held parts, the
    uploads that were cut, by content: what a push needs to send only what is missing and resume
    what was cut. root is made when missing: a push of an empty folder must still leave the folder."""
    os.makedirs(root, exist_ok=True)
    real_root = os.path.realpath(root)
    cache = HashCache(real_root)
    files, parts = [], []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            stat = os.lstat(path)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            if name.endswith(PART_SUFFIX):
                parts.append({"part": rel, "size": stat.st_size})
                continue
            digest = cache.get(rel, stat) or _sha256(path)
            cache.put(rel, stat, digest)
            files.append({"path": rel, "size": stat.st_size, "sha256": digest})
    cache.save()
    return {"root": root, "files": files, "parts": parts, "held": held_parts()}


def _describe_settled(path, rel, cache, defer_over=None):
    """Size, mtime and sha256 of a file that held still while it was hashed (or, when its hash is
    deferred to `send`, that was not written in the last second)."""
    for _ in range(HASH_ATTEMPTS):
        before = os.stat(path)
        digest = cache.get(rel, before)
        if digest is None and (defer_over is None or before.st_size <= defer_over):
            digest = _sha256(path)
        after = os.stat(path)
        settled = time.time() - after.st_mtime >= SETTLE_SECONDS
        if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns) and settled:
            if digest:
                cache.put(rel, after, digest)
            return {"path": rel, "size": after.st_size, "mtime": after.st_mtime, "sha256": digest, "stable": True}
        time.sleep(SETTLE_SECONDS)
    return {"path": rel, "size": after.st_size, "mtime": after.st_mtime, "sha256": digest, "stable": False}


# Sending


def send(root, rel, offset, out):
    """rel's bytes from offset to out, and the sha256 of the whole file: the report says it and
    whether the file held still meanwhile, so the receiver knows whether what it got is one whole
    version. The bytes go by sendfile (no copy through Python) while a thread hashes the file from
    the page cache. A stable file's hash goes to the cache."""
    path = os.path.join(root, rel)
    before = os.stat(path)
    hashed = []
    hasher = threading.Thread(target=lambda: hashed.append(hash_prefix(path, before.st_size).hexdigest()))
    hasher.start()
    try:
        with open(path, "rb") as source:
            _copy_to(source, offset, out)
    finally:
        hasher.join()
    after = os.stat(path)
    stable = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
    if stable:
        cache = HashCache(os.path.realpath(root))
        cache.put(rel, after, hashed[0])
        cache.save()
    return {"path": rel, "size": after.st_size, "sha256": hashed[0], "stable": stable}


def _copy_to(source, offset, out):
    out.flush()
    position = offset
    try:
        while True:
            moved = os.sendfile(out.fileno(), source.fileno(), position, 8 * CHUNK_BYTES)
            if moved == 0:
                return
            position += moved
    except (AttributeError, OSError) as error:  # no sendfile here, or not to this kind of output
        if isinstance(error, OSError) and position != offset:
            raise  # some bytes went: a real write error (the link), not an unsupported call
    source.seek(position)
    for block in iter(lambda: source.read(CHUNK_BYTES), b""):
        out.write(block)
    out.flush()


# Receiving


class Parts(object):
    """The host's part files: one folder that every push shares, outside the job folders (new at each
    submit), each part named as PART_NAME says, so it is found by content alone and resumed by any push."""

    folder = os.path.join(RUNNER_ROOT, PARTS_FOLDER)
    max_age_s = PART_MAX_AGE_S  # a part untouched this long is removed: its push is not coming back


PART_NAME = re.compile(r"^([0-9a-f]{64})-([0-9]+)" + re.escape(PART_SUFFIX) + "$")


def content_part(sha256, size):
    """Where an upload of the file whose whole content hashes to sha256 collects; None for anything
    that is not a sha256 (the name is made from it) or a size."""
    if not SHA256_HEX.match(str(sha256)) or not isinstance(size, int) or size < 0:
        return None
    os.makedirs(Parts.folder, mode=0o700, exist_ok=True)
    return os.path.join(Parts.folder, "%s-%d%s" % (sha256, size, PART_SUFFIX))


def held_parts():
    """The parts in the host's parts folder, by content, with the bytes each holds; parts untouched
    for Parts.max_age_s are removed first (one a push is writing now is fresh, and locked)."""
    remove_old_parts(Parts.folder, Parts.max_age_s)
    held = []
    try:
        names = sorted(os.listdir(Parts.folder))
    except OSError:
        return held
    for name in names:
        matched = PART_NAME.match(name)
        path = os.path.join(Parts.folder, name)
        if matched and os.path.isfile(path) and not os.path.islink(path):
            held.append({"sha256": matched.group(1), "size": int(matched.group(2)), "have": os.path.getsize(path)})
    return held


def batch_part_path(final, sha256):
    """Where a member of a tar batch collects before it is verified: beside its final name (a small
    file is never resumed, so its part needs no place of its own)."""
    folder, name = os.path.split(final)
    return os.path.join(folder, ".%s.%s%s" % (name, sha256[:16], PART_SUFFIX))


def safe_target(root, rel):
    """root/rel with its folders created, or None when rel would leave root (absolute, '..', or
    through a symlink: existing folders on the way must be real folders)."""
    os.makedirs(root, exist_ok=True)
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\0" in rel or any(part in ("", ".", "..") for part in parts):
        return None
    folder = root
    for part in parts[:-1]:
        folder = os.path.join(folder, part)
        if os.path.islink(folder) or (os.path.exists(folder) and not os.path.isdir(folder)):
            return None
        if not os.path.exists(folder):
            os.mkdir(folder)
    final = os.path.join(folder, parts[-1])
    return None if os.path.islink(final) or os.path.isdir(final) else final


def part_size(sha256, size):
    """The bytes the host holds of an upload of that content."""
    part = content_part(sha256, size)
    if part is None:
        return {"refused": sha256}
    if not os.path.isfile(part) or os.path.islink(part):
        return {"size": 0}
    return {"size": os.path.getsize(part)}


def remove_parts(root, rels):
    """Delete part files an older agent left in a push's destination (today's parts live in the
    parts folder); one another upload is still writing (locked) is left to it."""
    removed = []
    for rel in rels:
        final = safe_target(root, rel)
        if final is None or not os.path.basename(final).endswith(PART_SUFFIX) or not os.path.isfile(final):
            continue
        with open(final, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            os.unlink(final)
            removed.append(rel)
    return {"removed": removed}


def receive(root, rel, size, mtime_ns, mode, offset, sha256, source):
    """Bytes offset..size of rel from source, then the sender's sha256 of the whole file (64 hex
    digits; anything else means the sender saw the file change and the upload is void). The bytes
    collect in the part of the content the sender hashed before it sent (sha256), and the file is
    placed only when the part hashes to the trailer. status: placed | incomplete (kept, to resume) |
    mismatch (dropped) | busy (another upload of it is under way) | moved (the part is not at offset) |
    no-space (the disk filled: what arrived is kept, to resume once there is room; free: bytes left)."""
    final = safe_target(root, rel) if SHA256_HEX.match(str(sha256)) else None
    part = content_part(sha256, size) if final else None
    if part is None:
        return {"status": "refused", "path": rel}
    try:
        answer = _receive_into(part, final, size, mtime_ns, mode, offset, source)
    except OSError as error:
        if error.errno not in NO_SPACE:
            raise
        held = os.path.getsize(part) if os.path.isfile(part) else 0
        return {"status": "no-space", "path": rel, "size": held, "free": shutil.disk_usage(Parts.folder).free}
    answer["path"] = rel
    if answer["status"] == "placed":
        _remember(root, rel, final, answer["sha256"])
    return answer


def _receive_into(part, final, size, mtime_ns, mode, offset, source):
    with _open_part(part) as out:
        try:
            fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return {"status": "busy"}
        if offset == 0:
            out.truncate(0)  # a part of unknown length from an earlier try: start over
        if out.seek(0, os.SEEK_END) != offset:
            return {"status": "moved", "size": out.tell()}
        digest = hash_prefix(part, offset)
        if not _copy_exactly(source, out, size - offset, digest):
            return {"status": "incomplete", "size": out.tell()}
        claimed = source.read(64).decode("ascii", "replace")
        if len(claimed) < 64:  # the link went between the data and its hash: the part is whole, keep it
            return {"status": "incomplete", "size": out.tell()}
        if digest.hexdigest() != claimed:
            os.unlink(part)
            return {"status": "mismatch", "size": out.tell()}
        os.fsync(out.fileno())
        # Placed while the lock is held: a second push of the same content waits (busy), then finds
        # no part and the file in place. A different trailer than sha256 is still one whole version
        # (the file changed between the sender's hashing and its sending, then held still).
        _place_part(part, final, mode, mtime_ns, claimed)
    return {"status": "placed", "size": size, "sha256": claimed}


def _place_part(part, final, mode, mtime_ns, sha256):
    """The verified part under final's name: renamed where both are on one filesystem, else copied
    beside final first (a data folder on another disk), so final still never holds a partial file."""
    try:
        _place(part, final, mode, mtime_ns)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    beside = batch_part_path(final, sha256)
    try:
        with open(part, "rb") as source, _open_part(beside) as out:
            out.truncate(0)
            shutil.copyfileobj(source, out, CHUNK_BYTES)
            out.flush()
            os.fsync(out.fileno())
        _place(beside, final, mode, mtime_ns)
    except OSError:
        _unlink_if_there(beside)  # a full disk there, say: the whole part stays, the copy goes
        raise
    os.unlink(part)


def _unlink_if_there(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _copy_exactly(source, out, length, digest):
    """length bytes from source to out, hashed on the way, through one reused buffer; False when
    source ends first."""
    buffer = memoryview(bytearray(CHUNK_BYTES))
    while length > 0:
        got = source.readinto(buffer[: min(CHUNK_BYTES, length)])
        if not got:
            out.flush()
            return False
        digest.update(buffer[:got])
        out.write(buffer[:got])
        length -= got
    out.flush()
    return True


def _open_part(part):
    """The part file, never through a symlink planted at its name: such a link is removed (the link,
    not what it points to), as a part that is not a regular file is."""
    if os.path.islink(part) or (os.path.exists(part) and not os.path.isfile(part)):
        os.unlink(part)
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(part, flags, 0o600), "wb")


def receive_batch(root, source):
    """A JSON line listing the files, then a tar stream of them; each member verified and placed."""
    expected = {entry["path"]: entry for entry in json.loads(source.readline().decode("utf-8"))}
    placed, failed = [], []
    cache = HashCache(os.path.realpath(root))
    with tarfile.open(fileobj=source, mode="r|") as archive:
        for member in archive:
            entry = expected.pop(member.name, None)
            if entry and not SHA256_HEX.match(str(entry.get("sha256"))):
                entry = None  # the part's name is made from it: nothing but a sha256 may go there
            final = safe_target(root, member.name) if entry else None
            if final is None or not member.isfile():
                failed.append({"path": member.name, "reason": "not asked for, or outside the root"})
                continue
            part = batch_part_path(final, entry["sha256"])
            digest = hashlib.sha256()
            with archive.extractfile(member) as data, _open_part(part) as out:
                out.truncate(0)
                for block in iter(lambda: data.read(CHUNK_BYTES), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != entry["sha256"] or os.path.getsize(part) != entry["size"]:
                os.unlink(part)
                failed.append({"path": member.name, "reason": "sha256 mismatch"})
                continue
            _place(part, final, entry["mode"], entry["mtime_ns"])
            cache.put(member.name, os.stat(final), entry["sha256"])
            placed.append(member.name)
    cache.save()
    failed += [{"path": path, "reason": "missing from the stream"} for path in expected]
    return {"placed": placed, "failed": failed}


def _place(part, final, mode, mtime_ns):
    os.chmod(part, mode & 0o7777)
    os.utime(part, ns=(mtime_ns, mtime_ns))  # the sender's mtime: the next listing's cache key
    os.replace(part, final)


def _remember(root, rel, final, sha256):
    cache = HashCache(os.path.realpath(root))
    cache.put(rel, os.stat(final), sha256)
    cache.save()


def hash_prefix(path, length):
    """A sha256 object fed the first length bytes of path (all of it if shorter)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while length > 0:
            block = handle.read(min(CHUNK_BYTES, length))
            if not block:
                break
            digest.update(block)
            length -= len(block)
    return digest


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
