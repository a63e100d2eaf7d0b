"""The dataset check's fast path (labelfile.CleanFiles) against its line-by-line check (check_text):
the fast path may pass a file to the slow one, but must never accept a file the slow one faults, and
must count the same instances per class."""

from __future__ import annotations

import random
import re

import pytest

from runner.hostside import labelfile

# Values as label files write them, valid and not, for every column.
CLASSES = ["0", "1", "2", "79", "80", "01", "1.0", "-1", "1e0", "x", "", "00"]
UNITS = [
    "0",
    "0.",
    "0.5",
    "0.000000",
    ".5",
    "1",
    "1.0",
    "1.000",
    "1.5",
    "1.0001",
    "00.5",
    "01",
    "-0.1",
    "-0",
    "nan",
    "inf",
    "1e-3",
    "5e-1",
    "0.5.5",
    ".",
    "0,5",
    "0x1",
    "1_0",
    "\u0665",
    "0.99999999",
]
GAPS = [" ", " ", " ", "  ", "\t", " \t"]
ENDS = ["\n", "\n", "\n", "\r\n", " \n", "\n\n", ""]


def random_line(rng: random.Random, plausible: bool) -> str:
    """A label line: with plausible, mostly valid values; otherwise anything from the lists above."""
    if plausible:
        values = [str(rng.randrange(80))] + [f"{rng.uniform(0.01, 1.0):.6f}" for _ in range(4)]
        if rng.random() < 0.3:
            column = rng.randrange(5)
            values[column] = rng.choice(CLASSES if column == 0 else UNITS)
    else:
        values = [rng.choice(CLASSES)] + [rng.choice(UNITS) for _ in range(rng.choice([3, 4, 4, 4, 5, 6]))]
    text = values[0]
    for value in values[1:]:
        text += rng.choice(GAPS) + value
    return text


def random_file(rng: random.Random) -> str:
    plausible = rng.random() < 0.8
    lines = [random_line(rng, plausible) for _ in range(rng.randint(1, 8))]
    if rng.random() < 0.1:
        lines.append(rng.choice(lines))  # a duplicate
    text = "".join(line + rng.choice(ENDS) for line in lines)
    return text


@pytest.mark.parametrize("seed", range(4))
def test_the_fast_path_accepts_only_what_the_line_check_passes(seed: int) -> None:
    rng = random.Random(seed)
    accepted = 0
    for _ in range(5000):
        text = random_file(rng)
        fast_counts, slow_counts = [0] * 80, [0] * 80
        clean = labelfile.CleanFiles(80, fast_counts)
        found = clean.instances(text.encode("utf-8"))
        clean.finish()
        instances, problems = labelfile.check_text(text, 80, slow_counts)
        if found is None:
            assert fast_counts == [0] * 80
            continue
        accepted += 1
        assert (found, problems, fast_counts) == (instances, [], slow_counts), repr(text)
    assert accepted > 500  # about 750 of these files are clean: the fast path is taken, not only passed over


def test_every_clean_file_takes_the_fast_path() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        lines = {
            f"{rng.randrange(80)} " + " ".join(f"{rng.uniform(0.0001, 1.0):.6f}" for _ in range(4))
            for _ in range(rng.randint(1, 30))
        }
        counts = [0] * 80
        clean = labelfile.CleanFiles(80, counts)
        assert clean.instances("".join(line + "\n" for line in lines).encode()) == len(lines)
        clean.finish()
        assert sum(counts) == len(lines)


@pytest.mark.parametrize(
    "text",
    ["0 0.5 0.5 0.1 0.1\n", "0 0.5 0.5 0.1 0.1", "2 0 1 1 1\r\n1 .5 0. 0.000001 1.000\n", "0\t0.5  0.5 0.1 0.1 \n"],
)
def test_clean_files_take_the_fast_path(text: str) -> None:
    counts = [0, 0, 0]
    clean = labelfile.CleanFiles(3, counts)
    assert clean.instances(text.encode()) == len(text.splitlines())
    clean.finish()
    assert sum(counts) == len(text.splitlines())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "3 0.5 0.5 0.1 0.1\n",
        "0 0.5 0.5 0.0 0.1\n",
        "0 0.5 0.5 0.1 0.1\n\n0 0.4 0.5 0.1 0.1\n",
        "0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n",
        "0 0.5 0.5 0.1 1e-1\n",
        "0 0.1 0.1 0.9 0.1 0.5 0.9\n",
    ],
)
def test_files_needing_a_closer_look_go_line_by_line(text: str) -> None:
    assert labelfile.CleanFiles(3, [0, 0, 0]).instances(text.encode()) is None


def test_pose_and_classless_datasets_never_take_the_fast_path() -> None:
    assert labelfile.CleanFiles(3, [0] * 3, keypoint_numbers=6).instances(b"0 0.5 0.5 0.1 0.1\n") is None
    assert labelfile.CleanFiles(0, []).instances(b"0 0.5 0.5 0.1 0.1\n") is None


@pytest.mark.parametrize("n", [1, 2, 9, 10, 11, 80, 99, 100, 101, 365, 1000, 1203, 10000])
def test_class_ids_below_n_match_and_no_others(n: int) -> None:
    pattern = re.compile(labelfile.integers_below(n))
    for number in range(0, max(2 * n, 120)):
        assert (pattern.fullmatch(str(number).encode()) is not None) == (number < n), number
    for written in (b"00", b"01", b"-0", b"+1", b"1.0", b""):
        assert pattern.fullmatch(written) is None
