"""`nicfw tag`: attach, detach and list dynamic security tags on a running daemon.

nicfw tag add web-1 quarantine --expires 600
nicfw tag rm web-1 quarantine
nicfw tag ls [--json]
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from controlplane.api import ApiError, tag_add, tag_ls, tag_rm
from controlplane.cli_common import socket_option


@click.group()
@socket_option
@click.pass_context
def tag(ctx: click.Context, socket_path: str) -> None:
    """Dynamic security tags: rules that name them follow within milliseconds."""
    ctx.obj = socket_path


DRY_RUN = click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would change (entries, workloads, groups, rules) as JSON; change nothing.",
)


def _show_dry_run(reply: dict[str, Any]) -> None:
    click.echo(json.dumps({k: v for k, v in reply.items() if k != "ok"}, indent=2))


def _fail(exc: ApiError) -> None:
    raise click.ClickException(str(exc))


@tag.command("add")
@click.argument("workload")
@click.argument("tag_name", metavar="TAG")
@click.option(
    "--expires",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Detach after this many seconds.",
)
@DRY_RUN
@click.pass_obj
def add(
    socket_path: str, workload: str, tag_name: str, expires: float | None, dry_run: bool
) -> None:
    """Attach TAG to WORKLOAD."""
    try:
        reply = tag_add(socket_path, workload, tag_name, expires, dry_run)
    except ApiError as exc:
        _fail(exc)
        return
    if dry_run:
        _show_dry_run(reply)
        return
    writes = reply["inserts"] + reply["modifies"] + reply["deletes"]
    until = f", expires in {expires:g} s" if expires else ""
    click.echo(f"{workload}: tag {tag_name} attached ({writes} entries written{until})")


@tag.command("rm")
@click.argument("workload")
@click.argument("tag_name", metavar="TAG")
@DRY_RUN
@click.pass_obj
def rm(socket_path: str, workload: str, tag_name: str, dry_run: bool) -> None:
    """Detach TAG from WORKLOAD."""
    try:
        reply = tag_rm(socket_path, workload, tag_name, dry_run)
    except ApiError as exc:
        _fail(exc)
        return
    if dry_run:
        _show_dry_run(reply)
        return
    writes = reply["inserts"] + reply["modifies"] + reply["deletes"]
    click.echo(f"{workload}: tag {tag_name} detached ({writes} entries written)")


@tag.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def ls(socket_path: str, as_json: bool) -> None:
    """List the dynamic tags."""
    try:
        tags = tag_ls(socket_path)
    except ApiError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(tags, indent=2))
        return
    if not tags:
        click.echo("no dynamic tags")
        return
    now = time.time()
    click.echo(f"{'WORKLOAD':<24}{'TAG':<20}EXPIRES")
    for t in tags:
        expires = t["expires"]
        left = "never" if expires is None else f"in {max(0.0, expires - now):.0f} s"
        click.echo(f"{t['workload']:<24}{t['tag']:<20}{left}")
