"""`runner offers`, `runner down` and `runner keep`: vast.ai offers, rented instances given back, and the
keeper of a rented job."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from runner.base.errors import RunnerError, UsageError
from runner.cli.hosts import JSON_OPTION

if TYPE_CHECKING:
    from runner.jobs.state import Store
    from runner.pipeline.rented import Verdict
    from runner.provision.vast.api import VastClient


@click.command()
@click.option("--gpu", help='GPU model as vast.ai names it, e.g. "RTX 5090".')
@click.option("--num-gpus", type=click.IntRange(min=1), default=1, show_default=True, help="GPUs in the machine.")
@click.option("--max-price", type=click.FloatRange(min=0, min_open=True), help="Highest price per hour, in $.")
@click.option("--min-vram", type=click.FloatRange(min=0, min_open=True), help="Least VRAM per GPU, in GB.")
@click.option("--disk", type=click.FloatRange(min=0, min_open=True), help="Least disk space, in GB [default: 50].")
@JSON_OPTION
def offers(
    gpu: str | None, num_gpus: int, max_price: float | None, min_vram: float | None, disk: float | None, as_json: bool
) -> None:
    """List the vast.ai offers that fit, cheapest first. The API key: VAST_API_KEY, or the file
    vast_api_key in runner's config dir (chmod 600)."""
    from runner.cli import render
    from runner.jobs.spec import Resources
    from runner.provision.vast.api import VastClient, offer_query

    given = {"gpu": gpu, "num_gpus": num_gpus, "max_price": max_price, "min_vram_gb": min_vram, "disk_gb": disk}
    query = offer_query(Resources.model_validate({k: v for k, v in given.items() if v is not None}), image_kind=None)
    with VastClient() as vast:
        found = vast.search_offers(query)
    if as_json:
        render.print_json({"offers": found, "query": query})
        return
    render.stdout.print(render.offers_table(found))
    render.stderr.print(f"{len(found)} offers, cheapest first" if found else "no offer fits; try a higher --max-price")


@click.command()
@click.argument("job_ref", metavar="[JOB]", required=False)
@click.option(
    "--orphans", is_flag=True,
    help="Destroy instances labelled runner: whose job is finished, unknown here, or whose submit died.",
)  # fmt: skip
@JSON_OPTION
def down(job_ref: str | None, orphans: bool, as_json: bool) -> None:
    """Destroy JOB's rented instances (or the orphans) and wait until vast.ai confirms they are gone."""
    from runner.cli import render
    from runner.cli.common import open_store
    from runner.provision.vast.api import VastClient
    from runner.provision.vast.renting import down as down_job

    if bool(job_ref) == orphans:
        raise UsageError("name a JOB, or give --orphans")
    with open_store() as store, VastClient() as client:
        if orphans:
            _down_orphans(client, store, as_json)
            return
        destroyed = down_job(client, store, store.find(job_ref), _to_stderr)
    if as_json:
        render.print_json({"destroyed": destroyed})
    elif not destroyed:
        render.stderr.print("nothing to destroy")


def _down_orphans(client: VastClient, store: Store, as_json: bool) -> None:
    """Each instance labelled runner: in a line, destroyed or left, and why; every orphan is tried
    before a failure to destroy one is raised."""
    from runner.cli import render
    from runner.pipeline.rented import judge_instances

    rows, failures = [], []
    for verdict in judge_instances(client, store):
        action, failure = _apply_verdict(client, store, verdict)
        rows.append({"id": verdict.instance_id, "job": verdict.job_id, "action": action, "reason": verdict.reason})
        failures += [failure] if failure else []
        if not as_json:
            render.stdout.print(f"{action:<9} instance {verdict.instance_id}  job {verdict.job_id}: {verdict.reason}",
                                markup=False)  # fmt: skip
    if as_json:
        destroyed = [row["id"] for row in rows if row["action"] == "destroyed"]
        render.print_json({"destroyed": destroyed, "instances": rows})
    elif not any(row["action"] != "left" for row in rows):
        render.stderr.print("nothing to destroy")
    if failures:
        raise RunnerError("; ".join(failures) + ": run `runner down --orphans` again")


def _apply_verdict(client: VastClient, store: Store, verdict: Verdict) -> tuple[str, str | None]:
    """("destroyed" | "left" | "failed", why it failed)."""
    from runner.provision.vast.provisioner import destroy_until_gone

    if not verdict.destroy:
        return "left", None
    try:
        destroy_until_gone(client, store, verdict.instance_id, _to_stderr)
    except RunnerError as exc:
        return "failed", f"instance {verdict.instance_id}: {exc}"
    return "destroyed", None


@click.command(hidden=True)
@click.argument("job_id")
def keep(job_id: str) -> None:
    """The keeper of a job on a rented instance (started by submit): cost limit, final fetch, teardown."""
    from runner.cli.common import open_store
    from runner.pipeline.keepers import keeper_pid
    from runner.pipeline.rented import keep as keep_job

    with open_store() as store:
        job = keep_job(store, job_id, _to_stderr)
    if job is None:
        holder = keeper_pid(job_id)
        _to_stderr(f"job {job_id} has a keeper already{f' (pid {holder})' if holder else ''}: this one ends")
        return
    _to_stderr(f"job {job.id} is {job.state.value}: keeper done")


def _to_stderr(line: str) -> None:
    import time

    click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", err=True)
