"""The agent's protocol on the local host: a folder answering another protocol is replaced with one
line on stderr, and an install removes the old agent folders no running job uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.hosts.local import LocalHost
from runner.hostside import agentdirs
from runner.hostside.hostfiles import PROTOCOL
from runner.jobs.agentanswers import probe_answer, protocol_of
from runner.jobs.layout import hostside_dir, install_hostside
from tests.conftest import wait_for
from tests.unit.localagent import host, isolated  # noqa: F401  (fixtures)


def _as_protocol_0(folder: Path) -> None:
    """What an agent from before protocols answers: the same files, no protocol in its answers."""
    hostfiles = folder / "hostfiles.py"
    hostfiles.write_text(hostfiles.read_text().replace(f"PROTOCOL = {PROTOCOL}\n", "PROTOCOL = 0\n"))
    agent = folder / "agent.py"
    agent.write_text(agent.read_text().replace('answer = {"protocol": PROTOCOL}', "answer = {}"))


def test_an_agent_of_another_protocol_is_replaced_with_one_line(
    host: LocalHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install_hostside(host)
    folder = Path(hostside_dir(host))
    _as_protocol_0(folder)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    answer = probe_answer(host, [str(job_dir)])
    assert protocol_of(answer) == PROTOCOL and answer["jobs"][str(job_dir)]["exists"] is True
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"runner: host 'local' had runner's agent protocol 0; installed protocol {PROTOCOL}"]
    assert f"PROTOCOL = {PROTOCOL}\n" in (folder / "hostfiles.py").read_text()  # this runner's files, in place
    assert sorted(path.name for path in folder.parent.glob("hostside-*")) == [folder.name]  # nothing left over
    probe_answer(host, [str(job_dir)])
    assert capsys.readouterr().err == ""  # said once: the next command meets this runner's agent


def test_an_install_removes_old_agent_folders_no_running_job_uses(host: LocalHost) -> None:
    root = Path(host.root())
    old = root / "hostside-000000000000"
    old.mkdir(parents=True)
    (old / "agent.py").write_text("# an older runner's agent\n")
    install_hostside(host)
    assert sorted(path.name for path in root.glob("hostside-*")) == [Path(hostside_dir(host)).name]


def _job(root: Path, job_id: str, agent_folder: str, ended: bool) -> None:
    job_dir = root / "jobs" / job_id
    job_dir.mkdir(parents=True)
    (job_dir / "run.sh").write_text(
        f"cd {job_dir}\n/usr/bin/python3 -E -S {root}/{agent_folder}/agent.py snapshot {job_dir}\n"
    )
    if ended:
        (job_dir / "exit_code").write_text("0\n")


def test_prune_keeps_the_folders_a_running_job_or_a_live_process_names(tmp_path: Path) -> None:
    root = tmp_path / "runner"
    for name in ("hostside-aaaa", "hostside-bbbb", "hostside-cccc", "hostside-dddd", "hostside-eeee"):
        (root / name).mkdir(parents=True)
    (root / "hostside-ffff.tmp.12").mkdir()  # an install under way
    _job(root, "running", "hostside-bbbb", ended=False)
    _job(root, "ended", "hostside-cccc", ended=True)
    _job(root, "lost", "hostside-dddd", ended=False)  # no exit code, but no process of it lives either
    # A monitor window of a job started by an older runner: its command line names its folder.
    monitor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"{root}/hostside-aaaa/agent.py"])
    cmdline = Path(f"/proc/{monitor.pid}/cmdline")
    # Popen returns while the kernel is still setting up the new program: its cmdline reads empty a moment.
    try:
        wait_for(lambda: b"hostside-aaaa" in cmdline.read_bytes(), 10, interval=0.01, what="the monitor's cmdline")
        pruned = agentdirs.prune(str(root), "hostside-eeee", running_ids={"running"})
    finally:
        monitor.kill()
        monitor.wait()
    assert pruned == {"removed": ["hostside-cccc", "hostside-dddd"], "kept": ["hostside-aaaa", "hostside-bbbb"]}
    # The install under way (younger than LEFTOVER_AGE_S) keeps its folder; the current one is never touched.
    assert sorted(path.name for path in root.glob("hostside-*")) == ["hostside-aaaa", "hostside-bbbb", "hostside-eeee",
                                                                     "hostside-ffff.tmp.12"]  # fmt: skip


def test_prune_counts_every_unfinished_job_as_running_when_processes_cannot_tell(tmp_path: Path) -> None:
    root = tmp_path / "runner"
    for name in ("hostside-aaaa", "hostside-bbbb", "hostside-cccc"):
        (root / name).mkdir(parents=True)
    _job(root, "unfinished", "hostside-aaaa", ended=False)
    _job(root, "ended", "hostside-bbbb", ended=True)
    assert agentdirs.prune(str(root), "hostside-cccc", running_ids=None) == {"removed": ["hostside-bbbb"],
                                                                              "kept": ["hostside-aaaa"]}  # fmt: skip


def test_every_answer_and_document_carries_the_protocol(host: LocalHost, tmp_path: Path) -> None:
    install_hostside(host)
    job_dir = tmp_path / "job"
    (job_dir / "work").mkdir(parents=True)
    (job_dir / "work" / "train.py").write_text("print('hi')\n")  # a file to hash: the tree caches its hash
    agent = str(Path(hostside_dir(host)) / "agent.py")
    subprocess.run([host.python, "-E", "-S", agent, "snapshot", str(job_dir)], check=True, capture_output=True)
    assert json.loads((job_dir / "status.json").read_text())["protocol"] == PROTOCOL
    assert json.loads((job_dir / "telemetry.jsonl").read_text().splitlines()[-1])["protocol"] == PROTOCOL
    for args in (["probe", str(job_dir)], ["tree", str(job_dir / "work")], ["plotdata", str(job_dir)]):
        done = subprocess.run([host.python, "-E", "-S", agent, *args], check=True, capture_output=True, text=True)
        assert json.loads(done.stdout)["protocol"] == PROTOCOL, args
    caches = list((Path(host.root()) / "hashcache").glob("*.json"))
    assert caches and all(json.loads(path.read_text())["protocol"] == PROTOCOL for path in caches)
