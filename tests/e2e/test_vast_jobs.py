"""Jobs on rented vast.ai instances, through the real CLI, against the emulator (runner.testing): its
instances are real containers with sshd, their image pulled from a local registry. Rent, run,
fetch, destroy until the API confirms; failures and faults that must never leave an instance
billing unseen; and the API key that must never show."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.testing.vast_emulator import Emulator
from tests.conftest import REPO, Runner, wait_for, write_job
from tests.e2e.registry import (
    Registry,  # noqa: F401  (the `registry` fixture is found by name)
    registry,  # noqa: F401
)
from tests.e2e.testhost import write_hosts_file

API_KEY = "vk-test-3b1f9c0d7e5a4b2c8d6e0f1a2b3c4d5e"


def offer(offer_id: int, price: float, machine: int) -> dict[str, Any]:
    return {"id": offer_id, "machine_id": machine, "gpu_name": "RTX 5090", "num_gpus": 1, "gpu_ram": 32607,
            "cuda_max_good": 12.8, "dph_total": price, "min_bid": price / 2, "reliability": 0.98, "reliability2": 0.98,
            "inet_down": 900.0, "inet_up": 800.0, "disk_space": 120.0, "direct_port_count": 20, "geolocation": "SE",
            "score": 200.0, "gpu_arch": "nvidia", "verified": True, "rentable": True, "rented": False,
            "external": False, "compute_cap": 1200}  # fmt: skip


@pytest.fixture
def vast(runner: Runner, registry: Any) -> Iterator[Emulator]:
    emulator = Emulator(offers=[offer(101, 0.42, 1), offer(102, 0.47, 2), offer(103, 0.55, 3)], api_key=API_KEY)
    url = emulator.start()
    runner.env.update(VAST_URL=url, VAST_API_KEY=API_KEY)
    yield emulator
    emulator.stop()


def vast_job(folder: Path, image: str, *run: str, extra: str = "") -> Path:
    work = folder / "demo"
    if not work.exists():
        shutil.copytree(REPO / "demo", work)
    lines = (
        "\n".join(f"  - {line!r}" for line in run)
        or "  - python3 train.py --epochs 3 --samples 1200 --hidden 8 --out runs/demo"
    )
    return write_job(
        folder,
        "demo",
        f"""\
name: demo
host: vast
workdir: demo
image: {image}
resources: {{gpu: RTX 5090, max_price: 0.5, disk_gb: 20}}
run:
{lines}
artifacts:
  weights: runs/demo/weights/*.pt
tensorboard: null
{extra}""",
    )


def live_instances(emulator: Emulator) -> list[dict[str, Any]]:
    return [record for record in emulator.instances.values() if record.get("cur_state") != "unloaded"]


def rented_offers(emulator: Emulator) -> list[int]:
    """The offer of every instance created, destroyed ones included: from the emulator's request log."""
    return [int(request.path.split("/")[4]) for request in emulator.requests
            if request.method == "PUT" and request.path.startswith("/api/v0/asks/")
            and request.status == 200]  # fmt: skip


def test_a_rented_job_runs_succeeds_brings_its_weights_home_and_gives_the_instance_back(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    submitted = runner.run("submit", str(vast_job(tmp_path, registry.image)), cwd=tmp_path, timeout=600)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert "rented instance" in submitted.stderr and "at $0.420/h (offer 101)" in submitted.stderr
    job = runner.json("status", job_id)
    assert job["host"].startswith("vast-") and job["cost"]["dph"] == 0.42

    done = runner.wait_state(job_id, {"succeeded", "failed", "lost"}, timeout=180)
    assert done["state"] == "succeeded", runner.run("logs", job_id).stdout
    # The keeper fetches the weights a last time, then destroys the instance and waits for the API.
    weights = tmp_path / "artifacts" / job_id / "runs" / "demo" / "weights"
    wait_for(lambda: not live_instances(vast) and (weights / "best.pt").exists(), 120, what="the keeper's teardown")
    assert sorted(path.name for path in weights.iterdir()) == ["best.pt", "last.pt"]
    assert runner.json("status", job_id)["cost"]["live"] == []
    deleted = f"/api/v0/instances/{job['cost']['instances'][0]}/"
    assert any(request.method == "DELETE" and request.path == deleted for request in vast.requests)
    # The log lived on the instance: it was saved here before the instance went.
    shown = runner.run("logs", job_id, check=True).stdout
    assert "3 epochs completed in" in shown


def test_the_api_key_never_shows(runner: Runner, vast: Emulator, registry: Any, tmp_path: Path) -> None:
    submitted = runner.run("submit", str(vast_job(tmp_path, registry.image)), cwd=tmp_path, check=True, timeout=600)
    job_id = submitted.stdout.strip()
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout  # the keeper runs now
    assert f"keep {job_id}" in listing
    outputs = [submitted.stdout, submitted.stderr, runner.run("status", job_id).stdout,
               runner.run("status", "--json").stdout, runner.run("down", "--orphans", "--json").stdout,
               listing]  # fmt: skip
    runner.wait_state(job_id, {"succeeded", "failed", "lost"}, timeout=180)
    wait_for(lambda: not live_instances(vast), 120, what="teardown")
    logs = [
        path.read_text(errors="replace") for path in runner.home.rglob("*") if path.is_file() and path.suffix == ".log"
    ]
    assert logs  # the keeper's log at least
    for text in outputs + logs:
        assert API_KEY not in text


STEPS = """\
# Counts to N, a step every 0.3 s, with a checkpoint (the step reached) every 10 steps, as a training
# saves last.pt once an epoch; --resume goes on from the checkpoint; --hold-after H stops counting after
# step H's checkpoint and waits forever (a training that cannot end before its instance's fault).
import os, sys, time
total, out = int(sys.argv[1]), "runs/demo/weights"
hold = int(sys.argv[sys.argv.index("--hold-after") + 1]) if "--hold-after" in sys.argv else None
os.makedirs(out, exist_ok=True)
start = int(open(out + "/last.pt").read()) if "--resume" in sys.argv and os.path.exists(out + "/last.pt") else 0
print("starting at step %d" % start, flush=True)
for step in range(start + 1, total + 1):
    time.sleep(0.3)
    if step % 10 == 0 or step == total:
        with open(out + "/last.pt.tmp", "w") as handle:
            handle.write(str(step))
        os.replace(out + "/last.pt.tmp", out + "/last.pt")
    print("step %d" % step, flush=True)
    while step == hold:
        time.sleep(1)
"""


def steps_job(folder: Path, image: str, extra: str = "") -> Path:
    (folder / "demo").mkdir(exist_ok=True)
    (folder / "demo" / "steps.py").write_text(STEPS)
    return vast_job(folder, image, "python3 steps.py 200", extra=extra)


def test_429s_during_the_rent_are_ridden_out_and_one_instance_is_rented(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    vast.faults.rate_limit(6)
    submitted = runner.run("submit", str(vast_job(tmp_path, registry.image)), cwd=tmp_path, timeout=600)
    assert submitted.returncode == 0, submitted.stderr
    assert sum(1 for request in vast.requests if request.status == 429) == 6
    assert len(rented_offers(vast)) == 1
    assert (
        runner.wait_state(submitted.stdout.strip(), {"succeeded", "failed", "lost"}, timeout=180)["state"]
        == "succeeded"
    )
    wait_for(lambda: not live_instances(vast), 120, what="teardown")


def test_an_instance_that_fails_to_start_is_destroyed_and_the_job_fails_clearly(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    vast.faults.fail_next_start()
    submitted = runner.run("submit", str(vast_job(tmp_path, registry.image)), cwd=tmp_path, timeout=600)
    assert submitted.returncode == 1
    assert "did not start" in submitted.stderr and "OCI runtime create failed" in submitted.stderr
    assert len(rented_offers(vast)) == 1 and not live_instances(vast)  # rented once, and destroyed
    assert any(request.method == "DELETE" for request in vast.requests)
    (job,) = runner.json("status")["jobs"]
    assert job["state"] == "failed" and job["cost"]["live"] == []


@pytest.mark.parametrize("cause, fault", [("interrupted", "kill_instance"), ("lost", "cut_off_instance")])
def test_an_interrupted_or_lost_instance_is_replaced_and_the_job_resumes_from_its_checkpoint(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path, cause: str, fault: str
) -> None:
    # lost: the API goes on saying running while SSH is silent; the grace is the job file's lost_after
    retry = f"retry: {{on: [{cause}], max: 1, lost_after: 10s}}\nresume: python3 steps.py 200 --resume\n"
    # The first instance's training holds after step 20: it cannot end by itself before the fault is
    # judged, however slow this machine (an end seen first is an end, not a loss: the safety net says so).
    steps_job(tmp_path, registry.image)
    job_file = vast_job(tmp_path, registry.image, "python3 steps.py 200 --hold-after 20", extra=retry)
    job_file.write_text(
        job_file.read_text().replace(
            "  weights: runs/demo/weights/*.pt", "  weights: {paths: [runs/demo/weights/*.pt], sync_every: 10s}"
        )
    )
    job_id = runner.run("submit", str(job_file), cwd=tmp_path, check=True, timeout=600).stdout.strip()
    checkpoint = tmp_path / "artifacts" / job_id / "runs" / "demo" / "weights" / "last.pt"
    reached = wait_for(lambda: checkpoint.exists() and int(checkpoint.read_text() or 0) >= 10
                       and int(checkpoint.read_text()),
                       90, what="a fetched checkpoint")  # fmt: skip
    first = runner.json("status", job_id)["cost"]["instances"][0]
    try:
        getattr(vast.faults, fault)(first)
    except KeyError:
        raise AssertionError((runner.json("status", job_id), _keeper_log(runner, job_id))) from None

    done = wait_for(lambda: _ended(runner, job_id), 300, interval=1, what="the job on its second instance")
    log = runner.run("logs", job_id).stdout
    assert done["state"] == "succeeded", log
    assert "starting at step " in log, (log, _keeper_log(runner, job_id))
    resumed_at = int(log.split("starting at step ")[1].split()[0])
    assert resumed_at >= reached  # from the checkpoint fetched before the kill, not from scratch
    assert len(done["cost"]["instances"]) == 2 and done["host"] != f"vast-{first}"
    assert f"instance {first} {cause}; renting another" in _keeper_log(runner, job_id)
    wait_for(lambda: not live_instances(vast), 120, what="teardown")
    wait_for(lambda: checkpoint.read_text() == "200", 60, what="the final checkpoint")


def test_a_job_whose_file_is_gone_recovers_from_the_store_and_fetches_where_submit_resolved(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    """Submitted from one folder, its job file deleted at once, every later command run from elsewhere:
    the retry on a second instance runs the job as submit stored it, and the weights land under the
    folder submit ran in, resolved then."""
    retry = "retry: {on: [interrupted], max: 1}\nresume: python3 steps.py 200 --resume\n"
    project = tmp_path / "project"
    project.mkdir()
    job_file = steps_job(project, registry.image, extra=retry)
    job_file.write_text(
        job_file.read_text().replace(
            "  weights: runs/demo/weights/*.pt", "  weights: {paths: [runs/demo/weights/*.pt], sync_every: 10s}"
        )
    )
    submitter = tmp_path / "submitted-from"
    submitter.mkdir()
    job_id = runner.run("submit", str(job_file), cwd=submitter, check=True, timeout=600).stdout.strip()
    job_file.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checkpoint = submitter / "artifacts" / job_id / "runs" / "demo" / "weights" / "last.pt"
    wait_for(lambda: checkpoint.exists() and int(checkpoint.read_text() or 0) >= 10, 90, what="a fetched checkpoint")
    first = runner.run("status", job_id, "--json", cwd=elsewhere, check=True)
    first_instance = json.loads(first.stdout)["cost"]["instances"][0]
    vast.faults.kill_instance(first_instance)

    def ended() -> dict[str, Any] | None:
        result = runner.run("status", job_id, "--json", cwd=elsewhere)
        assert result.returncode in (0, 3), result.stderr
        job = json.loads(result.stdout)
        return job if job["finished"] else None

    done = wait_for(ended, 300, interval=1, what="the job on its second instance")
    log = runner.run("logs", job_id, cwd=elsewhere).stdout
    assert done["state"] == "succeeded", (log, _keeper_log(runner, job_id))
    assert len(done["cost"]["instances"]) == 2 and "starting at step " in log
    wait_for(lambda: not live_instances(vast), 120, what="teardown")
    wait_for(lambda: checkpoint.read_text() == "200", 60, what="the final checkpoint")
    assert not (elsewhere / "artifacts").exists() and not job_file.exists()


def test_a_destroy_answered_500_twice_is_retried_until_the_instance_is_gone(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    job_file = vast_job(tmp_path, registry.image, "sleep 300", extra="teardown: never\n")
    job_id = runner.run("submit", str(job_file), cwd=tmp_path, check=True, timeout=600).stdout.strip()
    runner.run("stop", job_id, "--grace", "3", check=True)
    assert len(live_instances(vast)) == 1  # teardown: never keeps it
    vast.faults.fail_destroy(2)
    down = runner.json("down", job_id)
    deletes = [request.status for request in vast.requests if request.method == "DELETE"]
    assert deletes[:2] == [500, 500] and deletes[-1] == 200
    assert down["destroyed"] == runner.json("status", job_id)["cost"]["instances"] and not live_instances(vast)


def test_eight_submits_at_once_rent_each_of_three_offers_at_most_once(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    job_file = vast_job(tmp_path, registry.image, "sleep 2")
    submits = [subprocess.Popen([*runner_cli(), "submit", str(job_file)], env=runner.env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(8)]  # fmt: skip
    results = [(process.wait(timeout=600), process.communicate()) for process in submits]
    succeeded = [out for code, (out, _) in results if code == 0]
    refused = [err for code, (_, err) in results if code != 0]
    assert 1 <= len(succeeded) <= 3 and len(succeeded) + len(refused) == 8
    assert all("no vast.ai offer fits" in err for err in refused), [
        err for err in refused if "no vast.ai offer fits" not in err
    ]
    offers = rented_offers(vast)
    assert len(offers) == len(set(offers)) == len(succeeded)  # no offer rented twice
    wait_for(lambda: not live_instances(vast), 180, what="teardown")


def _ended(runner: Runner, job_id: str) -> dict[str, Any] | None:
    """The job once it ended; status exits 3 while its instance does not answer, with the job as known."""
    result = runner.run("status", job_id, "--json")
    assert result.returncode in (0, 3), result.stderr
    job = json.loads(result.stdout)
    return job if job["finished"] else None


def _keeper_log(runner: Runner, job_id: str) -> str:
    path = runner.home / "syncs" / f"{job_id}-keep.log"
    return path.read_text() if path.exists() else "(no keeper log)"


def runner_cli() -> list[str]:
    from tests.conftest import runner_executable

    return [runner_executable()]


def test_max_cost_stops_the_job_fetches_its_weights_and_destroys_the_instance(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    # $0.42/h: $0.001 is spent in under 9 s; teardown: never must not keep an instance over budget.
    job_file = steps_job(tmp_path, registry.image, extra="teardown: never\n")
    job_file.write_text(job_file.read_text().replace("disk_gb: 20}", "disk_gb: 20, max_cost: 0.001}"))
    # The checkpoint a resumed job starts from goes with the workdir, so it is on the instance before the
    # session starts, before the keeper that enforces the budget exists: however slow this machine is,
    # the budget cannot be reached before there is a checkpoint to fetch.
    pushed = tmp_path / "demo" / "runs" / "demo" / "weights"
    pushed.mkdir(parents=True)
    (pushed / "last.pt").write_text("0")
    job_id = runner.run("submit", str(job_file), cwd=tmp_path, check=True, timeout=600).stdout.strip()
    stopped = runner.wait_state(job_id, {"stopped", "succeeded", "failed", "lost"}, timeout=120)
    assert stopped["state"] == "stopped"
    wait_for(lambda: not live_instances(vast), 120, what="the instance destroyed")
    fetched = tmp_path / "artifacts" / job_id / "runs" / "demo" / "weights" / "last.pt"
    assert fetched.read_text().isdigit()  # the instance's checkpoint, fetched before it was destroyed
    assert "reaching resources.max_cost $0.00" in _keeper_log(runner, job_id)


def test_down_orphans_destroys_instances_no_running_job_owns(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    from runner.provision.vast.api import VastClient

    with VastClient(api_key=API_KEY, base_url=vast.url) as client:
        stray = client.create_instance(103, {"client_id": "me", "image": registry.image, "disk": 10,
                                             "label": "runner:0badc0de", "env": {}, "runtype": "ssh"})  # fmt: skip
        mine = client.create_instance(102, {"client_id": "me", "image": registry.image, "disk": 10, "label": "notebook",
                                            "env": {}, "runtype": "ssh"})  # fmt: skip
        assert runner.json("down", "--orphans")["destroyed"] == [stray]
        assert client.instance(stray) is None and client.instance(mine) is not None  # not runner's: left alone
        client.destroy(mine)


def test_an_image_runner_builds_is_pushed_to_the_registry_and_the_instance_runs_it(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path, built_here: set[str]
) -> None:
    # The test host image as the base: it has the sshd a vast.ai instance's image gets from vast.
    write_hosts_file(runner.config, {}, registry={"address": f"{registry.address}/team"})
    image = "{build: cu128, args: {BASE_IMAGE: 'runner-testhost:bookworm', INSTALL_FRAMEWORK: '0'}}"
    # What the image set up, kept where the final fetch brings it home (the instance is gone after).
    seen = "mkdir -p runs/demo/weights && echo $PYTHONPATH > runs/demo/weights/pythonpath.pt"
    job_file = vast_job(tmp_path, image, seen, "python3 train.py --epochs 2 --samples 800 --hidden 8 --out runs/demo")
    submitted = runner.run("submit", str(job_file), cwd=tmp_path, timeout=900)
    assert submitted.returncode == 0, submitted.stderr
    pushed = next(line.split()[1] for line in submitted.stderr.splitlines() if line.startswith("pushed "))
    assert pushed.startswith(f"{registry.address}/team/runner-cu128:")
    built_here.update({pushed, pushed.split("/")[-1]})  # pushed, and runner-cu128:HASH on this machine's engine
    assert any(record["image_uuid"] == pushed for record in vast.instances.values())
    job_id = submitted.stdout.strip()
    assert runner.wait_state(job_id, {"succeeded", "failed", "lost"}, timeout=180)["state"] == "succeeded"
    wait_for(lambda: not live_instances(vast), 120, what="teardown")
    fetched = tmp_path / "artifacts" / job_id / "runs" / "demo" / "weights" / "pythonpath.pt"
    assert fetched.read_text().strip() == "/opt/runner/runner_torch"


@pytest.fixture
def built_here() -> Iterator[set[str]]:
    tags: set[str] = set()
    yield tags
    for tag in tags:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


def test_bad_input_for_a_rented_host_is_refused_before_anything_is_rented(
    runner: Runner, vast: Emulator, tmp_path: Path
) -> None:
    no_registry = runner.run("submit", str(vast_job(tmp_path, "cu128")), cwd=tmp_path)
    assert no_registry.returncode == 2 and "name one in hosts.yaml (registry:" in no_registry.stderr
    runner.env.pop("VAST_API_KEY")
    no_key = runner.run("submit", str(vast_job(tmp_path, "registry.example/yolo:7")), cwd=tmp_path)
    assert no_key.returncode == 2 and "VAST_API_KEY" in no_key.stderr
    assert rented_offers(vast) == [] and runner.json("status")["jobs"] == []


def test_tensorboard_of_a_rented_job_is_forwarded_here(
    runner: Runner, vast: Emulator, registry: Any, tmp_path: Path
) -> None:
    job_file = vast_job(tmp_path, registry.image, "python3 -m http.server 6124 --bind 127.0.0.1")
    (tmp_path / "demo" / "index.html").write_text("board-ok\n")
    job_file.write_text(job_file.read_text().replace("tensorboard: null", "tensorboard: {port: 6124}"))
    job_id = runner.run("submit", str(job_file), cwd=tmp_path, check=True, timeout=600).stdout.strip()
    wait_for(lambda: "Serving HTTP" in (runner.json("status", job_id)["last_line"] or ""), 60, what="the server")
    forward = subprocess.Popen(
        [*runner_cli(), "tensorboard", job_id], env=runner.env, stdout=subprocess.PIPE, text=True
    )
    try:
        url = forward.stdout.readline().strip()  # type: ignore[union-attr]
        assert urllib.request.urlopen(url + "index.html", timeout=10).read() == b"board-ok\n"
    finally:
        forward.send_signal(signal.SIGINT)
        forward.wait(10)
    runner.run("stop", job_id, "--grace", "1", check=True)
    wait_for(lambda: not live_instances(vast), 120, what="teardown")
