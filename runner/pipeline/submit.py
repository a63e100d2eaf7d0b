"""submit: validate, place the job on its host, start its tmux session.

Every check that can refuse the job runs before anything is written to a host or the store,
so bad input changes nothing anywhere; the one exception is the dataset check (preflight), which
runs on the host after the sync, where the data lies, and fails the job before its session starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runner.base import processes
from runner.base.errors import HostUnreachable, RunnerError
from runner.hosts import Host, SyncStats
from runner.hostside.hostfiles import PROTOCOL
from runner.hostside.notify import NOTIFY_FILE
from runner.images.container import CONTAINER_SH, ContainerJob, build_image, write_container_sh
from runner.jobs import session
from runner.jobs.jobscript import render_job_sh, render_run_sh
from runner.jobs.layout import JobLayout, agent_argv, install_hostside, window_script_path
from runner.jobs.specfile import LoadedJob
from runner.jobs.state import ACTIVE, Job, JobState, Resolved, Store, job_document
from runner.observe.notify import HOST_NOTIFY, host_notify_file
from runner.pipeline.placement import DatasetPlacement, plan_datasets, push_datasets, push_workdir
from runner.pipeline.preflight import check_on_host, describe, refusal
from runner.provision import Provisioner, provisioner_for
from runner.transfer.artifactsync import Sync, start_syncs


@dataclass
class Submitted:
    job: Job
    workdir_sync: SyncStats | None = None
    dataset_syncs: dict[str, SyncStats] = field(default_factory=dict)
    artifact_syncs: list[Sync] = field(default_factory=list)  # background fetchers (artifacts.NAME.sync_every)
    preflight: dict[str, Any] | None = None  # the dataset check's report, where the job names its dataset
    container: ContainerJob | None = None  # the image and how it runs, for a job with `image`
    image_built: bool = False  # built for this job (False: the host had it, or the job has no image)
    host_notify: bytes | None = None  # the file with which the job's host sends its notifications itself


# A job leaves these states for running; any other (stopped meanwhile, failed) must not start.
STARTING = frozenset({JobState.SYNCING, JobState.PREFLIGHT, JobState.BUILDING})


def submit(
    store: Store,
    loaded: LoadedJob,
    host_override: str | None = None,
    trust_new_host: bool = False,
    preflight: bool = True,
    log: Callable[[str], None] = lambda line: None,
    keep: bool = False,
) -> Submitted:
    """One pipeline for every kind of host: admit, provision, place, check the data, build or pick the
    image, start the session."""
    datasets = plan_datasets(loaded)
    # The data YAML is read here: a malformed one refuses the job before anything moves.
    description = describe(loaded, datasets) if preflight and loaded.spec.dataset else None
    _check_placeable(loaded)
    provisioner = provisioner_for(host_override or loaded.spec.host, bool(host_override), trust_new_host)
    try:
        admitted = provisioner.admit(loaded, log)
        resolved = Resolved(str(loaded.workdir), os.getcwd(), admitted.pushed_image)
        # This process owns the job until it runs: should it die on the way, the reconciler sees it gone.
        job = store.create_job(loaded.spec.name, admitted.host_name, job_document(loaded.spec, resolved),
                               str(loaded.path.resolve()), owner=processes.identity(), keep=keep)  # fmt: skip
        submitted = _provision_and_run(store, provisioner, loaded, job, datasets, description,
                                       Submitted(job, container=admitted.container), log, keep)  # fmt: skip
        provisioner.after_submit(store, submitted.job, log)
    finally:
        provisioner.close()
    if submitted.job.state is JobState.RUNNING:  # never for a job that failed or was stopped meanwhile
        submitted.artifact_syncs = start_syncs(store, submitted.job)
    return submitted


def _provision_and_run(
    store: Store,
    provisioner: Provisioner,
    loaded: LoadedJob,
    job: Job,
    datasets: list[DatasetPlacement],
    description: dict[str, Any] | None,
    submitted: Submitted,
    log: Callable[[str], None],
    keep: bool,
) -> Submitted:
    try:
        host = provisioner.provision(store, job, log)
        if host.name != job.host:  # a rented job's host is named once it is rented
            store.set_host(job.id, host.name)
        return _run(store, host, loaded, store.get(job.id), datasets, description, submitted, log)
    except BaseException as exc:  # Ctrl-C included: what was made for the job must not outlive the submit
        store.transition(job.id, JobState.FAILED, ACTIVE, message=f"submit failed: {_reason(exc)}")
        provisioner.release_after_failure(store, store.get(job.id), log, keep)
        raise


def _run(
    store: Store,
    host: Host,
    loaded: LoadedJob,
    job: Job,
    datasets: list[DatasetPlacement],
    description: dict[str, Any] | None,
    submitted: Submitted,
    log: Callable[[str], None],
) -> Submitted:
    """Place the job on host, check its data, build its image, start its session."""
    name = session.session_name(job.name, job.id)
    container = submitted.container
    try:
        store.transition(job.id, JobState.SYNCING, frozenset({JobState.SUBMITTED, JobState.PROVISIONING}))
        layout = JobLayout.on(host, job.id)
        # Where the job will be, before anything goes there: a submit killed from here on leaves the
        # reconciler a place to look for what it started.
        store.set_placement(job.id, layout.job_dir, name)
        _hand_notifications_to(store, host, job, submitted)
        place_job(host, loaded, job, layout, name, datasets, submitted)
        if description is not None and not store.get(job.id).finished:
            submitted.preflight = _preflight(store, host, job, layout, description, loaded)
        if container and not store.get(job.id).finished:
            store.transition(job.id, JobState.BUILDING, STARTING)
            submitted.image_built = build_image(host, container, log)
        if store.get(job.id).finished:  # `runner stop` came while the files moved or the data was checked
            submitted.job = store.get(job.id)
            return submitted
        _start_session(store, host, job, name, job_windows(host, loaded, layout), layout)
    except BaseException as exc:  # Ctrl-C included: the job must not stay "syncing" forever
        store.transition(job.id, JobState.FAILED, ACTIVE, message=f"submit failed: {_reason(exc)}")
        _end_session_quietly(host, name)
        raise
    submitted.job = store.get(job.id)
    return submitted


def _start_session(
    store: Store, host: Host, job: Job, name: str, windows: list[session.Window], layout: JobLayout
) -> None:
    try:
        session.start(host, name, windows, cwd=layout.work)
    except HostUnreachable:
        # The link dropped with the start command sent: the session may well be running. Let status
        # find out (it probes running jobs) rather than call a possibly healthy job failed.
        store.transition(job.id, JobState.RUNNING, STARTING, message="link lost while starting")
        raise
    if not store.transition(job.id, JobState.RUNNING, STARTING):
        # Stopped between the check above and the start: honour the stop.
        _end_session_quietly(host, name)


def _preflight(
    store: Store, host: Host, job: Job, layout: JobLayout, description: dict[str, Any], loaded: LoadedJob
) -> dict[str, Any]:
    """The dataset check on the host, where the data now lies: errors refuse the job (its message names
    the first offenders), before its session, and so its training, ever starts."""
    store.transition(job.id, JobState.PREFLIGHT, frozenset({JobState.SYNCING}))
    report = check_on_host(host, layout, description)
    if not report["ok"]:
        raise refusal(report, loaded.path)
    return report


def _check_placeable(loaded: LoadedJob) -> None:
    if not loaded.workdir.is_dir():
        raise loaded.error(("workdir",), f"'{loaded.workdir}' is not a directory")


def place_job(
    host: Host,
    loaded: LoadedJob,
    job: Job,
    layout: JobLayout,
    session_name: str,
    datasets: list[DatasetPlacement],
    submitted: Submitted,
) -> None:
    install_hostside(host)
    # The job directory holds spec.json and job.sh, with the job's env: for the user's eyes only.
    host.run(["mkdir", "-p", "-m", "700", "--", layout.job_dir]).check()
    submitted.workdir_sync = push_workdir(host, loaded, layout, datasets)
    submitted.dataset_syncs = push_datasets(host, layout, datasets)
    resolved = {
        "protocol": PROTOCOL,
        "id": job.id,
        "session": session_name,
        "job_file": job.job_file,
        "spec": job.spec.model_dump(mode="json"),
    }
    host.write_file(layout.file("spec.json"), json.dumps(resolved, indent=2).encode(), mode=0o600)
    job_sh = render_job_sh(job.id, loaded.spec, job.job_file, layout.work)
    host.write_file(layout.file("job.sh"), job_sh.encode(), mode=0o700)
    script = "job.sh"
    if submitted.container:
        write_container_sh(host, submitted.container, job.id, loaded.spec.name, session_name, layout)
        script = CONTAINER_SH
    snapshot = agent_argv(host, "snapshot", layout.job_dir)
    run_sh = render_run_sh(job.id, loaded.spec.name, layout.job_dir, session.target(session_name), snapshot, script)
    host.write_file(layout.file("run.sh"), run_sh.encode(), mode=0o700)
    if submitted.host_notify:  # its URLs are secrets: a private file, never spec.json or a command line
        host.write_file(layout.file(NOTIFY_FILE), submitted.host_notify, mode=0o600)


def _hand_notifications_to(store: Store, host: Host, job: Job, submitted: Submitted) -> None:
    """An SSH host's monitor sends the job's notifications it can (no runner process here may look while
    the job runs); this machine's jobs, and a rented instance's (its keeper), are sent from here. The
    store learns it first: should the file never arrive, the controller finds no record and sends."""
    if host.shares_this_filesystem or host.provides_image:
        return
    handed = host_notify_file(job, host.name)
    if handed is not None:
        targets, submitted.host_notify = handed
        store.add_event(job.id, HOST_NOTIFY, ",".join(str(target) for target in targets))


def job_windows(host: Host, loaded: LoadedJob, layout: JobLayout) -> list[session.Window]:
    window_sh = window_script_path(host)
    board = loaded.spec.tensorboard
    board_args = [board.logdir, str(board.port)] if board else ["", ""]
    return [
        session.Window("train", ["bash", layout.file("run.sh")]),
        session.Window("monitor", agent_argv(host, "monitor", layout.job_dir)),
        session.Window("gpu", ["bash", window_sh, "gpu"]),
        session.Window("cpu", ["bash", window_sh, "cpu"]),
        session.Window("tensorboard", ["bash", window_sh, "tensorboard", *board_args]),
        session.Window("shell", ["bash", window_sh, "shell"]),
    ]


def _end_session_quietly(host: Host, session_name: str) -> None:
    """Best effort: the original error is the one to report, not a failure while cleaning up."""
    try:
        host.run(session.kill_session_argv(session_name))
    except (OSError, RunnerError):
        pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RunnerError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"
