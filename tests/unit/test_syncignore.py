"""What a sync leaves out: .runnerignore patterns, anchored or matching any path component."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from runner.hosts.local import LocalHost
from runner.transfer.push import push_tree
from runner.transfer.syncignore import ALWAYS_EXCLUDED, is_excluded, load_excludes


def test_load_excludes_without_a_runnerignore(tmp_path: Path) -> None:
    patterns = load_excludes(tmp_path)
    assert patterns == list(ALWAYS_EXCLUDED)
    assert {".git", "__pycache__"} <= set(patterns)


def test_load_excludes_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    (tmp_path / ".runnerignore").write_text(
        "# weights are fetched, never pushed\n*.pt\n\n   \n  data/raw  \n\t# an indented comment\n/build/\n"
    )
    assert load_excludes(tmp_path) == [*ALWAYS_EXCLUDED, "*.pt", "data/raw", "/build/"]


def test_git_and_caches_are_always_excluded(tmp_path: Path) -> None:
    (tmp_path / ".runnerignore").write_text("*.log\n")
    patterns = load_excludes(tmp_path)
    assert is_excluded(".git", patterns)
    assert is_excluded(".git/objects/ab/cdef", patterns)
    assert is_excluded("pkg/__pycache__/mod.cpython-311.pyc", patterns)
    assert is_excluded("train.log", patterns)
    assert not is_excluded("pkg/mod.py", patterns)
    assert not is_excluded(".gitignore", patterns)


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("w.pt", True),
        ("runs/a/w.pt", True),
        ("runs/a/weights/best.pt", True),
        ("runs/a/w.pth", False),
        ("runs/a/results.csv", False),
    ],
)
def test_a_pattern_without_slash_matches_any_component(path: str, excluded: bool) -> None:
    assert is_excluded(path, ["*.pt"]) is excluded


def test_a_bare_name_excludes_the_folder_at_any_depth() -> None:
    assert is_excluded("runs", ["runs"])
    assert is_excluded("runs/a/w.pt", ["runs"])
    assert is_excluded("sub/runs/a/w.pt", ["runs"])
    assert not is_excluded("runs2/a/w.pt", ["runs"])


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("data/raw", True),
        ("data/raw/x", True),
        ("data/raw/deep/x.jpg", True),
        ("sub/data/raw", False),
        ("sub/data/raw/x", False),
        ("data/rawer/x", False),
        ("data/labels/x", False),
    ],
)
def test_a_pattern_with_slash_matches_from_the_top(path: str, excluded: bool) -> None:
    assert is_excluded(path, ["data/raw"]) is excluded


@pytest.mark.parametrize("path", ["build", "build/lib/x.so"])
def test_leading_and_trailing_slashes_are_stripped(path: str) -> None:
    assert is_excluded(path, ["/build/"])
    assert not is_excluded("builder/x.so", ["/build/"])


def test_a_leading_slash_anchors_the_pattern_at_the_top() -> None:
    # gitignore, and this module's docstring ("one with '/' matches from the workdir's top"): /build is top-level only.
    assert is_excluded("build/x", ["/build"])
    assert not is_excluded("src/build/x", ["/build"])


def test_a_real_push_leaves_out_what_the_patterns_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    source, dest = tmp_path / "src", tmp_path / "dest"
    for rel in ["train.py", "data/raw/a.jpg", "data/labels/a.txt", "sub/data/raw/b.jpg", "runs/w.pt", ".git/HEAD"]:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(rel)
    (source / ".runnerignore").write_text("# big\ndata/raw\n*.pt\n")
    push_tree(LocalHost(), source, str(dest), load_excludes(source))
    copied = sorted(path.relative_to(dest).as_posix() for path in dest.rglob("*") if path.is_file())
    assert copied == ["data/labels/a.txt", "sub/data/raw/b.jpg", "train.py"]


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("weights/a.pt", True),
        ("weights/a/b.pt", False),  # '*' does not cross '/', as in rsync and git
        ("sub/weights/x.pt", False),  # a pattern with '/' is anchored at the top
        ("runs/x/y/events.out", True),
        ("runs/events.out", True),  # '**' also matches no folder at all
    ],
)
def test_anchored_globs_behave_as_rsync_and_git_do(path: str, excluded: bool) -> None:
    assert is_excluded(path, ["weights/*.pt", "runs/**/events.out"]) is excluded


def test_rsync_gets_the_same_patterns_with_its_anchor() -> None:
    assert rsync_patterns(["*.pt", "weights/*.pt", "/build/", ".git"]) == ["*.pt", "/weights/*.pt", "/build", ".git"]


def test_a_real_rsync_leaves_out_the_same_files(tmp_path: Path) -> None:
    source = tmp_path / "src"
    files = ["weights/a.pt", "weights/a/b.pt", "sub/weights/x.pt", "runs/x/y/events.out", "runs/events.out",
             "data/raw/img.jpg", "src/build/keep.o", "build/drop.o", "notes.tmp", "deep/notes.tmp",
             "main.py"]  # fmt: skip
    for rel in files:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(rel)
    patterns = ["weights/*.pt", "runs/**/events.out", "data/raw", "/build/", "*.tmp"]
    dest = tmp_path / "dest"
    argv = ["rsync", "-a", *[f"--exclude={p}" for p in rsync_patterns(patterns)], f"{source}/", f"{dest}/"]
    subprocess.run(argv, check=True)
    copied = sorted(str(path.relative_to(dest)) for path in dest.rglob("*") if path.is_file())
    assert copied == sorted(rel for rel in files if not is_excluded(rel, patterns))
    assert copied == ["main.py", "src/build/keep.o", "sub/weights/x.pt", "weights/a/b.pt"]


# rsync is the reference for these semantics: the same patterns, converted for it, must leave out
# the same files when a real rsync copies the folder.


def rsync_patterns(patterns: Sequence[str]) -> list[str]:
    """The same patterns for rsync --exclude: anchored ones get rsync's leading '/' (its anchor), and
    since rsync's '/**/' needs at least one folder, each also comes with that folder level dropped."""
    rsync: list[str] = []
    for pattern in patterns:
        body = pattern.rstrip("/")
        if "/" not in body:
            rsync.append(body)
            continue
        for variant in _zero_folder_variants(body.lstrip("/").split("/")):
            rsync.append("/" + "/".join(variant))
    return list(dict.fromkeys(rsync))


def _zero_folder_variants(segments: list[str]) -> list[list[str]]:
    if "**" not in segments[:-1]:
        return [segments]
    index = segments.index("**")
    rest = _zero_folder_variants(segments[index + 1 :])
    return [segments[: index + 1] + tail for tail in rest] + [segments[:index] + tail for tail in rest]
