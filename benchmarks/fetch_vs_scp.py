#!/usr/bin/env python3
"""Fetch throughput: `runner fetch` of a 512 MiB checkpoint against OpenSSH `scp` of the same file,
both from the same loopback sshd (a test-host container), measured in the same run.

    .venv/bin/python benchmarks/fetch_vs_scp.py [--mib 512] [--rounds 3]

Prints each timing and the ratio scp_seconds / runner_seconds (>= 1.0: runner is at least as fast).
runner's time is the whole `runner fetch` command: process start, connect, manifest, copy, sha256
check, rename. "cold" is the first fetch: the host hashes the file as it sends it. The other rounds find the
hash cached on the host (as after any earlier fetch or listing). "new connection" closes runner's
shared SSH connection before each fetch, so runner pays a handshake as scp does; "shared connection"
reuses the one the previous runner command left open (for a minute), as successive commands do.
"""

from __future__ import annotations

import argparse
import json
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

from tests.e2e.testhost import TestHost, ensure_image, make_client_key, write_hosts_file  # noqa: E402

RUNNER = str(Path(sys.executable).parent / "runner")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_image()
    base = Path(tempfile.mkdtemp(prefix="bench-"))
    host = TestHost.start(make_client_key(base))
    try:
        run_benchmark(base, host, args.mib, args.rounds)
    finally:
        host.remove()
        shutil.rmtree(base, ignore_errors=True)


def run_benchmark(base: Path, host: TestHost, mib: int, rounds: int) -> None:
    env = {**os.environ, "RUNNER_HOME": str(base / "home"), "RUNNER_CONFIG_DIR": str(base / "config"),
           "HOME": str(base / "user"), "TMUX_TMPDIR": str(base)}  # fmt: skip
    (base / "user").mkdir()
    write_hosts_file(base / "config", {"box": host.hosts_entry()})
    runner(env, "hosts", "check", "box", "--trust-new-host")
    job_file = base / "work" / "bench.yaml"
    job_file.parent.mkdir()
    job_file.write_text(
        f"name: bench\nrun: mkdir -p runs/bench/weights && head -c {mib}M /dev/urandom > runs/bench/weights/last.pt\n"
    )
    job_id = runner(env, "submit", str(job_file), "--host", "box").strip()
    wait_finished(env, job_id)
    remote = f"/home/trainer/.runner/jobs/{job_id}/work/runs/bench/weights/last.pt"
    close_shared_connection(env)
    cold = timed_fetch(env, job_id, base / "cold")  # also warms the host's hash cache
    times: dict[str, list[float]] = {"new": [], "shared": [], "scp": [], "scp_gcm": []}
    for round_number in range(rounds):
        close_shared_connection(env)
        times["new"].append(timed_fetch(env, job_id, base / f"new{round_number}"))
        times["shared"].append(timed_fetch(env, job_id, base / f"shared{round_number}"))
        times["scp"].append(timed_scp(host, remote, base / f"scp{round_number}", []))
        times["scp_gcm"].append(
            timed_scp(host, remote, base / f"scpgcm{round_number}", ["-c", "aes128-gcm@openssh.com"])
        )
    show(mib, cold, times)


def show(mib: int, cold: float, times: dict[str, list[float]]) -> None:
    new, shared, scp, gcm = (statistics.median(times[key]) for key in ("new", "shared", "scp", "scp_gcm"))
    rows = [
        ("runner fetch, cold (hashed while sent)", cold, [cold]),
        ("runner fetch, new connection", new, times["new"]),
        ("runner fetch, shared connection", shared, times["shared"]),
        ("scp (OpenSSH defaults)", scp, times["scp"]),
        ("scp -c aes128-gcm", gcm, times["scp_gcm"]),
    ]
    print(f"file: {mib} MiB, medians of {len(times['new'])} rounds")
    for label, seconds, samples in rows:
        print(f"{label:40s} {seconds:6.2f} s  {mib / seconds:7.1f} MiB/s  {samples}")
    print(
        f"ratio vs scp defaults (scp s / runner s): new connection {scp / new:.2f}x, "
        f"shared {scp / shared:.2f}x, cold {scp / cold:.2f}x"
    )
    print(
        f"ratio vs scp aes128-gcm:                  new connection {gcm / new:.2f}x, "
        f"shared {gcm / shared:.2f}x, cold {gcm / cold:.2f}x"
    )


def close_shared_connection(env: dict[str, str]) -> None:
    """Ends the connection runner keeps open for a minute, so the next fetch pays a handshake."""
    script = (
        "from runner.hosts import get_host\n"
        "from runner.hosts.openssh import openssh_argv, stop_master\n"
        "host = get_host('box')\n"
        "stop_master(openssh_argv(host.entry), host.openssh_target())\n"
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True)


def runner(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([RUNNER, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"runner {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def wait_finished(env: dict[str, str], job_id: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = json.loads(runner(env, "status", job_id, "--json"))
        if job["finished"]:
            if job["state"] != "succeeded":
                raise SystemExit(f"the job that writes the checkpoint ended {job['state']}")
            return
        time.sleep(0.5)
    raise SystemExit("the job that writes the checkpoint did not finish in 120 s")


def timed_fetch(env: dict[str, str], job_id: str, dest: Path) -> float:
    started = time.monotonic()
    result = json.loads(runner(env, "fetch", "weights", job_id, "--dest", str(dest), "--json"))
    took = time.monotonic() - started
    assert result["bytes_copied"] > 0 and not result["changing"], result
    shutil.rmtree(dest)
    return round(took, 3)


def timed_scp(host: TestHost, remote: str, dest: Path, extra: list[str]) -> float:
    dest.mkdir()
    argv = ["scp", "-q", "-P", str(host.port), "-i", str(host.key), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", *extra,
            f"trainer@127.0.0.1:{remote}", str(dest / "last.pt")]  # fmt: skip
    started = time.monotonic()
    subprocess.run(argv, check=True)
    took = time.monotonic() - started
    shutil.rmtree(dest)
    return round(took, 3)


if __name__ == "__main__":
    main()
