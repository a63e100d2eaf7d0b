"""A rented vast.ai instance as a job's host: rent it, wait until SSH answers, give it back.

The instance is recorded in the store the moment the API names it, before anything waits on it, so
no failure after that point (a crash included) can leave it billing unseen: `runner down --orphans`
and the job's own teardown find it there and in the API's list, by its label `runner:<job id>`.
Its host key is new by design: learned once with ssh-keyscan, then pinned under the name
`vast-<id>` (OpenSSH's HostKeyAlias), since a later instance may get the same address and port.
"""

from __future__ import annotations

import fcntl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.base import paths
from runner.base.atomicfile import write_atomically
from runner.base.errors import RunnerError
from runner.hosts import forget_host, provisioned
from runner.hosts.hostsfile import HostEntry
from runner.images.plan import requested
from runner.jobs.jobscript import IMAGE_ENV_FILE
from runner.jobs.session import session_name
from runner.provision.vast.safetynet import Watch, budget_watch, launch

if TYPE_CHECKING:  # the client (httpx, tenacity) is imported only by the commands that rent
    from runner.jobs.spec import Resources
    from runner.jobs.state import Job, Store
    from runner.provision.vast.api import VastClient

PREFIX = "vast-"  # host names of instances: vast-<instance id>
LABEL_PREFIX = "runner:"
KEY_FILE = "vast_ed25519"  # runner's own key for its instances, beside hosts.yaml
# vast.ai wraps every SSH login in tmux unless ~/.no_auto_tmux exists: runner's commands must run bare.
# And an SSH session does not see the image's environment (its ENV lines: PATH to its Python,
# PYTHONPATH to runner's conv hook, CUDA's and ROCm's variables), which onstart does: it writes them
# where job.sh reads them.
IMAGE_ENV_NAMES = "PATH|PYTHONPATH|PYTHONUNBUFFERED|LD_LIBRARY_PATH|(CUDA|NVIDIA|RUNNER|HSA|MIOPEN|CONDA)_[A-Z0-9_]*"
ONSTART = f'touch ~/.no_auto_tmux; export -p | grep -E "^export ({IMAGE_ENV_NAMES})=" > {IMAGE_ENV_FILE}'
RUNNING_DEADLINE_S = 1200.0  # an image pull of several GB on a slow host takes its time
SSH_DEADLINE_S = 180.0
POLL_S = 2.0
FAILED = frozenset({"exited", "unknown", "offline"})  # these never become running (the reference)
GONE_DEADLINE_S = 300.0
RESTART_DEADLINE_S = 300.0  # its image is there already
LOGS_DEADLINE_S = 60.0  # vast uploads a requested log within seconds
LOG_TAIL_LINES = 1000

Log = Callable[[str], None]


class StartFailed(RunnerError):
    """The instance will not run: it was destroyed (unless kept) and the job failed."""


def host_name(instance_id: int) -> str:
    return f"{PREFIX}{instance_id}"


def instance_id_of(name: str) -> int | None:
    rest = name[len(PREFIX) :] if name.startswith(PREFIX) else ""
    return int(rest) if rest.isdigit() else None


def ssh_key() -> Path:
    """runner's key pair for its instances, made on first use (never passphrase-protected: runner logs
    in unattended; the file is private to this user, like ssh's own). Under a lock: submits side by
    side would both find no key, and the second ssh-keygen would stop at its overwrite question."""
    key = paths.config_dir() / KEY_FILE
    public = key.with_suffix(".pub")
    with _lock("vast-key"):
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "runner-vast", "-f", str(key)],
                           check=True, stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
        elif not public.exists():  # a crash between ssh-keygen's two writes: the public half again
            derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], check=True, capture_output=True, text=True)
            write_atomically(public, derived.stdout.encode(), mode=0o644)
    return key


def create_body(
    job_id: str, image: str, resources: Resources, image_login: str | None = None, watch: Watch | None = None
) -> dict[str, Any]:
    """What vast.ai is asked for; with watch, the onstart also starts the instance's safety net."""
    onstart = ONSTART + (launch(watch) if watch else "")
    body: dict[str, Any] = {
        "client_id": "me", "image": image, "disk": resources.disk_gb, "label": f"{LABEL_PREFIX}{job_id}",
        "onstart": onstart, "runtype": "ssh_direc ssh_proxy", "env": {}, "cancel_unavail": True,
    }  # fmt: skip
    if image_login:
        body["image_login"] = image_login  # a private registry's login, for vast.ai to pull with
    return body


def rent(client: VastClient, store: Store, job: Job, log: Log, image_login: str | None = None) -> int:
    """Rent the cheapest offer that fits; returns the instance id. Offers this store already holds are
    skipped, and renting is one process at a time (a lock), so two submits never rent one offer."""
    from runner.provision.vast.api import OfferGone, offer_query

    job_id, resources = job.id, job.spec.resources
    query = offer_query(resources, _image_kind(job))
    with _lock("vast-rent"):
        held = {instance.offer_id for instance in store.instances(live_only=True)}
        offers = [offer for offer in client.search_offers(query) if offer["id"] not in held]
        spent = sum(instance.cost() for instance in store.instances(job_id))  # a retry's earlier instances
        for offer in offers:
            watch = budget_watch(job_id, session_name(job.name, job_id), resources.max_cost, spent,
                                 float(offer["dph_total"]))  # fmt: skip
            try:
                body = create_body(job_id, image_reference(job), resources, image_login, watch)
                instance_id = client.create_instance(offer["id"], body)
            except OfferGone:
                continue  # taken since the search: the next one
            store.record_instance(
                instance_id, job_id, offer["id"], offer.get("gpu_name") or "", float(offer["dph_total"])
            )
            log(f"rented instance {instance_id}: {offer.get('num_gpus', 1)}x {offer.get('gpu_name')} at"
                f" ${float(offer['dph_total']):.3f}/h (offer {offer['id']})")  # fmt: skip
            return instance_id
    raise RunnerError(
        f"no vast.ai offer fits the job's resources now ({len(offers)} found, all taken): see `runner offers`"
    )


def _image_kind(job: Job) -> str | None:
    """The image kind the offer must suit: a cu128 build (auto included) needs a driver for CUDA 12.8."""
    _, build, _ = requested(_image_choice(job))
    return "cu128" if build in ("cu128", "auto") else build


def _image_choice(job: Job) -> str | dict[str, Any]:
    image = job.spec.model_dump(mode="json", include={"image"})["image"]
    assert image is not None  # admitted: a rented job always has one
    return image  # type: ignore[no-any-return]


def image_reference(job: Job) -> str:
    """What the instance pulls: the job's reference, or (for an image runner built) the pushed one."""
    return job.resolved.pushed_image or str(_image_choice(job))


@contextmanager
def _lock(name: str) -> Iterator[None]:
    """One runner process at a time, across processes (submits running side by side)."""
    folder = paths.runner_home() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def wait_running(
    client: VastClient,
    instance_id: int,
    log: Log,
    deadline_s: float = RUNNING_DEADLINE_S,
    failed: frozenset[str] = FAILED,
) -> dict[str, Any]:
    """Until the API says running with an SSH address; `failed` statuses end the wait (a start asked of an
    exited instance passes through its old status, so that wait gives a narrower set)."""
    deadline = time.monotonic() + deadline_s
    last = None
    while True:
        record = client.instance(instance_id)
        if record is None:
            raise StartFailed(f"instance {instance_id} vanished while starting")
        status, message = record.get("actual_status"), (record.get("status_msg") or "").strip()
        if status == "running" and _ssh_address(record):
            return record
        if status in failed or "OCI runtime create failed" in message:
            raise StartFailed(f"instance {instance_id} did not start: {status}: {message or 'no message'}")
        if (status, message) != last:
            log(f"instance {instance_id}: {status or 'provisioning'}" + (f": {message}" if message else ""))
            last = (status, message)
        if time.monotonic() > deadline:
            raise StartFailed(f"instance {instance_id} not running after {deadline_s:g}s (last: {status})")
        time.sleep(POLL_S)


def _ssh_address(record: dict[str, Any]) -> tuple[str, int] | None:
    """Direct (the instance's own port 22, published) before vast's proxy: one hop less, full speed."""
    direct = (record.get("ports") or {}).get("22/tcp") or []
    address = (record.get("public_ipaddr") or "").strip()
    if direct and address:
        return address, int(direct[0]["HostPort"])
    if record.get("ssh_host") and record.get("ssh_port"):
        return str(record["ssh_host"]).strip(), int(record["ssh_port"])
    return None


def pin_host_key(
    instance_id: int, address: str, port: int, deadline_s: float = SSH_DEADLINE_S, known_only: bool = False
) -> None:
    """Trust on first use, as the instance is new by design; pinned under its alias from then on. With
    known_only (the instance started again: its container, and its host keys, are the same), the key
    must be one already pinned: what answers at a new address is not trusted anew."""
    alias = host_name(instance_id)
    deadline = time.monotonic() + deadline_s
    while True:
        scan = subprocess.run(["ssh-keyscan", "-T", "5", "-p", str(port), address], capture_output=True, text=True)
        keys = [line.split(None, 1)[1] for line in scan.stdout.splitlines() if line and not line.startswith("#")]
        if keys:
            break
        if time.monotonic() > deadline:
            raise StartFailed(f"instance {instance_id}: sshd at {address}:{port} did not answer within {deadline_s:g}s")
        time.sleep(POLL_S)
    known = paths.runner_known_hosts()
    with _lock("known-hosts"):
        lines = known.read_text().splitlines() if known.exists() else []
        if known_only and not {f"{alias} {key}" for key in keys} & set(lines):
            raise StartFailed(f"instance {instance_id} started again with a host key not pinned for it: refused")
        kept = [line for line in lines if not line.startswith(alias + " ")]
        write_atomically(known, ("\n".join(kept + [f"{alias} {key}" for key in keys]) + "\n").encode(), mode=0o600)


def provision(client: VastClient, store: Store, job: Job, log: Log) -> str:
    """Rent, start and reach an instance for the job; returns its host name. The instance is in the
    store from its first moment: the caller destroys it when anything here fails."""
    instance_id = rent(client, store, job, log, _registry_login(job))
    client.attach_ssh_key(instance_id, (ssh_key().with_suffix(".pub")).read_text().strip())
    return _reach(store, instance_id, wait_running(client, instance_id, log), known_only=False)


def start_again(client: VastClient, store: Store, instance_id: int, log: Log) -> str:
    """Start an instance whose container ended (the safety net ended it: the job is over) and reach it
    again, for the final fetch; returns its host name. Its address changes; its host key does not."""
    log(f"instance {instance_id} exited: starting it again for the final fetch")
    client.start(instance_id)
    record = wait_running(client, instance_id, log, RESTART_DEADLINE_S, failed=frozenset({"unknown", "offline"}))
    name = _reach(store, instance_id, record, known_only=True)
    forget_host(name)  # this process's connection still holds the old address
    log(f"instance {instance_id} runs again; SSH answers at {store.instance(instance_id).ssh}")  # type: ignore[union-attr]
    return name


def _reach(store: Store, instance_id: int, record: dict[str, Any], known_only: bool) -> str:
    address, port = _ssh_address(record)  # type: ignore[misc]
    pin_host_key(instance_id, address, port, known_only=known_only)
    ssh = f"root@{_bracketed(address)}:{port}"
    store.set_instance_ssh(instance_id, ssh)
    name = host_name(instance_id)
    provisioned.remember(name, instance_entry(instance_id, ssh))
    store.remember_host(name, "vast")
    return name


def instance_entry(instance_id: int, ssh: str) -> HostEntry:
    """How to reach a rented instance: runner's own key, its host key pinned under its alias, and the
    job runs in it directly (the instance is the image's container)."""
    return HostEntry(ssh=ssh, identity=str(ssh_key()), transport="openssh", connect_timeout=10, retry_seconds=30,
                     host_key_alias=host_name(instance_id), provides_image=True)  # fmt: skip


def _registry_login(job: Job) -> str | None:
    if not job.resolved.pushed_image:
        return None
    from runner.hosts.hostsmodel import load_registry
    from runner.images.publish import image_login

    registry = load_registry()
    return image_login(registry) if registry else None


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def destroy_until_gone(
    client: VastClient, store: Store, instance_id: int, log: Log, deadline_s: float = GONE_DEADLINE_S
) -> None:
    """Destroy, then poll until the API no longer shows the instance: only then has billing stopped."""
    deadline = time.monotonic() + deadline_s
    while True:
        client.destroy(instance_id)
        record = client.instance(instance_id)
        if record is None or record.get("cur_state") == "unloaded":
            _confirmed_gone(store, instance_id)
            log(f"instance {instance_id} destroyed; the API confirms it is gone")
            return
        if time.monotonic() > deadline:
            raise RunnerError(
                f"instance {instance_id} still shown by vast.ai {deadline_s:g}s after destroy: run `runner down` again"
            )
        time.sleep(POLL_S)


def _confirmed_gone(store: Store, instance_id: int) -> None:
    """Recorded gone, and once (a second `runner down` finds it gone already) the event
    `instance-destroyed` that notifications announce: its billing has stopped."""
    known = store.instance(instance_id)
    store.instance_gone(instance_id)
    if known is not None and known.gone_at is None:
        store.add_event(known.job_id, "instance-destroyed", str(instance_id))


def instance_log(client: VastClient, instance_id: int, tail: int = LOG_TAIL_LINES) -> str:
    """The last lines of the instance's container log, through the API (the instance need not run):
    vast answers a URL where it uploads the log a moment later, fetched until it is there."""
    import httpx

    from runner.provision.vast.api import VastUnavailable

    answer = client.request_logs(instance_id, tail)
    url = answer.get("result_url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise RunnerError(f"vast.ai: the logs answer of instance {instance_id} names no URL")
    deadline = time.monotonic() + LOGS_DEADLINE_S
    # A presigned storage URL, on another host: without the client, whose headers carry the API key.
    with httpx.Client(timeout=30.0, follow_redirects=True) as storage:
        while True:
            try:
                response = storage.get(url)
                if response.status_code == 200:
                    return response.text
            except httpx.HTTPError:
                pass  # not there yet, or a dropped connection: asked again until the deadline
            if time.monotonic() > deadline:  # as an API that does not answer: waited out by the keeper
                raise VastUnavailable(f"vast.ai: the log of instance {instance_id} was not uploaded within"
                                      f" {LOGS_DEADLINE_S:g}s")  # fmt: skip
            time.sleep(POLL_S)
