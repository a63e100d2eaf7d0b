"""The push engine's host side, through the real agent on the local host: hostile names, and
interrupted and wrong uploads."""

from __future__ import annotations

import fcntl
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from runner.hosts.local import LocalHost
from runner.hostside import transfer
from runner.jobs.layout import run_agent
from tests.unit.localagent import (  # noqa: F401  (fixtures are found by name)
    MTIME_NS,
    _batch,
    _call,
    _entry,
    _files_under,
    _member,
    _receive,
    _sha256,
    _snapshot,
    host,
    isolated,
    outside,
    part_of,
    parts_folder,
)

# Hostile names


HOSTILE = ["../escape", "a/../../escape", "a/../b", "./x", "a//b", "", ".", "..", "x\x00y"]


@pytest.mark.parametrize("rel", [*HOSTILE, "/ABSOLUTE"], ids=lambda rel: repr(rel))
def test_receive_refuses_a_name_that_leaves_the_destination(
    host: LocalHost, tmp_path: Path, outside: Path, rel: str
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    rel = str(outside / "absolute") if rel == "/ABSOLUTE" else rel
    before = _snapshot(tmp_path, dest)
    data = b"escaped!"
    if "\x00" in rel:  # no argv can carry a NUL: the agent never sees such a name; checked in process
        source = io.BytesIO(data + _sha256(data).encode())
        answer = transfer.receive(str(dest), rel, len(data), MTIME_NS, 0o644, 0, _sha256(data), source)
        assert answer["status"] == "refused"
    else:
        assert _receive(host, dest, rel, data, len(data), _sha256(data)) == {"status": "refused", "path": rel}
    assert _snapshot(tmp_path, dest) == before
    assert list(dest.iterdir()) == []  # not even a folder made on the way
    assert not (tmp_path / "escape").exists() and not (outside / "absolute").exists()


def test_receive_refuses_a_path_through_a_symlink_in_the_destination(
    host: LocalHost, tmp_path: Path, outside: Path
) -> None:
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
    assert _snapshot(tmp_path, dest) == before
    assert sorted(path.name for path in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_bytes() == b"precious"
    assert (dest / "filelink").is_symlink()  # not replaced by a file either


@pytest.mark.parametrize("content", ["../../escape", "/etc/passwd", "0" * 63, "g" * 64, "-" * 64])
def test_a_content_that_is_not_a_sha256_names_no_part(host: LocalHost, tmp_path: Path, content: str) -> None:
    dest = tmp_path / "dest"
    data = b"payload"
    before = _snapshot(tmp_path, dest)
    assert _call(host, "part-size", content, str(len(data))) == {"refused": content}
    answer = _receive(host, dest, "x", data, len(data), _sha256(data), content=content)
    assert answer == {"status": "refused", "path": "x"}
    assert _snapshot(tmp_path, dest) == before and not dest.exists()
    assert not parts_folder(tmp_path).exists() or list(parts_folder(tmp_path).iterdir()) == []


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
    for name in [
        "../evil",
        "a/../../evil",
        str(outside / "abs"),
        "link/x",
        "sym",
        "hard",
        "unasked.txt",
        "missing.txt",
    ]:
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
    assert {item["path"]: item["reason"] for item in answer["failed"]} == {
        "same.txt": "sha256 mismatch",
        "short.txt": "sha256 mismatch",
    }
    assert _files_under(dest) == {"same.txt": b"old version\n"}  # the old one untouched, no part left


def test_receive_never_writes_through_a_symlink_planted_at_the_part_name(
    host: LocalHost, tmp_path: Path, outside: Path
) -> None:
    # Anything on the host that writes in the destination (a job in its workdir, or in a shared
    # dataset folder) could leave one there. The link is removed, never followed; the file lands.
    dest = tmp_path / "dest"
    dest.mkdir()
    data = b"payload"
    part = part_of(tmp_path, data)
    part.parent.mkdir(parents=True)
    part.symlink_to(outside / "victim")
    assert _call(host, "part-size", _sha256(data), str(len(data)))["size"] == 0  # not the link's target's size
    result = run_agent(host, "receive", str(dest), "x", str(len(data)), str(MTIME_NS), "644", "0", _sha256(data),
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


def test_receive_batch_never_touches_a_file_outside_through_its_sha256_field(
    host: LocalHost, tmp_path: Path, outside: Path
) -> None:
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


def test_an_interrupted_receive_keeps_its_part_and_resumes_from_it(
    host: LocalHost, tmp_path: Path, payload: bytes
) -> None:
    dest, sha, size, half = tmp_path / "dest", _sha256(payload), len(payload), len(payload) // 2
    final, part = dest / "d" / "w.bin", part_of(tmp_path, payload)
    # stdin ends half way: the link dropped
    assert _receive(host, dest, "d/w.bin", payload[:half], size, content=sha) == {
        "status": "incomplete",
        "path": "d/w.bin",
        "size": half,
    }
    assert not final.exists() and part.read_bytes() == payload[:half]
    assert _call(host, "part-size", sha, str(size)) == {"size": half}
    assert _call(host, "part-size", _sha256(b"other"), str(size)) == {"size": 0}  # another content
    listing = _call(host, "tree", str(dest))
    assert listing["files"] == [] and listing["parts"] == []
    assert listing["held"] == [{"sha256": sha, "size": size, "have": half}]
    # the rest, from where the part ends, then the sender's sha256
    answer = _receive(host, dest, "d/w.bin", payload[half:], size, sha, offset=half)
    assert answer == {"status": "placed", "path": "d/w.bin", "size": size, "sha256": sha}
    assert _sha256(final.read_bytes()) == sha and not part.exists()
    assert (final.stat().st_mode & 0o777, final.stat().st_mtime_ns) == (0o640, MTIME_NS)
    listing = _call(host, "tree", str(dest))
    assert listing["files"] == [{"path": "d/w.bin", "size": size, "sha256": sha}]
    assert listing["parts"] == [] and listing["held"] == []


def test_a_part_is_resumed_by_an_upload_of_the_same_bytes_to_another_folder_under_another_name(
    host: LocalHost, tmp_path: Path, payload: bytes
) -> None:
    # Every submit pushes into a new job folder: the part must outlive the folder it was meant for.
    sha, size, third = _sha256(payload), len(payload), len(payload) // 3
    first, second = tmp_path / "jobs" / "aaaa0001" / "work", tmp_path / "jobs" / "bbbb0002" / "work"
    assert _receive(host, first, "w.bin", payload[:third], size, content=sha)["status"] == "incomplete"
    assert _call(host, "part-size", sha, str(size)) == {"size": third}
    answer = _receive(
        host, second, "models/renamed.bin", payload[third:], size, sha, offset=third, mtime_ns=MTIME_NS + 7
    )
    assert answer["status"] == "placed"
    assert _files_under(second) == {"models/renamed.bin": payload} and _files_under(first) == {}
    assert list(parts_folder(tmp_path).iterdir()) == []  # the completed file took its part


def test_a_file_whose_bytes_changed_after_it_was_hashed_lands_as_what_was_sent(
    host: LocalHost, tmp_path: Path, payload: bytes
) -> None:
    # The sender hashed one version (the part's name), then read another that held still: the
    # trailer is that one's hash, the bytes match it, so it is one whole version and is placed.
    hashed_before, sent = _sha256(b"an older version"), payload
    answer = _receive(host, tmp_path / "dest", "w.bin", sent, len(sent), _sha256(sent), content=hashed_before)
    assert answer == {"status": "placed", "path": "w.bin", "size": len(sent), "sha256": _sha256(sent)}
    assert _files_under(tmp_path / "dest") == {"w.bin": sent}
    assert list(parts_folder(tmp_path).iterdir()) == []


@pytest.mark.parametrize("how", ["other bytes", "another sha256", "void", "too long", "no sha256, then more"])
def test_a_wrong_completion_is_dropped_and_never_placed(
    host: LocalHost, tmp_path: Path, payload: bytes, how: str
) -> None:
    dest, sha, size, half = tmp_path / "dest", _sha256(payload), len(payload), len(payload) // 2
    final, part = dest / "w.bin", part_of(tmp_path, payload)
    assert _receive(host, dest, "w.bin", payload[:half], size, content=sha)["status"] == "incomplete"
    rest, trailer = {
        "other bytes": (os.urandom(size - half), sha),
        "another sha256": (payload[half:], _sha256(b"something else")),
        "void": (payload[half:], "-" * 64),  # the sender saw the file change while it read it
        "too long": (payload[half:] + b"x", sha),
        "no sha256, then more": (payload[half:], b"\x00" * 64),
    }[how]
    answer = _receive(host, dest, "w.bin", rest, size, trailer, offset=half, content=sha)
    assert answer == {"status": "mismatch", "path": "w.bin", "size": size}
    assert not part.exists() and not final.exists()
    assert _call(host, "part-size", sha, str(size)) == {"size": 0}
    assert _files_under(dest) == {}


def test_a_receive_cut_before_the_sha256_keeps_the_whole_part(host: LocalHost, tmp_path: Path, payload: bytes) -> None:
    dest, sha, size = tmp_path / "dest", _sha256(payload), len(payload)
    part = part_of(tmp_path, payload)
    answer = _receive(host, dest, "w.bin", payload, size, sha[:20], content=sha)  # every byte, then the link drops
    assert answer["status"] == "incomplete" and part.stat().st_size == size
    assert _receive(host, dest, "w.bin", b"", size, sha, offset=size)["status"] == "placed"  # only the trailer left


def test_a_receive_from_another_offset_is_refused_and_leaves_the_part_intact(
    host: LocalHost, tmp_path: Path, payload: bytes
) -> None:
    dest, sha, size, half = tmp_path / "dest", _sha256(payload), len(payload), len(payload) // 2
    part = part_of(tmp_path, payload)
    _receive(host, dest, "w.bin", payload[:half], size, content=sha)
    for offset in (half - 1, half + 1, size):
        answer = _receive(host, dest, "w.bin", payload[offset:], size, sha, offset=offset)
        assert answer == {"status": "moved", "path": "w.bin", "size": half}
    assert part.read_bytes() == payload[:half]
    assert _receive(host, dest, "w.bin", payload[half:], size, sha, offset=half)["status"] == "placed"
    assert _sha256((dest / "w.bin").read_bytes()) == sha


def test_a_receive_from_offset_zero_starts_over(host: LocalHost, tmp_path: Path, payload: bytes) -> None:
    dest, sha, size = tmp_path / "dest", _sha256(payload), len(payload)
    part = part_of(tmp_path, payload)
    part.parent.mkdir(parents=True)
    part.write_bytes(os.urandom(size + 100))  # a stale part, even longer than the file
    assert _receive(host, dest, "w.bin", payload, size, sha)["status"] == "placed"
    assert _files_under(dest) == {"w.bin": payload} and not part.exists()


def test_a_second_upload_of_the_same_file_meanwhile_is_busy(host: LocalHost, tmp_path: Path, payload: bytes) -> None:
    dest, sha, size, half = tmp_path / "dest", _sha256(payload), len(payload), len(payload) // 2
    part = part_of(tmp_path, payload)
    _receive(host, dest, "w.bin", payload[:half], size, content=sha)
    with part.open("ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the first upload still running
        for offset, data in ((half, payload[half:]), (0, payload)):
            assert _receive(host, dest, "w.bin", data, size, sha, offset=offset) == {"status": "busy", "path": "w.bin"}
    assert part.read_bytes() == payload[:half] and not (dest / "w.bin").exists()


def test_a_part_on_another_filesystem_than_the_destination_is_copied_beside_it_then_renamed(
    tmp_path: Path, payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ROOT/parts on one disk, a data folder on another (a symlinked ~/.runner/data): no rename across.
    other_disk = Path("/dev/shm")
    if not other_disk.is_dir() or other_disk.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem here to put the parts on")
    parts = other_disk / f"runner-test-parts-{os.getpid()}-{tmp_path.name}"
    monkeypatch.setattr(transfer.Parts, "folder", str(parts))
    dest, sha, size, half = tmp_path / "dest", _sha256(payload), len(payload), len(payload) // 2
    try:
        cut = transfer.receive(str(dest), "w.bin", size, MTIME_NS, 0o640, 0, sha, io.BytesIO(payload[:half]))
        assert cut["status"] == "incomplete" and not (dest / "w.bin").exists()
        rest = io.BytesIO(payload[half:] + sha.encode())
        assert transfer.receive(str(dest), "w.bin", size, MTIME_NS, 0o640, half, sha, rest)["status"] == "placed"
        assert _files_under(dest) == {"w.bin": payload} and list(parts.iterdir()) == []  # no part on either side
        assert ((dest / "w.bin").stat().st_mode & 0o777, (dest / "w.bin").stat().st_mtime_ns) == (0o640, MTIME_NS)
    finally:
        for leftover in parts.glob("*"):
            leftover.unlink()
        parts.rmdir()
