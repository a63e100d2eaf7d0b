"""The host-side files as hosts run them: Python 3.7's grammar, and one import name per module."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner import hostside
from runner.hostside.hostfiles import PROTOCOL
from tests.unit.hostcopy import copy_hostside, run_in_copy

MODULES = [name[: -len(".py")] for name in hostside.FILES if name.endswith(".py")]


@pytest.mark.parametrize("name", [name for name in hostside.FILES if name.endswith(".py")])
def test_each_file_parses_with_python_3_7s_grammar(name: str) -> None:
    # Job images can be old: the agent runs in whatever Python the host or image has, 3.7 at least.
    ast.parse(hostside.read(name), filename=name, feature_version=(3, 7))


def test_every_module_of_the_package_travels_to_the_host() -> None:
    # The grammar check below covers FILES: a module left out of it would also be missing on hosts.
    on_disk = {path.stem for path in Path(hostside.__file__).parent.glob("*.py")} - {"__init__"}
    assert on_disk == set(MODULES)


def test_on_a_host_each_module_has_one_name_and_its_folder_is_off_sys_path(tmp_path: Path) -> None:
    folder = copy_hostside(tmp_path / "hostside-0123456789ab")
    code = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module("hostside." + name)
try:
    import transfer
except ImportError:
    top_level = False
else:
    top_level = True
print(json.dumps({"modules": sorted(n for n in sys.modules if n.startswith("hostside")),
                  "bare": sorted(n for n in sys.argv[1:] if n in sys.modules), "top_level": top_level,
                  "cache_class_once": sys.modules["hostside.transfer"].HashCache.__module__}))
"""
    done = run_in_copy(folder, code, *[name for name in MODULES if name != "agent"])
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["bare"] == [] and seen["top_level"] is False  # `import transfer` no longer finds a second copy
    assert set(seen["modules"]) >= {"hostside." + name for name in MODULES if name != "agent"}
    assert seen["cache_class_once"] == "hostside.transfer"


def test_on_the_controller_the_modules_are_runner_hostside_only() -> None:
    import importlib

    for name in MODULES:
        importlib.import_module("runner.hostside." + name)
    assert [name for name in MODULES if name in sys.modules] == []  # no sibling leaked in under its bare name


def _python_3_7() -> str | None:
    """Python 3.7 where this machine has one (on PATH, or pyenv's), else None."""
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.7*/bin/python3.7")))
    candidates = [shutil.which("python3.7"), *pyenv]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(_python_3_7() is None, reason="no Python 3.7 on this machine")
def test_the_agent_runs_under_python_3_7(tmp_path: Path) -> None:
    # The grammar check above cannot see a stdlib call newer than 3.7: run the commands a job needs.
    folder = copy_hostside(tmp_path / "hostside-0123456789ab")
    job_dir = tmp_path / "jobs" / "j"
    (job_dir / "work").mkdir(parents=True)
    (job_dir / "work" / "best.pt").write_bytes(b"weights")
    agent = [str(_python_3_7()), "-E", "-S", str(folder / "agent.py")]
    for args in (["snapshot", str(job_dir)], ["probe", str(job_dir)], ["manifest", str(job_dir / "work"), "*.pt"],
                 ["tree", str(job_dir / "work")], ["plotdata", str(job_dir)], ["prune"]):  # fmt: skip
        done = subprocess.run([*agent, *args], capture_output=True, text=True, check=False, timeout=60)
        assert done.returncode == 0, (args, done.stderr)
        if args[0] != "snapshot":
            assert json.loads(done.stdout)["protocol"] == PROTOCOL
