#!/usr/bin/env python3
"""How long `runner status` takes, against references measured in the same run, on loopback sshd
hosts (test-host containers):

1. one job on one host against a bare `ssh HOST true` (target: at most 1.5x);
2. 8 jobs on 8 hosts against 1 job on 1 host (target: at most 2x: hosts are polled in parallel);
3. a job whose train.log is 1 GiB against one whose log is 1 MiB (target: within 20%).

    .venv/bin/python benchmarks/status_vs_ssh.py [--rounds 7] [--hosts 8]

runner's time is the whole `runner status --json` command: process start, the store, one probe per
host (the agent reads every job's snapshot and parses its log tail), the table of results. "new
connection" closes runner's shared SSH connection first, so status pays a handshake as `ssh true`
does; "shared connection" reuses the one an earlier runner command left open (for a minute).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.testhost import USER, TestHost, ensure_image, make_client_key, write_hosts_file  # noqa: E402

RUNNER = str(Path(sys.executable).parent / "runner")
JOB = "name: {name}\nrun: echo started; sleep 3600\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--hosts", type=int, default=8)
    args = parser.parse_args()
    ensure_image()
    base = Path(tempfile.mkdtemp(prefix="bench-status-"))
    key = make_client_key(base)
    with ThreadPoolExecutor(args.hosts) as pool:
        boxes = list(pool.map(lambda _: TestHost.start(key), range(args.hosts)))
    try:
        run_benchmark(base, boxes, args.rounds)
    finally:
        with ThreadPoolExecutor(len(boxes)) as pool:
            list(pool.map(TestHost.remove, boxes))
        shutil.rmtree(base, ignore_errors=True)


def run_benchmark(base: Path, boxes: list[TestHost], rounds: int) -> None:
    one = Setup(base / "one", boxes[:1])
    many = Setup(base / "many", boxes)
    big = Setup(base / "big", boxes[:1])
    small = Setup(base / "small", boxes[:1])
    grow_log(boxes[0], big.job_dirs[0], 1024)
    grow_log(boxes[0], small.job_dirs[0], 1)
    times: dict[str, list[float]] = {key: [] for key in ("ssh", "new", "shared", "many", "big", "small")}
    for _ in range(rounds):
        times["ssh"].append(ssh_true(one, boxes[0]))
        one.close_connections()
        times["new"].append(one.timed_status())
        times["shared"].append(one.timed_status())
        many.timed_status()  # open the shared connections, as the one-host case has them
        times["many"].append(many.timed_status())
        big.timed_status(), small.timed_status()
        times["big"].append(big.timed_status())
        times["small"].append(small.timed_status())
    show(times, len(boxes))


class Setup:
    """A runner home with one job on each of the given hosts."""

    def __init__(self, folder: Path, boxes: list[TestHost]) -> None:
        self.env = {**os.environ, "RUNNER_HOME": str(folder / "home"), "RUNNER_CONFIG_DIR": str(folder / "config"),
                    "HOME": str(folder / "user"), "TMUX_TMPDIR": str(folder)}  # fmt: skip
        (folder / "user").mkdir(parents=True)
        self.names = [f"box{index}" for index in range(len(boxes))]
        write_hosts_file(
            folder / "config", {name: box.hosts_entry() for name, box in zip(self.names, boxes, strict=True)}
        )
        self.job_dirs = []
        for name in self.names:
            runner(self.env, "hosts", "check", name, "--trust-new-host")
            job_file = folder / f"{name}.yaml"
            job_file.write_text(JOB.format(name=f"bench-{name}"))
            job = json.loads(runner(self.env, "submit", str(job_file), "--host", name, "--json"))
            self.job_dirs.append(job["job_dir"])

    def timed_status(self) -> float:
        started = time.monotonic()
        jobs = json.loads(runner(self.env, "status", "--json"))["jobs"]
        took = time.monotonic() - started
        assert all(job["state"] == "running" for job in jobs), jobs
        return round(took, 3)

    def close_connections(self) -> None:
        script = (
            "from runner.hosts import get_host\nfrom runner.hosts.openssh import openssh_argv, stop_master\n"
            f"for name in {self.names!r}:\n"
            "    host = get_host(name)\n    stop_master(openssh_argv(host.entry), host.openssh_target())\n"
        )
        subprocess.run([sys.executable, "-c", script], env=self.env, check=True)


def grow_log(box: TestHost, job_dir: str, mib: int) -> None:
    """Make the job's train.log mib MiB of progress-like lines (the job itself only sleeps)."""
    script = (
        'python3 -c "import sys\n'
        "line = b'  1/100  2.37G  1.234  0.567  0.891  16  640: 50% 100/200 5.0it/s\\\\r' * 8 + b'\\\\n'\n"
        f"out = open('{job_dir}/train.log', 'ab')\n"
        f"for _ in range({mib} * 1024 * 1024 // len(line)):\n"
        '    out.write(line)\n"'
    )
    box.sh(script, user=USER)


def ssh_true(setup: Setup, box: TestHost) -> float:
    argv = ["ssh", "-F", str(Path(setup.env["RUNNER_CONFIG_DIR"]) / "ssh_config"), "-o", "ControlMaster=no",
            "-o", "ControlPath=none", "-p", str(box.port), "-i", str(box.key), f"{USER}@127.0.0.1", "true"]  # fmt: skip
    started = time.monotonic()
    subprocess.run(argv, check=True, env=setup.env)
    return round(time.monotonic() - started, 3)


def runner(env: dict[str, str], *args: str) -> str:
    return subprocess.run([RUNNER, *args], env=env, check=True, capture_output=True, text=True).stdout


def show(times: dict[str, list[float]], hosts: int) -> None:
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"medians of {len(times['ssh'])} rounds")
    rows = [("ssh HOST true (new connection)", "ssh"), ("runner status, 1 job, new connection", "new"),
            ("runner status, 1 job, shared connection", "shared"),
            (f"runner status, {hosts} jobs on {hosts} hosts", "many"),
            ("runner status, 1 MiB train.log", "small"), ("runner status, 1 GiB train.log", "big")]  # fmt: skip
    for label, key in rows:
        print(f"{label:44s} {median[key]:6.3f} s  {times[key]}")
    print(
        f"status / ssh true: new connection {median['new'] / median['ssh']:.2f}x, "
        f"shared {median['shared'] / median['ssh']:.2f}x (target <= 1.5x)"
    )
    print(f"{hosts} hosts / 1 host: {median['many'] / median['shared']:.2f}x (target <= 2x)")
    print(f"1 GiB log / 1 MiB log: {median['big'] / median['small']:.2f}x (target within 1.2x)")


if __name__ == "__main__":
    main()
