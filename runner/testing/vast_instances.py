"""The instance side of the vast.ai emulator: the record a rented offer becomes and, with containers,
the real container behind it.

A container is what vast runs for an ssh runtype: the create body's image, pulled (from a local
registry in tests), sshd on a port published on 127.0.0.1 (the proxy `ssh_port` and the direct
`22/tcp` both lead to it), root logging in with keys only, `onstart` run inside once sshd answers,
and interactive logins dropped into tmux unless ~/.no_auto_tmux exists. The slow steps run on
threads of their own and watch `Instance.gone`, so a destroy or the emulator's stop never waits on
a sleeping delay; one instance's steps run one at a time (`Instance.work`).

A container whose main process ends on its own (the job's safety net ends it, runner.provision.vast.
safetynet) makes the instance `exited`, as on vast, with `Exited (CODE)` as its status message; its log
stays readable through request_logs, and a start (state running) runs the same container again.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

LABEL = "runner.testing.vast-emulator"
# Whatever the image's sshd_config says, vast's ssh images let root in with keys and nothing else.
SSHD = ("mkdir -p /run/sshd && ssh-keygen -A >/dev/null && exec /usr/sbin/sshd -D -e"
        " -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no")  # fmt: skip
# vast.ai starts tmux on login. Only interactive shells reach the `*i*` branch: `ssh host cmd` runs
# `bash -c cmd`, which reads no profile, so scripted commands are never caught in a tmux session.
AUTO_TMUX = """\
# Written by the vast.ai emulator: like vast.ai, start tmux on interactive logins; touch ~/.no_auto_tmux to stop it.
[ -f ~/.profile ] && . ~/.profile
case $- in *i*)
    if [ -z "$TMUX" ] && [ ! -e ~/.no_auto_tmux ] && command -v tmux >/dev/null; then
        exec tmux new-session -A -s ssh_tmux
    fi;;
esac
"""
OCI_FAILURE = ("OCI runtime create failed: runc create failed: unable to start container process: error during"
               " container init: error running hook #0: error running hook: exit status 1, stdout: , stderr:"
               " nvidia-container-cli: initialization error: nvml error: driver not loaded: unknown")  # fmt: skip
PORT_FLAG = re.compile(r"-p\s+(?:\d+:)?(\d+)(?:/(tcp|udp))?")
SSHD_DEADLINE_S = 60
RUNTYPES = {"ssh", "ssh_proxy", "ssh_direc", "ssh_direct", "jupyter", "jupyter_proxy", "jupyter_direc",
            "jupyter_direct", "args"}  # fmt: skip


class ApiError(Exception):
    """An answer other than 200: its status and vast's error body."""

    def __init__(self, status: int, error: str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.body = status, {"success": False, "error": error, "msg": msg}


@dataclass(frozen=True)
class Delays:
    """How long an instance stays in each status before it moves on (seconds)."""

    scheduling: float = 0.2  # actual_status null: vast is placing the contract
    created: float = 0.2  # "created": the contract exists, nothing runs yet
    loading: float = 0.2  # "loading" without containers; with them it lasts as long as the pull and sshd take


@dataclass(frozen=True)
class LaunchSpec:
    """A validated create body."""

    image: str
    disk: float
    label: str | None
    onstart: str
    runtype: str
    env: dict[str, str]
    price: float | None

    @property
    def direct(self) -> bool:
        # The CLI spells it "ssh_direc", the OpenAPI document "ssh_direct"; either asks for direct ports.
        return any(token.endswith(("_direc", "_direct")) for token in self.runtype.split())

    def container_ports(self) -> list[str]:
        """22/tcp for sshd, then each docker-style `-p A:B` env key's container port."""
        flags = [PORT_FLAG.fullmatch(key) for key in self.env]
        return ["22/tcp", *(f"{m[1]}/{m[2] or 'tcp'}" for m in flags if m and m[1] != "22")]

    def plain_env(self) -> dict[str, str]:
        return {key: value for key, value in self.env.items() if not key.startswith("-")}


def parse_launch(body: dict[str, Any]) -> LaunchSpec:
    """The create body, validated as vast validates it."""
    image, env, disk, label = body.get("image"), body.get("env") or {}, body.get("disk", 10), body.get("label")
    onstart, args, runtype = body.get("onstart") or "", body.get("args") or [], body.get("runtype") or "ssh"
    if not isinstance(image, str) or not image:
        raise ApiError(400, "invalid_args", "image is required")
    if not isinstance(env, dict):
        raise ApiError(400, "invalid_args", "invalid env type: env must be a dict")
    if bad := [key for key in env if key.startswith("-p") and not PORT_FLAG.fullmatch(key)]:
        raise ApiError(400, "invalid_args", f"invalid port mapping in env: {bad[0]!r}")
    if isinstance(disk, bool) or not isinstance(disk, (int, float)) or disk < 8:
        raise ApiError(400, "invalid_args", "disk must be a number of GB, at least 8")
    if label is not None and (not isinstance(label, str) or len(label) > 256):
        raise ApiError(400, "invalid_args", "label must be a string of at most 256 characters")
    if not isinstance(onstart, str) or len(onstart) + len(" ".join(map(str, args))) > 4096:
        raise ApiError(400, "invalid_args", "args and onstart together must be at most 4096 characters")
    if not isinstance(runtype, str) or not runtype.split() or set(runtype.split()) - RUNTYPES:
        raise ApiError(400, "invalid_args", f"invalid runtype {runtype!r}")
    price = body.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, (int, float)) or price <= 0):
        raise ApiError(400, "invalid_price", "price must be a positive number of $/h")
    return LaunchSpec(image, float(disk), label, onstart, runtype, {k: str(v) for k, v in env.items()}, price)


@dataclass
class Instance:
    id: int
    offer: dict[str, Any]
    spec: LaunchSpec
    label: str | None
    extra_loading: float = 0.0  # the slow_loading fault, as it stood at create
    fail_start: bool = False  # the fail_next_start fault, taken by this instance
    actual_status: str | None = None
    intended_status: str = "running"
    cur_state: str = "running"
    status_msg: str | None = None
    host_ports: dict[str, int] = field(default_factory=dict)  # "22/tcp" -> its 127.0.0.1 port
    keys: list[str] = field(default_factory=list)
    keys_live: bool = False  # the login user is prepared: attached keys go straight into authorized_keys
    container: str | None = None
    start_date: float = field(default_factory=time.time)
    running_since: float | None = None
    boots: int = 0  # how often its container was started: a watch of an earlier run ignores this one
    exited_at: float | None = None  # when its container last ended on its own (the tests' clock)
    events: list[str] = field(default_factory=list)  # the logs of an instance without a container
    gone: threading.Event = field(default_factory=threading.Event)
    work: threading.Lock = field(default_factory=threading.Lock)
    keys_lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self) -> dict[str, Any]:
        """The instance as the API shows it."""
        offer, spec = self.offer, self.spec
        # Direct ports need a direct runtype and an offer that has some; otherwise only the proxy reaches sshd.
        exposed = self.host_ports if spec.direct and offer.get("direct_port_count", 0) > 0 else {}
        running = self.actual_status == "running"
        return {
            "id": self.id, "machine_id": offer.get("machine_id"), "label": self.label,
            "actual_status": self.actual_status, "intended_status": self.intended_status, "cur_state": self.cur_state,
            "status_msg": self.status_msg, "image_uuid": spec.image, "image_runtype": spec.runtype, "image_args": [],
            "onstart": spec.onstart, "extra_env": [[key, value] for key, value in spec.env.items()],
            "ssh_host": "127.0.0.1", "ssh_port": self.host_ports.get("22/tcp"),
            "public_ipaddr": "127.0.0.1 ",  # vast's own trailing whitespace: clients must strip it
            "ports": {port: [{"HostIp": "0.0.0.0", "HostPort": str(host)}] for port, host in exposed.items()}
            if running else None,
            "direct_port_start": min(exposed.values(), default=-1),
            "direct_port_end": max(exposed.values(), default=-1),
            "gpu_name": offer.get("gpu_name"), "num_gpus": offer.get("num_gpus"), "gpu_ram": offer.get("gpu_ram"),
            "gpu_arch": offer.get("gpu_arch"), "cuda_max_good": offer.get("cuda_max_good"),
            "gpu_util": None, "gpu_temp": None, "geolocation": offer.get("geolocation"),
            "reliability2": offer.get("reliability2"), "disk_space": spec.disk, "is_bid": spec.price is not None,
            "dph_total": spec.price if spec.price is not None else offer.get("dph_total"),
            "start_date": self.start_date, "end_date": offer.get("end_date") or self.start_date + 30 * 86400,
            "uptime_mins": round((time.time() - self.running_since) / 60, 2) if running and self.running_since else 0.0,
        }  # fmt: skip


def docker(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["docker", *args], input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(["docker", *args], 124, "", f"docker {args[0]} timed out after {timeout}s")


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


class Provisioner:
    """Moves instances through their statuses, a real container behind each one when `containers`."""

    def __init__(self, lock: threading.RLock, delays: Delays, containers: bool, ssh_user: str, owner: str) -> None:
        self._lock = lock  # the emulator's one state lock
        self._delays = delays
        self._containers = containers
        self._ssh_user = ssh_user
        self.owner = owner  # the label value that marks this emulator's containers
        self._threads: list[threading.Thread] = []
        self._fake_ports = itertools.count(40022)  # host ports of instances without containers

    # The API's operations: each returns at once, its work goes on on a thread.
    def launch(self, instance: Instance) -> None:
        self._spawn(self._provision, instance)

    def stop(self, instance: Instance) -> None:
        self._spawn(self._stop, instance)

    def start(self, instance: Instance) -> None:
        self._spawn(self._restart, instance)

    def destroy(self, instance: Instance) -> None:
        instance.gone.set()  # a provisioning in progress gives up at its next step
        self._spawn(self._remove, instance)

    def kill(self, instance: Instance) -> None:
        """The machine dies under the instance: synchronous, so that a test sees `exited` on return."""
        with instance.work:
            if instance.container:
                docker("kill", instance.container)
            self._set(instance, actual_status="exited", status_msg="Exited (137)", running_since=None, keys_live=False)

    def cut_off(self, instance: Instance) -> None:
        with instance.work:
            if not instance.container:
                raise KeyError(f"instance {instance.id} has no container yet")
            cut = docker("network", "disconnect", "--force", "bridge", instance.container)
            if cut.returncode != 0:
                raise RuntimeError(f"instance {instance.id} could not be cut off: {last_line(cut)}")

    def attach_key(self, instance: Instance, key: str) -> None:
        with instance.keys_lock:  # one writer at a time, each writing the whole list
            with self._lock:
                if key not in instance.keys:
                    instance.keys.append(key)
                live = instance.keys_live
            if live:
                self._write_keys(instance)

    def logs(self, instance: Instance, tail: int) -> str:
        if instance.container:
            argv = ["docker", "logs", "--tail", str(tail), instance.container]
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60).stdout
        with self._lock:
            return "".join(f"{line}\n" for line in instance.events[-tail:])

    def close(self, instances: list[Instance]) -> None:
        """Abandon every step in progress, wait for them, then remove every container this emulator made."""
        for instance in instances:
            instance.gone.set()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=SSHD_DEADLINE_S)
        if self._containers:
            listed = docker("ps", "-aq", "--filter", f"label={LABEL}={self.owner}")
            if ids := listed.stdout.split():
                docker("rm", "-f", *ids)

    def _spawn(self, step: Any, instance: Instance) -> None:
        def serialized() -> None:
            with instance.work:
                step(instance)

        thread = threading.Thread(target=serialized, daemon=True, name=f"vast-instance-{instance.id}")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _set(self, instance: Instance, **fields: Any) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(instance, name, value)
            if "actual_status" in fields:
                instance.events.append(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} actual_status {fields['actual_status']}")

    def _provision(self, instance: Instance) -> None:
        if instance.gone.wait(self._delays.scheduling):
            return
        self._set(instance, actual_status="created")
        if instance.gone.wait(self._delays.created):
            return
        if instance.fail_start:
            self._set(instance, status_msg=OCI_FAILURE)  # stays "created", nothing runs: the reference's failure shape
            return
        self._set(instance, actual_status="loading", status_msg=f"Pulling {instance.spec.image}")
        if not (self._boot(instance) if self._containers else self._fake_boot(instance)):
            return
        if not instance.gone.wait(instance.extra_loading):
            self._set_running(instance)

    def _fake_boot(self, instance: Instance) -> bool:
        ports = {port: next(self._fake_ports) for port in instance.spec.container_ports()}
        self._set(instance, host_ports=ports)
        return not instance.gone.wait(self._delays.loading)

    def _boot(self, instance: Instance) -> bool:
        spec = instance.spec
        pulled = docker("pull", spec.image, timeout=600)  # a real pull: a bad image stays "loading" with the error
        if pulled.returncode != 0:
            self._set(instance, status_msg=last_line(pulled))
            return False
        if instance.gone.is_set():
            return False
        name = f"vast-emulator-{self.owner}-{instance.id}"
        publish = [arg for port in spec.container_ports() for arg in ("-p", f"127.0.0.1::{port}")]
        env = [arg for key, value in spec.plain_env().items() for arg in ("-e", f"{key}={value}")]
        labels = ["--label", f"{LABEL}={self.owner}", "--label", f"{LABEL}.instance={instance.id}"]
        run = docker("run", "-d", "--name", name, *labels, *publish, *env, "--entrypoint", "/bin/sh", spec.image,
                     "-c", SSHD)  # fmt: skip
        if run.returncode != 0:
            docker("rm", "-f", name)
            self._set(instance, actual_status="created", status_msg=last_line(run))
            return False
        self._set(instance, container=name)
        return self._bring_up(instance)

    def _bring_up(self, instance: Instance) -> bool:
        """The container runs: read its ports, wait for sshd, prepare the login, start onstart."""
        assert instance.container
        ports = published_ports(instance.container)
        self._set(instance, host_ports=ports)
        if not wait_for_sshd(ports.get("22/tcp"), instance.gone):
            if not instance.gone.is_set():
                self._set(instance, status_msg="sshd did not answer within 60 s")
            return False
        self._prepare_login(instance)
        if instance.spec.onstart:
            # vast keeps the script as /root/onstart.sh; its output joins the container's log, as on vast.
            docker("exec", "-i", instance.container, "sh", "-c", "cat > /root/onstart.sh", input=instance.spec.onstart)
            docker("exec", "-d", instance.container, "sh", "-c", "sh /root/onstart.sh >/proc/1/fd/1 2>/proc/1/fd/2")
        return True

    def _prepare_login(self, instance: Instance) -> None:
        assert instance.container
        script = ('home=$(getent passwd "$1" | cut -d: -f6) && mkdir -p "$home/.ssh" && chmod 700 "$home/.ssh"'
                  ' && cat > "$home/.bash_profile" && chown "$1:" "$home/.ssh" "$home/.bash_profile"')  # fmt: skip
        docker("exec", "-i", instance.container, "sh", "-c", script, "sh", self._ssh_user, input=AUTO_TMUX)
        with instance.keys_lock:
            self._write_keys(instance)
            self._set(instance, keys_live=True)

    def _write_keys(self, instance: Instance) -> None:
        with self._lock:
            keys, container = list(instance.keys), instance.container
        if not container:
            return
        script = ('home=$(getent passwd "$1" | cut -d: -f6) && umask 077 && mkdir -p "$home/.ssh"'
                  ' && cat > "$home/.ssh/authorized_keys" && chmod 600 "$home/.ssh/authorized_keys"'
                  ' && chown -R "$1:" "$home/.ssh"')  # fmt: skip
        docker("exec", "-i", container, "sh", "-c", script, "sh", self._ssh_user, input="".join(f"{k}\n" for k in keys))

    def _set_running(self, instance: Instance) -> None:
        self._set(instance, actual_status="running", status_msg=f"success, running {instance.spec.image}/ssh",
                  running_since=time.time(), boots=instance.boots + 1)  # fmt: skip
        if instance.container:
            self._spawn_watch(instance, instance.boots)

    def _spawn_watch(self, instance: Instance, boot: int) -> None:
        # Not among the steps close() waits for: a watch lasts until the container goes, which close() does after.
        threading.Thread(target=self._watch, args=(instance, boot), daemon=True,
                         name=f"vast-instance-{instance.id}-watch").start()  # fmt: skip

    def _watch(self, instance: Instance, boot: int) -> None:
        """Until the container ends. Ended by a stop, a kill or a destroy, those set the status (under
        `work`, which this takes before looking); ended by itself, the instance is `exited`."""
        assert instance.container
        waited = subprocess.run(["docker", "wait", instance.container], capture_output=True, text=True)
        with instance.work:
            if instance.gone.is_set() or instance.boots != boot or instance.actual_status != "running":
                return
            code = waited.stdout.strip() if waited.returncode == 0 else "?"
            self._set(instance, actual_status="exited", status_msg=f"Exited ({code})", running_since=None,
                      keys_live=False, exited_at=time.time())  # fmt: skip

    def _stop(self, instance: Instance) -> None:
        if instance.gone.is_set() or instance.actual_status in ("stopped", None):
            return
        if instance.container:
            docker("stop", "-t", "2", instance.container)
        self._set(instance, actual_status="stopped", status_msg=None, running_since=None, keys_live=False)

    def _restart(self, instance: Instance) -> None:
        if instance.gone.is_set() or instance.actual_status in ("running", "created", "loading", None):
            return
        self._set(instance, actual_status="loading", status_msg="Starting container")
        if not self._containers:
            self._fake_boot(instance)
            return self._set_running(instance)
        if not instance.container:
            return
        started = docker("start", instance.container)
        if started.returncode != 0:
            return self._set(instance, status_msg=last_line(started))
        if self._bring_up(instance):  # the host ports are new after a restart, as on vast
            self._set_running(instance)

    def _remove(self, instance: Instance) -> None:
        if instance.container:
            docker("rm", "-f", instance.container)
        self._set(instance, cur_state="unloaded", actual_status=None, running_since=None, keys_live=False)


def published_ports(container: str) -> dict[str, int]:
    inspected = docker("inspect", "-f", "{{json .NetworkSettings.Ports}}", container)
    bindings = json.loads(inspected.stdout or "null") or {}
    return {port: int(hosts[0]["HostPort"]) for port, hosts in bindings.items() if hosts}


def wait_for_sshd(port: int | None, gone: threading.Event) -> bool:
    """Until sshd's banner comes back: docker's proxy accepts connections before anything listens behind it."""
    deadline = time.monotonic() + SSHD_DEADLINE_S
    while port and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
                if connection.recv(4).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        if gone.wait(0.1):
            return False
    return False
