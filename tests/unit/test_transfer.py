"""The push engine's host side, through the real agent on the local host: hostile names, interrupted
and wrong uploads, and push_tree against files that change or parts that are wrong."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_none

from runner import push
from runner.errors import RunnerError
from runner.hosts.local import LocalHost
from runner.hostside import transfer
from runner.layout import run_agent

MTIME_NS = 1_600_000_000_123_456_789


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent is installed under RUNNER_HOME/local and caches its hashes beside itself there;
    # in-process calls would otherwise cache beside the package's agent.py, inside the repo.
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "runner-home"))
    monkeypatch.setattr(transfer.HashCache, "folder", str(tmp_path / "hashcache"))


@pytest.fixture
def host() -> LocalHost:
    return LocalHost()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim").write_bytes(b"precious")
    return folder


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _call(host: LocalHost, *args: str, stdin: bytes | None = None) -> dict[str, Any]:
    result = run_agent(host, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.text)


def _version(size: int, mtime_ns: int = MTIME_NS) -> str:
    return f"{size}-{mtime_ns}"


def _receive(host: LocalHost, root: Path, rel: str, data: bytes, size: int, trailer: bytes | str = b"", offset: int = 0,
             mode: int = 0o640, mtime_ns: int = MTIME_NS) -> dict[str, Any]:  # fmt: skip
    """receive: data (bytes offset.. of the file) then the trailer (the sender's sha256 of the whole file)."""
    fields = [str(size), str(mtime_ns), format(mode, "o"), str(offset)]
    trailer = trailer.encode() if isinstance(trailer, str) else trailer
    return _call(host, "receive", str(root), rel, *fields, stdin=data + trailer)


def _batch(entries: list[dict[str, Any]], members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(json.dumps(entries).encode() + b"\n")
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, target: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def _entry(name: str, data: bytes) -> dict[str, Any]:
    return {"path": name, "size": len(data), "sha256": _sha256(data), "mode": 0o644, "mtime_ns": MTIME_NS}


def _files_under(folder: Path) -> dict[str, bytes]:
    """Every regular file (symlinks not followed) under folder, with its content."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[path.relative_to(folder).as_posix()] = path.read_bytes()
    return found


def _snapshot(tmp_path: Path, dest: Path) -> dict[str, bytes]:
    """Everything under tmp_path except dest and the runner's own folders: what must never change."""
    return {rel: data for rel, data in _files_under(tmp_path).items()
            if not rel.startswith((dest.name + "/", "runner-home/", "hashcache/"))}  # fmt: skip


# Hostile names


HOSTILE = ["../escape", "a/../../escape", "a/../b", "./x", "a//b", "", ".", "..", "x\x00y"]


@pytest.mark.parametrize("rel", HOSTILE + ["/ABSOLUTE"], ids=lambda rel: repr(rel))
def test_receive_refuses_a_name_that_leaves_the_destination(host: LocalHost, tmp_path: Path, outside: Path, rel: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    rel = str(outside / "absolute") if rel == "/ABSOLUTE" else rel
    before = _snapshot(tmp_path, dest)
    data = b"escaped!"
    if "\x00" in rel:  # no argv can carry a NUL: the agent never sees such a name; checked in process
        source = io.BytesIO(data + _sha256(data).encode())
        assert transfer.receive(str(dest), rel, len(data), MTIME_NS, 0o644, 0, source)["status"] == "refused"
    else:
        assert _receive(host, dest, rel, data, len(data), _sha256(data)) == {"status": "refused", "path": rel}
        assert _call(host, "part-size", str(dest), rel, _version(len(data))) == {"refused": rel}
    assert _snapshot(tmp_path, dest) == before
    assert list(dest.iterdir()) == []  # not even a folder made on the way
    assert not (tmp_path / "escape").exists() and not (outside / "absolute").exists()


def test_receive_refuses_a_path_through_a_symlink_in_the_destination(host: LocalHost, tmp_path: Path, outside: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside, target_is_directory=True)  # dest/link -> outside
    (dest / "filelink").symlink_to(outside / "victim")
    (dest / "deep").mkdir()
    (dest / "deep" / "up").symlink_to("../..", target_is_directory=True)
    before = _snapshot(tmp_path, dest)
    data = b"through the link"
    for rel in ["link/x", "link/sub/x", "link/victim", "filelink", "deep/up/dest2/x"]:
        assert _receive(host, dest, rel, data, len(data), _sha256(data))["status"] == "refused", rel
        assert _call(host, "part-size", str(dest), rel, _version(len(data))) == {"refused": rel}
    assert _snapshot(tmp_path, dest) == before
    assert sorted(path.name for path in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_bytes() == b"precious"
    assert (dest / "filelink").is_symlink()  # not replaced by a file either


def test_receive_batch_places_only_asked_for_regular_files_inside_the_destination(
    host: LocalHost, tmp_path: Path, outside: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside, target_is_directory=True)
    good, evil = b"fine\n", b"evil\n"
    asked = ["ok.txt", "../evil", "a/../../evil", str(outside / "abs"), "link/x", "sym", "hard", "sub/ok2.txt"]
    entries = [_entry(name, good if "ok" in name else evil) for name in asked]
    entries.append(_entry("missing.txt", good))  # listed, never in the stream
    members = [
        _member("ok.txt", good),
        _member("../evil", evil),
        _member("a/../../evil", evil),
        _member(str(outside / "abs"), evil),
        _member("link/x", evil),
        _member("sym", kind=tarfile.SYMTYPE, target=str(outside / "victim")),
        _member("hard", kind=tarfile.LNKTYPE, target=str(outside / "victim")),
        _member("unasked.txt", evil),  # in the stream, not in the list
        _member("ok.txt", evil),  # a second member under an already placed name
        _member("sub/ok2.txt", good),
    ]
    before = _snapshot(tmp_path, dest)
    answer = _call(host, "receive-batch", str(dest), stdin=_batch(entries, members))
    assert sorted(answer["placed"]) == ["ok.txt", "sub/ok2.txt"]
    failed = {item["path"]: item["reason"] for item in answer["failed"]}
    for name in ["../evil", "a/../../evil", str(outside / "abs"), "link/x", "sym", "hard", "unasked.txt", "missing.txt"]:
        assert name in failed, name
    assert failed["missing.txt"] == "missing from the stream"
    assert _snapshot(tmp_path, dest) == before
    assert sorted(path.name for path in outside.iterdir()) == ["victim"]
    assert _files_under(dest) == {"ok.txt": good, "sub/ok2.txt": good}
    assert not (dest / "sym").exists() and not (dest / "hard").exists()


def test_receive_batch_drops_a_member_whose_bytes_do_not_match(host: LocalHost, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "same.txt").write_bytes(b"old version\n")
    entries = [_entry("same.txt", b"new version\n"), _entry("short.txt", b"0123456789")]
    members = [_member("same.txt", b"NEW VERSION\n"), _member("short.txt", b"01234")]
    answer = _call(host, "receive-batch", str(dest), stdin=_batch(entries, members))
    assert answer["placed"] == []
    assert {item["path"]: item["reason"] for item in answer["failed"]} == {"same.txt": "sha256 mismatch", "short.txt": "sha256 mismatch"}
    assert _files_under(dest) == {"same.txt": b"old version\n"}  # the old one untouched, no part left


def test_receive_never_writes_through_a_symlink_planted_at_the_part_name(host: LocalHost, tmp_path: Path, outside: Path) -> None:
    # Anything on the host that writes in the destination (a job in its workdir, or in a shared
    # dataset folder) could leave one there. The link is removed, never followed; the file lands.
    dest = tmp_path / "dest"
    dest.mkdir()
    data = b"payload"
    part = dest / f".x.{_version(len(data))}.runner-part"
    part.symlink_to(outside / "victim")
    assert _call(host, "part-size", str(dest), "x", _version(len(data)))["size"] == 0  # not the link's target's size
    result = run_agent(host, "receive", str(dest), "x", str(len(data)), str(MTIME_NS), "644", "0",
                       stdin=data + _sha256(data).encode())  # fmt: skip
    assert json.loads(result.text)["status"] == "placed"
    assert (outside / "victim").read_bytes() == b"precious"
    assert (dest / "x").read_bytes() == data and not (dest / "x").is_symlink() and not part.is_symlink()


def test_receive_batch_never_writes_through_a_symlink_planted_at_the_part_name(
    host: LocalHost, tmp_path: Path, outside: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    data = b"payload"
    (dest / f".y.{_sha256(data)[:16]}.runner-part").symlink_to(outside / "victim")
    result = run_agent(host, "receive-batch", str(dest), stdin=_batch([_entry("y", data)], [_member("y", data)]))
    assert json.loads(result.text)["placed"] == ["y"]
    assert (outside / "victim").read_bytes() == b"precious"
    assert (dest / "y").read_bytes() == data and not (dest / "y").is_symlink()


def test_receive_batch_never_touches_a_file_outside_through_its_sha256_field(host: LocalHost, tmp_path: Path, outside: Path) -> None:
    dest = tmp_path / "dest"
    (dest / ".ok.txt.").mkdir(parents=True)  # a folder of that name lets '..' climb out of the part's name
    (outside / "v.runner-part").write_bytes(b"precious")
    data = b"payload"
    entry = {**_entry("ok.txt", data), "sha256": "/../../outside/v"}  # [:16] of it names the part
    run_agent(host, "receive-batch", str(dest), stdin=_batch([entry], [_member("ok.txt", data)]))
    assert (outside / "v.runner-part").read_bytes() == b"precious"  # truncated, written, then deleted today


# Interrupted and wrong uploads


@pytest.fixture
def payload() -> bytes:
    return os.urandom(3 * 1024 * 1024 + 12345)


def test_an_interrupted_receive_keeps_its_part_and_resumes_from_it(host: LocalHost, tmp_path: Path, payload: bytes) -> None:
    dest, sha, size, half = tmp_path / "dest", _sha256(payload), len(payload), len(payload) // 2
    final, part = dest / "d" / "w.bin", dest / "d" / f".w.bin.{_version(len(payload))}.runner-part"
    # stdin ends half way: the link dropped
    assert _receive(host, dest, "d/w.bin", payload[:half], size) == {"status": "incomplete", "path": "d/w.bin", "size": half}
    assert not final.exists() and part.read_bytes() == payload[:half]
    assert _call(host, "part-size", str(dest), "d/w.bin", _version(size)) == {"size": half}
    assert _call(host, "part-size", str(dest), "d/w.bin", _version(size, MTIME_NS + 1)) == {"size": 0}  # another version
    listing = _call(host, "tree", str(dest))
    assert listing["files"] == [] and listing["parts"] == [{"part": f"d/{part.name}", "size": half}]
    # the rest, from where the part ends, then the sender's sha256
    answer = _receive(host, dest, "d/w.bin", payload[half:], size, sha, offset=half)
    assert answer == {"status": "placed", "path": "d/w.bin", "size": size, "sha256": sha}
    assert _sha256(final.read_bytes()) == sha and not part.exists()
    assert (final.stat().st_mode & 0o777, final.stat().st_mtime_ns) == (0o640, MTIME_NS)
    listing = _call(host, "tree", str(dest))
    assert listing["files"] == [{"path": "d/w.bin", "size": size, "sha256": sha}] and listing["parts"] == []


@pytest.mark.parametrize("how", ["other bytes", "another sha256", "void", "too long", "no sha256, then more"])
def test_a_wrong_completion_is_dropped_and_never_placed(host: LocalHost, tmp_path: Path, payload: bytes, how: str) -> None:
    dest, sha, size, half = tmp_path / "dest", _sha256(payload), len(payload), len(payload) // 2
    final, part = dest / "w.bin", dest / f".w.bin.{_version(len(payload))}.runner-part"
    assert _receive(host, dest, "w.bin", payload[:half], size)["status"] == "incomplete"
    rest, trailer = {
        "other bytes": (os.urandom(size - half), sha),
        "another sha256": (payload[half:], _sha256(b"something else")),
        "void": (payload[half:], "-" * 64),  # the sender saw the file change while it read it
        "too long": (payload[half:] + b"x", sha),
        "no sha256, then more": (payload[half:], b"\x00" * 64),
    }[how]
    answer = _receive(host, dest, "w.bin", rest, size, trailer, offset=half)
    assert answer == {"status": "mismatch", "path": "w.bin", "size": size}
    assert not part.exists() and not final.exists()
    assert _call(host, "part-size", str(dest), "w.bin", _version(size)) == {"size": 0}
    assert _files_under(dest) == {}



def test_a_receive_cut_before_the_sha256_keeps_the_whole_part(host: LocalHost, tmp_path: Path, payload: bytes) -> None:
    dest, sha, size = tmp_path / "dest", _sha256(payload), len(payload)
    part = dest / f".w.bin.{_version(len(payload))}.runner-part"
    answer = _receive(host, dest, "w.bin", payload, size, sha[:20])  # every byte, then the link drops
    assert answer["status"] == "incomplete" and part.stat().st_size == size
    assert _receive(host, dest, "w.bin", b"", size, sha, offset=size)["status"] == "placed"  # only the trailer left


def test_a_receive_from_another_offset_is_refused_and_leaves_the_part_intact(host: LocalHost, tmp_path: Path, payload: bytes) -> None:
    dest, sha, size, half = tmp_path / "dest", _sha256(payload), len(payload), len(payload) // 2
    part = dest / f".w.bin.{_version(len(payload))}.runner-part"
    _receive(host, dest, "w.bin", payload[:half], size)
    for offset in (half - 1, half + 1, size):
        answer = _receive(host, dest, "w.bin", payload[offset:], size, sha, offset=offset)
        assert answer == {"status": "moved", "path": "w.bin", "size": half}
    assert part.read_bytes() == payload[:half]
    assert _receive(host, dest, "w.bin", payload[half:], size, sha, offset=half)["status"] == "placed"
    assert _sha256((dest / "w.bin").read_bytes()) == sha


def test_a_receive_from_offset_zero_starts_over(host: LocalHost, tmp_path: Path, payload: bytes) -> None:
    dest, sha, size = tmp_path / "dest", _sha256(payload), len(payload)
    part = dest / f".w.bin.{_version(len(payload))}.runner-part"
    part.parent.mkdir()
    part.write_bytes(os.urandom(size + 100))  # a stale part, even longer than the file
    assert _receive(host, dest, "w.bin", payload, size, sha)["status"] == "placed"
    assert _files_under(dest) == {"w.bin": payload}


def test_a_second_upload_of_the_same_file_meanwhile_is_busy(host: LocalHost, tmp_path: Path, payload: bytes) -> None:
    dest, sha, size, half = tmp_path / "dest", _sha256(payload), len(payload), len(payload) // 2
    part = dest / f".w.bin.{_version(len(payload))}.runner-part"
    _receive(host, dest, "w.bin", payload[:half], size)
    with part.open("ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the first upload still running
        for offset, data in ((half, payload[half:]), (0, payload)):
            assert _receive(host, dest, "w.bin", data, size, sha, offset=offset) == {"status": "busy", "path": "w.bin"}
    assert part.read_bytes() == payload[:half] and not (dest / "w.bin").exists()


# push_tree on the local host


@pytest.fixture
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push, "wait_random_exponential", lambda **_: wait_none())


def _source(tmp_path: Path, files: dict[str, bytes]) -> Path:
    source = tmp_path / "source"
    for rel, data in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    return source


def _local_version(path: Path) -> str:
    info = path.stat()
    return _version(info.st_size, info.st_mtime_ns)


def test_push_resumes_from_the_part_an_interrupted_upload_left(host: LocalHost, tmp_path: Path) -> None:
    big = os.urandom(12 * 1024 * 1024)  # above SMALL_FILE_BYTES: sent one by one, resumable
    source, dest = _source(tmp_path, {"big.bin": big, "small.txt": b"small\n"}), tmp_path / "dest"
    third = len(big) // 3
    mtime_ns = (source / "big.bin").stat().st_mtime_ns
    assert _receive(host, dest, "big.bin", big[:third], len(big), mtime_ns=mtime_ns)["status"] == "incomplete"
    stats = push.push_tree(host, source, str(dest), [])
    assert (stats.files_sent, stats.bytes_sent) == (2, len(big) - third + len(b"small\n"))
    assert _files_under(dest) == {"big.bin": big, "small.txt": b"small\n"}  # the part gone too
    again = push.push_tree(host, source, str(dest), [])
    assert (again.files_sent, again.bytes_sent) == (0, 0)


@pytest.mark.parametrize("part_size", [0.5, 1.0, 1.5])
def test_push_gets_past_a_corrupt_part_and_sends_the_file_whole(
    host: LocalHost, tmp_path: Path, no_waits: None, part_size: float
) -> None:
    big = os.urandom(10 * 1024 * 1024)
    source, dest = _source(tmp_path, {"big.bin": big}), tmp_path / "dest"
    dest.mkdir()
    # the right name, wrong bytes: shorter, as long, or longer than the file
    (dest / f".big.bin.{_local_version(source / 'big.bin')}.runner-part").write_bytes(os.urandom(int(len(big) * part_size)))
    push.push_tree(host, source, str(dest), [])
    assert _files_under(dest) == {"big.bin": big}


def test_push_never_writes_through_a_symlink_planted_at_a_part_name(
    host: LocalHost, tmp_path: Path, outside: Path, no_waits: None
) -> None:
    small = b"small\n"
    source, dest = _source(tmp_path, {"small.txt": small}), tmp_path / "dest"
    dest.mkdir()
    (dest / f".small.txt.{_sha256(small)[:16]}.runner-part").symlink_to(outside / "victim")
    assert push.push_tree(host, source, str(dest), []).files_sent == 1
    assert _files_under(dest) == {"small.txt": small} and (outside / "victim").read_bytes() == b"precious"
    (source / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024))
    (dest / f".big.bin.{_local_version(source / 'big.bin')}.runner-part").symlink_to(outside / "victim")
    assert push.push_tree(host, source, str(dest), []).files_sent == 1  # the link is removed, not followed
    assert (outside / "victim").read_bytes() == b"precious"
    assert (dest / "big.bin").read_bytes() == (source / "big.bin").read_bytes()


def test_a_file_changed_between_listing_and_sending_lands_as_its_new_version(
    host: LocalHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_waits: None
) -> None:
    old_small, old_big = b"a" * 1000, os.urandom(10 * 1024 * 1024)
    new_small, new_big = b"b" * 1000, os.urandom(len(old_big))  # same sizes: only the bytes differ
    source, dest = _source(tmp_path, {"s.txt": old_small, "big.bin": old_big, "still.txt": b"still"}), tmp_path / "dest"
    build_stream = push._batch_stream

    def rewrite_then_build(batch: Any) -> Any:  # after the small files were listed and hashed
        with (source / "s.txt").open("r+b") as small, (source / "big.bin").open("r+b") as large:
            small.write(new_small)
            large.write(new_big)  # in place: the listing is stale now
        return build_stream(batch)

    monkeypatch.setattr(push, "_batch_stream", rewrite_then_build)
    stats = push.push_tree(host, source, str(dest), [])
    assert _files_under(dest) == {"s.txt": new_small, "big.bin": new_big, "still.txt": b"still"}
    assert stats.files_sent == 3


def test_a_file_that_never_holds_still_is_reported_and_never_lands(
    host: LocalHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_waits: None
) -> None:
    source, dest = _source(tmp_path, {"log.bin": os.urandom(9 * 1024 * 1024)}), tmp_path / "dest"
    real_run_agent = push.run_agent
    rewrites = []

    def rewrite_before_each_receive(target: Any, command: str, *args: Any, **options: Any) -> Any:
        if command == "receive":  # the file changes while each upload reads it
            (source / "log.bin").write_bytes(os.urandom(9 * 1024 * 1024))
            rewrites.append(command)
        return real_run_agent(target, command, *args, **options)

    monkeypatch.setattr(push, "run_agent", rewrite_before_each_receive)
    with pytest.raises(RunnerError, match="changed during each of 3 uploads"):
        push.push_tree(host, source, str(dest), [])
    assert len(rewrites) == push.ROUNDS_PER_FILE
    assert _files_under(dest) == {}  # no torn file, and no part left


def test_a_part_of_a_version_that_is_gone_is_removed_after_the_push(host: LocalHost, tmp_path: Path) -> None:
    old = os.urandom(9 * 1024 * 1024)
    source, dest = _source(tmp_path, {"big.bin": old}), tmp_path / "dest"
    _receive(host, dest, "big.bin", old[: 4 * 1024 * 1024], len(old))  # an upload cut at 4 MiB...
    stale = dest / f".big.bin.{_version(len(old))}.runner-part"
    assert stale.stat().st_size == 4 * 1024 * 1024
    new = os.urandom(len(old) + 1)
    (source / "big.bin").write_bytes(new)  # ...then the file changed here
    assert push.push_tree(host, source, str(dest), []).files_sent == 1
    assert _files_under(dest) == {"big.bin": new}  # the old version's 4 MiB part is gone too
