"""`runner logs` end to end: a job drawing a tqdm-like bar through util-linux script's terminal, on the local
host, and on an SSH test host read over OpenSSH and over paramiko."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import Runner, runner_executable, write_job
from tests.e2e.testhost import TestHost, write_hosts_file

# 3 epochs of a bar updated 200 times with \r, as tqdm draws it; a green word; then the end. Paced so
# that `runner logs -f` sees the bars being drawn over several polls.
BAR_SCRIPT = (
    r"""
import sys, time
for epoch in range(1, 4):
    for step in range(1, 201):
        filled = step // 10
        sys.stdout.write(f"\rEpoch {epoch}/3: {step // 2:3d}%|{'#' * filled}{' ' * (20 - filled)}| """
    r"""{step}/200 [loss={1 / (epoch * step):.4f}]")
        sys.stdout.flush()
        time.sleep(0.005)
    sys.stdout.write("\n")
print("\x1b[32mtraining done\x1b[0m", flush=True)
"""
)
FINAL_BARS = [
    f"Epoch {epoch}/3: 100%|####################| 200/200 [loss={1 / (epoch * 200):.4f}]" for epoch in (1, 2, 3)
]
BAR_LINE = re.compile(r"^Epoch \d/3:")


def logs(runner: Runner, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`runner logs` with its bytes untouched (Runner.run's text mode would turn every \\r into a newline)."""
    return subprocess.run([runner_executable(), "logs", *args], env=runner.env, capture_output=True, timeout=120)


def bar_lines(output: bytes) -> list[str]:
    return [line for line in output.decode().split("\n") if BAR_LINE.match(line)]


def test_logs_render_each_bar_once_and_raw_keeps_every_update(runner: Runner, tmp_path: Path) -> None:
    (tmp_path / "bars.py").write_text(BAR_SCRIPT)
    job_id = runner.submit(write_job(tmp_path, "bars", "name: bars\nrun: python3 bars.py\n"))
    follower = subprocess.Popen(
        [runner_executable(), "logs", "-f", job_id], env=runner.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    followed, notes = follower.communicate(timeout=120)
    assert follower.returncode == 0, notes
    assert runner.state(job_id) == "succeeded"

    raw = logs(runner, "--raw", job_id)
    assert raw.returncode == 0
    assert raw.stdout == (Path(runner.json("status", job_id)["job_dir"]) / "train.log").read_bytes()
    assert raw.stdout.count(b"\rEpoch ") == 600  # every update, as recorded
    assert b"\x1b[32mtraining done\x1b[0m" in raw.stdout
    assert b"Script started" not in raw.stdout  # run.sh's `script` writes its typescript to /dev/null, quietly

    shown = logs(runner, job_id)
    assert shown.returncode == 0
    assert bar_lines(shown.stdout) == FINAL_BARS  # one line per epoch, in its final state
    assert shown.stdout.decode().split("\n")[-2:] == ["training done", ""]  # stdout is no terminal: no colours
    assert b"\r" not in shown.stdout and b"\x1b" not in shown.stdout

    # -f printed each bar once, finished: the same lines as the log rendered after the end.
    assert bar_lines(followed) == FINAL_BARS
    assert followed == shown.stdout

    coloured = logs(runner, "--color", "always", "-n", "2", job_id).stdout
    assert coloured == f"{FINAL_BARS[2]}\n\x1b[32mtraining done\x1b[0m\n".encode()
    assert logs(runner, "-n", "1", "--raw", job_id).stdout == b"\x1b[32mtraining done\x1b[0m\r\n"


def test_logs_over_ssh_render_the_same_with_openssh_and_paramiko(
    runner: Runner, trusted_box: TestHost, tmp_path: Path
) -> None:
    (tmp_path / "bars.py").write_text(BAR_SCRIPT)
    job_id = runner.submit(write_job(tmp_path, "bars", "name: bars\nrun: python3 bars.py\n"), "--host", "box")
    followed = logs(runner, "-f", job_id)  # OpenSSH, the bars read as they are drawn
    assert followed.returncode == 0, followed.stderr
    assert bar_lines(followed.stdout) == FINAL_BARS
    raw = logs(runner, "--raw", job_id).stdout
    assert raw.count(b"\rEpoch ") == 600
    write_hosts_file(runner.config, {"box": trusted_box.hosts_entry(transport="paramiko")})
    assert logs(runner, job_id).stdout == followed.stdout  # paramiko reads through SFTP: the same log
    assert logs(runner, "--raw", job_id).stdout == raw
    assert logs(runner, "-n", "1", job_id).stdout == b"training done\n"
