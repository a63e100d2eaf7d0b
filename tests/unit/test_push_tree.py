"""push_tree on the local host, through the real agent: resuming (from any job's part of the same
bytes), corrupt and planted parts, files that change while they are sent, parts left by older agents."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_none

from runner.base.errors import RunnerError
from runner.hosts.local import LocalHost
from runner.transfer import push
from tests.unit.localagent import (  # noqa: F401  (fixtures are found by name)
    _files_under,
    _receive,
    _sha256,
    _version,
    host,
    isolated,
    outside,
    part_of,
    parts_folder,
)

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
    cut = _receive(host, dest, "big.bin", big[:third], len(big), mtime_ns=mtime_ns, content=_sha256(big))
    assert cut["status"] == "incomplete"
    stats = push.push_tree(host, source, str(dest), [])
    assert (stats.files_sent, stats.bytes_sent) == (2, len(big) - third + len(b"small\n"))
    assert _files_under(dest) == {"big.bin": big, "small.txt": b"small\n"}
    assert list(parts_folder(tmp_path).iterdir()) == []  # the part gone too
    again = push.push_tree(host, source, str(dest), [])
    assert (again.files_sent, again.bytes_sent) == (0, 0)


def test_the_next_push_of_the_same_bytes_into_a_new_job_folder_sends_only_what_the_part_lacks(
    host: LocalHost, tmp_path: Path
) -> None:
    big = os.urandom(12 * 1024 * 1024)
    source = _source(tmp_path, {"models/big.bin": big})
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "big.bin").write_bytes(big)  # the same bytes, another name and mtime
    quarter = len(big) // 4
    # A submit killed a quarter into its upload into job one's folder ...
    first = tmp_path / "jobs" / "00000001" / "work"
    assert (
        _receive(host, first, "models/big.bin", big[:quarter], len(big), content=_sha256(big))["status"] == "incomplete"
    )
    # ... and the next submit pushes the same file into its own folder: only the rest moves.
    second = tmp_path / "jobs" / "00000002" / "work"
    stats = push.push_tree(host, source, str(second), [])
    assert (stats.files_sent, stats.bytes_sent) == (1, len(big) - quarter)
    assert _files_under(second) == {"models/big.bin": big} and _files_under(first) == {}
    assert list(parts_folder(tmp_path).iterdir()) == []
    # A push of those bytes cut again, then resumed from a folder of other names: content is what counts.
    assert _receive(host, first, "x", big[:quarter], len(big), content=_sha256(big))["status"] == "incomplete"
    stats = push.push_tree(host, tmp_path / "copy", str(tmp_path / "jobs" / "00000003" / "work"), [])
    assert (stats.files_sent, stats.bytes_sent) == (1, len(big) - quarter)


def test_push_of_an_empty_folder_makes_the_destination(host: LocalHost, tmp_path: Path) -> None:
    (tmp_path / "source").mkdir()  # a job whose workdir holds nothing yet still runs in its folder
    stats = push.push_tree(host, tmp_path / "source", str(tmp_path / "dest" / "work"), [])
    assert (stats.files_sent, stats.bytes_sent) == (0, 0)
    assert (tmp_path / "dest" / "work").is_dir() and not any((tmp_path / "dest" / "work").iterdir())


@pytest.mark.parametrize("part_size", [0.5, 1.0, 1.5])
def test_push_gets_past_a_corrupt_part_and_sends_the_file_whole(
    host: LocalHost, tmp_path: Path, no_waits: None, part_size: float
) -> None:
    big = os.urandom(10 * 1024 * 1024)
    source, dest = _source(tmp_path, {"big.bin": big}), tmp_path / "dest"
    dest.mkdir()
    # the right name, wrong bytes: shorter, as long, or longer than the file
    part = part_of(tmp_path, big)
    part.parent.mkdir(parents=True)
    part.write_bytes(os.urandom(int(len(big) * part_size)))
    push.push_tree(host, source, str(dest), [])
    assert _files_under(dest) == {"big.bin": big} and not part.exists()


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
    part = part_of(tmp_path, (source / "big.bin").read_bytes())
    part.parent.mkdir(parents=True, exist_ok=True)
    part.symlink_to(outside / "victim")
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
    assert list(parts_folder(tmp_path).iterdir()) == []


def test_parts_an_older_agent_left_in_the_destination_are_removed_after_the_push(
    host: LocalHost, tmp_path: Path
) -> None:
    big = os.urandom(9 * 1024 * 1024)
    source, dest = _source(tmp_path, {"big.bin": big}), tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    old = [dest / f".big.bin.{_version(len(big))}.runner-part", dest / "sub" / ".x.bin.12-34.runner-part"]
    for path in old:
        path.write_bytes(big[: 4 * 1024 * 1024])  # an older runner's cut uploads, named by version
    assert push.push_tree(host, source, str(dest), []).files_sent == 1
    assert _files_under(dest) == {"big.bin": big}  # nothing resumes them now: they are gone


def test_a_part_of_another_content_stays_for_a_later_push_of_it_until_it_is_a_day_old(
    host: LocalHost, tmp_path: Path
) -> None:
    old = os.urandom(9 * 1024 * 1024)
    source, dest = _source(tmp_path, {"big.bin": old}), tmp_path / "dest"
    _receive(host, dest, "big.bin", old[: 4 * 1024 * 1024], len(old), content=_sha256(old))  # cut at 4 MiB...
    kept = part_of(tmp_path, old)
    new = os.urandom(len(old) + 1)
    (source / "big.bin").write_bytes(new)  # ...then the file changed here
    assert push.push_tree(host, source, str(dest), []).files_sent == 1
    assert _files_under(dest) == {"big.bin": new}
    assert kept.stat().st_size == 4 * 1024 * 1024  # the old bytes may come back (a branch switched back)
    a_day_ago = time.time() - 24 * 3600 - 60
    os.utime(kept, (a_day_ago, a_day_ago))
    assert push.push_tree(host, source, str(dest), []).files_sent == 0  # the listing prunes it
    assert not kept.exists()
