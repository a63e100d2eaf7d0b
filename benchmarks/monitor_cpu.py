#!/usr/bin/env python3
"""The host monitor's own CPU use, against the budget of 1% of a core at its default 10 s interval.

    .venv/bin/python benchmarks/monitor_cpu.py [--snapshots 200] [--log-mib 1024]

Builds a job directory with a train.log of --log-mib MiB of ultralytics progress (the recorded
sample, repeated), the recorded results.csv, and `nvidia-smi` on PATH printing the recorded
RTX 4080 query output (a real nvidia-smi costs more to start: see the note printed). Then takes
--snapshots snapshots in this process, as the monitor window does, and prints the CPU seconds per
snapshot and the share of one core that makes at a 10 s interval.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "tests" / "fixtures" / "samples"
sys.path.insert(0, str(REPO / "runner" / "hostside"))

import monitor  # noqa: E402

INTERVAL_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=200)
    parser.add_argument("--log-mib", type=int, default=1024)
    parser.add_argument("--real-gpu-tool", action="store_true", help="use the nvidia-smi/rocm-smi on PATH")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    try:
        job_dir = make_job_dir(base, args.log_mib)
        if not args.real_gpu_tool:
            os.environ["PATH"] = f"{base / 'bin'}{os.pathsep}{os.environ['PATH']}"
        watcher = monitor.Monitor(str(job_dir))
        assert watcher.snapshot()["gpus"]["gpus"], "no GPU reading: the GPU tool is missing or did not parse"
        cpu_before, wall_before = cpu_seconds(), time.monotonic()
        for _ in range(args.snapshots):
            monitor.write_snapshot(str(job_dir), watcher.snapshot())
        per_snapshot = (cpu_seconds() - cpu_before) / args.snapshots
        wall = (time.monotonic() - wall_before) / args.snapshots
        print(f"train.log {args.log_mib} MiB, {args.snapshots} snapshots")
        print(f"CPU per snapshot {per_snapshot * 1000:.1f} ms (wall {wall * 1000:.1f} ms), gpu tool included")
        print(f"at a {INTERVAL_S:g} s interval: {100 * per_snapshot / INTERVAL_S:.2f}% of one core (budget 1%)")
        print("note: the GPU tool here is `cat` of a recorded output; on a GPU host, run this with the real")
        print("tool first on PATH (--real-gpu-tool) to include what starting nvidia-smi or rocm-smi costs")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def make_job_dir(base: Path, log_mib: int) -> Path:
    job_dir = base / "job"
    results = job_dir / "work" / "runs" / "detect" / "train"
    results.mkdir(parents=True)
    shutil.copy(SAMPLES / "ultralytics" / "results.csv", results / "results.csv")
    sample = (SAMPLES / "ultralytics" / "train_tty.log").read_bytes()
    with (job_dir / "train.log").open("wb") as log:
        for _ in range(max(1, log_mib * 1024 * 1024 // len(sample))):
            log.write(sample)
    (base / "bin").mkdir()
    tool = base / "bin" / "nvidia-smi"
    recorded = SAMPLES / "telemetry" / "nvidia-smi_query-gpu_csv-header_allfields_rtx4080super_drv595_load.csv"
    tool.write_text(f"#!/bin/sh\nexec cat '{recorded}'\n")
    tool.chmod(0o755)
    return job_dir


def cpu_seconds() -> float:
    """This process and its finished children (the GPU tool), user and system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
