"""How results look: JSON documents for scripts, rich tables for people. No logic beyond layout."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from runner.base.durations import format_duration
from runner.jobs.state import Job, JobState
from runner.observe.monitoring import monitor_document, table_cells

if TYPE_CHECKING:
    from runner.hosts import SyncStats
    from runner.pipeline.submit import Submitted
    from runner.transfer.fetch import FetchResult

STATE_STYLES = {
    JobState.RUNNING: "bold cyan",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "bold red",
    JobState.LOST: "bold red",
    JobState.STOPPED: "yellow",
}

# Piped output is read by grep and people's scripts: no 80-column squeeze when stdout is no terminal.
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def elapsed_seconds(job: Job) -> float | None:
    if job.started_at is None:
        return None
    return (job.ended_at or time.time()) - job.started_at


def job_document(
    job: Job, unreachable_since: float | None = None, cost: dict[str, Any] | None = None,
    api_unreachable_since: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    elapsed = elapsed_seconds(job)
    return {
        "id": job.id,
        "name": job.name,
        "host": job.host,
        "state": job.state.value,
        "finished": job.finished,
        "exit_code": job.exit_code,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "ended_at": iso(job.ended_at),
        "elapsed_seconds": None if elapsed is None else round(elapsed, 1),
        "last_line": job.last_line,
        "message": job.message,
        "job_file": job.job_file,
        "job_dir": job.job_dir,
        "session": job.session,
        "unreachable_since": iso(unreachable_since),
        "cost": cost,  # rented hosts: {dph, so_far (in $), instances, live}; null elsewhere
        "api_unreachable_since": iso(api_unreachable_since),  # its keeper waits for vast.ai since then
        **monitor_document(job.snapshot),
    }


MONITOR_COLUMNS = ("EPOCH", "IT/S", "ETA", "LOSS", "mAP", "GPU", "ALERTS")


def jobs_table(
    jobs: list[Job], unreachable: dict[str, float], costs: dict[str, dict[str, Any]] | None = None,
    api_waits: dict[str, float] | None = None,
) -> Table:  # fmt: skip
    headers = ("JOB", "NAME", "HOST", "STATE", "ELAPSED", *MONITOR_COLUMNS)
    rows = [_job_row(job, unreachable.get(job.host), (costs or {}).get(job.id), (api_waits or {}).get(job.id))
            for job in jobs]  # fmt: skip
    table = Table(box=None, header_style="bold", pad_edge=False)
    for index, header in enumerate(headers):
        # On a narrow terminal the last line gives way, never the job id or state.
        widest = max([len(header)] + [len(row[index]) for row in rows])
        table.add_column(header, no_wrap=True, min_width=widest)
    table.add_column("LAST LINE", no_wrap=True, overflow="ellipsis")
    for job, row in zip(jobs, rows, strict=True):
        state = Text(row[3], style=STATE_STYLES.get(job.state, ""))
        alerts = Text(row[-2], style="bold red")
        _add_plain_row(table, *row[:3], state, *row[4:-2], alerts, row[-1])
    return table


def _job_row(
    job: Job, unreachable_since: float | None, cost: dict[str, Any] | None = None, api_since: float | None = None
) -> list[str]:
    shown = job.message if job.state in (JobState.FAILED, JobState.LOST) and job.message else job.last_line
    if unreachable_since is not None and not job.finished:
        shown = f"unreachable since {iso(unreachable_since)}; last seen: {shown or '-'}"
    if api_since is not None:  # the keeper cannot destroy or check the instance until vast.ai answers
        shown = f"keeper: vast.ai unreachable since {time.strftime('%H:%M', time.localtime(api_since))}; {shown or '-'}"
    state = job.state.value if job.exit_code in (None, 0) else f"{job.state.value} ({job.exit_code})"
    cells = table_cells(job.snapshot)
    monitor = [cells[column] for column in MONITOR_COLUMNS]
    host = f"{job.host} ${cost['dph']:.2f}/h ${cost['so_far']:.2f}" if cost else job.host
    return [job.id, job.name, host, state, duration(elapsed_seconds(job)), *monitor, shown or ""]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def submit_document(submitted: Submitted) -> dict[str, Any]:
    syncs = {"workdir": submitted.workdir_sync, **{f"dataset:{n}": s for n, s in submitted.dataset_syncs.items()}}
    return {
        **job_document(submitted.job),
        "sync": {name: _sync_document(stats) for name, stats in syncs.items() if stats},
        "artifact_syncs": [
            {
                "artifact": sync.artifact,
                "every_seconds": sync.every_s,
                "dest": str(sync.dest),
                "pid": sync.pid,
                "log": str(sync.log),
            }
            for sync in submitted.artifact_syncs
        ],
        "preflight": submitted.preflight,  # the dataset check's report; null where the job names no dataset
        "image": _image_document(submitted),  # null for a job without `image`
    }


def _image_document(submitted: Submitted) -> dict[str, Any] | None:
    container = submitted.container
    if container is None:
        return None
    plan = container.plan
    return {"reference": container.reference, "build": plan.build, "built": submitted.image_built,
            "gpu_vendor": plan.vendor, "env": plan.env, "reason": plan.reason}  # fmt: skip


def submit_summary(submitted: Submitted) -> str:
    job = submitted.job
    lines = [f"[bold]{job.name}[/] is {job.state.value} on {job.host} in tmux session [bold]{job.session}[/]"]
    if submitted.workdir_sync:
        lines.append(f"  workdir: {_sync_text(submitted.workdir_sync)}")
    lines += [f"  dataset {name}: {_sync_text(stats)}" for name, stats in submitted.dataset_syncs.items()]
    if submitted.preflight:
        lines.append(f"  preflight: {escape(_preflight_text(submitted.preflight))}")
    if submitted.container:
        how = "built" if submitted.image_built else "already there" if submitted.container.plan.build else "as given"
        lines.append(f"  image: {escape(submitted.container.reference)} ({how}); container {escape(job.session or '')}")
    lines += [
        f"  syncing {sync.artifact} every {format_duration(sync.every_s)} to {escape(str(sync.dest))}"
        f" (log: {escape(str(sync.log))})"
        for sync in submitted.artifact_syncs
    ]
    lines.append(f"  runner status {job.id}    runner logs -f {job.id}    runner fetch weights {job.id}")
    if job.spec.tensorboard:
        lines.append(f"  runner tensorboard {job.id}    runner attach {job.id}")
    return "\n".join(lines)


def _preflight_text(report: dict[str, Any]) -> str:
    splits = ", ".join(f"{name} {split['images']} images" for name, split in report["splits"].items())
    counts = f"{report['errors']} errors, {report['warnings']} warnings"
    return f"{report['dataset']}: {splits}; {counts} in {report['seconds']:.1f}s"


def _sync_document(stats: SyncStats) -> dict[str, Any]:
    return {"method": stats.method, "files_sent": stats.files_sent, "bytes_sent": stats.bytes_sent,
            "seconds": round(stats.seconds, 3)}  # fmt: skip


def _sync_text(stats: SyncStats) -> str:
    return f"{stats.files_sent} files, {human_size(stats.bytes_sent)} sent in {stats.seconds:.1f}s ({stats.method})"


def fetch_document(result: FetchResult) -> dict[str, Any]:
    return {
        "job": result.job_id,
        "artifact": result.artifact,
        "dest": str(result.dest),
        "files": [
            {"path": item.path, "size": item.size, "sha256": item.sha256, "copied": item.copied}
            for item in result.files
        ],
        "refused": result.refused,
        "changing": result.changing,
        "bytes_copied": result.bytes_copied,
        "seconds": round(result.seconds, 3),
    }


def fetch_progress(result: FetchResult) -> str:
    changing = f" ({len(result.changing)} still being written)" if result.changing else ""
    return f"{len(result.files)} files, {human_size(result.bytes_copied)} new{changing}"


def fetch_table(result: FetchResult) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("FILE", "SIZE", "SHA256", ""):
        table.add_column(column, no_wrap=True)
    for item in result.files:
        _add_plain_row(
            table, item.path, human_size(item.size), item.sha256[:16], "copied" if item.copied else "unchanged"
        )
    return table


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def hosts_table(hosts: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("HOST", "KIND", "SSH"):
        table.add_column(column, no_wrap=True)
    for host in hosts:
        _add_plain_row(table, host["name"], host["kind"], host["ssh"] or "")
    return table


def facts_table(facts: dict[str, Any]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    shown = {
        "host": f"{facts['host']} ({facts['kind']}), answered in {facts['connect_seconds']:.2f}s",
        "os": facts["os"],
        "python": facts["python"],
        "tmux": facts["tmux"] or "missing: jobs need tmux",
        "docker": facts["docker"] or "missing",
        "free disk": f"{human_size(facts['disk_free_bytes'])} under {facts['runner_dir']}",
    }
    for key, value in shown.items():
        _add_plain_row(table, key, str(value))
    gpu_lines = [_gpu_text(gpu) for gpu in facts.get("gpus") or []] or ["no GPU"]
    for number, line in enumerate(gpu_lines):
        _add_plain_row(table, "gpus" if number == 0 else "", line)  # one GPU a line, under one label
    if facts.get("gpu_pick"):
        _add_plain_row(table, "picked", facts["gpu_pick"]["reason"])
    return table


def _gpu_text(gpu: dict[str, Any]) -> str:
    """`0: NVIDIA GeForce RTX 5090, compute 12.0, 32607 MiB`: the gfx target or compute capability says which
    images can run there (gfx1010 needs ROCm 5.2, sm_120 needs CUDA 12.8)."""
    target = gpu.get("gfx") or (f"compute {gpu['compute_cap']}" if gpu.get("compute_cap") else None)
    vram = f"{gpu['vram_mib']} MiB" if gpu.get("vram_mib") is not None else "VRAM unknown"
    details = [target, vram, "integrated" if gpu.get("integrated") else None]
    index = "" if gpu.get("index") is None else f"{gpu['index']}: "
    return f"{index}{gpu.get('name') or 'unnamed GPU'}, " + ", ".join(part for part in details if part)


OFFER_COLUMNS = ("ID", "GPU", "N", "VRAM", "$/H", "RELIABILITY", "CUDA", "DISK", "NET DOWN", "LOCATION")


def offers_table(offers: list[dict[str, Any]]) -> Table:
    """vast.ai offers as the search returned them (its order: cheapest first)."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in OFFER_COLUMNS:
        table.add_column(column, no_wrap=True, justify="left" if column in ("GPU", "LOCATION") else "right")
    for offer in offers:
        _add_plain_row(table, *_offer_row(offer))
    return table


def _offer_row(offer: dict[str, Any]) -> list[str]:
    def number(field: str, template: str, scale: float = 1) -> str:
        value = offer.get(field)
        return template.format(value / scale) if isinstance(value, (int, float)) else "-"

    reliability = "reliability2" if offer.get("reliability2") is not None else "reliability"
    return [
        str(offer.get("id", "-")), str(offer.get("gpu_name") or "-"), number("num_gpus", "{:.0f}"),
        number("gpu_ram", "{:.0f} GB", 1024),  # gpu_ram is MiB: 32607 reads "32 GB", as vast.ai shows it
        number("dph_total", "{:.3f}"), number(reliability, "{:.1%}"), number("cuda_max_good", "{:g}"),
        number("disk_space", "{:.0f} GB"), number("inet_down", "{:.0f} Mb/s"), str(offer.get("geolocation") or "-"),
    ]  # fmt: skip


def _add_plain_row(table: Table, *cells: str | Text) -> None:
    """Text from hosts and trainings ("loading [/data/x]") is shown as it is, never read as rich markup."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))
