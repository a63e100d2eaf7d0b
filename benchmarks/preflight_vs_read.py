#!/usr/bin/env python3
"""The dataset check (runner's preflight) against merely reading every label file, in the same run.

    .venv/bin/python benchmarks/preflight_vs_read.py [--images 100000] [--rounds 3] [--dir DIR]

Generates a YOLO dataset in ultralytics' layout (90% train, 10% val, 80 classes): tiny valid images
(PNG and JPEG headers, half each) and label files of 1 to 12 boxes. Then, alternately, --rounds times:
the baseline (walk the label folders, read each file whole, as the check does: os.open/os.read, in one
process) and the full check (walk the image folders, read every image's header, read and parse every
label, look for labels without images), in one process and in the agent's default worker processes.
All run on a warm page cache (the dataset was just written). Prints the medians and their ratios to
the baseline; the target is at most 2x.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "runner" / "hostside"))
sys.path.insert(0, str(REPO))

import datacheck  # noqa: E402  (as the agent imports it on a host)
import fanout  # noqa: E402
import imageheader  # noqa: E402

from tests.datasets import IMAGE_BYTES  # noqa: E402

CLASSES = 80


def generate(root: Path, images: int) -> dict:
    rng = random.Random(6)
    for index in range(images):
        split = "val" if index % 10 == 9 else "train"
        suffix = "jpg" if index % 2 else "png"
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        (root / "images" / split / f"{index:07d}.{suffix}").write_bytes(IMAGE_BYTES[suffix])
        lines = [
            f"{rng.randrange(CLASSES)} {rng.uniform(0.1, 0.9):.6f} {rng.uniform(0.1, 0.9):.6f}"
            f" {rng.uniform(0.01, 0.2):.6f} {rng.uniform(0.01, 0.2):.6f}"
            for _ in range(rng.randint(1, 12))
        ]
        (root / "labels" / split / f"{index:07d}.txt").write_text("\n".join(lines) + "\n")
    return {
        "yaml": "data.yaml",
        "path": str(root),
        "splits": {"train": ["images/train"], "val": ["images/val"]},
        "nc": CLASSES,
        "names": [f"class{index}" for index in range(CLASSES)],
        "lines": {},
    }


def read_every_label(root: Path) -> int:
    """The baseline: find every label file and read it, nothing else."""
    total = 0
    for folder, _, names in os.walk(root / "labels"):
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            total += len(os.read(fd, 1 << 16))
            os.close(fd)
    return total


def read_every_image_header(root: Path) -> int:
    """A part of the check, measured apart: reading each image's header (an open, a small read)."""
    count = 0
    for folder, _, names in os.walk(root / "images"):
        for name in names:
            imageheader.read_header(os.path.join(folder, name))
            count += 1
    return count


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the check's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Measure:
    """Wall and CPU seconds of each run of one action, alternated with the others."""

    def __init__(self, label: str, action) -> None:
        self.label, self.action = label, action
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self) -> object:
        cpu = cpu_seconds()
        seconds, result = timed(self.action)
        self.wall.append(seconds)
        self.cpu.append(cpu_seconds() - cpu)
        return result

    def line(self, baseline: Measure | None, note: str = "") -> str:
        wall, cpu = statistics.median(self.wall), statistics.median(self.cpu)
        runs = ", ".join(f"{seconds:.3f}" for seconds in self.wall)
        ratio = f"  ratio {wall / statistics.median(baseline.wall):.2f}x" if baseline else ""
        return f"{self.label:<26} {wall:6.3f}s wall (median of {runs}), {cpu:6.3f}s CPU{ratio}{note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="where to generate the dataset [default: a temp dir]")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-preflight-", dir=args.dir))
    try:
        seconds, description = timed(lambda: generate(base, args.images))
        print(f"generated {args.images} images and labels in {base} in {seconds:.1f}s; {os.cpu_count()} CPUs here")
        workers = fanout.default_workers()
        read = Measure("read every label file", lambda: read_every_label(base))
        headers = Measure("read every image header", lambda: read_every_image_header(base))
        alone = Measure("check, 1 process", lambda: datacheck.check(description, str(base), workers=1))
        spread = Measure(
            f"check, {workers} processes", lambda: datacheck.check(description, str(base), workers=workers)
        )
        for _ in range(args.rounds):
            for measure in (read, headers, alone, spread):
                result = measure.run()
                if measure is spread:
                    _check_counts(result, args.images)
        print(read.line(None, " (the baseline: one process, os.open/os.read, as the check reads)"))
        print(headers.line(read, " (a part of the check, for scale)"))
        print(alone.line(read))
        note = f" (what the agent runs: the cores it may use, at most {fanout.MAX_WORKERS}; target: at most 2x)"
        print(spread.line(read, note))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _check_counts(report: dict, images: int) -> None:
    """The check must have seen everything: every image, every label, no problem."""
    splits = report["splits"]
    assert report["ok"] and report["warnings"] == 0, report
    assert sum(split["images"] for split in splits.values()) == images
    assert sum(split["labels"] for split in splits.values()) == images
    assert sum(split["instances"] for split in splits.values()) > images


if __name__ == "__main__":
    main()
