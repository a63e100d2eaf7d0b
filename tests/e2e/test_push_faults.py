"""Pushing through real faults: the sshd serving the upload killed halfway, a dataset pushed again
unchanged or with one file changed, a local file rewritten while it is read."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.pipeline.placement import DatasetPlacement
from tests.conftest import Runner, runner_executable, wait_for, write_job
from tests.e2e.testhost import USER, TestHost, docker

MIB = 1024 * 1024


class BoxFiles:
    """Sizes of files inside the container: through its overlay mount where this machine can read it
    (a stat costs microseconds, fine enough to catch a partial file under a final name), else through
    `docker exec` (coarser, still correct)."""

    def __init__(self, box: TestHost) -> None:
        self.box = box
        merged = (
            docker("inspect", "-f", "{{.GraphDriver.Data.MergedDir}}", box.name, check=False).stdout.decode().strip()
        )
        self.mount = (
            Path(merged) if merged and os.access(merged, os.R_OK | os.X_OK) and Path(merged, "home").is_dir() else None
        )

    def size(self, path: str) -> int | None:
        if self.mount is not None:
            try:
                return (self.mount / path.lstrip("/")).stat().st_size
            except FileNotFoundError:
                return None
        out = self.box.sh(f"stat -c %s -- '{path}' 2>/dev/null || true").strip()
        return int(out) if out else None

    def received_bytes(self) -> int:
        """Bytes the container's network interface has taken in: what really crossed the link."""
        return int(self.box.sh("cat /sys/class/net/eth0/statistics/rx_bytes").strip())

    def tree(self, folder: str) -> dict[str, str]:
        """sha256 of every file under folder, part files included, by relative path."""
        out = self.box.sh(f"cd '{folder}' && find . -type f -print0 | sort -z | xargs -0 -r sha256sum")
        return {line[66:].removeprefix("./"): line[:64] for line in out.splitlines()}


@dataclass
class Watcher:
    """Polls a file's final name and its part file while an upload runs."""

    files: BoxFiles
    final: str
    part: str
    full_size: int
    torn: list[int] = field(default_factory=list)  # sizes seen under the final name other than the full one
    part_sizes: list[tuple[float, int | None]] = field(default_factory=list)  # (time, size) at each change
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        last: int | None = -1
        while not self.stop.is_set():
            size = self.files.size(self.final)
            if size is not None and size != self.full_size:
                self.torn.append(size)
            part = self.files.size(self.part)
            if part != last:
                self.part_sizes.append((time.monotonic(), part))
                last = part
            time.sleep(0.001)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()

    def part_size_now(self) -> int:
        return self.files.size(self.part) or 0


def _random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for start in range(0, size, 16 * MIB):
            block = os.urandom(min(16 * MIB, size - start))
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def _dataset_folder(name: str, source: Path) -> str:
    return f"/home/{USER}/.runner/data/{DatasetPlacement(name, source.resolve(), name, None).host_folder}"


def _part_path(path: Path) -> str:
    """Where the host collects an upload of this file's content: its parts folder, by sha256 and size."""
    return f"/home/{USER}/.runner/parts/{_sha256(path)}-{path.stat().st_size}.runner-part"


def _upload_passes(watcher: Watcher, size: int, submit: subprocess.Popen[str]) -> bool:
    if submit.poll() is not None:
        raise AssertionError(
            f"submit ended (exit {submit.returncode}) before its upload passed {size} bytes: {submit.communicate()}"
        )
    return watcher.part_size_now() > size


def _start_submit(runner: Runner, job_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [runner_executable(), "submit", str(job_file), "--host", "box", "--json"],
        env=runner.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _dataset_job(tmp_path: Path, data: Path, run: str) -> Path:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return write_job(work, "reader", f"name: reader\ndatasets:\n  big: {os.path.relpath(data, work)}\nrun: {run}\n")


def test_a_dataset_push_resumes_after_its_sshd_is_killed_halfway(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    size = 300 * MIB
    data = tmp_path / "data"
    local_sha = _random_file(data / "big.bin", size)
    (data / "labels.txt").write_text("cat\ndog\n")
    job_file = _dataset_job(tmp_path, data, "sha256sum datasets/big/big.bin | cut -c1-64")
    folder, files = _dataset_folder("big", data), BoxFiles(trusted_box)
    watcher = Watcher(files, f"{folder}/big.bin", _part_path(data / "big.bin"), size)
    rx_before = files.received_bytes()
    started = time.monotonic()
    submit = _start_submit(runner, job_file)
    try:
        wait_for(
            lambda: _upload_passes(watcher, size // 2, submit), 60, interval=0.005, what="the upload to pass half way"
        )
        killed_at = time.monotonic()
        killed = trusted_box.kill_ssh_connections()
        part_at_kill = watcher.part_size_now()
        rx_at_kill = files.received_bytes()
        out, err = submit.communicate(timeout=120)
    finally:
        if submit.poll() is None:
            submit.kill()
        watcher.finish()
    elapsed = time.monotonic() - started
    rx_total, rx_after_kill = files.received_bytes() - rx_before, files.received_bytes() - rx_at_kill
    assert killed >= 1
    assert submit.returncode == 0, err
    assert watcher.torn == [], f"the final name held a partial file: sizes {watcher.torn[:10]}"
    assert trusted_box.sha256(f"{folder}/big.bin") == local_sha
    assert files.tree(folder) == {
        "big.bin": local_sha,
        "labels.txt": hashlib.sha256(b"cat\ndog\n").hexdigest(),
    }  # no part left
    # It resumed: the part only ever grew (never dropped and started again) ...
    after_kill = [part for moment, part in watcher.part_sizes if moment >= killed_at and part is not None]
    assert after_kill == sorted(after_kill) and min(after_kill) > size // 2
    # ... and only what the part lacked crossed the link after the kill (a restart would need all of it),
    # give or take SSH's framing and the few commands around the upload.
    assert rx_after_kill < size - part_at_kill + 8 * MIB, f"{rx_after_kill} bytes received after the kill"
    assert rx_total < size + size // 4
    sync = json.loads(out)["sync"]["dataset:big"]
    assert sync["files_sent"] == 2 and 0 < sync["bytes_sent"] < 2 * size
    resumed_from = _resume_offset(watcher.part_sizes, killed_at)
    print(
        f"\nresume: {size / MIB:.0f} MiB file; killed {killed} sshd at part {part_at_kill / MIB:.1f} MiB;"
        f" resumed from {resumed_from / MIB:.1f} MiB; received after the kill {rx_after_kill / MIB:.1f} MiB"
        f" (needed {(size - resumed_from) / MIB:.1f}); received in all {rx_total / MIB:.1f} MiB;"
        f" reported bytes_sent {sync['bytes_sent'] / MIB:.1f} MiB; submit took {elapsed:.1f}s"
        f" (push {sync['seconds']:.1f}s); part-size samples {len(watcher.part_sizes)}"
    )
    done = runner.wait_state(json.loads(out)["id"], {"succeeded", "failed"}, timeout=60)
    assert (done["state"], done["last_line"]) == ("succeeded", local_sha)  # the job reads it through its link


def _resume_offset(samples: list[tuple[float, int | None]], killed_at: float) -> int:
    """The part's size at the longest pause after the kill: where the old upload stopped and the new one began."""
    after = [(moment, size or 0) for moment, size in samples if moment >= killed_at]
    if len(after) < 2:
        return after[0][1] if after else 0
    gaps = [(later[0] - earlier[0], earlier[1]) for earlier, later in itertools.pairwise(after)]
    return max(gaps)[1]


def test_a_dataset_pushed_again_sends_only_the_file_that_changed(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    contents = {f"labels/{index:02d}.txt": f"label {index}\n".encode() for index in range(10)}
    contents["images/big.bin"] = os.urandom(12 * MIB)  # above the small-file size: sent on its own
    contents["images/mid.bin"] = os.urandom(3 * MIB)
    for rel, blob in contents.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(blob)
    job_file = _dataset_job(tmp_path, data, "cat datasets/big/labels/03.txt")
    folder, files = _dataset_folder("big", data), BoxFiles(trusted_box)
    expected = {rel: hashlib.sha256(blob).hexdigest() for rel, blob in contents.items()}

    first = runner.json("submit", str(job_file), "--host", "box")["sync"]["dataset:big"]
    assert (first["files_sent"], first["bytes_sent"]) == (len(contents), sum(map(len, contents.values())))
    assert files.tree(folder) == expected

    second = runner.json("submit", str(job_file), "--host", "box")["sync"]["dataset:big"]
    assert (second["files_sent"], second["bytes_sent"]) == (0, 0)

    # A new mtime with the same bytes moves nothing; new bytes move that one file, and only it.
    os.utime(data / "images/big.bin", ns=(time.time_ns(), time.time_ns()))
    (data / "labels/05.txt").write_bytes(contents["labels/05.txt"])
    (data / "labels/03.txt").write_text("relabelled: a much longer line than before\n")
    expected["labels/03.txt"] = _sha256(data / "labels/03.txt")
    third = runner.json("submit", str(job_file), "--host", "box")
    sync = third["sync"]["dataset:big"]
    assert (sync["files_sent"], sync["bytes_sent"]) == (1, len("relabelled: a much longer line than before\n"))
    assert files.tree(folder) == expected
    done = runner.wait_state(third["id"], {"succeeded", "failed"}, timeout=60)
    assert done["last_line"] == "relabelled: a much longer line than before"
    print(f"\nfirst {first}\nsecond {second}\nthird {sync}")


def test_a_file_rewritten_while_it_is_uploaded_never_lands_torn(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    size = 200 * MIB
    data = tmp_path / "data"
    first_sha = _random_file(data / "big.bin", size)
    job_file = _dataset_job(tmp_path, data, "exit 0")
    folder, files = _dataset_folder("big", data), BoxFiles(trusted_box)
    watcher = Watcher(files, f"{folder}/big.bin", _part_path(data / "big.bin"), size)
    new_bytes = os.urandom(size)  # made beforehand: the rewrite itself takes a fraction of the upload
    second: dict[str, Any] = {"sha": hashlib.sha256(new_bytes).hexdigest()}

    def rewrite_in_place() -> None:  # the same size, other bytes, written over the file being read
        wait_for(
            lambda: _upload_passes(watcher, size // 4, submit), 60, interval=0.005, what="the upload to pass a quarter"
        )
        second["part_at_rewrite"] = watcher.part_size_now()
        with (data / "big.bin").open("r+b") as out:
            out.write(new_bytes)
        second["part_after_rewrite"] = watcher.part_size_now()

    rewriter = threading.Thread(target=rewrite_in_place, daemon=True)
    started = time.monotonic()
    submit = _start_submit(runner, job_file)
    rewriter.start()
    try:
        out, err = submit.communicate(timeout=120)
    finally:
        if submit.poll() is None:
            submit.kill()
        watcher.finish()
        rewriter.join(timeout=60)
    elapsed = time.monotonic() - started
    assert submit.returncode == 0, err
    assert second["part_after_rewrite"] < size, "the upload ended before the rewrite: nothing was tested"
    assert watcher.torn == []
    on_host = trusted_box.sha256(f"{folder}/big.bin")
    assert on_host in (first_sha, second["sha"]), "a mix of two versions landed"
    assert on_host == second["sha"] == _sha256(data / "big.bin")  # the latest version, since the first was torn
    assert files.tree(folder) == {"big.bin": on_host}  # the torn upload's part is gone
    sync = json.loads(out)["sync"]["dataset:big"]
    assert sync["files_sent"] == 1
    print(
        f"\nrewrite: {size / MIB:.0f} MiB; rewritten from part {second['part_at_rewrite'] / MIB:.1f} MiB"
        f" (part {second['part_after_rewrite'] / MIB:.1f} MiB when done); host holds the new version;"
        f" sync {sync}; submit took {elapsed:.1f}s"
    )
