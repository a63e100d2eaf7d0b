#!/usr/bin/env python3
"""Push throughput: runner's push engine against `rsync -a` over OpenSSH, same data, same loopback
sshd (a test-host container), measured in the same run.

    .venv/bin/python benchmarks/push_vs_rsync.py [--mib 512] [--small 2000] [--rounds 3]

The data: one large file of --mib MiB and --small files of 4 KiB in 20 folders (a dataset's labels).
For each round both tools push into an empty folder (first push), then push again with nothing
changed (the re-push a second submit does). Prints medians and the ratio rsync_s / runner_s
(>= 1.0: runner is at least as fast). runner's time includes hashing the local files the first
time (its hash cache is cleared each round), and the host verifying every file's sha256.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.testhost import USER, TestHost, ensure_image, make_client_key, write_hosts_file  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_image()
    base = Path(tempfile.mkdtemp(prefix="bench-push-"))
    host = TestHost.start(make_client_key(base))
    try:
        run_benchmark(base, host, args.mib, args.small, args.rounds)
    finally:
        host.remove()
        shutil.rmtree(base, ignore_errors=True)


def run_benchmark(base: Path, box: TestHost, mib: int, small: int, rounds: int) -> None:
    os.environ.update(RUNNER_HOME=str(base / "home"), RUNNER_CONFIG_DIR=str(base / "config"), HOME=str(base / "user"))
    (base / "user").mkdir()
    write_hosts_file(base / "config", {"box": box.hosts_entry()})
    from runner.hosts import get_host
    from runner.transfer.push import push_tree

    host = get_host("box", trust_new=True)
    source = make_dataset(base / "data", mib, small)
    times: dict[str, list[float]] = {"runner": [], "runner_again": [], "rsync": [], "rsync_again": []}
    for round_number in range(rounds):
        shutil.rmtree(base / "home" / "hashcache", ignore_errors=True)  # the first push hashes everything
        for key in ("runner", "runner_again"):
            started = time.monotonic()
            stats = push_tree(host, source, f"/home/{USER}/bench/runner{round_number}", [])
            times[key].append(round(time.monotonic() - started, 3))
            assert (stats.files_sent == small + 1) if key == "runner" else (stats.files_sent == 0), stats
        for key in ("rsync", "rsync_again"):
            started = time.monotonic()
            rsync(box, source, f"/home/{USER}/bench/rsync{round_number}")
            times[key].append(round(time.monotonic() - started, 3))
        box.sh(f"rm -rf /home/{USER}/bench")
    show(mib, small, times)


def make_dataset(root: Path, mib: int, small: int) -> Path:
    (root / "images").mkdir(parents=True)
    with (root / "images" / "big.bin").open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1024 * 1024))
    for index in range(small):
        folder = root / "labels" / f"{index % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:05d}.txt").write_bytes(os.urandom(4096))
    return root


def rsync(box: TestHost, source: Path, dest: str) -> None:
    ssh = (
        f"ssh -p {box.port} -i {box.key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    )
    subprocess.run(["rsync", "-a", "-e", ssh, f"{source}/", f"{USER}@127.0.0.1:{dest}/"], check=True)


def show(mib: int, small: int, times: dict[str, list[float]]) -> None:
    medians = {key: statistics.median(values) for key, values in times.items()}
    print(f"data: {mib} MiB file + {small} x 4 KiB files; medians of {len(times['runner'])} rounds")
    for key, label in [("runner", "runner push, first"), ("rsync", "rsync -a, first"),
                       ("runner_again", "runner push, nothing changed"),
                       ("rsync_again", "rsync -a, nothing changed")]:  # fmt: skip
        print(f"{label:32s} {medians[key]:6.2f} s  {times[key]}")
    print(f"ratio (rsync s / runner s): first {medians['rsync'] / medians['runner']:.2f}x, "
          f"nothing changed {medians['rsync_again'] / medians['runner_again']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
