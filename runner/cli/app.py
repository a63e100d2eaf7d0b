"""The command line: parse, call one core function, render. No logic here."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from runner import __version__
from runner.base.durations import format_duration
from runner.base.errors import NotFound, RunnerError, SpecError
from runner.cli.common import DURATION, find_job, open_store
from runner.cli.hosts import JSON_OPTION, TRUST_OPTION, hosts
from runner.cli.status import status
from runner.cli.vast import down, keep, offers
from runner.transfer import progress as transferprogress

WINDOW_NAMES = ("train", "monitor", "gpu", "cpu", "tensorboard", "shell")  # runner.session.WINDOWS

# Each command imports what it needs when it runs: `runner status` should not pay for pydantic,
# paramiko or the fetch engine at start-up (see benchmarks/status_vs_ssh.py).
if TYPE_CHECKING:
    from runner.transfer.fetch import FetchResult


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="runner")
def cli() -> None:
    """Run training jobs on GPU hosts from one job file."""


@cli.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option("--host", "host_name", help="Run on this host instead of the job file's.")
@click.option(
    "--skip-preflight", is_flag=True, help="Start even if the job's dataset (`dataset:`) has errors: no check."
)
@click.option(
    "--keep", is_flag=True, help="host vast: leave the instance running if the submit fails (to look into it)."
)
@TRUST_OPTION
@JSON_OPTION
def submit(
    job_file: Path, host_name: str | None, skip_preflight: bool, keep: bool, trust_new_host: bool, as_json: bool
) -> None:
    """Start JOB_FILE on its host; prints the job id."""
    from runner.cli import render
    from runner.jobs.specfile import load_job
    from runner.pipeline.submit import submit as submit_job

    loaded = load_job(job_file)
    with open_store() as store, transferprogress.shown(f"{loaded.spec.name}: files", _bars(as_json), render.stderr):
        submitted = submit_job(
            store, loaded, host_name, trust_new_host, preflight=not skip_preflight, log=_to_stderr, keep=keep
        )
    job = submitted.job
    if as_json:
        render.print_json(render.submit_document(submitted))
        return
    click.echo(job.id)
    render.stderr.print(render.submit_summary(submitted))


def _to_stderr(line: str) -> None:
    """Progress of a long step (an image build's log), line by line as it comes."""
    click.echo(line, err=True)


@cli.command()
@click.argument("job_ref", metavar="JOB")
@click.option("-n", "--lines", "last_lines", type=click.IntRange(min=0), help="Only the last N lines.")
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Keep printing until the job ends; exit 1 unless it succeeded. A line is printed once it ends, so a"
    " bar shows once, finished (--raw -f shows it live).",
)
@click.option(
    "--raw", is_flag=True, help="The bytes exactly as recorded: every \\r update of every bar, all escape codes."
)
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Colours in the rendered log. auto: only when stdout is a terminal and NO_COLOR is unset; without them"
    " every escape code is removed. --raw ignores this.",
)
def logs(job_ref: str, last_lines: int | None, follow: bool, raw: bool, color: str) -> None:
    """Print JOB's train.log as a terminal shows it: each progress bar once, in its final state."""
    from runner.cli import render
    from runner.jobs.state import JobState
    from runner.observe.logs import follow_log, show_log, wants_color

    colored = wants_color(color, sys.stdout)
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    with open_store() as store:
        job = find_job(store, job_ref)
        if not follow:
            show_log(job, last_lines, write, raw=raw, color=colored)
            return
        job = follow_log(
            store, job, last_lines, write, lambda note: render.stderr.print(note, markup=False), raw=raw, color=colored
        )
    render.stderr.print(f"\n{job.id} {job.state.value}" + ("" if job.exit_code is None else f" (exit {job.exit_code})"))
    if job.state is not JobState.SUCCEEDED:
        sys.exit(1)


@cli.command()
@click.argument("job_ref", metavar="JOB")
@click.option("--grace", default=10.0, show_default=True, help="Seconds between Ctrl-C and killing the job.")
@JSON_OPTION
def stop(job_ref: str, grace: float, as_json: bool) -> None:
    """Stop JOB: Ctrl-C, then kill whatever is left after the grace period."""
    from runner.cli import render
    from runner.pipeline.stop import stop as stop_job

    with open_store() as store:
        job = stop_job(store, find_job(store, job_ref), grace)
    if as_json:
        render.print_json(render.job_document(job))
        return
    render.stderr.print(f"{job.id} {job.state.value}; its log is kept: runner logs {job.id}")


@cli.command()
@click.argument("artifact")
@click.argument("job_ref", metavar="[JOB]", required=False)
@click.option("--dest", type=click.Path(path_type=Path), help="Destination folder [default: artifacts/JOB_ID].")
@click.option(
    "--every",
    type=DURATION,
    help="Keep fetching at this interval (30s, 10m, 1h) until the job ends, then once more; a host that does not"
    " answer is waited for.",
)
@JSON_OPTION
def fetch(artifact: str, job_ref: str | None, dest: Path | None, every: float | None, as_json: bool) -> None:
    """Copy ARTIFACT (weights, results, logs, ...) of JOB (default: the newest job) here."""
    from runner.cli import render
    from runner.transfer.artifactsync import default_dest, fetch_every, fetch_locked

    with open_store() as store:
        job = find_job(store, job_ref)
        where = dest or default_dest(job.id)
        if every is None:
            with transferprogress.shown(f"{artifact} of {job.id}", _bars(as_json), render.stderr):
                result = fetch_locked(job, artifact, where, _note)
        else:
            result = fetch_every(store, job, artifact, where, every, _progress_note(every), _note)
    if as_json:
        render.print_json(render.fetch_document(result))
        return
    render.stdout.print(render.fetch_table(result))
    render.stderr.print(
        f"{len(result.files)} files in {result.dest}, {render.human_size(result.bytes_copied)} copied"
        f" in {result.seconds:.2f}s"
    )
    for path in result.refused:
        render.stderr.print(f"refused {path}: it leads outside the job's workdir or the destination", markup=False)
    for path in result.changing:
        render.stderr.print(f"skipped {path}: still being written on the host; the next fetch takes it", markup=False)


def _bars(as_json: bool) -> bool:
    """Progress bars only for a person at a terminal: not in --json output, logs or pipes."""
    return not as_json and sys.stderr.isatty()


def _note(text: str) -> None:
    """A line on stderr for a fetch that goes on a while (a background sync's log keeps them)."""
    from runner.cli import render

    render.stderr.print(f"{time.strftime('%H:%M:%S')} {text}", markup=False)


def _progress_note(every: float) -> Callable[[FetchResult], None]:
    from runner.cli import render

    return lambda result: _note(f"{render.fetch_progress(result)}; next in {format_duration(every)}")


@cli.command()
@click.argument("job_ref", metavar="JOB")
@click.option("--port", type=click.IntRange(1, 65535), help="Local port [default: the job's, or the next free one].")
def tensorboard(job_ref: str, port: int | None) -> None:
    """Forward JOB's TensorBoard to this machine and print its URL; Ctrl-C ends the forward."""
    from runner.cli import render
    from runner.observe.tunnel import forward_until_stopped

    with open_store() as store:
        job = find_job(store, job_ref)

    def announce(url: str) -> None:
        render.stderr.print("forwarding; Ctrl-C to stop")
        click.echo(url)  # last: whoever reads the URL may stop the forward at once

    forward_until_stopped(job, port, announce)


@cli.command()
@click.argument("job_ref", metavar="JOB")
@click.option("--window", "-w", default="train", show_default=True, type=click.Choice(WINDOW_NAMES))
def attach(job_ref: str, window: str) -> None:
    """Attach this terminal to JOB's tmux session (detach with Ctrl-b d; the job goes on)."""
    from runner.jobs.session import attach_argv

    with open_store() as store:
        job = find_job(store, job_ref)
    if not job.session or job.finished:
        raise NotFound(
            f"job {job.id} is {job.state.value}: its tmux session is gone; `runner logs {job.id}` has its output"
        )
    argv = attach_argv(job, window)
    os.execvp(argv[0], argv)


@cli.command()
@click.argument("job_ref", metavar="JOB")
@click.option(
    "--out", type=click.Path(path_type=Path), help="The PNG, or a folder for it [default: JOBNAME-JOBID.png here]."
)
@JSON_OPTION
def plot(job_ref: str, out: Path | None, as_json: bool) -> None:
    """Draw JOB's losses, validation metrics and GPU telemetry into one PNG; prints its path."""
    from runner.cli import render
    from runner.cli.plot import plot_document, plot_job, plot_summary, require_matplotlib

    require_matplotlib()  # before any round trip: without the extra there is nothing to draw with
    with open_store() as store:
        job = find_job(store, job_ref)
    result = plot_job(job, out)
    if as_json:
        render.print_json(plot_document(result))
        return
    click.echo(result.path)
    render.stderr.print(plot_summary(result), markup=False)


@cli.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@JSON_OPTION
def check(job_file: Path, as_json: bool) -> None:
    """Check JOB_FILE's dataset (its `dataset:` data YAML) here, as submit does on the host before
    training: labels, classes, images. Exits 2 when it has errors."""
    from runner.cli import render
    from runner.cli.datareport import report_text
    from runner.jobs.specfile import load_job
    from runner.pipeline.preflight import check_here, refusal

    report = check_here(load_job(job_file))
    if as_json:
        render.print_json(report)
    else:
        render.stdout.print(report_text(report), markup=False)
    if not report["ok"]:
        raise refusal(report, job_file)


@cli.command()
@click.option("--older-than", type=DURATION, help="Only jobs that ended at least this long ago (30m, 2d).")
@click.option("--failed", "failed_only", is_flag=True, help="Only jobs that did not succeed: failed, lost, stopped.")
@click.option("--yes", is_flag=True, help="Remove without asking.")
@JSON_OPTION
def prune(older_than: float | None, failed_only: bool, yes: bool, as_json: bool) -> None:
    """Remove finished jobs' folders from their hosts and their records here; prints what it freed."""
    from runner.base.errors import UsageError
    from runner.cli import prunereport, render
    from runner.pipeline import prune as pruning

    with open_store() as store:
        planned = pruning.plan(store, pruning.candidates(store, older_than, failed_only))
        if planned.removals and not yes:
            if not sys.stdin.isatty():
                raise UsageError("prune asks before it removes anything: give --yes where no terminal can answer")
            render.stderr.print(prunereport.plan_table(planned))
            if not click.confirm(prunereport.question(planned), err=True):
                render.stderr.print("nothing removed")
                return
        done = pruning.prune(store, planned) if planned.removals else planned
    if as_json:
        render.print_json(prunereport.document(done))
    for line in prunereport.freed_lines(done) if done.removals else ["nothing to prune", *prunereport.left_lines(done)]:
        render.stderr.print(line, markup=False)
    if any(left.unreachable for left in done.left):
        sys.exit(3)  # a host did not answer: its jobs are still there, for a later prune


@cli.command()
def schema() -> None:
    """Print the job file's JSON Schema (for editor completion)."""
    from runner.cli import render
    from runner.jobs.spec import JobSpec

    render.print_json(JobSpec.model_json_schema())


cli.add_command(status)
cli.add_command(hosts)
cli.add_command(down)
cli.add_command(keep)
cli.add_command(offers)


def main() -> None:
    try:
        cli.main(prog_name="runner", standalone_mode=False)
    except SpecError as exc:
        click.echo(str(exc), err=True)  # already file:line:col: field: message
        sys.exit(exc.exit_code)
    except RunnerError as exc:
        click.echo(f"runner: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("runner: interrupted", err=True)
        sys.exit(130)
