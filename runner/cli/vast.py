"""`runner offers`, `runner down` and `runner keep`: vast.ai offers, rented instances given back, and the
keeper of a rented job."""

from __future__ import annotations

import click

from runner.base.errors import UsageError
from runner.cli.hosts import JSON_OPTION


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
@click.option("--orphans", is_flag=True, help="Destroy instances labelled runner: that no running job owns.")
@JSON_OPTION
def down(job_ref: str | None, orphans: bool, as_json: bool) -> None:
    """Destroy JOB's rented instances (or the orphans) and wait until vast.ai confirms they are gone."""
    from runner.cli import render
    from runner.cli.common import open_store
    from runner.pipeline.rented import orphans as find_orphans
    from runner.provision.vast.api import VastClient
    from runner.provision.vast.provisioner import destroy_until_gone
    from runner.provision.vast.renting import down as down_job

    if bool(job_ref) == orphans:
        raise UsageError("name a JOB, or give --orphans")
    with open_store() as store, VastClient() as client:
        if orphans:
            destroyed = []
            for record in find_orphans(client, store):
                destroy_until_gone(client, store, int(record["id"]), _to_stderr)
                destroyed.append(int(record["id"]))
        else:
            destroyed = down_job(client, store, store.find(job_ref), _to_stderr)
    if as_json:
        render.print_json({"destroyed": destroyed})
    elif not destroyed:
        render.stderr.print("nothing to destroy")


@click.command(hidden=True)
@click.argument("job_id")
def keep(job_id: str) -> None:
    """The keeper of a job on a rented instance (started by submit): cost limit, final fetch, teardown."""
    from runner.cli.common import open_store
    from runner.pipeline.rented import keep as keep_job

    with open_store() as store:
        job = keep_job(store, job_id, _to_stderr)
    _to_stderr(f"job {job.id} is {job.state.value}: keeper done")


def _to_stderr(line: str) -> None:
    import time

    click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", err=True)
