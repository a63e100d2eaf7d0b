"""`runner hosts ...`: list, add and check the hosts in hosts.yaml."""

from __future__ import annotations

import click

from runner.base.errors import SpecError

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
TRUST_OPTION = click.option(
    "--trust-new-host", is_flag=True, help="Record the key of a host seen for the first time (check its fingerprint)."
)


@click.group()
def hosts() -> None:
    """Hosts jobs can run on: local, and the SSH hosts in hosts.yaml."""


@hosts.command("list")
@JSON_OPTION
def list_hosts(as_json: bool) -> None:
    """List the hosts."""
    from runner.cli import render
    from runner.hosts.hostsfile import load_hosts

    entries = load_hosts().hosts
    documents = [{"name": "local", "kind": "local", "ssh": None}] + [
        {"name": name, "kind": "ssh", "ssh": entry.ssh} for name, entry in sorted(entries.items())
    ]
    if as_json:
        render.print_json({"hosts": documents})
        return
    render.stdout.print(render.hosts_table(documents))


@hosts.command("add")
@click.argument("name")
@click.argument("target")
@click.option("--identity", help="Private key file for this host.")
@TRUST_OPTION
def add(name: str, target: str, identity: str | None, trust_new_host: bool) -> None:
    """Add host NAME reached at TARGET (user@host[:port] or an ~/.ssh/config alias), then check it."""
    from pydantic import ValidationError

    from runner.cli import render
    from runner.hosts.hostsfile import hosts_path
    from runner.hosts.hostsmodel import SshHostEntry, add_host
    from runner.pipeline.hostcheck import check_host

    try:
        entry = SshHostEntry(ssh=target, identity=identity)
        add_host(name, entry)
    except ValidationError as error:
        raise SpecError(f"{name}: {error.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    render.stderr.print(f"added host {name} ({target}) to {hosts_path()}")
    render.stdout.print(render.facts_table(check_host(name, trust_new_host)))


@hosts.command("check")
@click.argument("name")
@TRUST_OPTION
@JSON_OPTION
def check(name: str, trust_new_host: bool, as_json: bool) -> None:
    """Connect to NAME and report OS, Python, tmux, docker, free disk and GPUs."""
    from runner.cli import render
    from runner.pipeline.hostcheck import check_host

    facts = check_host(name, trust_new_host)
    if as_json:
        render.print_json(facts)
        return
    render.stdout.print(render.facts_table(facts))
