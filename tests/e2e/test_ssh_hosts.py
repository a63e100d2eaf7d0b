"""SSH hosts end to end: the real CLI against sshd in test host containers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, Runner, runner_executable, wait_for, write_job
from tests.e2e.testhost import TestHost, write_hosts_file


def test_demo_succeeds_on_an_ssh_host_and_its_weights_match(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    job_id = runner.submit(REPO / "jobs" / "demo.yaml", "--host", "box")
    done = runner.wait_state(job_id, {"succeeded", "failed", "lost"}, timeout=120)
    assert done["state"] == "succeeded" and done["host"] == "box"
    assert done["job_dir"] == f"/home/trainer/.runner/jobs/{job_id}"
    fetched = runner.json("fetch", "weights", job_id, "--dest", str(tmp_path / "w"))
    assert sorted(item["path"] for item in fetched["files"]) == [
        "runs/demo/weights/best.pt",
        "runs/demo/weights/last.pt",
    ]
    for item in fetched["files"]:
        on_host = trusted_box.sha256(f"{done['job_dir']}/work/{item['path']}")
        here = hashlib.sha256((tmp_path / "w" / item["path"]).read_bytes()).hexdigest()
        assert item["sha256"] == on_host == here


def test_an_unknown_host_is_refused_until_trusted(runner: Runner, box: TestHost, tmp_path: Path) -> None:
    refused = runner.run("submit", str(REPO / "jobs" / "demo.yaml"), "--host", "box")
    assert refused.returncode == 2
    message = refused.stderr.strip()
    assert "is not known" in message and "--trust-new-host" in message
    offered = message.split(" key ")[1].split(".")[0]
    assert offered in box.host_key_fingerprints()
    assert runner.json("status") == {"jobs": []}  # refused before anything was recorded or started
    assert not (runner.config / "known_hosts").exists()

    trusted = runner.run("hosts", "check", "box", "--trust-new-host", check=True)
    assert "no GPU" in trusted.stdout
    assert f"[127.0.0.1]:{box.port} " in (runner.config / "known_hosts").read_text()
    assert runner.run("hosts", "check", "box").returncode == 0  # pinned: no flag needed any more


def test_a_changed_host_key_is_refused_with_both_fingerprints(runner: Runner, trusted_box: TestHost) -> None:
    before = trusted_box.host_key_fingerprints()
    trusted_box.replace_host_keys()
    after = trusted_box.host_key_fingerprints()
    for flags in ([], ["--trust-new-host"]):  # trusting new hosts never covers a changed one
        refused = runner.run("hosts", "check", "box", *flags)
        assert refused.returncode == 2
        assert "DIFFERENT key" in refused.stderr
        got = refused.stderr.split("got ")[1].split()[1].rstrip(",")
        expected = refused.stderr.split("expected ")[1].split()[1].rstrip(".")
        assert got in after and expected in before


def test_the_job_survives_dropped_connections_and_a_killed_controller(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    job_id = runner.submit(REPO / "jobs" / "demo.yaml", "--host", "box")
    follower = subprocess.Popen(
        [runner_executable(), "logs", "-f", job_id], env=runner.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    watcher = subprocess.Popen([runner_executable(), "logs", "-f", job_id], env=runner.env, stdout=subprocess.DEVNULL)
    wait_for(lambda: "Epoch" in (runner.json("status", job_id)["last_line"] or ""), 60, what="training progress")
    assert trusted_box.kill_ssh_connections() >= 1  # every controller link drops at once
    watcher.send_signal(signal.SIGKILL)  # and one controller process dies outright
    assert runner.json("status", job_id)["state"] == "running"
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err.decode()
    assert b"30 epochs completed" in out
    assert runner.json("status", job_id)["state"] == "succeeded"


def test_a_paused_host_is_unreachable_and_its_job_stays_running(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    job_file = write_job(tmp_path, "ticker", "name: ticker\nrun: while true; do date +tick-%s; sleep 1; done\n")
    job_id = runner.submit(job_file, "--host", "box")
    wait_for(lambda: (runner.json("status", job_id)["last_line"] or "").startswith("tick-"), 30, what="a tick")
    trusted_box.pause()
    try:
        started = time.monotonic()
        status = runner.run("status", job_id, "--json")
        took = time.monotonic() - started
        assert status.returncode == 3
        assert "unreachable" in status.stderr
        assert len(status.stderr.strip().splitlines()) == 1, status.stderr  # one line, no traceback
        assert took < 3 + 6 + 10  # one attempt's timeout, the retry budget, process start
        job = json.loads(status.stdout)
        assert job["state"] == "running" and job["unreachable_since"]
        assert "unreachable since" in runner.run("status").stdout
    finally:
        trusted_box.unpause()
    seen = runner.json("status", job_id)
    assert seen["state"] == "running" and seen["unreachable_since"] is None
    first = seen["last_line"]
    wait_for(lambda: runner.json("status", job_id)["last_line"] != first, 15, what="progress after unpause")
    assert runner.json("stop", job_id, "--grace", "2")["state"] == "stopped"


def test_an_unchanged_dataset_is_not_sent_again(runner: Runner, trusted_box: TestHost, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for index in range(20):  # 200 MiB in 20 files
        (data / f"part{index:02d}.bin").write_bytes(os.urandom(10 * 1024 * 1024))
    work = tmp_path / "work"
    work.mkdir()
    job_file = write_job(
        work, "reader", "name: reader\ndatasets:\n  big: ../data\nrun: cat datasets/big/*.bin | wc -c\n"
    )
    first = runner.json("submit", str(job_file), "--host", "box")
    second = runner.json("submit", str(job_file), "--host", "box")
    print(f"\ndataset sync: first {first['sync']['dataset:big']}, second {second['sync']['dataset:big']}")
    assert first["sync"]["dataset:big"]["bytes_sent"] == 200 * 1024 * 1024
    assert first["sync"]["dataset:big"]["files_sent"] == 20
    assert second["sync"]["dataset:big"]["bytes_sent"] == 0
    assert second["sync"]["dataset:big"]["files_sent"] == 0
    done = runner.wait_state(second["id"], {"succeeded", "failed"}, timeout=60)
    assert done["state"] == "succeeded"
    assert done["last_line"] == str(200 * 1024 * 1024)  # the job reads all of it through its link


def test_paramiko_transport_moves_only_what_changed(runner: Runner, trusted_box: TestHost, tmp_path: Path) -> None:
    write_hosts_file(runner.config, {"box": trusted_box.hosts_entry(transport="paramiko")})
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.bin").write_bytes(os.urandom(300_000))
    (data / "sub" / "b.txt").write_text("label\n")
    # The dataset lies inside the workdir: it travels once, to the shared data dir, and is linked back in place.
    job_file = write_job(tmp_path, "lister", "name: lister\ndatasets:\n  d: data\nrun: cat data/sub/b.txt\n")
    first = runner.json("submit", str(job_file), "--host", "box")
    assert first["sync"]["dataset:d"] == {**first["sync"]["dataset:d"], "method": "paramiko", "files_sent": 2}
    assert first["sync"]["workdir"]["files_sent"] == 1  # the job file alone: data/ is not sent twice
    (data / "sub" / "b.txt").write_text("changed\n")
    second = runner.json("submit", str(job_file), "--host", "box")
    assert second["sync"]["dataset:d"]["files_sent"] == 1
    assert second["sync"]["dataset:d"]["bytes_sent"] == len("changed\n")
    assert runner.wait_state(second["id"], {"succeeded", "failed"}, timeout=30)["last_line"] == "changed"


def test_shell_metacharacters_in_paths_and_values_stay_literal(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    nasty = "w $(touch PWNED) `touch PWNED2`; 'q\" x"  # a folder name cannot hold '/'; relative touches then
    work = tmp_path / nasty
    work.mkdir()
    (work / "payload.txt").write_text("ok\n")
    job_file = write_job(
        work,
        "literal",
        'name: literal\nenv:\n  VALUE: "$(touch /tmp/pwned3); `id`; \'quoted\' \\"dq\\""\n'
        'run: printf \'%s|%s\\n\' "$VALUE" "$(cat payload.txt)"\n',
    )
    job_id = runner.submit(job_file, "--host", "box")
    done = runner.wait_state(job_id, {"succeeded", "failed"}, timeout=30)
    assert done["state"] == "succeeded"
    assert done["last_line"] == "$(touch /tmp/pwned3); `id`; 'quoted' \"dq\"|ok"
    assert not Path("/tmp/pwned3").exists() and not trusted_box.exists("/tmp/pwned3")
    assert [path.name for path in tmp_path.rglob("PWNED*")] == []
    assert trusted_box.sh("find / -xdev -name 'PWNED*' 2>/dev/null || true").strip() == ""
    assert not Path("/tmp/pwned").exists()
    bad_name = write_job(tmp_path, "badname", "name: x$(touch /tmp/pwned)\nrun: 'true'\n")
    refused = runner.run("submit", str(bad_name), "--host", "box")
    assert refused.returncode == 2 and ":1:7: name: String should match pattern" in refused.stderr


def test_tensorboard_is_forwarded_from_the_hosts_loopback(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("board-ok\n")
    job_file = write_job(
        tmp_path,
        "board",
        "name: board\ntensorboard: {port: 6123}\nrun: python3 -m http.server 6123 --bind 127.0.0.1\n",
    )
    job_id = runner.submit(job_file, "--host", "box")
    wait_for(lambda: "Serving HTTP" in (runner.json("status", job_id)["last_line"] or ""), 30, what="the server")
    with socket.socket() as taken:  # the job's port is busy here: the next free one is used
        taken.bind(("127.0.0.1", 6123))
        taken.listen()
        forward = subprocess.Popen(
            [runner_executable(), "tensorboard", job_id], env=runner.env, stdout=subprocess.PIPE, text=True
        )
        try:
            url = forward.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:") and not url.endswith(":6123/")
            body = urllib.request.urlopen(url + "index.html", timeout=10).read()
            assert body == b"board-ok\n"
        finally:
            forward.send_signal(signal.SIGINT)
            forward.wait(10)
    runner.run("stop", job_id, "--grace", "1", check=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _page(url: str) -> bytes | None:
    try:
        return urllib.request.urlopen(url + "index.html", timeout=5).read()
    except OSError:  # URLError, a connection the forward ended: nothing serves there (yet)
        return None


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a non-interactive shell starts a `cmd &`


@pytest.mark.parametrize("transport", ["openssh", "paramiko"])
def test_a_tensorboard_forward_outlives_a_refused_look_and_ends_on_a_stop_signal(
    runner: Runner, trusted_box: TestHost, tmp_path: Path, transport: str
) -> None:
    (tmp_path / "index.html").write_text("board-ok\n")
    serve_once_told = "while [ ! -e go ]; do sleep 0.2; done; exec python3 -m http.server 6133 --bind 127.0.0.1"
    job_file = write_job(tmp_path, "board2", f"name: board2\ntensorboard: {{port: 6133}}\nrun: {serve_once_told}\n")
    job_id = runner.submit(job_file, "--host", "box")
    write_hosts_file(runner.config, {"box": trusted_box.hosts_entry(transport=transport)})
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        forward = subprocess.Popen(
            [runner_executable(), "tensorboard", job_id], env=runner.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_sigint,
        )  # fmt: skip
        try:
            url = forward.stdout.readline().strip()  # type: ignore[union-attr]
            assert url.startswith("http://127.0.0.1:"), forward.communicate(timeout=30)
            if stop is signal.SIGINT:  # the first forward: a look before the server is up is refused...
                assert _page(url) is None
                trusted_box.sh(f"touch ~/.runner/jobs/{job_id}/work/go")
            # ...and the same forward serves the page once it is
            assert wait_for(lambda url=url: _page(url), 30, what="the page through the forward") == b"board-ok\n"
            forward.send_signal(stop)  # the moment the page is read, as a script would
            assert forward.wait(10) == 0, (stop, forward.stderr.read())  # type: ignore[union-attr]
            port = int(url.rsplit(":", 1)[1].rstrip("/"))
            assert not _listening(port), f"the forward outlived runner tensorboard ({stop.name})"
        finally:
            forward.kill()
    runner.run("stop", job_id, "--grace", "1", check=True)


def test_hosts_list_and_check_report_the_host(runner: Runner, trusted_box: TestHost) -> None:
    listed = runner.json("hosts", "list")["hosts"]
    assert [host["name"] for host in listed] == ["local", "box"]
    facts = runner.json("hosts", "check", "box")
    assert facts["reachable"] is True and facts["os"].startswith("Debian GNU/Linux 12")
    assert facts["python"].startswith("3.11.") and facts["tmux"].startswith("tmux 3.")
    assert facts["docker"] is None
    assert facts["gpus"] == [] and facts["disk_free_bytes"] > 0


def test_an_ssh_config_alias_behind_a_proxyjump_is_honoured_by_both_ssh_stacks(
    runner: Runner, box: TestHost, tmp_path: Path
) -> None:
    # `inner` is the test host's own sshd seen from inside it (127.0.0.1:22), reachable only through `jump`.
    ssh_dir = Path(runner.env["HOME"]) / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text(
        f"Host jump\n  HostName 127.0.0.1\n  Port {box.port}\n  User trainer\n  IdentityFile {box.key}\n"
        f"Host inner\n  HostName 127.0.0.1\n  Port 22\n  User trainer\n  IdentityFile {box.key}\n  ProxyJump jump\n"
    )
    write_hosts_file(runner.config, {"inner": {"ssh": "inner", "connect_timeout": 3, "retry_seconds": 6}})
    refused = runner.run("hosts", "check", "inner")
    assert refused.returncode == 2 and "jump host" in refused.stderr  # the hop is verified too
    runner.run("hosts", "check", "inner", "--trust-new-host", check=True)
    known = (runner.config / "known_hosts").read_text()
    assert f"[127.0.0.1]:{box.port} " in known and "\n127.0.0.1 " in "\n" + known
    # Commands and files go through OpenSSH, which must find the same alias, jump and keys.
    job_file = write_job(tmp_path, "hop", "name: hop\nrun: cat hop.yaml | head -n 1\n")
    job = runner.json("submit", str(job_file), "--host", "inner")
    assert job["sync"]["workdir"]["method"] == "openssh" and job["sync"]["workdir"]["files_sent"] == 1
    assert runner.wait_state(job["id"], {"succeeded", "failed"}, timeout=30)["last_line"] == "name: hop"


def test_attach_joins_the_remote_session_and_closing_the_terminal_leaves_the_job(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    job_id = runner.submit(write_job(tmp_path, "visible", "name: visible\nrun: sleep 600\n"), "--host", "box")
    session = runner.json("status", job_id)["session"]
    # A local tmux pane is the user's terminal; `runner attach` there joins the job's session on the host.
    terminal = runner.tmux("new-session", "-d", "-s", "user-terminal", "-x", "150", "-y", "40",
                           f"{runner_executable()} attach {job_id} --window shell")  # fmt: skip
    assert terminal.returncode == 0, terminal.stderr

    def clients() -> list[str]:
        return trusted_box.sh("tmux list-clients -F '#{session_name}:#{window_name}'", check=False).split()

    wait_for(lambda: clients() == [f"{session}:shell"], 30, what="a client of the job's session on the host")
    runner.tmux("kill-session", "-t", "=user-terminal")  # the user closes the terminal
    wait_for(lambda: clients() == [], 15, what="the remote client to go")
    assert runner.json("status", job_id)["state"] == "running"
    runner.run("stop", job_id, "--grace", "1", check=True)


def test_status_costs_one_round_trip_per_host_however_many_jobs(
    runner: Runner, trusted_box: TestHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_ids = [runner.submit(write_job(tmp_path, f"tick{n}", f"name: tick{n}\nrun: echo tick{n}; sleep 600\n"),
                             "--host", "box")
               for n in range(3)]  # fmt: skip
    try:
        for key in ("RUNNER_HOME", "RUNNER_CONFIG_DIR", "HOME", "TMUX_TMPDIR"):
            monkeypatch.setenv(key, runner.env[key])
        from runner import hosts
        from runner.base import paths
        from runner.jobs.state import Store
        from runner.observe.observe import refresh

        monkeypatch.setattr(hosts, "_open_hosts", {})
        host = hosts.get_host("box")
        commands: list[list[str]] = []
        real_run = host.run
        monkeypatch.setattr(host, "run", lambda argv, *a, **k: commands.append(list(argv)) or real_run(argv, *a, **k))
        store = Store(paths.state_db())
        wait_for(lambda: all((job.last_line or "").startswith("tick")
                             for job in refresh(store, store.list_jobs()).jobs),
                 30, what="every job's first line")  # fmt: skip
        commands.clear()
        refreshed = refresh(store, store.list_jobs())
        assert [job.state.value for job in refreshed.jobs] == ["running"] * 3
        assert len(commands) == 1 and "probe" in commands[0]  # one command for the three jobs, nothing else
    finally:
        for job_id in job_ids:
            runner.run("stop", job_id, "--grace", "1")
