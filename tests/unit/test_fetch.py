"""The fetch engine against the real local host and agent: round trips, resume, torn files, hostile names."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from runner.hosts import LocalHost
from runner.transfer.download import RemoteFile
from runner.transfer.fetch import fetch_files, list_remote


class CountingHost(LocalHost):
    """The real local host, counting what a remote host would see as round trips."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[list[str]] = []
        self.reads: list[tuple[str, int]] = []

    def run(self, argv, stdin=None, timeout=60):  # type: ignore[no-untyped-def]
        self.commands.append(list(argv))
        return super().run(argv, stdin, timeout)

    def read_into(self, path: str, offset: int, out: BinaryIO) -> None:
        self.reads.append((path, offset))
        super().read_into(path, offset, out)

    def run_into(self, argv, out):  # type: ignore[no-untyped-def]
        # The agent's `send ROOT PATH OFFSET`: a large file not hashed yet, hashed as it is sent.
        self.commands.append(list(argv))
        root, rel, offset = argv[-3:]
        self.reads.append((os.path.join(root, rel), int(offset)))
        return super().run_into(argv, out)


@pytest.fixture(autouse=True)
def runner_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    from runner.jobs.layout import install_hostside

    install_hostside(LocalHost())


def settled(path: Path, seconds_ago: float = 100) -> None:
    """Back-date a file so the agent does not wait for it to settle."""
    when = time.time() - seconds_ago
    os.utime(path, (when, when))


def fetch(host: CountingHost, root: Path, dest: Path, *globs: str) -> tuple[list, list, list]:
    listed, refused = list_remote(host, str(root), list(globs))
    fetched, changing = fetch_files(host, str(root), listed, dest, refused)
    return fetched, refused, changing


def test_a_thousand_small_files_cost_two_round_trips_then_one(tmp_path: Path) -> None:
    root = tmp_path / "work"
    for index in range(1000):
        path = root / "runs" / f"{index % 10}" / f"f{index:04d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {index}\n")
        settled(path)
    host = CountingHost()
    fetched, _, _ = fetch(host, root, tmp_path / "dest", "runs/**/*.txt")
    assert len(fetched) == 1000 and all(item.copied for item in fetched)
    assert len(host.commands) == 2 and host.reads == []  # the manifest, one tar stream
    assert (tmp_path / "dest" / "runs" / "7" / "f0417.txt").read_text() == "file 417\n"
    host = CountingHost()
    again, _, _ = fetch(host, root, tmp_path / "dest", "runs/**/*.txt")
    assert not any(item.copied for item in again)
    assert len(host.commands) == 1 and host.reads == []  # the manifest alone


def test_an_interrupted_download_resumes_from_its_part_file(tmp_path: Path) -> None:
    root = tmp_path / "work"
    big = root / "w" / "last.pt"
    big.parent.mkdir(parents=True)
    content = os.urandom(20 * 1024 * 1024)
    big.write_bytes(content)
    settled(big)
    dest = tmp_path / "dest"
    (dest / "w").mkdir(parents=True)
    (dest / "w" / "last.pt.part").write_bytes(content[: 7 * 1024 * 1024])  # what a dropped link left
    host = CountingHost()
    fetch(host, root, dest, "w/*.pt")
    assert host.reads == [(str(big), 7 * 1024 * 1024)]
    assert (dest / "w" / "last.pt").read_bytes() == content
    assert not (dest / "w" / "last.pt.part").exists()


class RewritingHost(CountingHost):
    """Rewrites the file on the 'host' halfway through the first copy, as torch.save does to last.pt."""

    def __init__(self, path: Path, new_content: bytes) -> None:
        super().__init__()
        self.path, self.new_content = path, new_content

    def run_into(self, argv, out):  # type: ignore[no-untyped-def]
        if self.reads:
            return super().run_into(argv, out)
        half = len(self.new_content) // 2
        self.reads.append((str(self.path), int(argv[-1])))
        with self.path.open("rb") as source:
            out.write(source.read(half))  # the old version's first half arrives...
        self.path.write_bytes(self.new_content)  # ...the training saves a new one...
        settled(self.path, seconds_ago=50)  # (a newer mtime, as a real rewrite has)
        return LocalHost.run_into(self, [*argv[:-1], str(half)], out)  # ...and the rest comes from it


def test_a_file_rewritten_during_its_copy_is_never_kept_torn(tmp_path: Path) -> None:
    root = tmp_path / "work"
    target = root / "last.pt"
    root.mkdir()
    old, new = b"A" * 12_000_000, b"B" * 12_000_000
    target.write_bytes(old)
    settled(target)
    dest = tmp_path / "dest"
    host = RewritingHost(target, new)
    fetched, _, _ = fetch(host, root, dest, "*.pt")
    assert (dest / "last.pt").read_bytes() == new  # the torn A...B copy was dropped, B fetched whole
    assert fetched[0].sha256 == hashlib.sha256(new).hexdigest()
    assert len(host.reads) == 2 and host.reads[1][1] == 0  # started over, not resumed from torn bytes


def test_hostile_names_write_nothing_outside_the_destination(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "escape").symlink_to(outside, target_is_directory=True)
    root = tmp_path / "work"
    root.mkdir()
    listed = [
        RemoteFile("../outside/a.pt", 1, "0" * 64),
        RemoteFile("/tmp/abs.pt", 1, "0" * 64),
        RemoteFile("escape/b.pt", 1, "0" * 64),
        RemoteFile("ok/../../c.pt", 1, "0" * 64),
    ]
    refused: list[str] = []
    fetched, _ = fetch_files(CountingHost(), str(root), listed, dest, refused)
    assert fetched == [] and sorted(refused) == sorted(item.path for item in listed)
    assert list(outside.iterdir()) == [] and not Path("/tmp/abs.pt").exists()


def test_a_new_large_file_is_read_once_on_the_host_and_then_known(tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    content = os.urandom(12 * 1024 * 1024)
    (root / "best.pt").write_bytes(content)
    settled(root / "best.pt")
    listed, _ = list_remote(CountingHost(), str(root), ["*.pt"])
    assert listed[0].sha256 is None  # not hashed by the listing: the send hashes it
    host = CountingHost()
    fetched, _, _ = fetch(host, root, tmp_path / "dest", "*.pt")
    assert fetched[0].sha256 == hashlib.sha256(content).hexdigest() and fetched[0].copied
    assert len(host.commands) == 2  # the manifest, one send
    host = CountingHost()
    again, _, _ = fetch(host, root, tmp_path / "dest", "*.pt")
    assert again[0].sha256 == hashlib.sha256(content).hexdigest() and not again[0].copied
    assert len(host.commands) == 1 and host.reads == []  # the send left its hash in the host's cache


def test_the_host_reports_a_file_that_changed_while_it_was_sent(tmp_path: Path) -> None:
    from runner.hostside import transfer

    path = tmp_path / "last.pt"
    path.write_bytes(b"A" * (3 * transfer.CHUNK_BYTES))

    class RewriteAfterFirstChunk(io.BytesIO):
        def write(self, block: bytes) -> int:  # type: ignore[override]
            if self.tell() == 0:
                path.write_bytes(b"B" * (3 * transfer.CHUNK_BYTES))  # torch.save, mid-send
            return super().write(block)

    report = transfer.send(str(tmp_path), "last.pt", 0, RewriteAfterFirstChunk())
    assert report["stable"] is False


@pytest.mark.parametrize("enabled", [True, False])
def test_a_bar_shows_the_transfer_on_a_terminal_and_nothing_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    from rich.console import Console

    from runner.transfer import progress as transferprogress

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    root = tmp_path / "work"
    root.mkdir()
    (root / "last.pt").write_bytes(os.urandom(20 * 1024 * 1024))
    settled(root / "last.pt")
    with transferprogress.shown("weights of job", enabled, console):
        fetch(CountingHost(), root, tmp_path / "dest", "*.pt")
    shown = screen.getvalue()
    assert ("weights of job" in shown and "21.0/21.0 MB" in shown) if enabled else shown == ""  # 20 MiB, in MB


def test_files_hashed_ahead_by_the_monitor_are_listed_with_their_hash(tmp_path: Path) -> None:
    from runner.hostside import transfer

    root = tmp_path / "work"
    (root / "w").mkdir(parents=True)
    content = os.urandom(12 * 1024 * 1024)
    (root / "w" / "best.pt").write_bytes(content)
    (root / "w" / "fresh.pt").write_bytes(b"being written")  # too new: left for a later turn
    settled(root / "w" / "best.pt")
    host = CountingHost()
    # The installed agent's cache is where its manifest looks: RUNNER_HOME/local/hashcache.
    monkey_folder = Path(host.root()) / "hashcache"
    original = transfer.HashCache.folder
    transfer.HashCache.folder = str(monkey_folder)
    try:
        assert transfer.prehash(str(root), ["w/*.pt"], budget_bytes=1 << 40) == len(content)
        assert transfer.prehash(str(root), ["w/*.pt"], budget_bytes=1 << 40) == 0  # nothing new
    finally:
        transfer.HashCache.folder = original
    listed, _ = list_remote(host, str(root), ["w/best.pt"])
    assert listed[0].sha256 == hashlib.sha256(content).hexdigest()  # no deferral: the fetch is warm
